"""Eventless transitions (``always``): the model extracts, the machine moves."""

from __future__ import annotations

from typing import Any

import pytest

from fsm.diagram import mermaid
from fsm.engine import allowed_targets, apply_decision, apply_turn, record_tool_call, start_run
from fsm.loader import parse_definition
from fsm.problems import DefinitionError
from schemas.definition import AgentDefinition
from schemas.turn import TurnDecision


def form(**patch: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "signup",
        "initial_state": "ask_email",
        "max_steps": 10,
        "context": {
            "email": {"type": "string", "format": "email"},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "plan": {"type": "string", "enum": ["basic", "pro"]},
        },
        "states": {
            "ask_email": {
                "collects": ["email"],
                "always": [{"target": "ask_age", "requires": ["email"]}],
            },
            "ask_age": {
                "collects": ["age"],
                "always": [
                    {"target": "too_young", "when": {"<": [{"var": "age"}, 18]}, "priority": 1},
                    {"target": "ask_plan", "requires": ["age"]},
                ],
            },
            "ask_plan": {
                "collects": ["plan"],
                "always": [{"target": "done", "requires": ["plan"]}],
            },
            "too_young": {"terminal": True},
            "done": {"terminal": True},
        },
    }
    data.update(patch)
    return data


@pytest.fixture
def signup() -> AgentDefinition:
    return parse_definition(form(), source="signup.yaml").definition


def stay(state: str, **update: Any) -> TurnDecision:
    return TurnDecision(target_state=state, context_update=update, message="thanks")


def test_the_machine_moves_once_the_key_is_known(signup: AgentDefinition) -> None:
    run = start_run(signup)
    # The model is offered only staying: it never picks an eventless move.
    assert allowed_targets(signup, run) == ["ask_email"]
    result = apply_turn(signup, run, stay("ask_email", email="ada@example.com"))
    assert result.accepted and result.run.state == "ask_age"
    # One step (the turn); the hop is traced as the FSM's own move.
    assert result.run.step == 1 and result.run.visits["ask_age"] == 1
    assert [(e.kind, e.from_state, e.to_state) for e in result.run.trace] == [
        ("turn", "ask_email", "ask_email"),
        ("always", "ask_email", "ask_age"),
    ]
    # Without the key the run stays where it is.
    idle = apply_turn(signup, run, stay("ask_email"))
    assert idle.run.state == "ask_email" and idle.run.trace[-1].kind == "turn"


def test_priority_decides_and_hops_chain_into_a_terminal_state(signup: AgentDefinition) -> None:
    run = start_run(signup, {"email": "ada@example.com"})
    # The initial context already holds the email: the run starts in ask_age.
    assert run.state == "ask_age" and run.status == "active"
    young = apply_turn(signup, run, stay("ask_age", age=12)).run
    assert young.state == "too_young" and young.status == "completed"
    adult = apply_turn(signup, run, stay("ask_age", age=40)).run
    assert adult.state == "ask_plan"
    # Everything known at the start: the run hops through to its end without a turn.
    ended = start_run(signup, {"email": "ada@example.com", "age": 40, "plan": "pro"})
    assert ended.state == "done" and ended.status == "completed" and ended.step == 0
    assert [e.to_state for e in ended.trace] == ["ask_age", "ask_plan", "done"]


def test_decisions_and_tool_writes_are_followed_too() -> None:
    data = form()
    data["states"]["ask_email"] = {"approval": {"on_approve": "ask_age", "on_reject": "too_young"}}
    definition = parse_definition(data).definition
    run = start_run(definition, {"age": 30})
    assert run.status == "awaiting_approval"
    approved = apply_decision(definition, run, "approve", by="ann").run
    assert approved.state == "ask_plan" and [e.kind for e in approved.trace] == [
        "approve",
        "always",
    ]
    data = form(mode="autonomous", tools={"lookup": {"writes": ["plan"]}})
    data["states"]["ask_plan"]["tools"] = ["lookup"]
    definition = parse_definition(data).definition
    run = start_run(definition, {"email": "a@b.co", "age": 30})
    assert run.state == "ask_plan"
    called = record_tool_call(
        definition, run, "lookup", ok=True, outcome="ok", values={"plan": "pro"}
    )
    assert called.state == "done" and called.status == "completed"


def refusal(data: dict[str, Any]) -> list[str]:
    with pytest.raises(DefinitionError) as info:
        parse_definition(data, source="signup.yaml")
    return [line.strip() for line in str(info.value).splitlines()[1:]]


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (
            lambda s: s["ask_plan"]["always"].append({"target": "ask_email"}),
            "signup.yaml: state 'ask_email': always: eventless transitions form a loop "
            "(ask_email -> ask_age -> ask_plan -> ask_email): the FSM could move forever "
            "without a turn",
        ),
        (
            lambda s: s["ask_plan"]["always"].append({"target": "ask_plan"}),
            "signup.yaml: state 'ask_plan': always[2]: an eventless transition to the state "
            "itself would loop without a turn",
        ),
        (
            lambda s: s["ask_plan"]["always"].append({"target": "dne"}),
            "signup.yaml: state 'ask_plan': always[2]: target 'dne' is not a state; "
            "did you mean 'done'?",
        ),
        (
            lambda s: s["ask_plan"]["always"].append({"target": "done", "requires": ["mail"]}),
            "signup.yaml: state 'ask_plan': always[2]: requires: 'mail' is not a declared "
            "context key; did you mean 'email'?",
        ),
        (
            lambda s: s["done"].update(always=[{"target": "ask_email"}]),
            "signup.yaml: state 'done': always: a terminal state cannot have eventless transitions",
        ),
        (
            lambda s: s["ask_plan"]["always"].append(
                {"target": "done", "when": {"==": [{"var": "plna"}, "pro"]}}
            ),
            "signup.yaml: state 'ask_plan': always[2]: when: 'plna' is not a declared context key; "
            "did you mean 'plan'?",
        ),
    ],
)
def test_checks_refuse_what_could_loop_or_cannot_hold(patch: Any, expected: str) -> None:
    data = form()
    patch(data["states"])
    lines = refusal(data)
    assert any(line.startswith(expected) for line in lines), lines


def test_a_state_that_only_moves_by_always_is_not_a_dead_end_and_is_drawn() -> None:
    loaded = parse_definition(form())
    assert loaded.warnings == []
    diagram = mermaid(loaded.definition)
    assert "ask_email --> ask_age: always if has email" in diagram
    assert "ask_age --> too_young: always if age < 18" in diagram


def test_the_last_step_still_follows_an_eventless_transition() -> None:
    # max_steps is reached by the turn that sets the plan; the hop to done is no
    # step, so the run completes there rather than ending on the bound.
    definition = parse_definition(form(max_steps=1), source="signup.yaml").definition
    run = start_run(definition, {"email": "ada@example.com", "age": 30})
    assert run.state == "ask_plan"
    result = apply_turn(definition, run, stay("ask_plan", plan="pro"))
    assert result.run.step == 1 and result.run.state == "done"
    assert result.run.status == "completed"
    # Without the plan the bound ends the run where it is.
    idle = apply_turn(definition, run, stay("ask_plan"))
    assert idle.run.state == "ask_plan" and idle.run.status == "max_steps"
