"""The events a run shows on its stream, derived from what it did (pure)."""

from __future__ import annotations

from fsm import events
from fsm.judge import move_decided
from schemas.definition import AgentDefinition
from schemas.events import MAX_EVENT_TEXT, RunEvent
from schemas.run import Reply, RunState


def test_a_start_a_move_and_an_open_gate() -> None:
    start = RunState(state="research")
    assert events.run_changed(None, start) == [
        RunEvent(kind="state", state="research", status="active")
    ]
    # Nothing changed that the stream shows: a stay, a new context value.
    stayed = start.model_copy(update={"step": 1, "context": {"notes": "x"}})
    assert events.run_changed(start, stayed) == []
    gate = stayed.model_copy(update={"state": "publish_gate", "status": "awaiting_approval"})
    assert [(e.kind, e.from_state, e.state) for e in events.run_changed(stayed, gate)] == [
        ("state", "research", "publish_gate"),
        ("gate", "", "publish_gate"),
    ]
    # The end is not derived here: the workflow publishes it last (after replies).
    done = gate.model_copy(update={"state": "done", "status": "completed"})
    assert [e.kind for e in events.run_changed(gate, done)] == ["state"]


def test_texts_are_bounded_and_the_wire_form_small() -> None:
    reply = Reply(message="x" * 10_000, state="s", status="active", accepted=True, step=2)
    event = events.replied(reply, "m-1")
    assert len(event.text) == MAX_EVENT_TEXT and event.text.endswith("\u2026")
    call = events.tool_called("search", {"q": "y" * 2_000, "limit": 2}, state="s", step=1)
    assert len(call.text) == events.TOOL_PREVIEW_CHARS
    assert call.text.startswith('{"limit": 2, "q": "yyy') and call.text.endswith("\u2026")
    result = events.tool_returned("search", ok=True, text="z" * 2_000, state="s", step=1)
    assert len(result.text) == events.TOOL_PREVIEW_CHARS and result.accepted
    # Only what means something goes on the wire; a subscriber gets the rest back.
    delta = events.delta("3.7", "Hel", message_id="m-1", step=3)
    assert events.wire(delta) == {
        "kind": "delta",
        "turn": "3.7",
        "text": "Hel",
        "message_id": "m-1",
        "step": 3,
    }
    assert RunEvent.model_validate(events.wire(delta)) == delta
    assert events.turn_id(3, 7) == "3.7"


def test_a_move_is_decided_only_when_the_engine_would_apply_it(shop: AgentDefinition) -> None:
    run = RunState(state="greeting", visits={"greeting": 1})
    named = {"reasoning": "", "context_update": {"name": "Ada"}, "target_state": "collect"}
    assert move_decided(shop, run, named, {})
    # 'collect' needs a name the reply does not give; a state that is not a move.
    assert not move_decided(shop, run, {**named, "context_update": {"name": None}}, {})
    assert not move_decided(shop, run, {**named, "target_state": "adult"}, {})
    assert not move_decided(shop, run, {**named, "context_update": {"_step": 3}}, {})
    # An autonomous run has no message to stream.
    autonomous = shop.model_copy(update={"mode": "autonomous"})
    assert not move_decided(autonomous, run, named, {})
