"""What durability costs a turn: the pure engine, a durable fsmflow turn against
a bare Temporal turn (``bench.bare``) on the same dev server and scripted model,
the history each writes per turn, and a long run that continues as new.

    .venv/bin/python -m bench.turns [--turns 100] [--rounds 6] [--chain-turns 200] [--stream]

A durable fsmflow turn is an update ``send_message`` on ``AgentWorkflow`` ->
workflow task -> the LLM activity over HTTP -> workflow task (the engine) ->
reply; a bare turn is the same update, activity and HTTP call with nothing else.
Both kinds answer one message at a time, in rounds that alternate which kind goes
first, so the shared machine's noise hits both; compare them as ratios within one
run, never across runs. Like the bare turn's call, the fsmflow turn's model call is
not streamed (``FSMFLOW_LLM_STREAM=false``) unless ``--stream`` is given; what
streaming adds is ``bench.stream``'s to measure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import yaml
from google.protobuf.message import Message
from temporalio import activity
from temporalio import client as temporal_client
from temporalio import worker as temporal_worker
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import (
    BufferedMetricUpdate,
    MetricBuffer,
    MetricBufferDurationFormat,
    Runtime,
    TelemetryConfig,
)
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from bench.bare import BareActivities, BareWorkflow
from fsm.engine import apply_turn, start_run
from fsm.loader import load_file
from fsm.prompt import build_messages
from fsm.turn_schema import turn_schema
from schemas.turn import TurnDecision
from schemas.workflow import AgentWorkflowInput
from tests.conftest import EXAMPLES, make_settings, running_worker
from tests.llm_server import ScriptedLlm, say
from workers.binaries import temporal_cli
from workers.client import send_message
from workers.logging import configure_logging
from workflows.agent import SEARCH_ATTRIBUTES

REPLY = say("ask_name", "Hello!")
"""What the scripted model answers every turn of both kinds: a valid stay."""
MAX_TURNS = 300
"""Turns per measured run: the server suggests continue-as-new at 4,096 events."""
GOAL_RATIO = 1.05
GOAL_BYTES = 5000
"""Per fsmflow turn (5 KB, read as 5,000 bytes)."""


def engine_microseconds(repeat: int = 2000) -> dict[str, float]:
    definition = load_file(EXAMPLES / "form.yaml").definition
    run = start_run(definition)
    turn = TurnDecision(target_state="ask_email", context_update={"name": "Ada"})
    timings = {}
    for name, call in {
        "apply_turn": lambda: apply_turn(definition, run, turn),
        "turn_schema": lambda: turn_schema(definition, run),
        "build_messages": lambda: build_messages(definition, run),
    }.items():
        started = time.perf_counter()
        for _ in range(repeat):
            call()
        timings[name] = (time.perf_counter() - started) / repeat * 1e6
    return timings


# ---------------------------------------------------------------- instruments


class ActivityTimer(temporal_client.Interceptor, temporal_worker.Interceptor):
    """Times every activity body in the workers of the client it is given to."""

    def __init__(self) -> None:
        self.times: dict[tuple[str, str], list[float]] = defaultdict(list)
        """Milliseconds by task queue and activity type."""

    def intercept_activity(
        self, next: temporal_worker.ActivityInboundInterceptor
    ) -> temporal_worker.ActivityInboundInterceptor:
        return _TimedActivity(next, self.times)


class _TimedActivity(temporal_worker.ActivityInboundInterceptor):
    def __init__(
        self,
        next: temporal_worker.ActivityInboundInterceptor,
        times: dict[tuple[str, str], list[float]],
    ) -> None:
        super().__init__(next)
        self._times = times

    async def execute_activity(self, input: temporal_worker.ExecuteActivityInput) -> Any:
        started = time.perf_counter()
        try:
            return await super().execute_activity(input)
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            info = activity.info()
            self._times[info.task_queue, info.activity_type].append(elapsed)


def workflow_task_ms(updates: Sequence[BufferedMetricUpdate], workflow_type: str) -> list[float]:
    """The SDK's own timing of each workflow task (in the worker: received -> completed)."""
    return [
        float(update.value) * 1000
        for update in updates
        if update.metric.name == "temporal_workflow_task_execution_latency"
        and update.attributes.get("workflow_type") == workflow_type
    ]


def payload_bytes(message: Message) -> int:
    """Bytes of the payloads an SDK encoded into ``message`` (inputs, results,
    headers, summaries, search attributes); the rest is Temporal's own record."""
    if message.DESCRIPTOR.full_name == "temporal.api.common.v1.Payload":
        return message.ByteSize()
    total = 0
    for descriptor, value in message.ListFields():
        kind = descriptor.message_type
        if kind is None:
            continue
        if kind.GetOptions().map_entry:
            if kind.fields_by_name["value"].message_type is None:
                continue
            values: Iterable[Message] = value.values()
        elif descriptor.is_repeated:
            values = value
        else:
            values = [value]
        total += sum(payload_bytes(v) for v in values)
    return total


def turn_phases(events: Sequence[HistoryEvent]) -> list[dict[str, float]]:
    """Per turn (events up to an update's completion), from the server's timestamps:
    the whole span, and the time from scheduled to completed of its workflow tasks
    and of its activities (milliseconds)."""
    scheduled: dict[int, float] = {}
    turns: list[dict[str, float]] = []
    current = {"tasks": 0.0, "activities": 0.0}
    begun: float | None = None
    for event in events:
        at = event.event_time.ToNanoseconds() / 1e6
        begun = at if begun is None else begun
        kind = event.event_type
        if kind in (
            EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
            EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
        ):
            scheduled[event.event_id] = at
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            origin = event.workflow_task_completed_event_attributes.scheduled_event_id
            current["tasks"] += at - scheduled[origin]
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            origin = event.activity_task_completed_event_attributes.scheduled_event_id
            current["activities"] += at - scheduled[origin]
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
            turns.append({**current, "span": at - begun})
            current = {"tasks": 0.0, "activities": 0.0}
            begun = None
    return turns


# ---------------------------------------------------------------- the two kinds


@dataclass
class Kind:
    """One kind of turn: how to start its workflow and send it a message."""

    label: str
    workflow_type: str
    task_queue: str
    model: str
    start: Callable[[Client, str], Awaitable[WorkflowHandle[Any, Any]]]
    send: Callable[[Client, str, str], Awaitable[str]]
    latencies: list[float] = field(default_factory=list)
    round_medians: list[float] = field(default_factory=list)
    phases: list[dict[str, float]] = field(default_factory=list)
    task_ms: list[float] = field(default_factory=list)
    activity_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    event_bytes: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    turns: int = 0


def fsmflow_kind(task_queue: str, model: str, max_steps: int) -> Kind:
    # The form agent without its step bound, so every message is a turn.
    definition = yaml.safe_load((EXAMPLES / "form.yaml").read_text())
    definition["max_steps"] = max_steps

    async def start(client: Client, workflow_id: str) -> WorkflowHandle[Any, Any]:
        return await client.start_workflow(
            "AgentWorkflow",
            AgentWorkflowInput(definition=definition),
            id=workflow_id,
            task_queue=task_queue,
        )

    async def send(client: Client, workflow_id: str, text: str) -> str:
        reply = await send_message(client, workflow_id, text)
        if not reply.accepted:
            raise RuntimeError(f"fsmflow did not accept the scripted turn: {reply}")
        return reply.message

    return Kind("durable fsmflow turn", "AgentWorkflow", task_queue, model, start, send)


def bare_kind(task_queue: str, model: str) -> Kind:
    async def start(client: Client, workflow_id: str) -> WorkflowHandle[Any, Any]:
        return await client.start_workflow("BareWorkflow", id=workflow_id, task_queue=task_queue)

    async def send(client: Client, workflow_id: str, text: str) -> str:
        handle = client.get_workflow_handle(workflow_id)
        return await handle.execute_update("send_message", text, result_type=str)

    return Kind("bare Temporal turn", "BareWorkflow", task_queue, model, start, send)


async def terminate(handle: WorkflowHandle[Any, Any]) -> None:
    """Terminate once no workflow task is pending (one cut short logs a core warning)."""
    for _ in range(200):
        if not (await handle.describe()).raw_description.HasField("pending_workflow_task"):
            break
        await asyncio.sleep(0.01)
    await handle.terminate("bench over")


@dataclass
class _Run:
    kind: Kind
    workflow_id: str
    handle: WorkflowHandle[Any, Any]
    before: int = 0
    latencies: list[float] = field(default_factory=list)


async def measure_round(
    client: Client,
    llm: ScriptedLlm,
    kinds: Sequence[Kind],
    turns: int,
    timer: ActivityTimer,
    buffer: MetricBuffer,
) -> None:
    """A fresh run of each kind: one warm-up turn (the history's baseline), then
    ``turns`` timed turns, alternating kinds message by message (one at a time), so
    a burst of noise on the machine hits both; the growth of each run's history
    over the timed turns is what they wrote."""
    runs = []
    for kind in kinds:
        llm.script(kind.model, *[REPLY] * (turns + 1))
        workflow_id = f"bench-{kind.workflow_type}-{uuid.uuid4().hex[:8]}"
        started = await kind.start(client, workflow_id)
        # This run only, even if it had continued as new (checked below).
        handle = client.get_workflow_handle(workflow_id, run_id=started.first_execution_run_id)
        await kind.send(client, workflow_id, "warm-up")
        runs.append(_Run(kind, workflow_id, handle, len((await handle.fetch_history()).events)))
    timer.times.clear()
    buffer.retrieve_updates()
    for i in range(turns):
        for run in runs:
            began = time.perf_counter()
            await run.kind.send(client, run.workflow_id, f"message {i}")
            run.latencies.append((time.perf_counter() - began) * 1000)
    updates = buffer.retrieve_updates()
    for run in runs:
        kind = run.kind
        status = (await run.handle.describe()).status
        events = (await run.handle.fetch_history()).events[run.before :]
        await terminate(run.handle)
        if status != WorkflowExecutionStatus.RUNNING or llm.remaining(kind.model):
            raise RuntimeError(
                f"{kind.label}: the run is {status.name if status else status} with "
                f"{llm.remaining(kind.model)} replies unused; every message must be one "
                "model call in one run"
            )
        phases = turn_phases(events)
        if len(phases) != turns:
            raise RuntimeError(f"{kind.label}: {len(phases)} turns in the history, sent {turns}")
        for event in events:
            name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
            kind.event_bytes[name][0] += event.ByteSize()
            kind.event_bytes[name][1] += payload_bytes(event)
        kind.task_ms.extend(workflow_task_ms(updates, kind.workflow_type))
        for (task_queue, name), times in timer.times.items():
            if task_queue == kind.task_queue:
                kind.activity_ms[name].extend(times)
        kind.latencies.extend(run.latencies)
        kind.round_medians.append(statistics.median(run.latencies))
        kind.phases.extend(phases)
        kind.turns += turns


async def chain_latencies(
    client: Client, llm: ScriptedLlm, turns: int, stream: bool
) -> list[float]:
    """Round trips of ``turns`` messages to one fsmflow run continuing as new every 100."""
    model = f"bench-chain-{uuid.uuid4().hex[:6]}"
    settings = make_settings(
        llm, model, f"bench-{model}", continue_as_new_after=100, llm_stream=stream
    )
    kind = fsmflow_kind(settings.task_queue, model, max_steps=10 * turns)
    llm.script(model, *[REPLY] * turns)
    latencies = []
    async with running_worker(client, settings):
        workflow_id = f"bench-{model}"
        await kind.start(client, workflow_id)
        for i in range(turns):
            started = time.perf_counter()
            await kind.send(client, workflow_id, f"message {i}")
            latencies.append((time.perf_counter() - started) * 1000)
        # The newest run of the chain.
        await terminate(client.get_workflow_handle(workflow_id))
    return latencies


async def durable(
    turns: int, rounds: int, chain_turns: int, stream: bool
) -> tuple[list[Kind], list[float]]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()),
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    llm = ScriptedLlm().start()
    buffer = MetricBuffer(200_000, MetricBufferDurationFormat.SECONDS)
    timer = ActivityTimer()
    client = await Client.connect(
        env.client.service_client.config.target_host,
        namespace=env.client.namespace,
        data_converter=pydantic_data_converter,
        interceptors=[timer],
        runtime=Runtime(telemetry=TelemetryConfig(metrics=buffer)),
    )
    suffix = uuid.uuid4().hex[:6]
    # No continue-as-new in the measured runs, so each history holds every turn.
    settings = make_settings(
        llm,
        f"bench-fsmflow-{suffix}",
        f"bench-fsmflow-{suffix}",
        continue_as_new_after=10**6,
        llm_stream=stream,
    )
    fsmflow = fsmflow_kind(settings.task_queue, settings.models["default"], 10 * (turns + 1))
    bare = bare_kind(f"bench-bare-{suffix}", f"bench-bare-{suffix}")
    bare_activities = BareActivities(base_url=llm.url, model=bare.model)
    try:
        async with AsyncExitStack() as stack:
            # Both workers poll throughout, so each kind runs beside the same idle worker.
            await stack.enter_async_context(running_worker(client, settings))
            await stack.enter_async_context(
                Worker(
                    client,
                    task_queue=bare.task_queue,
                    workflows=[BareWorkflow],
                    activities=[bare_activities.bare_call],
                )
            )
            for number in range(rounds):
                order = (bare, fsmflow) if number % 2 == 0 else (fsmflow, bare)
                await measure_round(client, llm, order, turns, timer, buffer)
        chain = await chain_latencies(client, llm, chain_turns, stream)
    finally:
        await bare_activities.close()
        llm.stop()
        await env.shutdown()
    return [bare, fsmflow], chain


# ---------------------------------------------------------------- report


def p95(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def report(engine: dict[str, float], kinds: list[Kind], chain: list[float]) -> None:
    bare, fsmflow = kinds
    rounds = len(bare.round_medians)
    print("pure core, form example (microseconds per call):")
    for name, value in engine.items():
        print(f"  {name:<15} {value:8.1f} us")

    print(
        f"turn round trip, one message at a time, {rounds} rounds of "
        f"{bare.turns // rounds} turns per kind, the kinds alternating message by message:"
    )
    for kind in kinds:
        print(
            f"  {kind.label:<21} median {statistics.median(kind.latencies):6.1f} ms"
            f"   p95 {p95(kind.latencies):6.1f} ms"
        )
    ratio = statistics.median(fsmflow.latencies) / statistics.median(bare.latencies)
    print(f"  {fsmflow.label} / {bare.label}: {ratio:.2f}x (goal <= {GOAL_RATIO:.2f}x)")
    per_round = (f / b for f, b in zip(fsmflow.round_medians, bare.round_medians, strict=True))
    print("  the same ratio per round:", " ".join(f"{r:.2f}x" for r in per_round))

    def phase(kind: Kind, key: str) -> float:
        return statistics.median(p[key] for p in kind.phases)

    rows = [
        ("round trip at the client", lambda k: statistics.median(k.latencies)),
        ("server: update received -> completed", lambda k: phase(k, "span")),
        ("  workflow tasks, scheduled -> completed", lambda k: phase(k, "tasks")),
        ("  activities, scheduled -> completed", lambda k: phase(k, "activities")),
    ]
    print("where a turn's time goes (medians in ms, server times from history timestamps):")
    print(f"  {'':<46} {'bare':>8} {'fsmflow':>8}")
    for title, figure in rows:
        print(f"  {title:<46} {figure(bare):8.1f} {figure(fsmflow):8.1f}")
    tasks = [len(k.task_ms) / k.turns for k in kinds]
    print(
        f"  {'worker running one workflow task (SDK metric)':<46} "
        f"{statistics.median(bare.task_ms):8.1f} {statistics.median(fsmflow.task_ms):8.1f}"
        f"   ({tasks[0]:.1f} / {tasks[1]:.1f} per turn)"
    )
    for name in sorted({*bare.activity_ms, *fsmflow.activity_ms}):
        cells = [
            f"{statistics.median(k.activity_ms[name]):8.1f}" if k.activity_ms[name] else f"{'-':>8}"
            for k in kinds
        ]
        counts = [len(k.activity_ms[name]) / k.turns for k in kinds]
        print(
            f"  {'worker running activity ' + name:<46} {cells[0]} {cells[1]}"
            f"   ({counts[0]:.1f} / {counts[1]:.1f} per turn)"
        )

    per_turn = [sum(s[0] for s in k.event_bytes.values()) / k.turns for k in kinds]
    print(
        "history bytes per turn (protobuf: sum of event.ByteSize() over the events the "
        "timed turns added after the warm-up turn, divided by their number):"
    )
    print(
        f"  bare {per_turn[0]:,.0f} B   fsmflow {per_turn[1]:,.0f} B   "
        f"fsmflow / bare: {per_turn[1] / per_turn[0]:.2f}x   (goal <= {GOAL_BYTES:,} B per "
        "fsmflow turn)"
    )
    print(f"  {'by event type, per turn':<46} {'bare':>8} {'fsmflow':>8}   payloads (bare/fsmflow)")
    names = sorted(
        {*bare.event_bytes, *fsmflow.event_bytes},
        key=lambda n: -fsmflow.event_bytes.get(n, [0, 0])[0],
    )
    for name in names:
        b = [v / bare.turns for v in bare.event_bytes.get(name, [0, 0])]
        f = [v / fsmflow.turns for v in fsmflow.event_bytes.get(name, [0, 0])]
        print(f"  {name:<46} {b[0]:8.0f} {f[0]:8.0f}   {b[1]:5.0f} / {f[1]:5.0f}")

    per_turn_core = sum(engine.values()) / 1000
    median = statistics.median(chain)
    print(f"durable fsmflow turn, {len(chain)} turns in one run (continue-as-new every 100):")
    print(
        f"  median {median:6.1f} ms   p95 {p95(chain):6.1f} ms   "
        f"mean {statistics.mean(chain):6.1f} ms"
    )
    print(
        f"  pure core share of a turn: {per_turn_core / median:.1%} "
        f"(durability and transport: {median / per_turn_core:.0f}x the core)"
    )


def quiet_production_logging() -> None:
    """Log as a worker does in production (JSON lines), but into /dev/null so the
    figures stay readable; warnings still reach stderr."""
    configure_logging(fmt="json", level="INFO")
    root = logging.getLogger()
    (handler,) = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    warnings = logging.StreamHandler(sys.stderr)
    warnings.setFormatter(handler.formatter)
    warnings.setLevel(logging.WARNING)
    handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - for the process's life
    root.addHandler(warnings)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=100, help="turns per kind per round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--chain-turns", type=int, default=200)
    parser.add_argument("--stream", action="store_true", help="fsmflow turns stream their reply")
    args = parser.parse_args()
    if not 2 <= args.turns <= MAX_TURNS or args.rounds < 1 or args.chain_turns < 2:
        parser.error(f"--turns from 2 to {MAX_TURNS}, --rounds >= 1, --chain-turns >= 2")
    quiet_production_logging()
    engine = engine_microseconds()
    kinds, chain = asyncio.run(durable(args.turns, args.rounds, args.chain_turns, args.stream))
    report(engine, kinds, chain)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # temporalio may abort at interpreter exit (sdk-python#300)
