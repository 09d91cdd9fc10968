"""Properties over random definitions and random turns: whatever a model replies,
no applied turn leaves the table's allowed moves, writes a reserved, undeclared or
ill-typed key, or exceeds max_steps; and every turn schema is a valid JSON Schema
accepting exactly the allowed targets."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from fsm.context import value_problem
from fsm.engine import allowed_targets, apply_decision, apply_turn, start_run, writable_keys
from fsm.turn_schema import turn_schema
from schemas.definition import AgentDefinition
from schemas.run import RunState
from tests.fsm.strategies import definitions, turns

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def walk_runs(data: st.DataObject, definition: AgentDefinition, length: int) -> list[RunState]:
    """Drive a run with random turns and decisions; return every run state seen."""
    run = start_run(definition)
    seen = [run]
    for _ in range(length):
        if run.ended:
            break
        if run.status == "awaiting_approval":
            decision = data.draw(st.sampled_from(["approve", "reject"]))
            by = data.draw(st.sampled_from(["alice", "bob"]))
            run = apply_decision(definition, run, decision, by=by).run
        else:
            before = run
            turn = data.draw(turns(definition))
            result = apply_turn(definition, run, turn)
            run = result.run
            check_turn_invariants(
                definition, before, turn.target_state, turn.context_update, result.accepted, run
            )
        seen.append(run)
    return seen


def check_turn_invariants(
    definition: AgentDefinition,
    before: RunState,
    target: str,
    update: dict[str, Any],
    accepted: bool,
    after: RunState,
) -> None:
    assert after.step <= definition.max_steps
    assert all(not k.startswith("_") and k in definition.context for k in after.context)
    for key, value in after.context.items():
        assert value_problem(key, definition.context[key], value) is None
    if accepted:
        assert target in allowed_targets(definition, before)
        assert after.state == target
        assert after.step == before.step + 1
        changed = {k for k in after.context if after.context[k] != before.context.get(k)}
        assert changed <= set(writable_keys(definition, before.state))
    else:
        assert (after.state, after.context, after.step) == (
            before.state,
            before.context,
            before.step,
        )
        assert after.trace[-1].accepted is False


@SETTINGS
@given(definition=definitions(), data=st.data())
def test_no_applied_turn_leaves_the_table(definition: AgentDefinition, data: st.DataObject) -> None:
    runs = walk_runs(data, definition, length=12)
    for run in runs:
        assert run.step <= definition.max_steps
        assert run.state in definition.states
        if run.step == definition.max_steps:
            assert run.ended
        accepted = [e for e in run.trace if e.accepted]
        assert len(accepted) == run.step


def string_schemas_are_bounded(schema: Any) -> bool:
    if isinstance(schema, dict):
        if schema.get("type") == "string" and "maxLength" not in schema and "enum" not in schema:
            return False
        if schema.get("type") == "object":
            if schema.get("additionalProperties") is not False:
                return False
            if sorted(schema.get("required", [])) != sorted(schema.get("properties", {})):
                return False
        return all(string_schemas_are_bounded(v) for v in schema.values())
    if isinstance(schema, list):
        return all(string_schemas_are_bounded(v) for v in schema)
    return True


def turn_instance(schema: dict[str, Any], update: dict[str, Any], target: str) -> dict[str, Any]:
    """A conversation turn with the fields the schema has (reasoning and keys are optional)."""
    fields = {"reasoning": "", "context_update": update, "target_state": target, "message": ""}
    if "context_update" not in schema["properties"] and update:
        return fields  # keys the state cannot take: the schema must refuse them
    return {k: v for k, v in fields.items() if k in schema["properties"]}


@SETTINGS
@given(definition=definitions(), data=st.data(), extra=st.text(max_size=8))
def test_turn_schema_accepts_exactly_the_allowed_targets(
    definition: AgentDefinition, data: st.DataObject, extra: str
) -> None:
    for run in walk_runs(data, definition, length=6):
        if run.status != "active":
            continue
        schema = turn_schema(definition, run)
        Draft202012Validator.check_schema(schema)
        assert string_schemas_are_bounded(schema)
        validator = Draft202012Validator(schema)
        allowed = allowed_targets(definition, run)
        empty_update = {key: None for key in writable_keys(definition, run.state)}
        for target in [*definition.states, extra]:
            instance = turn_instance(schema, empty_update, target)
            assert validator.is_valid(instance) == (target in allowed), (target, allowed)


@SETTINGS
@given(definition=definitions(), data=st.data())
def test_schema_and_engine_agree_on_context_updates(
    definition: AgentDefinition, data: st.DataObject
) -> None:
    # Staying is always allowed, so with target = the current state the only thing
    # judged is the update: the schema and the engine must give the same verdict.
    run = start_run(definition)
    if run.status != "active" or run.state not in allowed_targets(definition, run):
        return
    turn = data.draw(turns(definition))
    update = {key: None for key in writable_keys(definition, run.state)}
    update.update(turn.context_update)
    schema = turn_schema(definition, run)
    schema_ok = Draft202012Validator(schema).is_valid(turn_instance(schema, update, run.state))
    stay = turn.model_copy(update={"target_state": run.state, "context_update": update})
    assert apply_turn(definition, run, stay).accepted == schema_ok, (update, run.state)
