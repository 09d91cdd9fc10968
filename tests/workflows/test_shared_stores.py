"""Two worker processes on one task queue sharing the PostgreSQL stores, running the
research example with its tools: the draft one worker saved is reviewed on the
other, and a worker SIGKILLed around publishing's side effect (before it, between
it and its ledger record, after the record) leaves the retry to the other worker,
which publishes exactly once. Neither worker shares a file with the other but the
example's publish directory (its "external system")."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from schemas.workflow import AgentResult, AgentWorkflowInput
from tests.llm_server import ScriptedLlm, call, move
from tests.workflows.helpers import DRAFT_REF, signal, wait_for_status
from tests.workflows.test_crash import drain, kill_if_running, spawn_worker, wait_until

SHARED_TOOLS = Path(__file__).parent / "shared_tools.py"
TOPIC = "durable execution"


def researcher(body: dict[str, Any]) -> dict[str, Any]:
    """The model's next step, read off the prompt: right however often a call is retried."""
    prompt = "\n".join(str(m.get("content", "")) for m in body["messages"])
    state_match = re.search(r"## Now: state (\w+)", prompt)
    assert state_match, "the prompt names its state"
    left_match = re.search(r"(\d+) call\(s\) left in this state", prompt)
    left = int(left_match.group(1)) if left_match else 0
    calls, tool_step, next_step = {
        "research": (
            3,
            call("search_corpus", query=TOPIC, limit=2),
            move("write", notes=f"- the corpus explains {TOPIC}"),
        ),
        "write": (2, call("write_draft", topic=TOPIC), move("review")),
        "review": (1, call("review_draft", draft=DRAFT_REF), move("publish_gate")),
        "publish": (1, call("publish_article", draft=DRAFT_REF), move("published")),
    }[state_match.group(1)]
    return tool_step if left == calls else next_step


def pid_of(identity: str) -> int:
    return int(identity.split("@", 1)[0])


@pytest.mark.parametrize("kill_at", ["before_effect", "between_effect_and_record", "after_record"])
async def test_two_workers_share_artifacts_and_publish_once_whoever_dies(
    temporal_env: WorkflowEnvironment,
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    store_url: str,
    tmp_path: Path,
    kill_at: str,
) -> None:
    queue = f"shared-{uuid.uuid4().hex[:8]}"
    markers, published = tmp_path / "markers", tmp_path / "published"
    markers.mkdir()
    llm.script(model_name, *[researcher] * 40)
    workers: list[subprocess.Popen[bytes]] = []

    def start_worker() -> subprocess.Popen[bytes]:
        data = tmp_path / f"worker-{len(workers)}"  # files of its own: nothing shared there
        data.mkdir()
        process = spawn_worker(
            temporal_env,
            llm,
            model_name,
            queue,
            data,
            FSMFLOW_STORE_URL=store_url,
            FSMFLOW_TOOL_MODULES=str(SHARED_TOOLS),
            SHARED_MARKERS=str(markers),
            RESEARCH_PUBLISH_DIR=str(published),
            KILL_AT=kill_at,
        )
        workers.append(process)
        return process

    def alive() -> list[subprocess.Popen[bytes]]:
        return [w for w in workers if w.poll() is None]

    try:
        start_worker(), start_worker()
        handle = await client.start_workflow(
            "AgentWorkflow",
            AgentWorkflowInput(agent="research", task=f"Write about {TOPIC}"),
            id=f"shared-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
            result_type=AgentResult,
        )
        await wait_for_status(handle, lambda s: s.status == "awaiting_approval", timeout=120)
        # The draft was written on one worker and reviewed on another.
        (writer,) = [int(p.name.split("-")[1]) for p in markers.glob("wrote-*")]
        (reviewer,) = [int(p.name.split("-")[1]) for p in markers.glob("reviewed-*")]
        assert writer != reviewer
        assert (markers / f"reviewed-{reviewer}").read_text().startswith("# Durable execution")
        while len(alive()) < 2:  # the writer died before its review: replace it
            start_worker()
        await signal(handle, "approve", by="alice")
        # One publish attempt kills its worker; the retry lands on the one still alive.
        await wait_until(lambda: (markers / "publish-kill").exists(), timeout=60)
        result = await asyncio.wait_for(handle.result(), timeout=120)
    finally:
        for process in workers:
            if process.poll() is None:
                drain(process)
            kill_if_running(process)
        logs = "".join(w.stderr.read().decode() for w in workers if w.stderr is not None)
    assert result.state == "published", result.end_reason
    assert (result.context["verdict"], result.context["feedback"]) == ("approve", "")
    entries = [json.loads(line) for line in (published / "index.jsonl").read_text().splitlines()]
    assert len(entries) == 1, f"published {len(entries)} times: {entries}"
    history = await handle.fetch_history()
    tool_calls = {
        e.event_id
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "fsmflow.run_tool"
        and b'"publish_article"'
        in e.activity_task_scheduled_event_attributes.input.payloads[0].data
    }
    publish_attempts = [
        (started.attempt, started.identity)
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
        and (started := e.activity_task_started_event_attributes).scheduled_event_id in tool_calls
    ]
    # The history records only the last attempt's start: the retry, on another worker.
    ((attempt, identity),) = publish_attempts
    assert attempt == 2
    started = sorted(markers.glob("publish-*-1"))
    assert len(started) == 1 and f"publish-{pid_of(identity)}-2" != started[0].name
    assert (markers / f"publish-{pid_of(identity)}-2").exists()
    with psycopg.connect(store_url) as conn:
        rows = conn.execute(
            "SELECT status, attempts FROM fsmflow_effects WHERE tool = 'publish'"
        ).fetchall()
    # One record, finished once: by the first attempt (after_record), by the retry
    # asking the index (reconcile: between_effect_and_record) or running it (before_effect).
    assert rows == [("done", 1)]
    event = {
        "before_effect": None,
        "between_effect_and_record": "effect_reconciled",
        "after_record": "effect_replayed",
    }[kill_at]
    for name in ("effect_reconciled", "effect_replayed", "effect_may_repeat"):
        assert (name in logs) == (name == event), (name, logs[-3000:])
