"""A conversation reply's text on the run's stream while the model generates it.

The ``fsmflow.llm_turn`` activity asks the model with ``stream=True``. A turn is a
JSON object whose message comes last (the turn schema's property order, which a
constrained decoder follows): ``MessageTap`` parses the growing text with jiter's
partial mode and gives out the message's text only once the keys and the move
before it are complete and the engine would apply them (the activity's check,
``fsm.judge.move_decided``), so the stream never shows the text of a move that
is then rejected for what it decided. ``ReplyStream`` publishes those pieces as
``delta`` events through a ``WorkflowStreamClient`` (each publish is one signal
to the workflow, so pieces are coalesced), and a ``reset`` when what it
published is void: a retried attempt, a reply found invalid after it began to
stream. Publishing is a view: it never fails or changes a model call (the call's
end waits, a bounded time, for its last pieces; a failure to publish is logged
and publishing stops).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import jiter
from temporalio.client import Client
from temporalio.contrib.workflow_streams import TopicHandle, WorkflowStreamClient

from fsm import events
from schemas.events import RUN_TOPIC, RunEvent

MESSAGE_KEY = "message"
FLUSH_SECONDS = 5.0
"""How long sending what is buffered may take (the workflow may be gone); then
publishing stops for the call."""


class MessageTap:
    """The message of a turn being generated, once the move before it is decided.

    Args:
        before: The keys that precede the message in the turn schema (all required):
            the message is shown only when each of them is complete.
        decided: Whether the reply so far (its complete keys, the message still
            growing) makes a move the engine applies; asked once, when the message
            begins. A move it refuses is never shown: the whole reply goes to the
            workflow, which judges it and re-asks.
    """

    def __init__(self, before: Sequence[str], decided: Callable[[dict[str, Any]], bool]) -> None:
        self._before = frozenset(before)
        self._decided = decided
        self._buffer = ""
        self._verdict: bool | None = None
        self._text = ""

    @property
    def text(self) -> str:
        """The message given out so far."""
        return self._text

    def feed(self, piece: str) -> str:
        """Take the next piece of the reply; return the message text it adds (maybe none)."""
        self._buffer += piece
        if self._verdict is False or f'"{MESSAGE_KEY}"' not in self._buffer:
            return ""
        try:
            # A partial document: the last value may be cut anywhere, a string is
            # kept up to its last complete character; every value before it is whole.
            partial = jiter.from_json(self._buffer.encode(), partial_mode="trailing-strings")
        except ValueError:
            return ""
        if not isinstance(partial, dict) or next(reversed(partial), None) != MESSAGE_KEY:
            return ""
        message = partial[MESSAGE_KEY]
        if not isinstance(message, str):
            return ""
        if self._verdict is None:
            if not self._before <= partial.keys():
                self._verdict = False  # written out of order: not streamed (its reply is)
                return ""
            self._verdict = self._decided(partial)
            if not self._verdict:
                return ""
        if not message.startswith(self._text):
            return ""  # cannot happen with a well-formed prefix; the reply event has it all
        added, self._text = message[len(self._text) :], message
        return added


class ReplyStream:
    """Publishes one model call's message on the run's stream, coalesced.

    The first piece goes at once; later ones at most every ``interval`` (pieces in
    between are joined), so a reply costs a few signals, not one per token. A
    publish is sent in the background (the model's next pieces are read
    meanwhile) and ``aclose`` waits until everything is in, so a subscriber sees
    a turn's deltas before its reply. The stream client's own background flusher
    is not used: cancelling it right after a forced flush can be lost on Python
    3.11 (``asyncio.wait_for`` returns the finished wait instead), which held the
    end of every call for the whole close bound. The client is made on the first
    publish (an autonomous run's calls publish nothing). ``streamed`` says
    whether pieces stand that no reset withdrew.

    Args:
        turn: The model turn on the stream (``<step>.<call>``).
        message_id: The update id of the message the turn answers.
        step: The run's step.
        interval: Least time between two publishes of pieces.
        connect: Makes the stream client (of the activity's workflow run).
        warn: Logs a failure to publish (once); publishing then stops.
    """

    def __init__(
        self,
        *,
        turn: str,
        message_id: str,
        step: int,
        interval: float,
        connect: Callable[[], WorkflowStreamClient],
        warn: Callable[[str], None],
    ) -> None:
        self._turn = turn
        self._message_id = message_id
        self._step = step
        self._interval = interval
        self._connect = connect
        self._warn = warn
        self._client: WorkflowStreamClient | None = None
        self._topic: TopicHandle[Any] | None = None
        self._sending: asyncio.Task[None] | None = None
        self._queued = 0
        self._sent = 0
        self._broken = False
        self._pending = ""
        self._last = 0.0
        self.streamed = False

    async def delta(self, text: str) -> None:
        """Publish the next piece of the message (now, or with the next ones)."""
        if not text:
            return
        self._pending += text
        now = time.monotonic()
        if self.streamed and now - self._last < self._interval:
            return
        pending, self._pending = self._pending, ""
        self.streamed, self._last = True, now
        self._publish(
            events.delta(self._turn, pending, message_id=self._message_id, step=self._step)
        )

    async def reset(self, why: str) -> None:
        """Withdraw what this turn published (also on an attempt that published nothing yet)."""
        self._pending = ""
        self.streamed = False
        self._publish(events.reset(self._turn, why, message_id=self._message_id, step=self._step))

    async def aclose(self) -> None:
        """Publish what is pending and wait (a bounded time) until the workflow has it all."""
        if self._pending:
            pending, self._pending = self._pending, ""
            self._publish(
                events.delta(self._turn, pending, message_id=self._message_id, step=self._step)
            )
        if self._sending is not None:
            await self._sending
        if self._sent < self._queued:
            await self._send()

    def _publish(self, event: RunEvent) -> None:
        if self._broken:
            return
        try:
            if self._client is None:
                self._client = self._connect()
                self._topic = self._client.topic(RUN_TOPIC)
            assert self._topic is not None
            self._topic.publish(events.wire(event))
            self._queued += 1
        except Exception as exc:  # noqa: BLE001 - a view: never fail the call
            self._fail(exc)
            return
        if self._sending is None or self._sending.done():
            self._sending = asyncio.create_task(self._send())

    async def _send(self) -> None:
        """Signal what is buffered, and what is added meanwhile, to the workflow."""
        assert self._client is not None
        while self._sent < self._queued and not self._broken:
            # A flush sends at least what was buffered when it began.
            queued = self._queued
            try:
                await asyncio.wait_for(self._client.flush(), FLUSH_SECONDS)
            except Exception as exc:  # noqa: BLE001 - a view: never fail the call
                self._fail(exc)
            self._sent = queued

    def _fail(self, error: BaseException) -> None:
        if not self._broken:
            self._broken = True
            self._warn(f"{type(error).__name__}: {str(error)[:200]}")


def stream_client(client: Client, workflow_id: str, run_id: str) -> WorkflowStreamClient:
    """A client publishing to the stream of one workflow run.

    ``WorkflowStreamClient.from_within_activity`` targets the newest run of the
    workflow id; the call's own run is named here, so a late flush never lands in
    another run that reuses the id (a run cannot continue as new while its call
    runs: it waits for its handlers first).
    """
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    return WorkflowStreamClient(handle, client=client)
