"""What a tool call costs outside the tool: a durable tool step (model activity,
then the run_tool activity) against a model-only step, the effect ledger per
effect, and passing a multi-megabyte result between tools as an artifact.

    .venv/bin/python -m bench.tools [--steps 100]

Prints figures and ratios; the machine is shared and noisy, so compare within a run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.ledger import SqliteLedger
from bench.turns import quiet_production_logging
from schemas.workflow import AgentResult, AgentWorkflowInput
from tests.conftest import RESEARCH_TOOLS, make_settings, running_worker
from tests.llm_server import ScriptedLlm, call, move
from workers.binaries import temporal_cli
from workflows.agent import SEARCH_ATTRIBUTES

BENCH_TOOLS = Path(__file__).parent / "bench_tools.py"
SPY_TOOLS = Path(__file__).parents[1] / "tests" / "workflows" / "spy_tools.py"


def agent(steps: int) -> dict[str, Any]:
    return {
        "name": "bench",
        "mode": "autonomous",
        "initial_state": "work",
        "max_steps": steps + 5,
        "states": {
            "work": {
                "tools": ["noop", "effect", "big", "measure"],
                "transitions": [{"target": "done"}],
            },
            "done": {"terminal": True},
        },
    }


async def ledger_milliseconds(count: int = 300) -> float:
    with tempfile.TemporaryDirectory() as directory:
        ledger = SqliteLedger(Path(directory) / "ledger.sqlite3")
        started = time.perf_counter()
        for i in range(count):
            await ledger.once(f"key-{i}", lambda: "done", tool="bench")
        return (time.perf_counter() - started) / count * 1000


async def run_steps(env: WorkflowEnvironment, llm: ScriptedLlm, steps: list[Any]) -> float:
    """Wall time per step of an autonomous run that takes ``steps`` then ends."""
    model = f"bench-{uuid.uuid4().hex[:6]}"
    llm.script(model, *steps, move("done"))
    settings = make_settings(
        llm,
        model,
        f"bench-{model}",
        tool_modules_spec=f"{RESEARCH_TOOLS},{BENCH_TOOLS},{SPY_TOOLS}",
    )
    async with running_worker(env.client, settings):
        started = time.perf_counter()
        result = await env.client.execute_workflow(
            "AgentWorkflow",
            AgentWorkflowInput(definition=agent(len(steps))),
            id=f"bench-{model}",
            task_queue=settings.task_queue,
            result_type=AgentResult,
        )
        elapsed = time.perf_counter() - started
    assert result.state == "done", result.end_reason
    return elapsed / (len(steps) + 1) * 1000


async def durable(steps: int) -> dict[str, float]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()),
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    llm = ScriptedLlm().start()
    os.environ.setdefault("SPY_LOG", os.devnull)
    try:
        figures: dict[str, list[float]] = {"stay": [], "noop": [], "effect": []}
        for _ in range(3):  # interleaved rounds, so drift hits every kind alike
            figures["stay"].append(await run_steps(env, llm, [move("work")] * steps))
            figures["noop"].append(await run_steps(env, llm, [call("noop")] * steps))
            figures["effect"].append(await run_steps(env, llm, [call("effect")] * steps))
        big = [call("big", megabytes=8), call("measure", blob="artifact:0/big.txt")]
        artifact = await run_steps(env, llm, big)
        medians = {k: statistics.median(v) for k, v in figures.items()}
        medians["artifact_8mb"] = artifact
        return medians
    finally:
        llm.stop()
        await env.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    quiet_production_logging()
    ledger = asyncio.run(ledger_milliseconds())
    figures = asyncio.run(durable(args.steps))
    print(f"autonomous steps, {args.steps} per run, median of 3 runs (ms per step):")
    print(f"  model only (stay)          {figures['stay']:7.1f} ms")
    print(
        f"  model + noop tool          {figures['noop']:7.1f} ms   "
        f"({figures['noop'] / figures['stay']:.2f}x a model-only step)"
    )
    print(
        f"  model + ledger effect      {figures['effect']:7.1f} ms   "
        f"({figures['effect'] / figures['noop']:.2f}x a noop tool step)"
    )
    print(f"effect ledger (SQLite, WAL): {ledger:.2f} ms per recorded effect")
    print(
        f"8 MiB result stored as an artifact and read back by the next tool: "
        f"{figures['artifact_8mb']:.1f} ms per step (3 steps)"
    )


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # temporalio may abort at interpreter exit (sdk-python#300)
