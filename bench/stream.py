"""What streaming a reply costs a conversation turn: history written, signals, polls.

    .venv/bin/python -m bench.stream [--turns 20]

Conversation turns on a real dev server with the scripted model, one message at
a time, in four ways: replies not streamed (``FSMFLOW_LLM_STREAM=false``);
streamed, the model answering at once; streamed, the model taking about a second
(a 400-character message in pieces of 8 characters every 20 ms); and the last
with a subscriber following the run's stream. For each, per turn: the history
events and bytes the turns added (protobuf ``ByteSize``), the publish signals
and poll updates among them, the delta events a subscriber would read, and the
round trip at the client (timings are the shared machine's: compare within one
run). History figures do not depend on the machine's load; signal counts depend
on the model's pace (one per ``stream_interval``, 150 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from schemas.workflow import AgentWorkflowInput
from tests.conftest import make_settings, running_worker
from tests.llm_server import ScriptedLlm, say
from workers.binaries import temporal_cli
from workers.client import send_message
from workers.events import run_events
from workflows.agent import SEARCH_ATTRIBUTES

CHAT: dict[str, Any] = {
    "name": "chat",
    "initial_state": "talk",
    "max_steps": 10_000,
    "states": {"talk": {"transitions": [{"target": "bye"}]}, "bye": {"terminal": True}},
}
MESSAGE = ("A reply of some length, as a model writes it. " * 9)[:400]


@dataclass
class Way:
    label: str
    stream: bool
    paced: bool
    subscriber: bool


WAYS = [
    Way("not streamed", stream=False, paced=False, subscriber=False),
    Way("streamed, model at once", stream=True, paced=False, subscriber=False),
    Way("streamed, model ~1 s", stream=True, paced=True, subscriber=False),
    Way("streamed, model ~1 s, subscriber", stream=True, paced=True, subscriber=True),
]


@dataclass
class Figures:
    events: float
    bytes: float
    signals: float
    polls: float
    deltas: float
    median_ms: float


async def measure(client: Client, llm: ScriptedLlm, way: Way, turns: int) -> Figures:
    model = f"bench-stream-{uuid.uuid4().hex[:6]}"
    settings = make_settings(llm, model, model, llm_stream=way.stream, continue_as_new_after=10**6)
    step = say("talk", MESSAGE)
    if way.paced:
        step = {**step, "chunk": 8, "chunk_delay": 0.02}
    llm.script(model, *[step] * (turns + 1))
    deltas = 0
    latencies = []
    async with running_worker(client, settings):
        workflow_id = f"bench-{model}"
        handle = await client.start_workflow(
            "AgentWorkflow",
            AgentWorkflowInput(definition=CHAT),
            id=workflow_id,
            task_queue=settings.task_queue,
        )
        # A warm-up turn: the history counted is what the timed turns added.
        await send_message(client, workflow_id, "warm-up", update_id="w")
        before = len((await handle.fetch_history()).events)

        async def follow() -> None:
            nonlocal deltas
            async for _, event in run_events(client, workflow_id):
                deltas += event.kind == "delta"

        follower = asyncio.create_task(follow()) if way.subscriber else None
        for i in range(turns):
            started = time.perf_counter()
            await send_message(client, workflow_id, f"message {i}", update_id=f"m{i}")
            latencies.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.5)  # the subscriber's last poll
        history = await handle.fetch_history()
        await handle.terminate("bench over")
        if follower is not None:
            follower.cancel()
    added = history.events[before:]
    added = [e for e in added if e.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED]
    signals = sum(e.HasField("workflow_execution_signaled_event_attributes") for e in added)
    polls = sum(
        e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
        == "__temporal_workflow_stream_poll"
        for e in added
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    )
    return Figures(
        events=len(added) / turns,
        bytes=sum(e.ByteSize() for e in added) / turns,
        signals=signals / turns,
        polls=polls / turns,
        deltas=deltas / turns,
        median_ms=statistics.median(latencies),
    )


async def main(turns: int) -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()),
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    llm = ScriptedLlm().start()
    try:
        results = [(way, await measure(env.client, llm, way, turns)) for way in WAYS]
    finally:
        llm.stop()
        await env.shutdown()
    print(f"conversation turns, {turns} per way, a {len(MESSAGE)}-character reply each (per turn):")
    header = ("", "events", "bytes", "signals", "polls", "deltas", "round trip")
    print(f"  {header[0]:<34}" + "".join(f"{h:>11}" for h in header[1:]))
    for way, f in results:
        print(
            f"  {way.label:<34}{f.events:11.1f}{f.bytes:11,.0f}{f.signals:11.1f}"
            f"{f.polls:11.1f}{f.deltas:11.1f}{f.median_ms:9.0f} ms"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=20)
    asyncio.run(main(parser.parse_args().turns))
