"""What a tool call costs outside the tool: a durable tool step (model activity,
then the run_tool activity) against a model-only step, the effect ledger per
effect, and passing a multi-megabyte result between tools as an artifact; each
store on SQLite and files (one worker's default) and on PostgreSQL
(``FSMFLOW_STORE_URL``, shared by every worker).

    .venv/bin/python -m bench.tools [--steps 60] [--rounds 3]

The bench starts its own PostgreSQL server (``tests.postgres.PostgresServer``)
with PostgreSQL's durability defaults, as a production server has them: fsync
and synchronous commits, like the SQLite ledger's (WAL, synchronous=FULL).
Every kind runs once per round, each round starting two kinds later, so drift
on the shared, noisy machine hits every kind alike: compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.artifacts import FileArtifactStore
from activities.ledger import LedgerBase, SqliteLedger
from activities.postgres import PostgresArtifactStore, PostgresLedger, open_pool
from bench.turns import quiet_production_logging
from fsm.tools import ArtifactStore
from schemas.workflow import AgentResult, AgentWorkflowInput
from tests.conftest import RESEARCH_TOOLS, make_settings, running_worker
from tests.llm_server import ScriptedLlm, call, move
from tests.postgres import PostgresServer
from workers.binaries import temporal_cli
from workflows.agent import SEARCH_ATTRIBUTES

BENCH_TOOLS = Path(__file__).parent / "bench_tools.py"
SPY_TOOLS = Path(__file__).parents[1] / "tests" / "workflows" / "spy_tools.py"
MIB = 1024 * 1024
ARTIFACT_MIB = 8
WAIT_MS = 30
"""How long the calibration tool ``wait`` waits."""
LEDGER_EFFECTS = 300
"""Effects recorded per round when timing a ledger on its own."""
RAW_ARTIFACTS = 5
"""Artifacts put and read back per store and payload per round, timing a store on its own."""

KINDS = {
    "stay": "model only (stay)",
    "noop": "model + noop tool",
    "wait": f"model + tool waiting {WAIT_MS} ms",
    "effect_sqlite": "model + ledger effect, SQLite",
    "effect_postgres": "model + ledger effect, PostgreSQL",
    "artifact_files": f"{ARTIFACT_MIB} MiB artifact, file store",
    "artifact_postgres": f"{ARTIFACT_MIB} MiB artifact, PostgreSQL",
}
"""What each kind of run measures, in the order of the first round."""


def agent(steps: int) -> dict[str, Any]:
    return {
        "name": "bench",
        "mode": "autonomous",
        "initial_state": "work",
        "max_steps": steps + 5,
        "states": {
            "work": {
                "tools": ["noop", "wait", "effect", "noise", "measure"],
                "transitions": [{"target": "done"}],
            },
            "done": {"terminal": True},
        },
    }


def script(kind: str, steps: int) -> list[Any]:
    """What the model answers in a run of ``kind``: ``steps`` steps, then the end.

    An artifact run alternates a tool that returns 8 MiB of random bytes (stored
    as an artifact of its step) with a tool that is handed that artifact and reads it.
    """
    if kind == "stay":
        return [move("work")] * steps
    if kind == "noop":
        return [call("noop")] * steps
    if kind == "wait":
        return [call("wait", milliseconds=WAIT_MS)] * steps
    if kind.startswith("effect"):
        return [call("effect")] * steps
    pairs = [
        [call("noise", megabytes=ARTIFACT_MIB), call("measure", blob=f"artifact:{step}/noise.bin")]
        for step in range(0, steps, 2)
    ]
    return [answer for pair in pairs for answer in pair]


async def ledger_milliseconds(ledger: LedgerBase, count: int = LEDGER_EFFECTS) -> float:
    """Milliseconds per effect recorded through ``once`` (a lookup, a start, a finish)."""
    prefix = uuid.uuid4().hex
    started = time.perf_counter()
    for i in range(count):
        await ledger.once(f"{prefix}-{i}", lambda: "done", tool="bench")
    return (time.perf_counter() - started) / count * 1000


PAYLOADS = {
    "random": ("random bytes", lambda: os.urandom(ARTIFACT_MIB * MIB)),
    "text": ("repetitive text", lambda: b"0123456789abcdef" * (ARTIFACT_MIB * MIB // 16)),
}
"""What the stores are timed with on their own: bytes nothing compresses (what the
tool steps pass), and text that PostgreSQL compresses (TOAST's pglz: 8 MiB to 96 KB)."""


async def put_get_milliseconds(store: ArtifactStore, path: str, data: bytes) -> tuple[float, float]:
    """Milliseconds to put ``data`` as an artifact, and to get it back."""
    started = time.perf_counter()
    await store.put("bench/raw", path, data)
    put = time.perf_counter() - started
    started = time.perf_counter()
    back = await store.get("bench/raw", path)
    get = time.perf_counter() - started
    assert back == data
    return put * 1000, get * 1000


async def run_steps(
    env: WorkflowEnvironment, llm: ScriptedLlm, kind: str, steps: int, **stores: Any
) -> float:
    """Wall time per step of an autonomous run of ``kind`` (its steps and the final move)."""
    model = f"bench-{uuid.uuid4().hex[:6]}"
    answers = script(kind, steps)
    llm.script(model, *answers, move("done"))
    settings = make_settings(
        llm,
        model,
        f"bench-{model}",
        tool_modules_spec=f"{RESEARCH_TOOLS},{BENCH_TOOLS},{SPY_TOOLS}",
        **stores,
    )
    async with running_worker(env.client, settings):
        started = time.perf_counter()
        result = await env.client.execute_workflow(
            "AgentWorkflow",
            AgentWorkflowInput(definition=agent(len(answers))),
            id=f"bench-{model}",
            task_queue=settings.task_queue,
            result_type=AgentResult,
        )
        elapsed = time.perf_counter() - started
    assert result.state == "done", result.end_reason
    if kind.startswith("artifact"):
        # Every reading tool got the whole artifact (a missing one is a message to the model).
        whole = f'measure: {{"bytes":{ARTIFACT_MIB * MIB},'
        last = [request["messages"][-1]["content"] for request in llm.requests(model)]
        read = sum(whole in message for message in last)
        assert read == len(answers) // 2, f"{kind}: {read} artifacts read of {len(answers) // 2}"
    return elapsed / (len(answers) + 1) * 1000


async def measure(steps: int, rounds: int, server: PostgresServer) -> dict[str, list[float]]:
    """Every figure once per round, the kinds in a different order each round."""
    server.migrate(server.url)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()),
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    llm = ScriptedLlm().start()
    pool = await open_pool(server.url, max_size=2)
    os.environ.setdefault("SPY_LOG", os.devnull)
    figures: dict[str, list[float]] = defaultdict(list)
    try:
        with tempfile.TemporaryDirectory(prefix="fsmflow-bench-") as directory:
            root = Path(directory)
            sqlite = {"tool_ledger": root / "ledger.sqlite3", "artifacts_dir": root / "artifacts"}
            postgres = {**sqlite, "store_url": server.url}
            ledgers: dict[str, Callable[[], LedgerBase]] = {
                "sqlite": lambda: SqliteLedger(root / "raw.sqlite3"),
                "postgres": lambda: PostgresLedger(pool),
            }
            stores: dict[str, ArtifactStore] = {
                "files": FileArtifactStore(root / "raw"),
                "postgres": PostgresArtifactStore(pool),
            }
            kinds = list(KINDS)
            for round_ in range(rounds):
                for name, ledger in ledgers.items():
                    figures[f"ledger_{name}"].append(await ledger_milliseconds(ledger()))
                payloads = {payload: make() for payload, (_, make) in PAYLOADS.items()}
                for i in range(RAW_ARTIFACTS):  # the stores in turn, as the kinds of steps
                    for payload, data in payloads.items():
                        for name, store in stores.items():
                            path = f"{round_}-{i}/{payload}.bin"
                            put, get = await put_get_milliseconds(store, path, data)
                            figures[f"put_{payload}_{name}"].append(put)
                            figures[f"get_{payload}_{name}"].append(get)
                start = 2 * round_ % len(kinds)
                for kind in kinds[start:] + kinds[:start]:
                    chosen = postgres if kind.endswith("postgres") else sqlite
                    figures[kind].append(await run_steps(env, llm, kind, steps, **chosen))
                    # Each run starts with empty artifact stores (neither grows round by round).
                    shutil.rmtree(root / "artifacts", ignore_errors=True)
                    shutil.rmtree(root / "raw", ignore_errors=True)
                    async with pool.connection() as conn:
                        await conn.execute("TRUNCATE fsmflow_artifacts, fsmflow_artifact_chunks")
        return figures
    finally:
        await pool.close()
        llm.stop()
        await env.shutdown()


def report(figures: dict[str, list[float]], *, steps: int, rounds: int) -> None:
    median = {name: statistics.median(values) for name, values in figures.items()}
    noop = median["noop"]
    print(
        f"autonomous steps, {steps} per run and the final move, median of {rounds} rounds "
        "(ms per step):"
    )
    for kind, label in KINDS.items():
        if kind == "stay":
            ratio = ""
        elif kind == "noop":
            ratio = f"   ({noop / median['stay']:.2f}x a model-only step)"
        else:
            ratio = f"   ({median[kind] / noop:.2f}x a noop tool step)"
        print(f"  {label:<36} {median[kind]:7.1f} ms{ratio}")
    print(
        f"  (an artifact run: {steps // 2} pairs of a tool returning {ARTIFACT_MIB} MiB of "
        "random bytes and one reading them)"
    )
    print("  the same ratios to the noop tool step, per round:")
    for kind in list(KINDS)[2:]:
        per_round = " ".join(
            f"{a / b:.2f}x" for a, b in zip(figures[kind], figures["noop"], strict=True)
        )
        print(f"    {KINDS[kind]:<34} {per_round}")
    sqlite, postgres = median["ledger_sqlite"], median["ledger_postgres"]
    print(f"effect ledger alone, {LEDGER_EFFECTS} effects, median of {rounds} rounds:")
    print(f"  SQLite (WAL, a file)       {sqlite:6.2f} ms per recorded effect")
    print(
        f"  PostgreSQL                 {postgres:6.2f} ms per recorded effect   "
        f"({postgres / sqlite:.2f}x SQLite)"
    )
    print(
        f"{ARTIFACT_MIB} MiB artifact alone, put then get (median of {RAW_ARTIFACTS * rounds}: "
        f"{RAW_ARTIFACTS} per round, the stores in turn):"
    )
    print(f"{'':32}{'put':<24}{'get':<24}put+get")
    for payload, (what, _) in PAYLOADS.items():
        both = {}
        for store, label in (("files", "file store"), ("postgres", "PostgreSQL")):
            put, get = median[f"put_{payload}_{store}"], median[f"get_{payload}_{store}"]
            both[store] = put + get
            ratio = f"  {both[store] / both['files']:.2f}x files" if store == "postgres" else ""
            print(
                f"  {what + ', ' + label:<28} {speed(put)}   {speed(get)}   "
                f"{both[store]:6.1f} ms{ratio}"
            )


def speed(milliseconds: float) -> str:
    """``12.3 ms  650 MiB/s`` for an artifact moved in ``milliseconds``."""
    return f"{milliseconds:5.1f} ms {ARTIFACT_MIB * 1000 / milliseconds:6,.0f} MiB/s"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60, help="steps per run (even)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    steps = args.steps + args.steps % 2
    quiet_production_logging()
    server = PostgresServer(durable=True).start()
    try:
        figures = asyncio.run(measure(steps, args.rounds, server))
    finally:
        server.stop()
    report(figures, steps=steps, rounds=args.rounds)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # temporalio may abort at interpreter exit (sdk-python#300)
