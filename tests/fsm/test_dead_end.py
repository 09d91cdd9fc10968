"""Dead ends: a state with ways out none of which can ever be taken ends the run at
once (or goes where ``on_dead_end`` says), instead of idling until ``max_steps``."""

from __future__ import annotations

from typing import Any

import pytest

from fsm.checks import check_definition
from fsm.engine import apply_turn, dead_end, record_tool_call, start_run
from fsm.loader import parse_definition
from fsm.problems import DefinitionError
from schemas.definition import AgentDefinition
from schemas.turn import TurnDecision


def agent(**state: Any) -> dict[str, Any]:
    """An autonomous agent whose 'work' state leaves once 'fetch' has succeeded."""
    work: dict[str, Any] = {
        "tools": ["fetch"],
        "allow_stay": False,
        "max_tool_calls": 2,
        "max_tool_errors": 2,
        "transitions": [{"target": "done", "when": {">=": [{"var": "_calls.fetch"}, 1]}}],
    }
    work.update(state)
    states = {"work": work, "done": {"terminal": True}}
    if "stuck" in str(state):
        states["stuck"] = {"terminal": True}
    return {
        "name": "fetcher",
        "mode": "autonomous",
        "initial_state": "work",
        "max_steps": 20,
        "states": states,
    }


def load(data: dict[str, Any]) -> AgentDefinition:
    return parse_definition(data, source="fetcher.yaml", tools=["fetch"]).definition


def test_failed_calls_spend_their_own_budget_then_the_run_ends_naming_the_state() -> None:
    definition = load(agent())
    run = record_tool_call(definition, start_run(definition), "fetch", ok=False, outcome="error")
    assert run.status == "active" and dead_end(definition, run) is None
    run = record_tool_call(definition, run, "fetch", ok=False, outcome="error")
    assert run.status == "failed" and run.step == 2
    assert run.end_reason == (
        "dead end in state 'work': no transition out can hold and no tool can be called "
        "(2 failed calls on this visit)"
    )
    assert run.trace[-1].kind == "fail"


def test_on_dead_end_goto_moves_the_run_without_a_step() -> None:
    definition = load(agent(on_dead_end={"goto": "stuck"}))
    run = start_run(definition)
    for _ in range(2):
        run = record_tool_call(definition, run, "fetch", ok=False, outcome="error")
    assert (run.state, run.status, run.step) == ("stuck", "completed", 2)
    entry = run.trace[-1]
    assert (entry.kind, entry.from_state, entry.to_state) == ("dead_end", "work", "stuck")
    assert entry.reason.startswith("dead end in state 'work'")


def test_a_spent_call_budget_with_a_guard_wanting_more_is_a_dead_end() -> None:
    # Two successful calls spend max_tool_calls; the way out wants three.
    data = agent()
    data["states"]["work"]["transitions"][0]["when"] = {">=": [{"var": "_calls.fetch"}, 3]}
    definition = load(data)
    run = start_run(definition)
    for _ in range(2):
        run = record_tool_call(definition, run, "fetch", ok=True, outcome="ok")
    assert run.status == "failed"
    assert run.end_reason is not None and "(2 of 2 calls made on this visit)" in run.end_reason


@pytest.mark.parametrize(
    "transition",
    [
        # A key the model may still write here: the turn can open the way.
        {"target": "done", "requires": ["answer"]},
        # Steps still pass: the guard may hold later.
        {"target": "done", "when": {">=": [{"var": "_step"}, 5]}},
    ],
)
def test_a_way_out_the_run_can_still_open_is_no_dead_end(transition: dict[str, Any]) -> None:
    data = agent(collects=["answer"], transitions=[transition])
    data["context"] = {"answer": {"type": "string", "maxLength": 50}}
    definition = load(data)
    run = start_run(definition)
    for _ in range(2):
        run = record_tool_call(definition, run, "fetch", ok=False, outcome="error")
    assert run.status == "active" and dead_end(definition, run) is None


def test_a_conversation_state_waiting_for_a_key_it_cannot_collect_is_a_dead_end() -> None:
    data = {
        "name": "chat",
        "initial_state": "hello",
        "context": {"name": {"type": "string", "maxLength": 50}},
        "states": {
            "hello": {"transitions": [{"target": "ask"}, {"target": "bye"}]},
            "ask": {"transitions": [{"target": "bye", "requires": ["name"]}]},
            "bye": {"terminal": True},
        },
    }
    definition = parse_definition(data, source="chat.yaml").definition
    run = start_run(definition)
    moved = apply_turn(definition, run, TurnDecision(target_state="ask", message="hi")).run
    assert moved.status == "failed"
    assert moved.end_reason == "dead end in state 'ask': no transition out can hold"
    # A state that only chats (no way out declared) is no dead end: max_steps ends it.
    data["states"]["ask"] = {}
    definition = parse_definition(data, source="chat.yaml").definition
    moved = apply_turn(definition, run, TurnDecision(target_state="ask", message="hi")).run
    assert moved.status == "active"


def warnings_of(data: dict[str, Any]) -> list[str]:
    definition = load(data)
    return [p.message for p in check_definition(definition) if p.severity == "warning"]


def test_check_warns_where_every_way_out_waits_for_a_tool_that_can_fail() -> None:
    (warning,) = warnings_of(agent())
    assert warning.startswith("every way out waits for a successful call of fetch")
    assert "on_dead_end" in warning
    # Saying on_dead_end (fail or goto) acknowledges it; another way out avoids it.
    assert warnings_of(agent(on_dead_end="fail")) == []
    assert warnings_of(agent(on_dead_end={"goto": "stuck"})) == []
    other = agent()
    other["states"]["work"]["transitions"].append({"target": "done", "priority": 200})
    assert warnings_of(other) == []


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"goto": "nowhere"}, "goto 'nowhere' is not a state"),
        ({"goto": "work"}, "goto names the state itself; use 'fail' to end the run"),
        ("wait", "must be 'fail' or {goto: STATE}"),
    ],
)
def test_a_bad_on_dead_end_is_refused(rule: Any, expected: str) -> None:
    with pytest.raises(DefinitionError) as info:
        parse_definition(agent(on_dead_end=rule), source="fetcher.yaml", tools=["fetch"])
    assert expected in str(info.value) and "on_dead_end" in str(info.value)
