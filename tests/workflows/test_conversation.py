"""Conversation runs on a real dev server, with the real activity code and the real
``openai`` client talking HTTP to the scripted model."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
)
from temporalio.service import RPCError

from tests.conftest import make_settings, running_worker
from tests.llm_server import ScriptedLlm, say
from tests.workflows.helpers import decide, latest, send, start, started, status, trace
from workers.client import run_result, send_message
from workers.settings import Settings

# A small conversation with a secret key, a gate and a tight step bound.
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


def cause(info: pytest.ExceptionInfo[WorkflowUpdateFailedError]) -> str:
    """The message a validator or handler gave for a failed update."""
    return str(getattr(info.value.cause, "message", info.value.cause))


def shop(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(SHOP)
    data.update(changes)
    return data


async def test_form_conversation_to_a_terminal_state(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(
        model_name,
        say("ask_email", "Thanks Ada! Your email?", name="Ada Lovelace"),
        say("ask_phone", "And a phone number?", email="ada@example.com"),
        say("confirm", "No problem. Is this right?", phone_declined=True),
        say("submitted", "Submitted, thank you!", confirmed=True),
    )
    async with running_worker(client, settings):
        handle = await start(client, settings, agent="contact_form")
        replies = [
            await send(handle, "Hi, I'm Ada Lovelace"),
            await send(handle, "ada@example.com"),
            await send(handle, "I'd rather not give my phone"),
            await send(handle, "Yes, correct"),
        ]
        result = await handle.result()
    assert [r.state for r in replies] == ["ask_email", "ask_phone", "confirm", "submitted"]
    assert replies[-1].message == "Submitted, thank you!" and replies[-1].status == "completed"
    assert result.status == "completed" and result.state == "submitted"
    assert result.end_reason == "reached terminal state 'submitted'"
    assert result.context == {
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "phone_declined": True,
        "confirmed": True,
    }
    assert result.steps == 4 and result.total_tokens > 0
    assert [e.to_state for e in result.trace] == ["ask_email", "ask_phone", "confirm", "submitted"]
    assert all(e.accepted and e.model == model_name for e in result.trace)
    # Each request carried a strict json_schema whose target enum is the allowed moves.
    first = llm.requests(model_name)[0]
    schema = first["response_format"]["json_schema"]
    assert schema["strict"] is True
    assert schema["schema"]["properties"]["target_state"]["enum"] == [
        "ask_email",
        "cancelled",
        "ask_name",
    ]
    assert first["temperature"] == 0


async def test_invalid_replies_are_re_asked_with_the_reason(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(
        model_name,
        {"content": '{"target_state": "ask_email", '},
        say("submitted", "done!"),
        say("ask_email", "Hello Ada", name="Ada"),
    )
    async with running_worker(client, settings):
        handle = await start(client, settings, agent="contact_form")
        reply = await send(handle, "I'm Ada")
        entries = await trace(handle)
        await handle.terminate("test over")
    assert reply.accepted and reply.state == "ask_email" and reply.message == "Hello Ada"
    assert [e.accepted for e in entries] == [False, False, True]
    assert entries[0].reason.startswith("the reply is not valid JSON")
    assert "'submitted' is not one of" in entries[1].reason
    # The re-ask shows the model what it wrote, as its own message, and what was wrong.
    reasked = llm.requests(model_name)[1]["messages"]
    assert reasked[-2] == {"role": "assistant", "content": '{"target_state": "ask_email", '}
    assert reasked[-1]["content"].startswith("That reply was rejected: the reply is not valid JSON")


async def test_engine_rejections_are_re_asked(
    client: Client, llm: ScriptedLlm, model_name: str
) -> None:
    # With json_object the endpoint does not constrain decoding; the activity still
    # checks the schema, and the engine judges what the schema cannot express
    # (a guard that does not hold, a value of the wrong format).
    settings = make_settings(llm, model_name, "tq-" + model_name, response_format="json_object")
    llm.script(
        model_name,
        say("ask_name", "hi", favourite_colour="blue"),
        say("ask_email", "Skipping the name"),
        say("ask_email", "Hello Ada", name="Ada"),
        say("ask_phone", "Noted", email="not-an-email"),
        say("ask_phone", "Noted", email="ada@example.com"),
    )
    async with running_worker(client, settings):
        handle = await start(client, settings, agent="contact_form")
        first = await send(handle, "I'm Ada")
        second = await send(handle, "ada@example.com")
        entries = await trace(handle)
        await handle.terminate("test over")
    assert (first.state, second.state) == ("ask_email", "ask_phone")
    assert [e.accepted for e in entries] == [False, False, True, False, True]
    assert "favourite_colour" in entries[0].reason
    assert entries[1].to_state == "ask_email"
    assert entries[1].reason == (
        "'ask_email' needs 'name' set first; set it in context_update or stay"
    )
    # The format is checked with the schema (fsmflow's own checker), before the engine.
    assert entries[3].reason == (
        "the reply does not fit the turn schema at context_update.email: "
        "'not-an-email' is not a 'email'"
    )
    request = llm.requests(model_name)[0]
    assert request["response_format"] == {"type": "json_object"}
    assert any(m["content"].startswith("Reply JSON schema:") for m in request["messages"])


async def test_re_ask_exhaustion_keeps_the_state_and_replies_the_fallback(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(
        model_name,
        *[{"content": "not json"}] * 3,
        say("review", "Thanks", name="Ada", pin="1234"),
    )
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=shop())
        failed = await send(handle, "hello")
        ok = await send(handle, "I'm Ada, pin 1234")
        await handle.terminate("test over")
    assert not failed.accepted and failed.state == "greet" and failed.step == 0
    assert failed.message == "Sorry, once more please?"
    assert ok.accepted and ok.state == "review" and ok.status == "awaiting_approval"


async def test_transient_model_failures_are_retried(
    client: Client, llm: ScriptedLlm, model_name: str
) -> None:
    settings = make_settings(llm, model_name, "tq-" + model_name, llm_timeout_seconds=1.0)
    llm.script(
        model_name,
        {"status": 500},
        {"status": 429},
        {"delay": 2.5, **say("bye")},  # the client times out after 1 s
        {"finish_reason": "length", "content": '{"reasoning": "cut'},
        say("bye", "Goodbye"),
    )
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=shop())
        reply = await send(handle, "bye")
        result = await handle.result()
    assert reply.accepted and reply.message == "Goodbye" and result.status == "completed"
    assert len(llm.requests(model_name)) == 5
    # The activity retried the blips (500, 429, timeout) itself; once its quick
    # attempts were spent the workflow paused and asked again. The cut-off reply
    # is not retried as is: it is re-asked with the instruction to be shorter.
    assert [(e.kind, e.accepted) for e in result.trace] == [
        ("turn", False),
        ("turn", False),
        ("turn", True),
    ]
    assert result.trace[0].reason.startswith("model call failed: model endpoint")
    assert "did not answer within 1s" in result.trace[0].reason
    assert result.trace[1].reason.startswith("your reply was cut off at 1024 tokens")
    last = llm.requests(model_name)[-1]["messages"][-1]["content"]
    assert "your reply was cut off" in last and "shorter" in last


async def test_non_retryable_model_error_falls_back(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(model_name, {"status": 401, "message": "invalid api key"})
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=shop())
        reply = await send(handle, "hello")
        entries = await trace(handle)
        await handle.terminate("test over")
    # 401 is not retried: the user gets the fallback at once, the message is kept
    # in the trace as not answered, and the run stays where it was.
    assert not reply.accepted and reply.state == "greet" and reply.status == "active"
    assert reply.message == "Sorry, once more please?"
    assert reply.reason == "model call failed"
    assert len(llm.requests(model_name)) == 1
    assert entries[-2].reason.startswith("model call failed: model endpoint")
    assert "answered 401" in entries[-2].reason and "invalid api key" in entries[-2].reason
    assert (entries[-1].kind, entries[-1].accepted) == ("unanswered", False)
    assert entries[-1].reason.startswith("message not answered: model call failed")


async def test_validators_reject_bad_messages_before_history(
    client: Client, llm: ScriptedLlm, model_name: str
) -> None:
    settings = make_settings(llm, model_name, "tq-" + model_name, max_message_chars=50)
    llm.script(model_name, say("review", "Thanks", name="Ada", pin="1234"))
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=shop())
        # The size limit comes from the worker's settings, which reach the run
        # through its first activity; from then on the validator applies it.
        await started(handle)
        with pytest.raises(WorkflowUpdateFailedError) as empty:
            await send(handle, "   ")
        with pytest.raises(WorkflowUpdateFailedError) as long:
            await send(handle, "x" * 51)
        await send(handle, "Ada, 1234")
        with pytest.raises(WorkflowUpdateFailedError) as waiting:
            await send(handle, "hello?")
        await decide(handle, "approve", by="alice")
        await handle.result()
        with pytest.raises((WorkflowUpdateFailedError, RPCError)):
            await send(handle, "still there?")
        history = await handle.fetch_history()
    assert cause(empty) == "the message is empty"
    assert cause(long) == "the message has 51 characters; the limit is 50"
    assert cause(waiting) == "the run is waiting for an approval decision in state 'review'"
    # Rejected updates never reach history: only the one accepted message does.
    accepted = [
        e
        for e in history.events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    ]
    assert len(accepted) == 2  # the message and the decision


async def test_queries_redact_secrets(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(model_name, say("review", "Thanks", name="Ada", pin="1234"))
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=shop())
        await send(handle, "Ada, 1234")
        current = await status(handle)
        context = await handle.query("context")
        entries = await trace(handle)
        await decide(handle, "reject", by="alice", comment="check the pin")
        after = await status(handle)
        await handle.terminate("test over")
    assert (current.agent, current.state, current.status, current.step) == (
        "shop",
        "review",
        "awaiting_approval",
        1,
    )
    assert current.waiting_for == "approval" and len(current.definition_hash) == 64
    assert context == {"name": "Ada", "pin": "[redacted]"}
    assert "1234" not in repr(entries)
    assert after.state == "greet" and after.status == "active" and after.waiting_for == "message"


async def test_decide_validator_and_approvers(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(model_name, say("review", "Thanks", name="Ada", pin="1234"))
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=shop())
        await started(handle)
        with pytest.raises(WorkflowUpdateFailedError) as closed:
            await decide(handle, "approve")
        await send(handle, "Ada 1234")
        with pytest.raises(WorkflowUpdateFailedError) as denied:
            await decide(handle, "approve", by="mallory")
        result = await decide(handle, "approve", by="alice", comment="ok")
        final = await handle.result()
    assert cause(closed) == "no approval gate is open (state 'greet', active)"
    assert cause(denied) == "'mallory' may not decide at 'review' (approvers: alice)"
    assert (result.state, result.status) == ("bye", "completed")
    decision = final.trace[-1]
    assert (decision.kind, decision.by, decision.reason) == ("approve", "alice", "ok")


async def test_max_steps_ends_the_run(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(model_name, *[say("greet", "go on")] * 2)
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=shop(max_steps=2))
        await send(handle, "one")
        last = await send(handle, "two")
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        result = await run_result(handle)
        description = await handle.describe()
    assert last.status == "max_steps"
    assert (result.status, result.steps) == ("max_steps", 2)
    assert result.end_reason == "max_steps (2) reached in state 'greet'"
    # Out of steps is not a success: the workflow closes failed (AgentRunStopped),
    # the result in the failure's details.
    assert description.status == WorkflowExecutionStatus.FAILED
    assert getattr(failure.value.cause, "type", None) == "AgentRunStopped"
    assert getattr(failure.value.cause, "message", "") == (
        "agent run stopped: max_steps (2) reached in state 'greet'"
    )


async def test_broken_inline_definition_is_refused_before_any_turn(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    broken = shop()
    broken["states"]["greet"]["transitions"][1]["target"] = "by"
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=broken)
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
        unknown = await start(client, settings, agent="no_such_agent")
        with pytest.raises(WorkflowFailureError) as missing:
            await unknown.result()
        bad_context = await start(client, settings, agent="contact_form", context={"emial": "x"})
        with pytest.raises(WorkflowFailureError) as context_info:
            await bad_context.result()
    assert "definition refused" in str(info.value.cause)
    assert "state 'greet': transition 2: target 'by' is not a state" in str(info.value.cause)
    assert "agent 'no_such_agent' is not in" in str(missing.value.cause)
    assert "contact_form" in str(missing.value.cause)
    assert "context key 'emial' is not declared" in str(context_info.value.cause)
    assert llm.requests(model_name) == []


async def test_search_attributes_list_runs_by_state(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(model_name, say("review", "Thanks", name="Ada", pin="1234"))
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=shop())
        await send(handle, "Ada 1234")
        query = f"WorkflowId = '{handle.id}' AND FsmAwaitingApproval = true AND FsmState = 'review'"
        found: list[str] = []
        for _ in range(50):
            found = [w.id async for w in client.list_workflows(query)]
            if found:
                break
            await asyncio.sleep(0.2)
        description = await handle.describe()
        await handle.terminate("test over")
    assert found == [handle.id]
    attributes = description.typed_search_attributes
    values = {p.key.name: p.value for p in attributes}
    assert values["FsmState"] == "review" and values["FsmAgent"] == "shop"
    assert values["FsmAwaitingApproval"] is True


async def test_continue_as_new_preserves_state_and_context(
    client: Client, llm: ScriptedLlm, model_name: str
) -> None:
    settings = make_settings(llm, model_name, "tq-" + model_name, continue_as_new_after=3)
    llm.script(
        model_name,
        say("greet", "hi", name="Ada"),
        *[say("greet", f"reply {i}") for i in range(5)],
        say("review", "thanks", pin="4321"),
    )
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=shop(max_steps=50))
        replies = [await send_message(client, handle.id, f"message {i}") for i in range(7)]
        current = latest(client, handle)
        description = await current.describe()
        state = await status(current)
        context = await current.query("context")
        await decide(current, "approve", by="alice")
        result = await current.result()
    assert description.run_id != handle.result_run_id
    assert [r.message for r in replies][:2] == ["hi", "reply 0"]
    assert (state.state, state.step, state.status) == ("review", 7, "awaiting_approval")
    assert context == {"name": "Ada", "pin": "[redacted]"}
    assert result.steps == 8 and result.state == "bye"
    # The dialogue window crossed the hand-over: the last prompt saw earlier messages.
    last_prompt = llm.requests(model_name)[-1]["messages"]
    assert any(m["content"] == "message 5" for m in last_prompt)


async def test_fallback_model_after_repeated_failures(
    client: Client, llm: ScriptedLlm, model_name: str
) -> None:
    fallback = f"{model_name}-fallback"
    settings = make_settings(
        llm, model_name, "tq-" + model_name, fallback_model=fallback, fallback_after=2
    )
    llm.script(model_name, {"status": 503}, {"status": 503})
    llm.script(fallback, say("bye", "Goodbye from the fallback"))
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=shop())
        reply = await send(handle, "bye")
        result = await handle.result()
    assert reply.message == "Goodbye from the fallback"
    assert result.trace[-1].model == fallback
    assert len(llm.requests(model_name)) == 2 and len(llm.requests(fallback)) == 1


async def test_state_on_an_unconfigured_tier_is_refused_before_any_turn(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    definition = shop()
    definition["states"]["greet"]["model"] = "capable"
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=definition)
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    assert "model tier 'capable' is not configured (set FSMFLOW_MODEL_CAPABLE)" in str(
        info.value.cause
    )
    assert llm.requests(model_name) == []
