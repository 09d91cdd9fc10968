"""Record ``legacy_*`` histories: the paths run snapshots handle differently, as the
workflow code before them (commit 641528b) ran them.

This script runs against that code only (it imports the workflow of that commit);
the histories it wrote are committed and the current code must replay them. To
record them again, in a checkout of 641528b:

    git worktree add /tmp/fsmflow-641528b 641528b
    cp tests/histories/record_legacy.py /tmp/fsmflow-641528b/tests/histories/
    cd /tmp/fsmflow-641528b && python -m tests.histories.record_legacy [NAME...]

Each scenario runs on a fresh dev server (the installed ``temporal`` binary) with the
scripted model, and its history is written to ``$LEGACY_HISTORIES`` (default
``/tmp/legacy_histories``) as ``<name>.json``. ``--replay`` only replays what is
there against this code. After recording, every history written is replayed against
this (old) code and one line per history is printed: name, events, final event.
"""

from __future__ import annotations

import asyncio
import copy
import os
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from schemas.workflow import (
    AgentResult,
    AgentStatus,
    AgentWorkflowInput,
    DecideInput,
    DecisionInput,
    MessageInput,
    Reply,
)
from tests.conftest import RESEARCH_TOOLS, make_settings, running_worker
from tests.llm_server import ScriptedLlm, call, move, say
from tests.workflows.test_tools import SPY_AGENT, SPY_TOOLS
from workers.binaries import temporal_cli
from workers.client import send_message
from workflows.agent import SEARCH_ATTRIBUTES, AgentWorkflow

HERE = Path(__file__).parent
OUT = Path(os.environ.get("LEGACY_HISTORIES", "/tmp/legacy_histories"))
REVIEW_LOOP = yaml.safe_load((HERE.parent / "workflows" / "review_loop.yaml").read_text())
TASK = "Write about FSMs"

# The newer code also upserts FsmStatus; registering it here is harmless to the old
# code and lets the same server carry either.
ALL_SEARCH_ATTRIBUTES = (*SEARCH_ATTRIBUTES, SearchAttributeKey.for_keyword("FsmStatus"))

# The small conversation of tests/workflows/test_conversation.py (SHOP), inline.
SHOP: dict[str, Any] = {
    "name": "shop",
    "initial_state": "greet",
    "max_steps": 6,
    "context": {
        "name": {"type": "string", "maxLength": 40},
        "pin": {"type": "string", "secret": True, "pattern": "^[0-9]{4}$"},
    },
    "states": {
        "greet": {
            "collects": ["name", "pin"],
            "fallback_message": "Sorry, once more please?",
            "transitions": [
                {"target": "review", "requires": ["name", "pin"]},
                {"target": "bye"},
            ],
        },
        "review": {"approval": {"on_approve": "bye", "on_reject": "greet", "approvers": ["alice"]}},
        "bye": {"terminal": True},
    },
}


def shop(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(SHOP)
    data.update(changes)
    return data


class Recording:
    """What one scenario needs and leaves: its client, queue, and the runs to save."""

    def __init__(self, client: Client, queue: str) -> None:
        self.client = client
        self.queue = queue
        self.runs: dict[str, tuple[str, str | None]] = {}
        """History name -> (workflow id, run id or None for the newest run)."""
        self.results: dict[str, AgentResult] = {}


Scenario = Callable[[Recording], Awaitable[None]]


async def _start(rec: Recording, **request: Any) -> Any:
    extra = {k: request.pop(k) for k in ("start_signal", "start_signal_args") if k in request}
    return await rec.client.start_workflow(
        "AgentWorkflow",
        AgentWorkflowInput.model_validate(request),
        id=f"legacy-{uuid.uuid4().hex[:8]}",
        task_queue=rec.queue,
        result_type=AgentResult,
        **extra,
    )


async def _send(handle: Any, text: str) -> Reply:
    return await handle.execute_update("send_message", MessageInput(text=text), result_type=Reply)


async def _awaiting(handle: Any) -> None:
    for _ in range(400):
        try:
            status = await handle.query("status", result_type=AgentStatus)
            if status.status == "awaiting_approval":
                return
        except Exception:  # noqa: BLE001 - not started yet
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("the run never reached its gate")


SCRIPTS: dict[str, list[dict[str, Any]]] = {
    "legacy_model_failure_fallback": [
        {"status": 401, "message": "invalid api key"},
        say("review", "Thanks Ada", name="Ada", pin="1234"),
    ],
    "legacy_reasks_exhausted_failed": [{"content": "not json"}] * 3,
    "legacy_transient_retried": [
        {"status": 503},
        say("bye", "Goodbye"),
    ],
    "legacy_continued_as_new": [
        say("greet", "hi", name="Ada"),
        say("greet", "reply 0"),
        say("review", "thanks", pin="4321"),
    ],
    "legacy_continued_as_new_quiet": [
        say("greet", "hi", name="Ada"),
        say("greet", "reply 0"),
        say("review", "thanks", pin="4321"),
    ],
    "legacy_early_signal": [
        move("write", notes="facts"),
        move("review", draft="d1"),
        move("publish_gate", verdict="approve"),
    ],
    "legacy_tool_failed": [
        move("work"),
        call("explode"),
    ],
}

OVERRIDES: dict[str, dict[str, Any]] = {
    "legacy_continued_as_new": {"continue_as_new_after": 2},
    "legacy_continued_as_new_quiet": {"continue_as_new_after": 2},
}


async def legacy_model_failure_fallback(rec: Recording) -> None:
    handle = await _start(rec, definition=shop())
    failed = await _send(handle, "hello")
    assert not failed.accepted and failed.message == "Sorry, once more please?", failed
    ok = await _send(handle, "I'm Ada, pin 1234")
    assert ok.accepted and ok.status == "awaiting_approval", ok
    await handle.execute_update("decide", DecideInput(decision="approve", by="alice", comment="ok"))
    rec.results["legacy_model_failure_fallback"] = await handle.result()
    rec.runs["legacy_model_failure_fallback"] = (handle.id, None)


async def legacy_reasks_exhausted_failed(rec: Recording) -> None:
    handle = await _start(rec, definition=REVIEW_LOOP, task=TASK)
    rec.results["legacy_reasks_exhausted_failed"] = await handle.result()
    rec.runs["legacy_reasks_exhausted_failed"] = (handle.id, None)


async def legacy_transient_retried(rec: Recording) -> None:
    handle = await _start(rec, definition=shop())
    reply = await _send(handle, "bye")
    assert reply.accepted and reply.message == "Goodbye", reply
    rec.results["legacy_transient_retried"] = await handle.result()
    rec.runs["legacy_transient_retried"] = (handle.id, None)


async def legacy_continued_as_new(rec: Recording) -> None:
    handle = await _start(rec, definition=shop(max_steps=50))
    first_run_id = handle.first_execution_run_id or handle.result_run_id
    replies = [await send_message(rec.client, handle.id, f"message {i}") for i in range(3)]
    assert replies[-1].status == "awaiting_approval", replies
    latest = rec.client.get_workflow_handle(handle.id, result_type=AgentResult)
    last_run_id = (await latest.describe()).run_id
    assert last_run_id != first_run_id, "the run did not continue as new"
    await latest.execute_update("decide", DecideInput(decision="approve", by="alice"))
    rec.results["legacy_continued_as_new_last"] = await latest.result()
    rec.runs["legacy_continued_as_new_first"] = (handle.id, first_run_id)
    rec.runs["legacy_continued_as_new_last"] = (handle.id, last_run_id)


async def _first_task_done(rec: Recording, workflow_id: str, first_run_id: str) -> str:
    """The continued run's id, once its first workflow task has completed."""
    for _ in range(400):
        latest = rec.client.get_workflow_handle(workflow_id)
        run_id = (await latest.describe()).run_id
        if run_id != first_run_id:
            history = await rec.client.get_workflow_handle(
                workflow_id, run_id=run_id
            ).fetch_history()
            if any(
                e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED for e in history.events
            ):
                return run_id
        await asyncio.sleep(0.05)
    raise RuntimeError("the run did not continue as new")


async def legacy_continued_as_new_quiet(rec: Recording) -> None:
    """As legacy_continued_as_new, but the continued run's first task holds no message:
    the third message is sent only once that task has completed."""
    handle = await _start(rec, definition=shop(max_steps=50))
    first_run_id = handle.first_execution_run_id or handle.result_run_id
    for i in range(2):
        await send_message(rec.client, handle.id, f"message {i}")
    last_run_id = await _first_task_done(rec, handle.id, first_run_id)
    reply = await send_message(rec.client, handle.id, "message 2")
    assert reply.status == "awaiting_approval", reply
    latest = rec.client.get_workflow_handle(handle.id, run_id=last_run_id, result_type=AgentResult)
    await latest.execute_update("decide", DecideInput(decision="approve", by="alice"))
    rec.results["legacy_continued_as_new_quiet_last"] = await latest.result()
    rec.runs["legacy_continued_as_new_quiet_first"] = (handle.id, first_run_id)
    rec.runs["legacy_continued_as_new_quiet_last"] = (handle.id, last_run_id)


async def legacy_early_signal(rec: Recording) -> None:
    handle = await _start(
        rec,
        definition=REVIEW_LOOP,
        task=TASK,
        start_signal="approve",
        start_signal_args=[DecisionInput(by="early")],
    )
    await _awaiting(handle)
    await handle.signal("approve", DecisionInput(by="alice", comment="ship it"))
    rec.results["legacy_early_signal"] = await handle.result()
    rec.runs["legacy_early_signal"] = (handle.id, None)


async def legacy_tool_failed(rec: Recording) -> None:
    handle = await _start(rec, definition=SPY_AGENT)
    rec.results["legacy_tool_failed"] = await handle.result()
    rec.runs["legacy_tool_failed"] = (handle.id, None)


SCENARIOS: dict[str, Scenario] = {
    "legacy_model_failure_fallback": legacy_model_failure_fallback,
    "legacy_reasks_exhausted_failed": legacy_reasks_exhausted_failed,
    "legacy_transient_retried": legacy_transient_retried,
    "legacy_continued_as_new": legacy_continued_as_new,
    "legacy_continued_as_new_quiet": legacy_continued_as_new_quiet,
    "legacy_early_signal": legacy_early_signal,
    "legacy_tool_failed": legacy_tool_failed,
}


async def record(names: list[str]) -> list[Path]:
    OUT.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="fsmflow-record-extra-"))
    os.environ.setdefault("SPY_LOG", str(scratch / "spy.log"))
    os.environ.setdefault("RESEARCH_PUBLISH_DIR", str(scratch / "published"))
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()),
        search_attributes=ALL_SEARCH_ATTRIBUTES,
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    llm = ScriptedLlm().start()
    written: list[Path] = []
    try:
        for name in names or list(SCENARIOS):
            model = f"record-{name}"
            queue = f"record-{name}"
            llm.script(model, *SCRIPTS[name])
            settings = make_settings(
                llm,
                model,
                queue,
                tool_modules_spec=f"{RESEARCH_TOOLS},{SPY_TOOLS}",
                **OVERRIDES.get(name, {}),
            )
            rec = Recording(env.client, queue)
            async with running_worker(env.client, settings):
                await SCENARIOS[name](rec)
            left = llm.remaining(model)
            requests = len(llm.requests(model))
            for history_name, (workflow_id, run_id) in rec.runs.items():
                handle = env.client.get_workflow_handle(workflow_id, run_id=run_id)
                history = await handle.fetch_history()
                path = OUT / f"{history_name}.json"
                path.write_text(history.to_json())
                written.append(path)
                result = rec.results.get(history_name)
                summary = (
                    f"result {result.status} in {result.state!r}: {result.end_reason}"
                    if result
                    else "continued as new"
                )
                print(
                    f"recorded {history_name}: {workflow_id} run {run_id or 'latest'}; "
                    f"{summary}; model requests {requests}, script left {left}",
                    flush=True,
                )
    finally:
        llm.stop()
        await env.shutdown()
    return written


async def replay(paths: list[Path]) -> bool:
    replayer = Replayer(workflows=[AgentWorkflow], data_converter=pydantic_data_converter)
    ok = True
    for path in sorted(paths):
        history = WorkflowHistory.from_json(path.stem, path.read_text())
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        last = EventType.Name(history.events[-1].event_type)
        outcome = (
            "replays" if result.replay_failure is None else f"FAILS: {result.replay_failure!r}"
        )
        ok = ok and result.replay_failure is None
        print(f"old code: {path.stem}: {len(history.events)} events, last {last}: {outcome}")
    return ok


async def main(args: list[str]) -> int:
    if "--replay" in args:
        names = [a for a in args if a != "--replay"]
        paths = [OUT / f"{n}.json" for n in names] or sorted(OUT.glob("*.json"))
    else:
        paths = await record(args)
    return 0 if await replay(paths) else 1


if __name__ == "__main__":
    code = asyncio.run(main(sys.argv[1:]))
    sys.stdout.flush()
    os._exit(code)  # see tests/run.py: temporalio may abort at interpreter exit
