"""The engine: allowed moves, applying and rejecting turns, bounds, approval gates."""

from __future__ import annotations

import pytest

from fsm.engine import (
    ContextError,
    TurnParseError,
    allowed_moves,
    allowed_targets,
    apply_decision,
    apply_turn,
    fail_run,
    parse_turn,
    start_run,
    tool_call_problem,
    visible_keys,
    writable_keys,
)
from fsm.loader import parse_definition
from schemas.activity import ToolInfo
from schemas.definition import AgentDefinition
from schemas.run import RunState
from schemas.turn import AutonomousDecision, TurnDecision
from tests.fsm.conftest import build


def turn(target: str, **update: object) -> TurnDecision:
    return TurnDecision(target_state=target, context_update=dict(update), message="ok")


def at(shop: AgentDefinition, state: str, **context: object) -> RunState:
    return RunState(state=state, context=dict(context), visits={state: 1})


def test_start_run_validates_initial_context(shop: AgentDefinition) -> None:
    run = start_run(shop, {"name": "Ada", "age": None})
    assert (run.state, run.context, run.step, run.status) == (
        "greeting",
        {"name": "Ada"},
        0,
        "active",
    )
    with pytest.raises(ContextError) as info:
        start_run(shop, {"nme": "x", "_step": 3, "age": "old"})
    message = str(info.value)
    assert "'nme' is not declared" in message
    assert "'_step' is reserved" in message
    assert "for key 'age' does not fit" in message


def test_allowed_moves_by_priority_with_stay_last(shop: AgentDefinition) -> None:
    run = at(shop, "collect", email="a@b.co", age=30)
    assert allowed_targets(shop, run) == ["bye", "adult", "collect"]
    stay = allowed_moves(shop, run)[-1]
    assert stay.target == "collect" and "stay" in stay.description


def test_guard_that_cannot_hold_this_turn_is_not_offered(shop: AgentDefinition) -> None:
    # greeting collects 'name', which 'collect' requires: the model may write it in
    # this very turn, so the move is offered. A move requiring 'email', which this
    # state cannot write and does not have, is not.
    data = build()
    data["states"]["greeting"]["transitions"].append({"target": "adult", "requires": ["email"]})
    # By default a state sees (and may write) the keys its guards read; hide them.
    data["states"]["greeting"]["sees"] = []
    definition = parse_definition(data).definition
    run = start_run(definition)
    assert "collect" in allowed_targets(definition, run)
    assert "adult" not in allowed_targets(definition, run)
    run = start_run(definition, {"email": "a@b.co"})
    assert "adult" in allowed_targets(definition, run)


def test_turn_that_fills_a_required_key_may_move_in_the_same_turn(shop: AgentDefinition) -> None:
    result = apply_turn(shop, start_run(shop), turn("collect", name="Ada"))
    assert result.accepted, result.reason
    assert (result.run.state, result.run.context, result.run.step) == (
        "collect",
        {"name": "Ada"},
        1,
    )
    assert result.run.visits == {"greeting": 1, "collect": 1}
    assert result.run.trace[-1].accepted and result.run.trace[-1].to_state == "collect"


def test_move_whose_guard_fails_is_rejected_with_a_reason(shop: AgentDefinition) -> None:
    run = at(shop, "collect", email="a@b.co")
    result = apply_turn(shop, run, turn("adult", age=12))
    assert not result.accepted
    assert result.reason == "'adult' is only allowed when age >= 18; that does not hold"
    result = apply_turn(shop, at(shop, "greeting"), turn("collect"))
    assert result.reason == "'collect' needs 'name' set first; set it in context_update or stay"


@pytest.mark.parametrize(
    ("state", "the_turn", "reason"),
    [
        (
            "greeting",
            turn("done"),
            "'done' is not reachable from 'greeting' now; allowed: collect, bye, greeting",
        ),
        (
            "greeting",
            turn("clsoing"),
            "'clsoing' is not a state; allowed now: collect, bye, greeting",
        ),
        (
            "greeting",
            turn("greeting", phone="1"),
            "key 'phone' is not a declared context key; writable here: name",
        ),
        (
            "greeting",
            turn("greeting", email="a@b.co"),
            "key 'email' cannot be written in state 'greeting'; writable here: name",
        ),
        (
            "greeting",
            turn("greeting", _state="done"),
            "key '_state' is reserved for the framework and cannot be written",
        ),
        ("collect", turn("collect", age="thirty"), "value 'thirty' for key 'age' does not fit"),
        ("collect", turn("collect", age=True), "value True for key 'age' does not fit"),
        ("collect", turn("collect", age=-1), "value -1 for key 'age' does not fit"),
        ("collect", turn("collect", email="not-an-email"), "for key 'email' does not fit"),
        ("greeting", turn("greeting", name="x" * 41), "for key 'name' does not fit"),
        ("adult", turn("adult", plan="gold"), "value 'gold' for key 'plan' does not fit"),
    ],
)
def test_rejected_turn_changes_nothing_but_the_trace(
    shop: AgentDefinition, state: str, the_turn: TurnDecision, reason: str
) -> None:
    run = at(shop, state, name="Ada")
    result = apply_turn(shop, run, the_turn, model="m", tokens=7)
    assert not result.accepted
    assert reason in result.reason, result.reason
    after = result.run
    assert (after.state, after.context, after.step, after.visits, after.status) == (
        run.state,
        run.context,
        run.step,
        run.visits,
        run.status,
    )
    entry = after.trace[-1]
    assert (entry.accepted, entry.reason, entry.model, entry.tokens) == (
        False,
        result.reason,
        "m",
        7,
    )


def test_null_values_mean_no_update(shop: AgentDefinition) -> None:
    run = at(shop, "collect", email="a@b.co")
    result = apply_turn(shop, run, turn("collect", email=None, age=None))
    assert result.accepted and result.run.context == {"email": "a@b.co"}


def test_terminal_state_ends_the_run(shop: AgentDefinition) -> None:
    result = apply_turn(shop, start_run(shop), turn("bye"))
    assert result.run.status == "completed" and result.run.ended
    assert result.run.end_reason == "reached terminal state 'bye'"
    assert allowed_targets(shop, result.run) == []
    again = apply_turn(shop, result.run, turn("greeting"))
    assert not again.accepted and again.reason.startswith("the run has ended")


def test_max_steps_ends_the_run_in_a_defined_way() -> None:
    data = build({"max_steps": 3})
    definition = parse_definition(data).definition
    run = start_run(definition)
    for _ in range(3):
        result = apply_turn(definition, run, turn("greeting"))
        assert result.accepted
        run = result.run
    assert run.step == 3 and run.status == "max_steps"
    assert run.end_reason == "max_steps (3) reached in state 'greeting'"
    assert not apply_turn(definition, run, turn("greeting")).accepted
    assert run.step == 3


def test_entering_a_gate_waits_for_a_decision(shop: AgentDefinition) -> None:
    run = at(shop, "adult", plan="pro")
    result = apply_turn(shop, run, turn("gate", agreed=True))
    assert result.accepted and result.run.status == "awaiting_approval"
    gate = result.run
    assert allowed_targets(shop, gate) == []
    assert apply_turn(shop, gate, turn("done")).reason.startswith(
        "the run is waiting for an approval"
    )

    denied = apply_decision(shop, gate, "approve", by="mallory")
    assert (
        not denied.accepted
        and "'mallory' may not decide at 'gate' (approvers: alice)" in denied.reason
    )
    approved = apply_decision(shop, gate, "approve", by="alice", comment="lgtm")
    assert approved.accepted and approved.run.state == "done" and approved.run.status == "completed"
    entry = approved.run.trace[-1]
    assert (entry.kind, entry.by, entry.reason, entry.to_state) == (
        "approve",
        "alice",
        "lgtm",
        "done",
    )

    rejected = apply_decision(shop, gate, "reject", by="alice", comment="not yet")
    assert rejected.run.state == "adult" and rejected.run.status == "active"
    timed_out = apply_decision(shop, gate, "timeout")
    assert timed_out.run.state == "bye" and timed_out.run.trace[-1].kind == "timeout"


def test_decision_without_an_open_gate_is_rejected(shop: AgentDefinition) -> None:
    result = apply_decision(shop, start_run(shop), "approve", by="alice")
    assert not result.accepted and result.reason == "no approval gate is open in 'greeting'"


def test_fail_run(shop: AgentDefinition) -> None:
    run = fail_run(start_run(shop), "model kept replying nonsense")
    assert run.ended and run.status == "failed" and run.trace[-1].kind == "fail"


def test_collects_are_writable_and_sees_are_read_only(shop: AgentDefinition) -> None:
    assert writable_keys(shop, "collect") == ["email", "age"]
    assert visible_keys(shop, "collect") == ["email", "age", "name"]
    assert visible_keys(shop, "adult") == ["plan", "agreed", "password"]
    # 'sees' unset: the keys the guards read are visible.
    data = build()
    del data["states"]["collect"]["sees"]
    definition = parse_definition(data).definition
    assert visible_keys(definition, "collect") == ["email", "age"]
    # A key the state only sees cannot be written: the turn is rejected, naming why.
    run = apply_turn(
        shop, start_run(shop), TurnDecision(target_state="collect", context_update={"name": "Ada"})
    ).run
    result = apply_turn(
        shop, run, TurnDecision(target_state="collect", context_update={"name": "Eve"})
    )
    assert not result.accepted
    assert result.reason == (
        "key 'name' cannot be written in state 'collect' (it is read-only here); "
        "writable here: email, age"
    )


def test_system_keys_in_guards() -> None:
    data = build()
    data["states"]["greeting"]["transitions"][1]["when"] = {">=": [{"var": "_visits.greeting"}, 2]}
    definition = parse_definition(data).definition
    run = start_run(definition)
    assert "bye" not in allowed_targets(definition, run)
    run = run.model_copy(update={"visits": {"greeting": 2}})
    assert "bye" in allowed_targets(definition, run)


def test_tool_call_allowlist_and_arguments(shop: AgentDefinition) -> None:
    data = build({"mode": "autonomous"})
    data["states"]["collect"]["tools"] = ["lookup"]
    definition = parse_definition(data).definition
    schemas = {
        "lookup": ToolInfo(
            parameters={
                "type": "object",
                "properties": {"q": {"type": "string"}},
                "required": ["q"],
                "additionalProperties": False,
            }
        )
    }
    run = at(definition, "collect")
    assert tool_call_problem(definition, run, "lookup", {"q": "x"}, schemas) is None
    assert "bad arguments for 'lookup'" in str(
        tool_call_problem(definition, run, "lookup", {}, schemas)
    )
    assert "tool 'delete_all' is not allowed in 'collect'; allowed: lookup" == tool_call_problem(
        definition, run, "delete_all", {}, schemas
    )
    assert "not allowed in 'greeting'" in str(
        tool_call_problem(definition, at(definition, "greeting"), "lookup", {"q": "x"}, schemas)
    )


def test_parse_turn(shop: AgentDefinition) -> None:
    parsed = parse_turn(shop, '{"target_state": "bye", "message": "hi"}')
    assert isinstance(parsed, TurnDecision) and parsed.target_state == "bye"
    with pytest.raises(TurnParseError, match="not valid JSON"):
        parse_turn(shop, '{"target_state": ')
    with pytest.raises(TurnParseError, match="target_state: Field required"):
        parse_turn(shop, '{"message": "hi"}')
    with pytest.raises(TurnParseError, match="extra: Extra inputs"):
        parse_turn(shop, '{"target_state": "bye", "extra": 1}')
    auto = shop.model_copy(update={"mode": "autonomous"})
    decision = parse_turn(auto, '{"action": {"kind": "call_tool", "tool": "t", "arguments": {}}}')
    assert isinstance(decision, AutonomousDecision) and decision.action.kind == "call_tool"
