"""Runs on the embedded llama.cpp model (SmolLM2-135M): structure holds even when
the model is weak. Skipped when the local model wheels are not installed."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest
from temporalio.client import Client

from fsm.loader import load_file
from schemas.run import TraceEntry
from tests.conftest import EXAMPLES, ROOT, free_port, make_settings, running_worker
from tests.llm_server import ScriptedLlm
from tests.workflows.helpers import final_result, send, start, wait_for_status
from workers import local_llm
from workers.demo import illegal_moves
from workers.settings import DEFAULT_LOCAL_MODEL

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not local_llm.available(), reason="embedded model not installed"),
]


@pytest.fixture(scope="module")
def local_model_url() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "workers.local_llm", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
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


async def test_form_conversation_on_the_embedded_model(
    client: Client, llm: ScriptedLlm, local_model_url: str, task_queue: str
) -> None:
    settings = make_settings(
        llm,
        DEFAULT_LOCAL_MODEL,
        task_queue,
        openai_base_url=local_model_url,
        llm_timeout_seconds=120.0,
    )
    definition = load_file(EXAMPLES / "form.yaml").definition
    async with running_worker(client, settings):
        handle = await start(client, settings, agent="contact_form")
        replies = []
        for text in ["Hi, my name is Ada Lovelace.", "My email is ada@example.com", "No phone."]:
            replies.append(await send(handle, text))
            if replies[-1].status != "active":
                break
        entries = await handle.query("trace", result_type=list[TraceEntry])
        if replies[-1].status == "active":
            await handle.terminate("test over")
    assert all(r.message.strip() for r in replies)
    assert entries and illegal_moves(definition, entries) == []


async def test_research_agent_on_the_embedded_model(
    client: Client, llm: ScriptedLlm, local_model_url: str, task_queue: str
) -> None:
    settings = make_settings(
        llm,
        DEFAULT_LOCAL_MODEL,
        task_queue,
        openai_base_url=local_model_url,
        llm_timeout_seconds=120.0,
    )
    definition = load_file(EXAMPLES / "research.yaml").definition
    async with running_worker(client, settings):
        handle = await start(client, settings, agent="research", task="Finite state machines")
        status = await wait_for_status(handle, lambda s: s.status != "active", timeout=240)
        if status.status == "awaiting_approval":
            await handle.signal("approve", {"by": "ci", "comment": "live test"})
        result = await final_result(handle)
    assert result.status in ("completed", "failed", "max_steps")
    assert illegal_moves(definition, result.trace) == []
    assert result.total_tokens > 0
    # Whatever the tiny model picks, every executed call named one of its state's tools.
    executed = [e for e in result.trace if e.kind == "tool_call" and e.accepted]
    assert all(e.tool in definition.states[e.from_state].tools for e in executed)
    for entry in result.trace:
        if not entry.accepted:
            print("rejected:", entry.from_state, entry.to_state, entry.reason[:300])
    print(
        f"live research: {result.status} in {result.state}, {len(executed)} tool calls: "
        + ", ".join(f"{e.from_state}/{e.tool}" for e in executed)
    )
