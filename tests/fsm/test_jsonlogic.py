"""JSON Logic guards: operators, totality, and the three-valued "may hold"."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsm import jsonlogic
from tests.fsm.strategies import KEYS, guards, values

DATA = {"age": 30, "name": "Ada", "tags": ["a", "b"], "flag": False, "_visits": {"write": 2}}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ({"var": "age"}, 30),
        ({"var": "missing"}, None),
        ({"var": ["missing", 7]}, 7),
        ({"var": "_visits.write"}, 2),
        ({"==": [{"var": "age"}, 30]}, True),
        ({"==": [{"var": "age"}, 30.0]}, True),
        ({"==": [{"var": "flag"}, 0]}, False),
        ({"!=": [{"var": "name"}, "Bob"]}, True),
        ({"<": [{"var": "age"}, 40]}, True),
        ({"<": [18, {"var": "age"}, 65]}, True),
        ({">=": [{"var": "missing"}, 1]}, False),
        ({"<": [{"var": "name"}, 3]}, False),
        ({"in": ["a", {"var": "tags"}]}, True),
        ({"in": ["d", "Ada"]}, True),
        ({"and": [{"var": "age"}, {"var": "flag"}]}, False),
        ({"or": [{"var": "flag"}, {"var": "name"}]}, "Ada"),
        ({"!": {"var": "flag"}}, True),
        ({"!!": {"var": "tags"}}, True),
    ],
)
def test_evaluate(expr: Any, expected: Any) -> None:
    assert jsonlogic.evaluate(expr, DATA) == expected


def test_validate_names_unknown_operators_and_bad_arity() -> None:
    assert jsonlogic.validate({"==": [1, 1]}) == []
    assert jsonlogic.validate({"regex": ["a"]})[0].startswith("unknown operator 'regex'")
    assert "takes 2..2 arguments, got 3" in jsonlogic.validate({"==": [1, 2, 3]})[0]
    assert "exactly one operator" in jsonlogic.validate({"==": [1, 1], "!=": [1, 2]})[0]
    assert "var needs a key name" in jsonlogic.validate({"var": 3})[0]


def test_may_hold_sees_through_conjunctions() -> None:
    spent = {"and": [{"==": [{"var": "verdict"}, "revise"]}, {"<": [{"var": "_visits.write"}, 2]}]}
    assert not jsonlogic.may_hold(spent, DATA, {"verdict"})
    assert jsonlogic.may_hold(spent, {"_visits": {"write": 1}}, {"verdict"})
    either = {"or": [{"==": [{"var": "verdict"}, "ok"]}, {"var": "flag"}]}
    assert jsonlogic.may_hold(either, DATA, {"verdict"})
    assert not jsonlogic.may_hold(either, DATA, set())


@settings(max_examples=300, deadline=None)
@given(
    expr=guards,
    before=st.dictionaries(st.sampled_from(KEYS), values, max_size=4),
    after=st.dictionaries(st.sampled_from(KEYS), values, max_size=4),
    unknown=st.sets(st.sampled_from(KEYS)),
)
def test_may_hold_is_sound(
    expr: Any, before: dict[str, Any], after: dict[str, Any], unknown: set[str]
) -> None:
    # Whatever the turn writes to the unknown keys, if the guard then holds,
    # may_hold must have said it could: a reachable move is never hidden.
    data = {**before, "_visits": {"s0": 1}, "_step": 0}
    written = {k: v for k, v in after.items() if k in unknown}
    if jsonlogic.truthy(jsonlogic.evaluate(expr, {**data, **written})):
        assert jsonlogic.may_hold(expr, data, unknown)
