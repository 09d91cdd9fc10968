"""Record the histories that the replay tests replay.

Run ``.venv/bin/python -m tests.histories.record NAME...`` to record scenarios
(all current ones when none is named). Histories recorded by earlier versions stay
committed as they are and are never recorded again: they are what running
workflows of those versions look like, and the current code must keep replaying
them (behind ``workflow.patched`` where it changes what they did). Those recorded
before run snapshots are ``form_conversation``, ``research_approved``,
``research_rejected_then_approved``, ``research_tools_published``,
``tools_errors_artifacts_failure`` and the ``legacy_*`` ones (recorded by
``record_legacy.py`` with the code of that time); the ``snapshot_*`` ones are of
the version that introduced run snapshots, the ``stream_*`` ones of the version
that streams replies (publish signals and poll updates in their histories), the
``v2_*`` ones of prompt engine v2 (eventless transitions, read-only ``sees``), the
``v3_*`` ones of honest outcomes (a dead end ends the run; a run out of steps
closes as a failed workflow behind the ``fsmflow-max-steps-fails`` marker; a
reviewer's comment reaches the model).
Each scenario runs on a fresh dev server with the scripted model, and the history
is written as JSON here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from schemas.workflow import (
    AgentResult,
    AgentWorkflowInput,
    DecisionInput,
    MessageInput,
    Reply,
)
from tests.conftest import RESEARCH_TOOLS, make_settings, running_worker
from tests.llm_server import ScriptedLlm, call, move, reply, say
from tests.workflows.helpers import research_publish, research_to_the_gate
from tests.workflows.test_outages import CHAT, STEPS
from tests.workflows.test_tools import SPY_TOOLS
from workers.binaries import temporal_cli
from workers.client import send_message
from workflows.agent import SEARCH_ATTRIBUTES

HERE = Path(__file__).parent

Scenario = Callable[
    [Client, str, str], Awaitable[str | tuple[str, str] | dict[str, tuple[str, str]]]
]
"""Runs a scenario; returns the workflow id (its latest run is recorded), a
workflow id and the run id to record, or several histories by name."""


async def _start(client: Client, queue: str, **request: Any) -> Any:
    return await client.start_workflow(
        "AgentWorkflow",
        AgentWorkflowInput.model_validate(request),
        id=f"record-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
        result_type=AgentResult,
    )


async def _send(handle: Any, text: str, update_id: str | None = None) -> Reply:
    return await handle.execute_update(
        "send_message", MessageInput(text=text), id=update_id, result_type=Reply
    )


async def _awaiting(handle: Any) -> None:
    from schemas.workflow import AgentStatus

    for _ in range(200):
        try:
            status = await handle.query("status", result_type=AgentStatus)
            if status.status == "awaiting_approval":
                return
        except Exception:  # noqa: BLE001 - not started yet
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("the run never reached its gate")


STRICT: dict[str, Any] = {
    **CHAT,
    "name": "strict",
    "states": {**CHAT["states"], "talk": {**CHAT["states"]["talk"], "on_invalid": "fail"}},
}

SCRIPTS: dict[str, list[dict[str, Any]]] = {
    "snapshot_form_conversation": [
        {"content": "not json"},
        say("ask_email", "Your email?", name="Ada"),
        {"status": 401, "message": "invalid api key"},
        say("ask_phone", "Phone?", email="ada@example.com"),
        say("confirm", "Correct?", phone_declined=True),
        say("submitted", "Done", confirmed=True),
    ],
    "snapshot_research_continued": [*research_to_the_gate(), *research_publish()],
    "snapshot_outage_waited_out": [*[{"drop": True}] * 6, move("two"), move("done")],
    "snapshot_invalid_then_fallback": [{"content": "no idea"}] * 3 + [move("done")],
    "snapshot_failed_run": [{"content": "???"}] * 3,
    "snapshot_new_worker_and_early_signal": [say("talk", "one"), say("talk", "two")],
    "snapshot_conversation_continued": [
        say("talk", "one"),
        say("talk", "two"),
        say("talk", "three"),
        say("bye", "bye"),
    ],
    "stream_conversation": [
        # Streamed in small pieces with pauses: several publish signals a reply.
        {**say("talk", "The first reply, streamed in pieces."), "chunk": 4, "chunk_delay": 0.02},
        # Too long for the schema once whole: shown as it streams, then reset.
        {**say("talk", "Far too long. " * 50), "chunk": 60, "chunk_delay": 0.02},
        {**say("talk", "The second reply."), "chunk": 4, "chunk_delay": 0.02},
        # The next run of the chain (continued as new with the stream's state).
        {**say("talk", "The third reply."), "chunk": 4, "chunk_delay": 0.02},
        {**say("bye", "Goodbye."), "chunk": 4, "chunk_delay": 0.02},
    ],
}

SCRIPTS["v2_callback_form"] = [
    reply("ask_name", "Thanks Ada! Your email?", name="Ada Lovelace"),
    reply("ask_email", "Noted, Eve.", name="Eve"),  # read-only here: re-asked
    reply("ask_email", "And a phone number?", email="ada@example.com"),
    reply("ask_phone", "Is this right?", phone_declined=True),
    reply("confirm", "Submitted, thank you!", confirmed=True),
]

SCRIPTS["v3_dead_end"] = [call("complain", topic="fsm"), call("complain", topic="llm")]
SCRIPTS["v3_max_steps_stopped"] = [say("talk", "one"), say("talk", "two")]

DEAD_END: dict[str, Any] = {
    "name": "stuck",
    "mode": "autonomous",
    "initial_state": "look",
    "max_steps": 12,
    "states": {
        "look": {
            "tools": ["complain"],
            "allow_stay": False,
            "max_tool_errors": 2,
            "on_dead_end": "fail",
            "transitions": [{"target": "done", "when": {">=": [{"var": "_calls.complain"}, 1]}}],
        },
        "done": {"terminal": True},
    },
}

OPTIONS: dict[str, dict[str, Any]] = {
    "snapshot_research_continued": {"continue_as_new_after": 3},
    "snapshot_invalid_then_fallback": {"fallback_after": 3, "fallback_model": "record-fallback"},
    "snapshot_conversation_continued": {"continue_as_new_after": 2},
    "stream_conversation": {"continue_as_new_after": 2},
}
"""Worker settings of a scenario besides the defaults."""


async def snapshot_form_conversation(client: Client, queue: str, model: str) -> str:
    handle = await _start(client, queue, agent="contact_form")
    await _send(handle, "I'm Ada", update_id="m1")
    await _send(handle, "I'm Ada", update_id="m1")  # a resend: the same reply, no turn
    await _send(handle, "ada@example.com", update_id="m2")  # 401: the fallback reply
    for i, text in enumerate(["ada@example.com", "no phone, thanks", "yes"], start=3):
        await _send(handle, text, update_id=f"m{i}")
    await handle.result()
    return handle.id


async def snapshot_research_continued(client: Client, queue: str, model: str) -> tuple[str, str]:
    handle = await _start(client, queue, agent="research", task="Durable execution")
    latest = client.get_workflow_handle(handle.id, result_type=AgentResult)
    await _awaiting(latest)
    await latest.signal("approve", DecisionInput(by="alice", comment="ship it"))
    await latest.result()
    # The first run of the chain: started from an input, continued as new.
    return handle.id, handle.result_run_id or ""


async def snapshot_outage_waited_out(client: Client, queue: str, model: str) -> str:
    handle = await _start(client, queue, definition=STEPS, task="write")
    await handle.result()
    return handle.id


async def snapshot_invalid_then_fallback(client: Client, queue: str, model: str) -> str:
    return await snapshot_outage_waited_out(client, queue, model)


async def snapshot_failed_run(client: Client, queue: str, model: str) -> str:
    handle = await _start(client, queue, definition=STRICT)
    await _send(handle, "hello")
    with contextlib.suppress(WorkflowFailureError):
        await handle.result()
    return handle.id


async def snapshot_conversation_continued(client: Client, queue: str, model: str) -> str:
    # Messages right after each hand-over: the next run starts from the snapshot
    # and may take the message in its first task.
    handle = await _start(client, queue, definition=CHAT)
    for i, text in enumerate(["one", "two", "three", "bye"]):
        await send_message(client, handle.id, text, update_id=f"c{i}")
    await client.get_workflow_handle(handle.id).result()
    return handle.id


async def stream_conversation(client: Client, queue: str, model: str) -> dict[str, tuple[str, str]]:
    """A conversation streamed to a subscriber that follows it across continue-as-new.

    Records both runs of the chain: the first (replies streamed, one reset, polls,
    the hand-over with the stream's state) and the second (started from it).
    """
    from workers.events import run_events

    handle = await _start(client, queue, definition=CHAT)
    seen: list[str] = []

    async def follow() -> None:
        async for _, event in run_events(client, handle.id):
            seen.append(event.kind)
            if event.kind == "ended":
                return

    follower = asyncio.create_task(follow())
    for i, text in enumerate(["hello", "more", "again", "bye"]):
        await send_message(client, handle.id, text, update_id=f"s{i}")
    await asyncio.wait_for(follower, timeout=30)
    assert "reset" in seen and seen[-1] == "ended", seen
    last = await client.get_workflow_handle(handle.id).describe()
    return {
        "stream_conversation_first": (handle.id, handle.result_run_id or ""),
        "stream_conversation_continued": (handle.id, last.run_id or ""),
    }


async def v2_callback_form(client: Client, queue: str, model: str) -> str:
    """The call-back form: every move an eventless one, one re-ask."""
    handle = await _start(client, queue, agent="callback")
    for i, text in enumerate(["I'm Ada Lovelace", "ada@example.com", "no phone", "yes"]):
        await _send(handle, text, update_id=f"v{i}")
    await handle.result()
    return handle.id


async def v3_dead_end(client: Client, queue: str, model: str) -> str:
    """Two failed tool calls spend max_tool_errors: the dead end fails the run."""
    handle = await _start(client, queue, definition=DEAD_END)
    with contextlib.suppress(WorkflowFailureError):
        await handle.result()
    return handle.id


async def v3_max_steps_stopped(client: Client, queue: str, model: str) -> str:
    """Two messages spend max_steps: the workflow closes failed (AgentRunStopped)."""
    handle = await _start(client, queue, definition={**CHAT, "max_steps": 2})
    for i, text in enumerate(["one", "two"]):
        await _send(handle, text, update_id=f"m{i}")
    with contextlib.suppress(WorkflowFailureError):
        await handle.result()
    return handle.id


SCENARIOS: dict[str, Scenario] = {
    "v3_dead_end": v3_dead_end,
    "v3_max_steps_stopped": v3_max_steps_stopped,
    "v2_callback_form": v2_callback_form,
    "snapshot_form_conversation": snapshot_form_conversation,
    "snapshot_research_continued": snapshot_research_continued,
    "snapshot_outage_waited_out": snapshot_outage_waited_out,
    "snapshot_invalid_then_fallback": snapshot_invalid_then_fallback,
    "snapshot_failed_run": snapshot_failed_run,
    "snapshot_conversation_continued": snapshot_conversation_continued,
    "stream_conversation": stream_conversation,
}


async def _record(
    env: WorkflowEnvironment, llm: ScriptedLlm, name: str, settings_for: Callable[..., Any]
) -> dict[str, tuple[str, str | None]]:
    if name == "snapshot_new_worker_and_early_signal":
        # A decision signalled with the start, and a worker that restarts between
        # two messages (the new one asks the run for its definition).
        settings = settings_for()
        async with running_worker(env.client, settings):
            handle = await env.client.start_workflow(
                "AgentWorkflow",
                AgentWorkflowInput(definition=CHAT),
                id=f"record-{uuid.uuid4().hex[:8]}",
                task_queue=settings.task_queue,
                start_signal="approve",
                start_signal_args=[DecisionInput(by="early")],
            )
            await _send(handle, "first")
        async with running_worker(env.client, settings):
            await _send(handle, "second")
            await handle.terminate("recorded")
        return {name: (handle.id, None)}
    async with running_worker(env.client, settings_for(**OPTIONS.get(name, {}))):
        found = await SCENARIOS[name](env.client, f"record-{name}", f"record-{name}")
    if isinstance(found, dict):
        return dict(found)
    return {name: found if isinstance(found, tuple) else (found, None)}


async def main(names: list[str]) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="fsmflow-record-"))
    os.environ.setdefault("SPY_LOG", str(scratch / "spy.log"))
    os.environ.setdefault("RESEARCH_PUBLISH_DIR", str(scratch / "published"))
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()),
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=pydantic_data_converter,
    )
    llm = ScriptedLlm().start()
    try:
        for name in names or list(SCRIPTS):
            if name not in SCRIPTS:
                raise SystemExit(f"unknown scenario {name!r} (histories of earlier versions stay)")
            model = f"record-{name}"
            llm.script(model, *SCRIPTS[name])
            llm.script("record-fallback", move("two"))

            def settings_for(model: str = model, **options: Any) -> Any:
                return make_settings(
                    llm,
                    model,
                    model,
                    tool_modules_spec=f"{RESEARCH_TOOLS},{SPY_TOOLS}",
                    backoff_max_seconds=2.0,
                    **options,
                )

            for recorded, (workflow_id, run_id) in (
                await _record(env, llm, name, settings_for)
            ).items():
                history = await env.client.get_workflow_handle(
                    workflow_id, run_id=run_id
                ).fetch_history()
                (HERE / f"{recorded}.json").write_text(history.to_json())
    finally:
        llm.stop()
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
    os._exit(0)  # see tests/run.py: temporalio may abort at interpreter exit
