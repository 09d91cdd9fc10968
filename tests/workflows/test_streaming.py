"""The run's event stream on a real dev server: replies streamed by the LLM
activity through the real openai client from the scripted server's server-sent
events, run events published by the workflow, resets, a worker killed mid-stream,
continue-as-new and the bound of the retained log."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.contrib.workflow_streams import PollInput, PollResult
from temporalio.testing import WorkflowEnvironment

import workflows.events
from schemas.events import RunEvent
from schemas.run import Reply
from schemas.workflow import AgentResult, AgentWorkflowInput
from tests.conftest import make_settings, running_worker
from tests.llm_server import ScriptedLlm, say
from tests.workflows.helpers import (
    Handle,
    research_publish,
    research_to_the_gate,
    start,
    status,
    wait_for_status,
)
from tests.workflows.helpers import (
    signal as send_signal,
)
from tests.workflows.test_crash import drain, kill_if_running, spawn_worker, wait_until
from workers.client import send_message
from workers.events import run_events, stream_offset
from workers.settings import Settings

LONG = (
    "Thank you, Ada. To keep going I need the email address where we can reach you; "
    "it stays in this conversation and is used for nothing else. What is it?"
)

CHAT: dict[str, Any] = {
    "name": "chat",
    "initial_state": "talk",
    "states": {
        "talk": {"purpose": "Chat.", "transitions": [{"target": "bye"}]},
        "bye": {"terminal": True},
    },
}


def slow(step: dict[str, Any], *, chunk: int = 4, delay: float = 0.02) -> dict[str, Any]:
    """A scripted step streamed in small pieces, each after a pause (server-side)."""
    return {**step, "chunk": chunk, "chunk_delay": delay}


async def collect(
    client: Client,
    workflow_id: str,
    until: Callable[[RunEvent], bool],
    *,
    from_offset: int = 0,
    seen: list[tuple[int, RunEvent]] | None = None,
) -> list[tuple[int, RunEvent]]:
    """The run's events from ``from_offset`` up to and including the first that ``until``."""
    events = seen if seen is not None else []
    async for offset, event in run_events(client, workflow_id, from_offset=from_offset):
        events.append((offset, event))
        if until(event):
            break
    return events


def reply_to(message_id: str) -> Callable[[RunEvent], bool]:
    return lambda e: e.kind == "reply" and e.message_id == message_id


async def converse(
    client: Client, handle: Handle, text: str, message_id: str
) -> tuple[Reply, list[RunEvent]]:
    """Send a message while following the stream from its current offset."""
    offset = await stream_offset(client, handle.id)
    assert offset is not None
    follower = asyncio.create_task(
        collect(client, handle.id, reply_to(message_id), from_offset=offset)
    )
    reply = await send_message(client, handle.id, text, update_id=message_id)
    events = await asyncio.wait_for(follower, timeout=30)
    return reply, [e for _, e in events]


def text_of(events: list[RunEvent], turn: str) -> str:
    """What a turn streamed and no reset withdrew."""
    text = ""
    for event in events:
        if event.turn != turn:
            continue
        if event.kind == "reset":
            text = ""
        elif event.kind == "delta":
            text += event.text
    return text


async def test_deltas_arrive_before_the_reply_and_make_up_the_message(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(model_name, slow(say("ask_email", LONG, name="Ada")))
    async with running_worker(client, settings):
        handle = await start(client, settings, agent="contact_form")
        await wait_for_status(handle, lambda s: True)
        reply, events = await converse(client, handle, "Hi, I'm Ada", "m-1")
        tokens = (await status(handle)).total_tokens
        await handle.terminate("test over")
    assert reply.message == LONG and reply.state == "ask_email"
    kinds = [e.kind for e in events]
    assert kinds[-1] == "reply" and events[-1].text == LONG and events[-1].message_id == "m-1"
    deltas = [e for e in events if e.kind == "delta"]
    assert deltas and kinds.index("delta") < kinds.index("reply")
    assert "".join(d.text for d in deltas) == LONG
    assert {d.turn for d in deltas} == {"0.1"} and {d.message_id for d in deltas} == {"m-1"}
    # Pieces are coalesced: fewer events (and publish signals) than pieces sent.
    assert 2 <= len(deltas) < len(LONG) // 4
    # The move is announced before the reply that made it.
    state = next(e for e in events if e.kind == "state")
    assert (state.from_state, state.state) == ("ask_name", "ask_email")
    assert kinds.index("state") < kinds.index("reply")
    request = llm.requests(model_name)[0]
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}
    # The usage chunk reached the run's token count.
    assert tokens > 0


async def test_a_reply_rejected_after_streaming_resets_and_the_reask_streams_anew(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(
        model_name,
        # A move the table does not allow: judged before its message, never shown.
        slow(say("confirm", "Is that right?", name="Ada")),
        # A legal move whose message turns out too long: shown, then withdrawn.
        slow(say("ask_email", "Your email? " * 60, name="Ada"), chunk=40),
        slow(say("ask_email", "Your email, please?", name="Ada")),
    )
    async with running_worker(client, settings):
        handle = await start(client, settings, agent="contact_form")
        await wait_for_status(handle, lambda s: True)
        reply, events = await converse(client, handle, "I'm Ada", "m-1")
        await handle.terminate("test over")
    assert reply.message == "Your email, please?" and reply.accepted
    streamed = [e.turn for e in events if e.kind == "delta"]
    resets = [e for e in events if e.kind == "reset"]
    assert sorted(set(streamed)) == ["0.2", "0.3"]  # nothing of call 0.1
    assert [r.turn for r in resets] == ["0.2"] and "rejected (schema)" in resets[0].text
    kinds = [(e.kind, e.turn) for e in events]
    assert kinds.index(("reset", "0.2")) < kinds.index(("delta", "0.3"))
    assert text_of(events, "0.2") == ""
    assert text_of(events, "0.3") == reply.message == events[-1].text
    assert len(llm.requests(model_name)) == 3


async def test_a_worker_killed_mid_stream_resets_and_the_retry_streams_the_full_reply(
    temporal_env: WorkflowEnvironment,
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    tmp_path: Path,
) -> None:
    queue = f"stream-crash-{uuid.uuid4().hex[:8]}"
    never = "This reply is cut short by a dying worker and never finished at all."
    llm.script(
        model_name,
        slow(say("talk", never), chunk=2, delay=0.2),  # ~7 s: killed mid-way
        slow(say("talk", LONG)),
    )
    first = spawn_worker(temporal_env, llm, model_name, queue, tmp_path)
    second = None
    try:
        handle = await client.start_workflow(
            "AgentWorkflow",
            AgentWorkflowInput(definition=CHAT),
            id=f"stream-crash-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
            result_type=AgentResult,
        )
        await wait_for_status(handle, lambda s: True, timeout=30)
        offset = await stream_offset(client, handle.id)
        assert offset is not None
        seen: list[tuple[int, RunEvent]] = []
        follower = asyncio.create_task(
            collect(client, handle.id, reply_to("m-1"), from_offset=offset, seen=seen)
        )
        sending = asyncio.create_task(send_message(client, handle.id, "hello", update_id="m-1"))
        # Part of the reply has reached a subscriber: kill the worker streaming it.
        await wait_until(lambda: any(e.kind == "delta" for _, e in seen), timeout=30)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        second = spawn_worker(temporal_env, llm, model_name, queue, tmp_path)
        reply = await asyncio.wait_for(sending, timeout=90)
        events = [e for _, e in await asyncio.wait_for(follower, timeout=30)]
        await handle.terminate("test over")
    finally:
        kill_if_running(first)
        if second is not None:
            drain(second)
    assert reply.message == LONG
    kinds = [e.kind for e in events]
    first_delta, reset = kinds.index("delta"), kinds.index("reset")
    assert first_delta < reset < len(kinds) - 1 and kinds[-1] == "reply"
    withdrawn = "".join(e.text for e in events[:reset] if e.kind == "delta")
    assert withdrawn and never.startswith(withdrawn) and withdrawn != never
    assert "attempt 2" in events[reset].text
    assert text_of(events, events[reset].turn) == LONG == events[-1].text


async def test_a_turn_past_its_deadline_resets_and_replies_with_the_fallback(
    client: Client, llm: ScriptedLlm, model_name: str, task_queue: str
) -> None:
    settings = make_settings(
        llm, model_name, task_queue, turn_timeout_seconds=3.0, llm_timeout_seconds=30.0
    )
    fallback = {
        **CHAT,
        "states": {
            **CHAT["states"],
            "talk": {**CHAT["states"]["talk"], "fallback_message": "One moment, please."},
        },
    }
    # The keys in ~1 s, the message in ~5 s more: the call is cut at the turn's
    # 3 s bound while its message streams.
    llm.script(model_name, slow(say("talk", "word " * 80), chunk=8, delay=0.1))
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=fallback)
        await wait_for_status(handle, lambda s: True)
        reply, events = await converse(client, handle, "hello", "m-1")
        await handle.terminate("test over")
    assert not reply.accepted and reply.message == "One moment, please."
    kinds = [e.kind for e in events]
    assert kinds[0] == "delta" and kinds[-2:] == ["reset", "reply"]
    assert events[-2].turn == events[0].turn and "failed" in events[-2].text
    assert events[-1].text == "One moment, please." and events[-1].accepted is False


async def test_run_events_of_the_research_example_in_order(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(model_name, *research_to_the_gate(), *research_publish())
    async with running_worker(client, settings):
        handle = await start(client, settings, agent="research", task="Durable execution")
        follower = asyncio.create_task(collect(client, handle.id, lambda e: e.kind == "ended"))
        await wait_for_status(handle, lambda s: s.status == "awaiting_approval")
        await send_signal(handle, "approve", by="alice", comment="ship it")
        result = await handle.result()
        events = [e for _, e in await asyncio.wait_for(follower, timeout=30)]
    assert result.state == "published"
    shown = [
        (e.kind, e.from_state, e.state, e.tool, e.decision, e.accepted)
        for e in events
        if e.kind != "tool_call" or e.tool
    ]

    def tool(name: str, state: str) -> list[tuple[Any, ...]]:
        return [
            ("tool_call", "", state, name, "", None),
            ("tool_result", "", state, name, "", True),
        ]

    assert shown == [
        ("state", "", "research", "", "", None),
        *tool("search_corpus", "research"),
        ("state", "research", "write", "", "", None),
        *tool("write_draft", "write"),
        ("state", "write", "review", "", "", None),
        *tool("review_draft", "review"),
        ("state", "review", "publish_gate", "", "", None),
        ("gate", "", "publish_gate", "", "", None),
        ("gate", "", "publish_gate", "", "approve", None),
        ("state", "publish_gate", "publish", "", "", None),
        *tool("publish_article", "publish"),
        ("state", "publish", "published", "", "", None),
        ("ended", "", "published", "", "", None),
    ]
    decided = next(e for e in events if e.decision)
    assert (decided.by, decided.text) == ("alice", "ship it")
    call = next(e for e in events if e.kind == "tool_call")
    assert call.text == '{"limit": 2, "query": "durable execution"}'
    assert all(len(e.text) <= 500 for e in events if e.kind == "tool_result")
    assert events[-1].status == "completed"
    # An autonomous run streams no text: its events are what it does.
    assert not any(e.kind in ("delta", "reset", "reply") for e in events)


async def test_the_stream_follows_the_run_across_continue_as_new(
    client: Client, llm: ScriptedLlm, model_name: str, task_queue: str
) -> None:
    settings = make_settings(llm, model_name, task_queue, continue_as_new_after=2)
    texts = [f"reply number {i}" for i in range(5)]
    llm.script(model_name, *[say("talk", t) for t in texts], say("bye", "bye"))
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=CHAT)
        # Follows the whole chain from the first run's offset 0.
        follower = asyncio.create_task(collect(client, handle.id, lambda e: e.kind == "ended"))
        replies = [
            await send_message(client, handle.id, f"message {i}", update_id=f"c{i}")
            for i in range(6)
        ]
        events = await asyncio.wait_for(follower, timeout=30)
        end = await stream_offset(client, handle.id)
    assert [r.message for r in replies] == [*texts, "bye"]
    offsets = [offset for offset, _ in events]
    assert offsets == sorted(set(offsets)) and offsets[0] == 0
    assert end is not None and end > offsets[-1]
    got = {e.message_id: e.text for _, e in events if e.kind == "reply"}
    assert got == {f"c{i}": r.message for i, r in enumerate(replies)}
    for message_id, text in got.items():
        deltas = [e.text for _, e in events if e.kind == "delta" and e.message_id == message_id]
        assert "".join(deltas) == text
    # The chain did continue as new (three runs), and the first run handed its log over.
    first = client.get_workflow_handle(handle.id, run_id=handle.result_run_id)
    assert (await first.describe()).status == WorkflowExecutionStatus.CONTINUED_AS_NEW


async def test_the_retained_log_stays_bounded_over_many_turns(
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The workflow reads the bound when it publishes (its module is passed through
    # the sandbox): a small one makes 40 turns enough to cut the log several times.
    keep = 6
    monkeypatch.setattr(workflows.events, "STREAM_KEEP", keep)
    settings = make_settings(llm, model_name, task_queue, continue_as_new_after=15)
    llm.script(model_name, *[say("talk", f"turn {i}") for i in range(40)])
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=CHAT)
        for i in range(40):
            await send_message(client, handle.id, f"message {i}", update_id=f"b{i}")
        retained = await client.get_workflow_handle(handle.id).query(
            "__temporal_workflow_stream_poll", PollInput(from_offset=0), result_type=PollResult
        )
        history = await client.get_workflow_handle(handle.id).fetch_history()
        await client.get_workflow_handle(handle.id).terminate("test over")
    # Each turn publishes a delta and a reply: 80 events, of which the run keeps
    # at most twice the bound plus what one call published since the last cut.
    assert retained.next_offset >= 80
    assert len(retained.items) <= 2 * keep + 2
    assert [i.offset for i in retained.items] == list(
        range(retained.next_offset - len(retained.items), retained.next_offset)
    )
    # The continue-as-new input carried at most the bound.
    started = history.events[0].workflow_execution_started_event_attributes
    assert started.continued_execution_run_id
    payload = json.loads(started.input.payloads[0].data)
    assert len(payload["stream"]["log"]) <= keep
    assert payload["stream"]["base_offset"] > 0


async def test_a_start_input_with_a_stream_state_is_refused(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    # Events a caller wrote would appear on the run's stream as the run's own.
    forged = {
        "agent": "contact_form",
        "stream": {
            "log": [{"topic": "run", "data": "", "offset": 0}],
            "base_offset": 0,
            "publishers": {},
        },
    }
    async with running_worker(client, settings):
        handle = await client.start_workflow(
            "AgentWorkflow",
            forged,
            id=f"forged-{uuid.uuid4().hex[:8]}",
            task_queue=settings.task_queue,
        )
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
        left = await client.get_workflow_handle(handle.id).query(
            "__temporal_workflow_stream_poll", PollInput(from_offset=0), result_type=PollResult
        )
    assert "holds a stream state, which only fsmflow itself passes" in str(info.value.cause)
    assert llm.requests(model_name) == []
    # The stream holds only the run's own end.
    assert len(left.items) == 1
