"""The run snapshot: carried whole across continue-as-new, never forged by a caller,
and messages that are answered once per update id."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from fsm.engine import start_run
from fsm.loader import load_file
from schemas.run import Reply
from schemas.snapshot import ResolvedDefinition, RunSnapshot
from schemas.workflow import (
    AgentResult,
    AgentWorkflowInput,
    Carried,
    DecisionInput,
    MessageInput,
)
from tests.conftest import EXAMPLES, make_settings, running_worker
from tests.llm_server import ScriptedLlm, call, move, say
from tests.workflows.helpers import (
    latest,
    send,
    start,
    status,
    trace,
    wait_for_status,
)
from workers.client import send_message
from workers.settings import Settings

CHAT: dict[str, Any] = {
    "name": "chat",
    "initial_state": "talk",
    "max_steps": 50,
    "context": {"name": {"type": "string", "maxLength": 40}},
    "states": {
        "talk": {"collects": ["name"], "transitions": [{"target": "bye"}]},
        "bye": {"terminal": True},
    },
}


@pytest.mark.parametrize("field", ["snapshot", "carried"])
async def test_a_forged_snapshot_in_a_start_input_is_refused(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings, field: str
) -> None:
    # A snapshot that would put a research run past its approval gate, straight
    # into 'publish', with a huge step bound: only continue-as-new may pass one.
    definition = load_file(EXAMPLES / "research.yaml").definition
    document = definition.model_dump(mode="json")
    forged = RunSnapshot(
        agent=ResolvedDefinition(definition=document, definition_hash="0" * 64, source="forged"),
        chain_id="forged",
        run=start_run(definition).model_copy(update={"state": "publish"}),
    )
    # The same, as runs before snapshots carried it (a caller could write either).
    carried = Carried(
        definition=document,
        definition_hash="0" * 64,
        source="forged",
        limits=forged.limits,
        run=forged.run,
    )
    request = {"snapshot": forged, "carried": carried}[field]
    async with running_worker(client, settings):
        handle = await client.start_workflow(
            "AgentWorkflow",
            AgentWorkflowInput.model_validate({field: request}),
            id=f"forged-{uuid.uuid4().hex[:8]}",
            task_queue=settings.task_queue,
        )
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
        history = await handle.fetch_history()
    cause = info.value.cause
    assert "only fsmflow itself passes when a run continues as new" in str(cause)
    scheduled = [
        e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert scheduled == [] and llm.requests(model_name) == []


async def test_the_same_update_id_is_one_turn(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(model_name, say("talk", "Hi Ada", name="Ada"), say("talk", "Yes?"))
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=CHAT)
        first = await handle.execute_update(
            "send_message", MessageInput(text="I'm Ada"), id="msg-1", result_type=Reply
        )
        again = await handle.execute_update(
            "send_message", MessageInput(text="I'm Ada"), id="msg-1", result_type=Reply
        )
        # The client helper and the CLI do the same with an id of their choosing.
        other = await send_message(client, handle.id, "anyone there?", update_id="msg-2")
        repeat = await send_message(client, handle.id, "anyone there?", update_id="msg-2")
        entries = await trace(handle)
        await handle.terminate("test over")
    assert first == again and first.message == "Hi Ada" and first.step == 1
    assert other == repeat and other.step == 2
    assert len(llm.requests(model_name)) == 2
    assert [e.accepted for e in entries] == [True, True]


async def test_a_retried_message_is_answered_once_across_continue_as_new(
    client: Client, llm: ScriptedLlm, model_name: str, task_queue: str
) -> None:
    settings = make_settings(llm, model_name, task_queue, continue_as_new_after=1)
    llm.script(model_name, say("talk", "Hi Ada", name="Ada"), say("talk", "Still here"))
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=CHAT)
        first = await send_message(client, handle.id, "I'm Ada", update_id="msg-a")
        # The run continues as new after every turn; the retry reaches the next run,
        # which only its snapshot can tell about the answered message.
        for _ in range(100):
            if (await latest(client, handle).describe()).run_id != handle.result_run_id:
                break
            await asyncio.sleep(0.05)
        continued = (await latest(client, handle).describe()).run_id
        again = await send_message(client, handle.id, "I'm Ada", update_id="msg-a")
        second = await send_message(client, handle.id, "hello", update_id="msg-b")
        await latest(client, handle).terminate("test over")
    assert continued != handle.result_run_id
    assert again == first and first.message == "Hi Ada"
    assert second.message == "Still here" and second.step == 2
    assert len(llm.requests(model_name)) == 2


async def test_continue_as_new_keeps_the_task_the_last_call_and_the_gate(
    client: Client, llm: ScriptedLlm, model_name: str, task_queue: str
) -> None:
    settings = make_settings(llm, model_name, task_queue, continue_as_new_after=2)
    search = call("search_corpus", query="durable execution", limit=2)
    draft = "artifact:3/draft.md"  # write_draft runs at step 3 (after two searches)
    # The same search twice, with a continue-as-new between the two calls.
    llm.script(
        model_name,
        search,
        search,
        move("write", notes="- the corpus explains durable execution"),
        call("write_draft", topic="durable execution"),
        move("review"),
        call("review_draft", draft=draft),
        move("publish_gate"),
        call("publish_article", draft=draft),
        move("published"),
    )
    async with running_worker(client, settings):
        handle = await start(client, settings, agent="research", task="Write about it")
        await wait_for_status(latest(client, handle), lambda s: s.status == "awaiting_approval")
        await latest(client, handle).signal("approve", DecisionInput(by="alice", comment="ok"))
        current = latest(client, handle)
        result: AgentResult = await asyncio.wait_for(current.result(), timeout=30)
        runs = [w async for w in client.list_workflows(f"WorkflowId = '{handle.id}'")]
    requests = llm.requests(model_name)
    assert result.status == "completed" and result.state == "published"
    assert len(runs) >= 4  # continued as new every two turns
    # Every prompt, before and after each hand-over, holds the task.
    assert all(
        {"role": "user", "content": "Task: Write about it"} in r["messages"] for r in requests
    )
    # The repeated call was pointed out although a hand-over came between the calls.
    assert any("with the same arguments as before" in m["content"] for m in requests[2]["messages"])
    # The approval, sent to the workflow id after the hand-overs, reached the gate.
    decisions = [(e.kind, e.by, e.reason) for e in result.trace if e.kind == "approve"]
    assert decisions == [("approve", "alice", "ok")]


async def test_signals_before_the_run_started_are_judged_not_dropped(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    gated = {
        "name": "gated",
        "initial_state": "gate",
        "states": {
            "gate": {"approval": {"on_approve": "done", "on_reject": "done"}},
            "done": {"terminal": True},
        },
    }
    async with running_worker(client, settings):
        handle = await client.start_workflow(
            "AgentWorkflow",
            AgentWorkflowInput(definition=gated),
            id=f"early-{uuid.uuid4().hex[:8]}",
            task_queue=settings.task_queue,
            start_signal="approve",
            start_signal_args=[DecisionInput(by="alice", comment="pre-approved")],
            result_type=AgentResult,
        )
        result = await asyncio.wait_for(handle.result(), timeout=30)
        chat = await client.start_workflow(
            "AgentWorkflow",
            AgentWorkflowInput(definition=CHAT),
            id=f"early-{uuid.uuid4().hex[:8]}",
            task_queue=settings.task_queue,
            start_signal="approve",
            start_signal_args=[DecisionInput(by="bob")],
        )
        await wait_for_status(chat, lambda s: True)
        entries = await trace(chat)
        await chat.terminate("test over")
    assert result.state == "done" and result.trace[-1].by == "alice"
    assert [(e.kind, e.accepted, e.by) for e in entries] == [("approve", False, "bob")]
    assert entries[0].reason == "no approval gate is open in 'talk'"


async def test_a_new_worker_is_sent_the_definition_once(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(model_name, say("talk", "one"), say("talk", "two"), say("talk", "three"))
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=CHAT)
        await send(handle, "first")
    # A restarted worker holds no definitions: its first turn asks for it.
    async with running_worker(client, settings):
        await send(handle, "second")
        await send(handle, "third")
        current = await status(handle)
        history = await handle.fetch_history()
        await handle.terminate("test over")
    failures = [
        e.activity_task_failed_event_attributes.failure.application_failure_info.type
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
    ]
    assert failures == ["BundleMissing"] and current.step == 3


async def test_history_stays_small_per_turn(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    # The prompt and the schema are rendered by the activity, not stored in history.
    llm.script(model_name, *[say("talk", "fine") for _ in range(11)])
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=CHAT)
        await send(handle, "message 0")
        before = sum(e.ByteSize() for e in (await handle.fetch_history()).events)
        for i in range(1, 11):
            await send(handle, f"message {i}")
        after = sum(e.ByteSize() for e in (await handle.fetch_history()).events)
        await handle.terminate("test over")
    per_turn = (after - before) / 10
    assert per_turn < 5000, per_turn


async def test_a_forged_snapshot_is_refused_in_a_retried_run_too(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    # A workflow retry (or a cron run) restarts with the caller's input, and
    # Temporal names the previous run in it as it does for continue-as-new.
    definition = load_file(EXAMPLES / "form.yaml").definition
    forged = RunSnapshot(
        agent=ResolvedDefinition(
            definition=definition.model_dump(mode="json"), definition_hash="0" * 64, source="x"
        ),
        chain_id="forged",
        run=start_run(definition).model_copy(update={"state": "confirm"}),
        continued_from="a run id nobody can know in advance",
    )
    handle = await client.start_workflow(
        "AgentWorkflow",
        AgentWorkflowInput(snapshot=forged),
        id=f"forged-{uuid.uuid4().hex[:8]}",
        task_queue=settings.task_queue,
        run_timeout=timedelta(seconds=2),
        retry_policy=RetryPolicy(maximum_attempts=2, initial_interval=timedelta(seconds=1)),
    )
    await asyncio.sleep(3)  # no worker yet: the first attempt times out, a retry starts
    async with running_worker(client, settings):
        with pytest.raises(WorkflowFailureError) as info:
            await asyncio.wait_for(handle.result(), timeout=30)
        description = await handle.describe()
    assert "only fsmflow itself passes" in str(info.value.cause)
    assert description.run_id != handle.first_execution_run_id
    assert llm.requests(model_name) == []


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"agent": "contact_form", "bogus": 1}, "invalid start input: bogus: Extra inputs"),
        ({"snapshot": {}}, "invalid start input: snapshot.agent: Field required"),
        ([1, 2], "invalid start input: input: Input should be a valid dictionary"),
        ({"agent": "no_such_agent"}, "definition refused: agent 'no_such_agent' is not in"),
    ],
)
async def test_a_bad_start_input_fails_the_run_findably(
    client: Client, settings: Settings, raw: Any, reason: str
) -> None:
    async with running_worker(client, settings):
        handle = await client.start_workflow(
            "AgentWorkflow",
            raw,
            id=f"bad-{uuid.uuid4().hex[:8]}",
            task_queue=settings.task_queue,
        )
        with pytest.raises(WorkflowFailureError) as info:
            await asyncio.wait_for(handle.result(), timeout=30)
        description = await handle.describe()
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.message.startswith(reason), cause
    attributes = {p.key.name: p.value for p in description.typed_search_attributes}
    assert attributes["FsmStatus"] == "failed"
