"""How much a turn costs outside the model: the pure engine, and a full durable
turn (update -> workflow -> LLM activity over HTTP -> engine -> reply) on a real
Temporal dev server with a scripted model that answers at once.

    .venv/bin/python -m bench.turns [--turns 200]

Prints figures; the machine is shared and noisy, so read them as orders of
magnitude and compare ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid

import yaml
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

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
from workflows.agent import SEARCH_ATTRIBUTES


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


async def durable_turns(turns: int) -> list[float]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()),
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    llm = ScriptedLlm().start()
    model = f"bench-{uuid.uuid4().hex[:6]}"
    llm.script(model, *[say("ask_name", "Hello!") for _ in range(turns)])
    settings = make_settings(llm, model, f"bench-{model}")
    latencies = []
    try:
        async with running_worker(env.client, settings):
            # The form agent without its step bound, so every message is a turn.
            definition = yaml.safe_load((EXAMPLES / "form.yaml").read_text())
            definition["max_steps"] = 10 * turns
            handle = await env.client.start_workflow(
                "AgentWorkflow",
                AgentWorkflowInput(definition=definition),
                id=f"bench-{model}",
                task_queue=settings.task_queue,
            )
            for i in range(turns):
                started = time.perf_counter()
                await send_message(env.client, handle.id, f"message {i}")
                latencies.append((time.perf_counter() - started) * 1000)
            await env.client.get_workflow_handle(handle.id).terminate("bench over")
    finally:
        llm.stop()
        await env.shutdown()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=200)
    args = parser.parse_args()
    engine = engine_microseconds()
    print("pure core, form example (microseconds per call):")
    for name, value in engine.items():
        print(f"  {name:<15} {value:8.1f} us")
    latencies = asyncio.run(durable_turns(args.turns))
    median = statistics.median(latencies)
    p95 = sorted(latencies)[int(len(latencies) * 0.95) - 1]
    per_turn_core = sum(engine.values()) / 1000
    print(f"durable turn round trip, {args.turns} turns (continue-as-new every 100):")
    print(
        f"  median {median:6.1f} ms   p95 {p95:6.1f} ms   mean {statistics.mean(latencies):6.1f} ms"
    )
    print(
        f"  pure core share of a turn: {per_turn_core / median:.1%} "
        f"(durability and transport: {median / per_turn_core:.0f}x the core)"
    )


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # temporalio may abort at interpreter exit (sdk-python#300)
