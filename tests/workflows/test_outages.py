"""Model outages and bad replies never end a run by themselves.

The model endpoint is a real HTTP server that is not there (connection refused),
drops connections, or answers nonsense; the runs wait, say that they wait (status
query, ``FsmStatus`` search attribute, current details), and continue by
themselves when the endpoint is back. A conversation turn gives the user the
state's fallback reply within ``FSMFLOW_TURN_TIMEOUT`` and keeps the message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import CancelledError
from temporalio.testing import WorkflowEnvironment

from tests.conftest import free_port, make_settings, running_worker
from tests.llm_server import ScriptedLlm, call, move, say
from tests.workflows.helpers import (
    decide,
    failed_result,
    send,
    start,
    status,
    trace,
    wait_for_status,
)
from workers.settings import Settings

STEPS: dict[str, Any] = {
    "name": "steps",
    "mode": "autonomous",
    "initial_state": "one",
    "max_steps": 10,
    "states": {
        "one": {"allow_stay": False, "transitions": [{"target": "two"}]},
        "two": {"allow_stay": False, "transitions": [{"target": "done"}]},
        "done": {"terminal": True},
    },
}

CHAT: dict[str, Any] = {
    "name": "chat",
    "initial_state": "talk",
    "max_steps": 20,
    "states": {
        "talk": {
            "fallback_message": "The assistant is unavailable right now.",
            "transitions": [{"target": "bye"}],
        },
        "bye": {"terminal": True},
    },
}


def first_move(body: dict[str, Any]) -> dict[str, Any]:
    """Answer any turn with the first move its schema allows (conversation or autonomous)."""
    schema = body["response_format"]["json_schema"]["schema"]["properties"]
    if "action" in schema:
        return move(schema["action"]["properties"]["target_state"]["enum"][0])
    return say(schema["target_state"]["enum"][0], "I am back")


def answers(count: int, step: Callable[[dict[str, Any]], dict[str, Any]] = first_move) -> list[Any]:
    return [step] * count


async def listed(client: Client, query: str) -> list[str]:
    """Workflow ids the visibility store returns for ``query`` (it lags a little)."""
    found: list[str] = []
    for _ in range(50):
        found = [w.id async for w in client.list_workflows(query)]
        if found:
            return found
        await asyncio.sleep(0.2)
    return found


async def test_an_outage_is_waited_out_and_runs_continue_by_themselves(
    client: Client, model_name: str, task_queue: str
) -> None:
    port = free_port()
    settings = make_settings(
        ScriptedLlm(),  # only its URL would be used; the runs talk to `port`
        model_name,
        task_queue,
        openai_base_url=f"http://127.0.0.1:{port}/v1",
        turn_timeout_seconds=3.0,
        backoff_max_seconds=1.0,
        llm_timeout_seconds=2.0,
    )
    endpoint: ScriptedLlm | None = None
    try:
        async with running_worker(client, settings):
            runs = [
                await start(client, settings, definition=STEPS, task=f"task {i}") for i in (1, 2)
            ]
            chat = await start(client, settings, definition=CHAT)
            # Nothing listens on the port: the conversation turn gives up in time.
            unanswered = await send(chat, "hello?")
            waiting = [
                await wait_for_status(h, lambda s: s.model_failures >= 4, timeout=90) for h in runs
            ]
            found = await listed(
                client, f"WorkflowId = '{runs[0].id}' AND FsmStatus = 'waiting_for_model'"
            )
            metadata = await runs[0].query(
                "__temporal_workflow_metadata", result_type=WorkflowMetadata
            )
            # The endpoint comes back on the same port; nobody touches the runs.
            endpoint = ScriptedLlm(port=port).start()
            endpoint.script(model_name, *answers(10))
            results = [await asyncio.wait_for(h.result(), timeout=60) for h in runs]
            answered = await send(chat, "and now?")
            chat_trace = (await chat.result()).trace
            history = await runs[0].fetch_history()
            requests = endpoint.requests(model_name)
    finally:
        if endpoint is not None:
            endpoint.stop()
    assert not unanswered.accepted and unanswered.status == "active"
    assert unanswered.message == "The assistant is unavailable right now."
    # The caller learns what happened; the endpoint's details stay in the trace.
    assert unanswered.reason in ("no valid reply within 3 s", "model call failed")
    unanswered_entry = next(e for e in chat_trace if e.kind == "unanswered")
    assert "is unreachable" in unanswered_entry.reason
    for current in waiting:
        assert current.fsm_status == "waiting_for_model" and current.status == "active"
        assert current.waiting_for == "model" and current.waiting_since is not None
        assert "is unreachable" in current.last_error
    # Four failed rounds of three quick attempts: more than the 8 attempts that
    # used to end a run.
    assert found == [runs[0].id]
    # The Web UI shows it in the run's current details.
    assert "waiting for the model since" in metadata.current_details
    assert "failed attempts, last error: model call failed" in metadata.current_details
    assert all(r.status == "completed" and r.state == "done" for r in results)
    # One trace entry for the outage, however many attempts it took.
    first = results[0].trace
    assert [(e.kind, e.accepted) for e in first] == [
        ("turn", False),
        ("turn", True),
        ("turn", True),
    ]
    assert first[0].reason.startswith("model call failed: model endpoint http://127.0.0.1:")
    timers = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED]
    assert len(timers) >= 4
    # The conversation: the unanswered message is traced and kept in the dialogue.
    assert answered.accepted and answered.message == "I am back"
    assert (answered.state, answered.status) == ("bye", "completed")
    assert [e.kind for e in chat_trace if e.kind == "unanswered"] == ["unanswered"]
    prompt = [m["content"] for m in requests[-1]["messages"]]
    assert "hello?" in prompt and "The assistant is unavailable right now." in prompt


async def test_hours_of_dropped_connections_are_waited_out(
    skipping_env: WorkflowEnvironment, llm: ScriptedLlm, model_name: str, task_queue: str
) -> None:
    # The default back-off (up to FSMFLOW_BACKOFF_MAX, 5 min) on the time-skipping
    # server: 60 dropped connections take hours of workflow time and seconds of ours.
    settings = make_settings(llm, model_name, task_queue)
    llm.script(model_name, *[{"drop": True}] * 60, *answers(2))
    client = skipping_env.client
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=STEPS, task="write")
        result = await asyncio.wait_for(handle.result(), timeout=120)
        history = await handle.fetch_history()
    assert result.status == "completed" and result.state == "done"
    started = history.events[0].event_time.ToDatetime()
    ended = history.events[-1].event_time.ToDatetime()
    assert (ended - started).total_seconds() > 3600
    assert len(llm.requests(model_name)) == 62
    pauses = [
        e.timer_started_event_attributes.start_to_fire_timeout.ToSeconds()
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
    ]
    assert max(pauses) == 300 and pauses == sorted(pauses)


async def test_invalid_replies_go_to_the_fallback_model_and_never_fail_the_run(
    client: Client, llm: ScriptedLlm, model_name: str, task_queue: str
) -> None:
    fallback = f"{model_name}-fallback"
    settings = make_settings(
        llm,
        model_name,
        task_queue,
        fallback_model=fallback,
        fallback_after=3,
        backoff_max_seconds=1.0,
    )
    # The main model gives no valid first turn; after a round of three re-asks the
    # run pauses, and the next round goes to the fallback model, which does. The
    # next turn starts afresh with the main model.
    llm.script(model_name, *[{"content": "no idea"}] * 3, *answers(1))
    llm.script(fallback, *answers(1))
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=STEPS, task="write")
        result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result.status == "completed"
    assert [e.model for e in result.trace] == [model_name] * 3 + [fallback, model_name]
    assert [e.accepted for e in result.trace] == [False, False, False, True, True]
    assert len(llm.requests(fallback)) == 1
    re_ask = llm.requests(fallback)[0]["messages"]
    assert re_ask[-2] == {"role": "assistant", "content": "no idea"}
    assert re_ask[-1]["content"].startswith("That reply was rejected: the reply is not valid JSON")


async def test_a_conversation_turn_asks_the_fallback_after_repeated_rejections(
    client: Client, llm: ScriptedLlm, model_name: str, task_queue: str
) -> None:
    fallback = f"{model_name}-fallback"
    settings = make_settings(llm, model_name, task_queue, fallback_model=fallback, fallback_after=2)
    llm.script(model_name, say("nowhere"), {"content": "{"})
    llm.script(fallback, say("bye", "Goodbye from the fallback"))
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=CHAT)
        reply = await send(handle, "bye")
    assert reply.accepted and reply.message == "Goodbye from the fallback"
    assert llm.requests(fallback)[0]["model"] == fallback


async def test_on_invalid_moves_the_run_where_the_definition_says(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    definition = {
        **CHAT,
        "states": {
            "talk": {
                "fallback_message": "Let me get a human.",
                "on_invalid": {"goto": "human"},
                "transitions": [{"target": "bye"}],
            },
            "human": {"transitions": [{"target": "bye"}]},
            "bye": {"terminal": True},
        },
    }
    llm.script(model_name, *[{"content": "???"}] * 3)
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=definition)
        reply = await send(handle, "help")
        entries = await trace(handle)
        await handle.terminate("test over")
    assert not reply.accepted and reply.state == "human" and reply.message == "Let me get a human."
    moved = [e for e in entries if e.kind == "on_invalid"]
    assert [(e.from_state, e.to_state, e.accepted) for e in moved] == [("talk", "human", True)]
    assert moved[0].reason.startswith("no valid turn after 3 attempts")


async def test_a_worker_without_the_model_tier_is_waited_out_then_named(
    client: Client, llm: ScriptedLlm, model_name: str, task_queue: str
) -> None:
    # A rolling deploy: the run was resolved by a worker that has the tier
    # `capable`; the worker that takes its next turn does not (yet).
    gated = {
        "name": "gated",
        "mode": "autonomous",
        "initial_state": "gate",
        "states": {
            "gate": {"approval": {"on_approve": "work", "on_reject": "done"}},
            "work": {"model": "capable", "transitions": [{"target": "done"}]},
            "done": {"terminal": True},
        },
    }
    capable = f"{model_name}-capable"
    tiers = {"default": model_name, "capable": capable}
    patient = make_settings(llm, model_name, task_queue, models=tiers, deploy_grace_seconds=120)
    hasty = make_settings(llm, model_name, task_queue, models=tiers, deploy_grace_seconds=2)
    async with running_worker(client, patient):
        waits = await start(client, patient, definition=gated)
        await wait_for_status(waits, lambda s: s.status == "awaiting_approval")
    async with running_worker(client, hasty):
        fails = await start(client, hasty, definition=gated)
        await wait_for_status(fails, lambda s: s.status == "awaiting_approval")
    old = make_settings(llm, model_name, task_queue)  # the default tier only
    async with running_worker(client, old):
        await decide(waits, "approve")
        await decide(fails, "approve")
        waiting = await wait_for_status(waits, lambda s: s.fsm_status == "waiting_for_model")
        failed = await asyncio.wait_for(failed_result(fails), timeout=60)
    llm.script(capable, move("done"))
    async with running_worker(client, patient):
        ended = await asyncio.wait_for(waits.result(), timeout=60)
    assert "model tier 'capable' is not configured on this worker" in waiting.last_error
    assert ended.status == "completed" and ended.trace[-1].model == capable
    assert failed.end_reason is not None
    assert "in state 'work': no worker has model tier 'capable' after 2 s" in failed.end_reason
    assert "after 2 s" in failed.end_reason


async def test_failed_runs_are_found_by_status(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    definition = {
        **CHAT,
        "states": {**CHAT["states"], "talk": {**CHAT["states"]["talk"], "on_invalid": "fail"}},
    }
    llm.script(model_name, *[{"content": "???"}] * 3)
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=definition)
        await send(handle, "hello")
        result = await failed_result(handle)
        current = await status(handle)
    found = await listed(client, f"WorkflowId = '{handle.id}' AND FsmStatus = 'failed'")
    failed = await listed(client, f"WorkflowId = '{handle.id}' AND ExecutionStatus = 'Failed'")
    assert found == [handle.id] and failed == [handle.id]
    assert result.end_reason is not None and "no valid turn after 3 attempts" in result.end_reason
    assert current.fsm_status == "failed" and current.waiting_for == "nothing"


OLD_RETRY_BUDGET_SECONDS = 91
"""How long the model could be down before a run failed for good, before runs
waited outages out (8 attempts, 1 s to 30 s back-off)."""


@pytest.mark.timeout(420)
async def test_a_real_outage_longer_than_the_old_budget(
    client: Client, model_name: str, task_queue: str
) -> None:
    # Real time, real dev server, the default turn bound (60 s) and retry policy;
    # only the longest pause is shortened (15 s instead of 5 min) to keep it short.
    port = free_port()
    settings = make_settings(
        ScriptedLlm(),
        model_name,
        task_queue,
        openai_base_url=f"http://127.0.0.1:{port}/v1",
        backoff_max_seconds=15.0,
    )
    endpoint: ScriptedLlm | None = None
    loop = asyncio.get_running_loop()
    try:
        async with running_worker(client, settings):
            began = loop.time()
            runs = [
                await start(client, settings, definition=STEPS, task=f"task {i}") for i in (1, 2)
            ]
            chat = await start(client, settings, definition=CHAT)
            unanswered = await send(chat, "is anyone there?")
            await asyncio.sleep(max(0.0, OLD_RETRY_BUDGET_SECONDS + 10 - (loop.time() - began)))
            during = [await status(h) for h in runs]
            endpoint = ScriptedLlm(port=port).start()
            endpoint.script(model_name, *answers(10))
            results = [await asyncio.wait_for(h.result(), timeout=90) for h in runs]
            answered = await send(chat, "now?")
    finally:
        if endpoint is not None:
            endpoint.stop()
    assert not unanswered.accepted
    assert unanswered.reason in ("no valid reply within 60 s", "model call failed")
    assert all(s.fsm_status == "waiting_for_model" and s.status == "active" for s in during)
    assert all(s.model_failures >= 5 for s in during), [s.model_failures for s in during]
    assert all(r.status == "completed" for r in results)
    assert answered.accepted and answered.status == "completed"


async def test_a_worker_without_the_tool_is_waited_out_then_named(
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    task_queue: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPY_LOG", str(tmp_path / "spy.log"))
    gated = {
        "name": "gated_tool",
        "mode": "autonomous",
        "initial_state": "gate",
        "states": {
            "gate": {"approval": {"on_approve": "work", "on_reject": "done"}},
            "work": {"tools": ["record"], "transitions": [{"target": "done"}]},
            "done": {"terminal": True},
        },
    }
    spy = str(Path(__file__).parent / "spy_tools.py")
    with_tool = make_settings(
        llm, model_name, task_queue, tool_modules_spec=spy, deploy_grace_seconds=3
    )
    without = make_settings(llm, model_name, task_queue, tool_modules_spec="")
    async with running_worker(client, with_tool):
        handle = await start(client, with_tool, definition=gated)
        await wait_for_status(handle, lambda s: s.status == "awaiting_approval")
    llm.script(model_name, call("record", text="hello", times=1))
    async with running_worker(client, without):
        await decide(handle, "approve")
        waiting = await wait_for_status(handle, lambda s: s.fsm_status == "waiting_for_model")
        failed = await asyncio.wait_for(failed_result(handle), timeout=60)
    assert waiting.waiting_for == "tool"
    assert "tool 'record' is not registered on this worker" in waiting.last_error
    assert failed.end_reason is not None
    assert "no worker has tool 'record' after 3 s" in failed.end_reason
    assert not (tmp_path / "spy.log").exists() or "record" not in (tmp_path / "spy.log").read_text()


async def test_a_run_waiting_for_its_model_can_be_cancelled(
    client: Client, model_name: str, task_queue: str
) -> None:
    settings = make_settings(
        ScriptedLlm(),
        model_name,
        task_queue,
        openai_base_url=f"http://127.0.0.1:{free_port()}/v1",
        backoff_max_seconds=1.0,
    )
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=STEPS, task="write")
        await wait_for_status(handle, lambda s: s.fsm_status == "waiting_for_model")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as info:
            await asyncio.wait_for(handle.result(), timeout=60)
        description = await handle.describe()
    # Cancelling is not a model failure: the run does not wait on.
    assert isinstance(info.value.cause, CancelledError)
    assert description.status == WorkflowExecutionStatus.CANCELED
