"""The baseline of a durable turn: the least Temporal needs to answer a message
with one model call.

``BareWorkflow`` has one update handler that runs one activity, which makes one
chat-completions call with the real ``openai.AsyncOpenAI`` client (no client
retries, as fsmflow's activity) and returns the reply text. The workflow keeps
nothing but a counter and waits until it is terminated. Whatever a durable
fsmflow turn costs beyond this turn is fsmflow's own.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    # Only the activity uses openai; passing it through keeps the workflow sandbox
    # from importing it again for every run (the workflow never calls it).
    import openai

BARE_TIMEOUT = timedelta(seconds=30)
BARE_RETRY = RetryPolicy(maximum_attempts=1)
"""A failed call fails the bench: a retry would hide itself in the figures."""


class BareActivities:
    """The one activity, with the client it reuses (as fsmflow's activity does)."""

    def __init__(self, *, base_url: str, model: str) -> None:
        self._model = model
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key="sk-bench", max_retries=0, timeout=5.0
        )

    @activity.defn(name="bench.bare_call")
    async def bare_call(self, text: str) -> str:
        """One chat-completions call; the reply's content."""
        response = await self._client.chat.completions.create(
            model=self._model, messages=[{"role": "user", "content": text}]
        )
        return response.choices[0].message.content or ""

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.close()


@workflow.defn(name="BareWorkflow")
class BareWorkflow:
    """A counter of messages; each message is one activity."""

    def __init__(self) -> None:
        self._turns = 0

    @workflow.run
    async def run(self) -> None:
        """Wait for messages until terminated."""
        await workflow.wait_condition(lambda: False)

    @workflow.update
    async def send_message(self, text: str) -> str:
        """Ask the model; its reply."""
        self._turns += 1
        return await workflow.execute_activity(
            "bench.bare_call",
            text,
            result_type=str,
            start_to_close_timeout=BARE_TIMEOUT,
            retry_policy=BARE_RETRY,
        )
