"""A worker killed with SIGKILL mid model call, or mid tool call after the tool's
side effect; a new worker finishes the run, and the side effect happened once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from fsm.tools import call_identity
from schemas.workflow import AgentResult, AgentWorkflowInput
from tests.conftest import EXAMPLES, RESEARCH_TOOLS, ROOT
from tests.llm_server import ScriptedLlm, call, move

REVIEW_LOOP = yaml.safe_load((Path(__file__).parent / "review_loop.yaml").read_text())
CRASH_TOOLS = Path(__file__).parent / "crash_tools.py"


def spawn_worker(
    env: WorkflowEnvironment,
    llm: ScriptedLlm,
    model: str,
    queue: str,
    data: Path,
    **extra: str,
) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "FSMFLOW_TOOL_MODULES": f"{RESEARCH_TOOLS},{CRASH_TOOLS}",
        "FSMFLOW_TOOL_LEDGER": str(data / "ledger.sqlite3"),
        "FSMFLOW_ARTIFACTS_DIR": str(data / "artifacts"),
        "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "FSMFLOW_TASK_QUEUE": queue,
        "FSMFLOW_AGENTS_DIR": str(EXAMPLES),
        "OPENAI_BASE_URL": llm.url,
        "OPENAI_API_KEY": "sk-test",
        "FSMFLOW_MODEL_DEFAULT": model,
        "FSMFLOW_LLM_TIMEOUT": "60",
        "FSMFLOW_HEALTH_PORT": "0",
        **extra,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "workers", "worker"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def kill_if_running(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()


def drain(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as Kubernetes stops a pod; kill it if it does not stop in time."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


async def wait_until(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.1)


async def test_sigkill_mid_call_then_a_new_worker_finishes(
    temporal_env: WorkflowEnvironment,
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    tmp_path: Path,
) -> None:
    queue = f"crash-{uuid.uuid4().hex[:8]}"
    llm.script(
        model_name,
        move("write", notes="facts"),
        {"delay": 40, **move("review", draft="never delivered")},
        move("review", draft="the draft"),
        move("publish_gate", verdict="approve"),
    )
    first = spawn_worker(temporal_env, llm, model_name, queue, tmp_path)
    try:
        handle = await client.start_workflow(
            "AgentWorkflow",
            AgentWorkflowInput(definition=REVIEW_LOOP, task="Write about FSMs"),
            id=f"crash-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
            result_type=AgentResult,
        )
        # The second model call is in flight (the server holds it): kill the worker.
        await wait_until(lambda: len(llm.requests(model_name)) >= 2)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        kill_if_running(first)
    second = spawn_worker(temporal_env, llm, model_name, queue, tmp_path)
    try:
        await wait_until(lambda: llm.remaining(model_name) == 0, timeout=90)
        from tests.workflows.helpers import signal as send_signal
        from tests.workflows.helpers import wait_for_status

        await wait_for_status(handle, lambda s: s.status == "awaiting_approval", timeout=30)
        await send_signal(handle, "approve", by="alice")
        result = await asyncio.wait_for(handle.result(), timeout=30)
    finally:
        drain(second)
    assert second.returncode == 0, second.stderr.read().decode() if second.stderr else ""
    assert result.state == "published"
    # Each completed turn appears exactly once, in order; the lost call left no trace.
    assert [(e.to_state, e.accepted) for e in result.trace] == [
        ("write", True),
        ("review", True),
        ("publish_gate", True),
        ("published", True),
    ]
    assert result.context["draft"] == "the draft"
    history = await handle.fetch_history()
    retried = [
        e
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
        and e.activity_task_started_event_attributes.attempt > 1
    ]
    assert len(retried) == 1


EFFECT_AGENT: dict[str, Any] = {
    "name": "effects",
    "mode": "autonomous",
    "initial_state": "act",
    "tools": {"append_effect": {"heartbeat": "2s"}},
    "states": {
        "act": {
            "tools": ["append_effect"],
            "allow_stay": False,
            "transitions": [
                {"target": "done", "when": {">=": [{"var": "_calls.append_effect"}, 1]}}
            ],
        },
        "done": {"terminal": True},
    },
}


async def test_sigkill_after_a_side_effect_then_a_new_worker_does_not_repeat_it(
    temporal_env: WorkflowEnvironment,
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    tmp_path: Path,
) -> None:
    queue = f"crash-{uuid.uuid4().hex[:8]}"
    effects = tmp_path / "effects.txt"
    llm.script(model_name, call("append_effect", text="charge the card"), move("done"))
    first = spawn_worker(temporal_env, llm, model_name, queue, tmp_path, CRASH_EFFECTS=str(effects))
    try:
        handle = await client.start_workflow(
            "AgentWorkflow",
            AgentWorkflowInput(definition=EFFECT_AGENT),
            id=f"effect-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
            result_type=AgentResult,
        )
        # The effect happened and was recorded; the activity has not completed.
        await wait_until(lambda: Path(f"{effects}.done").exists())
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        kill_if_running(first)
    second = spawn_worker(
        temporal_env, llm, model_name, queue, tmp_path, CRASH_EFFECTS=str(effects)
    )
    try:
        result = await asyncio.wait_for(handle.result(), timeout=60)
    finally:
        drain(second)
    assert result.state == "done", result.end_reason
    lines = effects.read_text().splitlines()
    assert len(lines) == 1 and lines[0].endswith(" charge the card")
    # The idempotency key: workflow id, the chain's first run id, step, call index
    # and the call's identity (tool and arguments).
    key = lines[0].split(" ")[0]
    identity = call_identity("append_effect", {"text": "charge the card"})
    assert key == f"{handle.id}/{handle.result_run_id}/0/0/{identity}"
    call_entry = next(e for e in result.trace if e.kind == "tool_call")
    assert call_entry.tool == "append_effect" and call_entry.accepted
    history = await handle.fetch_history()
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    # resolve, llm, run_tool (second attempt after the kill), then llm on the new
    # worker twice: it asks for the run's definition first (BundleMissing).
    assert attempts == [1, 1, 2, 1, 1]
