"""The one validator: RE2 patterns (a search, linear time), fsmflow's formats only,
and the same verdict on every worker whatever optional packages it has."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import FormatChecker

from fsm.context import value_problem
from fsm.engine import apply_turn
from fsm.formats import FORMATS
from fsm.loader import parse_definition
from fsm.problems import DefinitionError
from fsm.validation import FORMAT_CHECKER, first_error, validator_for
from schemas.definition import AgentDefinition, ContextKey
from schemas.run import RunState
from schemas.turn import TurnDecision
from tests.fsm.conftest import build
from tests.fsm.test_formats import INVALID, VALID, cases

EVIL = "^(a+)+$"
"""Exponential for a backtracking engine: Python's re needs seconds for 30 characters."""


def test_the_checker_knows_exactly_fsmflows_formats() -> None:
    assert set(FORMAT_CHECKER.checkers) == set(FORMATS)
    # Formats jsonschema itself could check (some only with optional packages
    # installed) are annotations here, as JSON Schema has unknown formats.
    for name, value in (("ipv4", "999.0.0.1"), ("uuid", "nope"), ("hostname", "-x-")):
        assert first_error({"type": "string", "format": name}, value) is None
    assert not FormatChecker().conforms("nope", "uuid")  # jsonschema's default would refuse


def test_what_jsonschema_registers_globally_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Optional packages make jsonschema register more (or laxer) checks on the
    # class at import time; fsmflow's checker was built from scratch.
    monkeypatch.setitem(FormatChecker.checkers, "email", (lambda _: True, ()))
    monkeypatch.setitem(FormatChecker.checkers, "date-time", (lambda _: True, ()))
    assert FormatChecker().conforms("a@", "email")
    assert first_error({"format": "email"}, "a@") is not None
    assert first_error({"format": "date-time"}, "2024-05-01") is not None


@pytest.mark.parametrize(("name", "value"), cases(VALID))
def test_valid_values_pass_the_validator(name: str, value: str) -> None:
    assert first_error({"type": "string", "format": name}, value) is None


@pytest.mark.parametrize(("name", "value"), cases(INVALID))
def test_invalid_values_fail_the_validator(name: str, value: str) -> None:
    error = first_error({"type": "string", "format": name}, value)
    assert error is not None and error.validator == "format"


def test_a_format_constrains_strings_only() -> None:
    assert first_error({"format": "email"}, 42) is None
    assert first_error({"type": "integer", "format": "date"}, 42) is None


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("b", "abc", True),  # a search, not a full match
        ("^b", "abc", False),
        ("^abc$", "abc", True),
        ("^abc$", "abc\n", False),  # ECMA-262 and RE2: $ is the end, not before a newline
        ("^[0-9]{4}$", "1234", True),
        (r"^\d+$", "١٢٣", False),  # \d is ASCII, as in ECMA-262
        ("^(?:a|b)+$", "abba", True),
        ("(?i)^ADA$", "ada", True),
    ],
)
def test_pattern_is_a_search_with_re2(pattern: str, value: str, matches: bool) -> None:
    error = first_error({"type": "string", "pattern": pattern}, value)
    assert (error is None) is matches
    if error is not None:
        assert (
            error.validator == "pattern"
            and error.message == f"{value!r} does not match {pattern!r}"
        )


def test_a_catastrophic_pattern_finishes() -> None:
    # Nothing asserts on time: the test's timeout is the guard.
    key = ContextKey(type="string", pattern=EVIL, maxLength=100_000)
    problem = value_problem("code", key, "a" * 50_000 + "!")
    assert problem is not None and problem.endswith(f"does not match the pattern {EVIL}")
    assert value_problem("code", key, "a" * 50_000) is None


def test_pattern_properties_run_on_re2_too() -> None:
    schema = {"type": "object", "patternProperties": {EVIL: {"type": "integer"}}}
    closed = {**schema, "additionalProperties": False}
    long_key = "a" * 50_000 + "!"
    assert first_error(schema, {long_key: "x"}) is None
    assert first_error(schema, {"aaa": "x"}) is not None
    error = first_error(closed, {long_key: 1})
    assert error is not None and error.validator == "additionalProperties"
    assert first_error(closed, {"aaaa": 1}) is None
    typed_extras = {**schema, "additionalProperties": {"type": "string"}}
    assert first_error(typed_extras, {"b": 1, "aa": 1}) is not None
    assert first_error(typed_extras, {"b": "x", "aa": 1}) is None


def test_a_pattern_re2_cannot_run_is_a_verdict_not_a_crash() -> None:
    # Definitions and tools are refused at load; a schema from elsewhere that
    # carries such a pattern fails every value with the reason.
    error = first_error({"type": "string", "pattern": r"(a)\1"}, "aa")
    assert error is not None and "evaluated with RE2" in error.message


def test_validators_are_cached_and_independent_of_the_callers_dict() -> None:
    schema: dict[str, Any] = {"type": "string", "maxLength": 3}
    validator = validator_for(schema)
    assert validator_for(dict(schema)) is validator
    schema["maxLength"] = 1
    assert validator.is_valid("abc")
    assert not validator_for(schema).is_valid("abc")


def test_the_first_error_follows_the_schemas_order() -> None:
    # The same keywords in another order are another validator, so which error
    # comes first never depends on which schema a worker happened to see first.
    by_type = first_error({"type": "string", "maxLength": 1}, 12)
    assert by_type is not None and by_type.validator == "type"
    by_length = first_error({"maxLength": 1, "pattern": "^[0-9]$"}, "ab")
    assert by_length is not None and by_length.validator == "maxLength"
    by_pattern = first_error({"pattern": "^[0-9]$", "maxLength": 1}, "ab")
    assert by_pattern is not None and by_pattern.validator == "pattern"


def definition_with(**keys: dict[str, Any]) -> AgentDefinition:
    data = build()
    data["context"].update(keys)
    data["states"]["greeting"]["collects"] = ["name", *keys]
    return parse_definition(data, source="shop.yaml").definition


def greeting_turn(**update: object) -> tuple[RunState, TurnDecision]:
    run = RunState(state="greeting", visits={"greeting": 1})
    return run, TurnDecision(target_state="greeting", context_update=dict(update), message="ok")


def test_the_engine_rejects_an_email_without_a_domain() -> None:
    definition = definition_with(contact={"type": "string", "format": "email"})
    run, turn = greeting_turn(contact="a@")
    result = apply_turn(definition, run, turn)
    assert not result.accepted
    assert result.reason == (
        "value 'a@' for key 'contact' does not fit its declaration: not a valid email"
    )
    run, turn = greeting_turn(contact="ada@example.com")
    accepted = apply_turn(definition, run, turn)
    assert accepted.accepted and accepted.run.context["contact"] == "ada@example.com"


def test_the_engine_judges_a_catastrophic_pattern() -> None:
    definition = definition_with(code={"type": "string", "pattern": EVIL, "maxLength": 100_000})
    run, turn = greeting_turn(code="a" * 50_000 + "!")
    result = apply_turn(definition, run, turn)
    assert not result.accepted
    assert f"for key 'code' does not fit its declaration: does not match the pattern {EVIL}" in (
        str(result.reason)
    )


@pytest.mark.parametrize("pattern", [r"(a)\1", r"^(?=a)a$", r"(?<!x)y", r"a(?!b)"])
def test_a_pattern_re2_cannot_run_is_refused_at_load(pattern: str) -> None:
    data = build()
    data["context"]["name"]["pattern"] = pattern
    with pytest.raises(DefinitionError) as info:
        parse_definition(data, source="shop.yaml")
    assert (
        f"shop.yaml: context key 'name': pattern {pattern!r} is not supported: patterns are "
        "evaluated with RE2, in linear time, so backreferences and lookaround are not available"
    ) in str(info.value)
