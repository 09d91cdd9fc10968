"""A definition written to hurt cannot: every bomb is refused with one line naming
the limit, in time and memory bounded by the limits, before the work it would cost.

No test asserts a speed: the per-test timeout guards the time, and where an
operation count says more, it is counted.
"""

from __future__ import annotations

import json
import math
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml

from fsm.loader import load_file, load_text, parse_definition
from fsm.problems import DefinitionError, Problem
from schemas.definition import RECORDED, AgentDefinition, definition_json_schema
from schemas.limits import (
    MAX_CONTEXT_KEYS,
    MAX_DEFINITION_BYTES,
    MAX_ENUM_VALUES,
    MAX_NAME_LENGTH,
    MAX_NESTING,
    MAX_PROBLEMS,
    MAX_SOURCE_BYTES,
    MAX_STATES,
    MAX_TEXT_LENGTH,
    MAX_TRANSITIONS,
    MAX_VALUES,
)
from tests.fsm.conftest import build

SMALL = """\
name: small
initial_state: a
states:
  a:
    transitions: [{target: b}]
  b: {terminal: true}
"""


def refusal(text: str, source: str = "bomb.yaml") -> list[str]:
    """The rendered lines of the refusal of ``text`` (it must be refused)."""
    with pytest.raises(DefinitionError) as info:
        load_text(text, source=source)
    return [problem.render(source) for problem in info.value.problems]


def refusal_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(DefinitionError) as info:
        parse_definition(data, source="shop.yaml")
    return [problem.render("shop.yaml") for problem in info.value.problems]


def alias_bomb(levels: int) -> str:
    """The "billion laughs": ``levels`` lines of 10 aliases each, 10**levels values."""
    lines = [SMALL, "x0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def not_guard(depth: int) -> dict[str, Any]:
    """``{"!": {"!": ... {"var": "agreed"}}}``: ``depth`` objects deep."""
    expr: dict[str, Any] = {"var": "agreed"}
    for _ in range(depth - 1):
        expr = {"!": expr}
    return expr


# ------------------------------------------------------------------ YAML


def test_alias_bomb_is_refused_before_anything_is_expanded() -> None:
    text = alias_bomb(9)  # 10**9 values, 1.25 GB and 16 s before aliases were refused
    assert len(text) < 700
    tracemalloc.start()
    try:
        lines = refusal(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines == [
        "bomb.yaml: aliases (*x0) are not allowed in a definition; write the value out (line 9)"
    ]
    # Composing stops at the first alias: what was read of a 700-byte text, no more.
    assert peak < 200_000


def test_a_self_referencing_alias_is_refused() -> None:
    assert refusal(SMALL + "loop: &loop [*loop]\n") == [
        "bomb.yaml: aliases (*loop) are not allowed in a definition; write the value out (line 7)"
    ]


def test_a_merge_of_a_mapping_written_out_still_loads() -> None:
    text = SMALL.replace("  b: {terminal: true}", "  b: {<<: {terminal: true}}")
    assert load_text(text, source="merge.yaml").definition.states["b"].terminal


def test_yaml_nested_too_deep_is_refused_before_composing_it() -> None:
    guard = "[" * 600 + "]" * 600
    text = SMALL.replace("{target: b}", f"{{target: b, when: {guard}}}")
    assert refusal(text) == [
        f"bomb.yaml: nested deeper than the limit of {MAX_NESTING} levels (line 5)"
    ]


def test_yaml_with_too_many_values_is_refused_while_composing() -> None:
    values = ", ".join(["1"] * (MAX_VALUES + 1))
    lines = refusal(SMALL + f"extra: [{values}]\n")
    assert lines == [f"bomb.yaml: more keys and values than the limit of {MAX_VALUES:,} (line 7)"]


def test_text_larger_than_the_limit_is_refused_unparsed() -> None:
    text = SMALL + "# " + "x" * MAX_SOURCE_BYTES + "\n"
    limit = MAX_SOURCE_BYTES // 1024
    assert refusal(text) == [f"bomb.yaml: larger than the limit of {limit:,} KB"]


def test_a_file_larger_than_the_limit_is_not_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as file:
        file.write(SMALL.encode())
        file.truncate(64 * MAX_SOURCE_BYTES)  # a sparse file: 32 MB of zeros
    tracemalloc.start()
    try:
        with pytest.raises(DefinitionError, match="larger than the limit of 512 KB") as info:
            load_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(info.value.problems) == 1
    assert peak < 2 * MAX_SOURCE_BYTES


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-13-01", "'2024-13-01' is not a valid timestamp: month must be in 1..12 (line 7)"),
        ("9" * 5000, "is not a valid int: Exceeds the limit (4300 digits) for integer string"),
    ],
    ids=["impossible date", "5000-digit integer"],
)
def test_yaml_value_that_does_not_fit_its_type_is_one_line(value: str, expected: str) -> None:
    (line,) = refusal(SMALL + f"version: {value}\n")
    assert expected in line
    assert len(line) < 400


# ------------------------------------------------------------------ JSON


def test_json_nested_too_deep_is_refused() -> None:
    assert refusal("[" * 100_000, source="bomb.json") == [
        f"bomb.json: nested deeper than the limit of {MAX_NESTING} levels"
    ]


def test_json_integer_too_long_is_one_line() -> None:
    (line,) = refusal('{"name": "a", "max_steps": ' + "9" * 5000 + "}", source="bomb.json")
    assert line.startswith("bomb.json: JSON: Exceeds the limit (4300 digits)")
    assert "sys.set_int_max_str_digits" not in line


# ------------------------------------------------------------------ guards


def test_a_guard_deeper_than_a_document_may_be_is_refused_before_validation() -> None:
    data = build()
    data["states"]["adult"]["transitions"][0]["when"] = not_guard(600)
    assert refusal_of(data) == [
        "shop.yaml: state 'adult': transition 1: when: nested deeper than the limit of "
        f"{MAX_NESTING} levels"
    ]


# ------------------------------------------------------------------ sizes


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (
            lambda d: d.update(description="x" * 3_000_000),
            f"shop.yaml: description: 3,000,000 characters; the limit is {MAX_TEXT_LENGTH:,}",
        ),
        (
            lambda d: d["states"]["collect"].update(instructions="x" * (MAX_TEXT_LENGTH + 1)),
            f"shop.yaml: state 'collect': instructions: {MAX_TEXT_LENGTH + 1:,} characters; "
            f"the limit is {MAX_TEXT_LENGTH:,}",
        ),
        (
            lambda d: d["states"]["greeting"]["transitions"][0].update(description="x" * 20_000),
            "shop.yaml: state 'greeting': transition 1: description: 20,000 characters",
        ),
        (
            lambda d: d["states"]["gate"].update(fallback_message="x" * 20_000),
            "shop.yaml: state 'gate': fallback_message: 20,000 characters",
        ),
        (
            lambda d: d["context"]["plan"].update(enum=["x" * 5_000]),
            "shop.yaml: context key 'plan': enum[1]: 5,000 characters; the limit is 1,000",
        ),
        (
            lambda d: d["context"]["plan"].update(enum=list(range(MAX_ENUM_VALUES + 1))),
            f"shop.yaml: context key 'plan': enum: {MAX_ENUM_VALUES + 1} items; "
            f"the limit is {MAX_ENUM_VALUES}",
        ),
        (
            lambda d: d["states"]["collect"].update(collects=["age"] * (MAX_CONTEXT_KEYS + 1)),
            f"shop.yaml: state 'collect': collects: {MAX_CONTEXT_KEYS + 1} items",
        ),
        (
            lambda d: d["states"]["bye"].update(
                terminal=False, transitions=[{"target": "done"}] * (MAX_TRANSITIONS + 1)
            ),
            f"shop.yaml: state 'bye': transitions: {MAX_TRANSITIONS + 1} items; "
            f"the limit is {MAX_TRANSITIONS}",
        ),
        (
            lambda d: d["context"].update(
                {f"k{i}": {"type": "boolean"} for i in range(MAX_CONTEXT_KEYS)}
            ),
            f"shop.yaml: context: {MAX_CONTEXT_KEYS + 6} entries; the limit is {MAX_CONTEXT_KEYS}",
        ),
        (
            lambda d: d["states"].update({f"s{i}": {"terminal": True} for i in range(MAX_STATES)}),
            f"shop.yaml: states: {MAX_STATES + 6} entries; the limit is {MAX_STATES}",
        ),
        (
            lambda d: d["states"].update({"s" * 5000: {"terminal": True}}),
            f"shop.yaml: state '{'s' * (MAX_NAME_LENGTH - 1)}\u2026': the name: 5,000 characters; "
            f"the limit is {MAX_NAME_LENGTH}",
        ),
        (
            lambda d: d["states"]["greeting"]["transitions"][0].update(target="t" * 5000),
            "shop.yaml: state 'greeting': transition 1: target: 5,000 characters; "
            f"the limit is {MAX_NAME_LENGTH}",
        ),
        (
            lambda d: d["states"]["gate"]["approval"].update(timeout="3651d"),
            "shop.yaml: state 'gate': approval: timeout: duration '3651d' is longer than the "
            "limit of 3650d",
        ),
        (
            lambda d: d["context"]["age"].update(maximum=math.inf),
            "shop.yaml: context key 'age': maximum: Input should be a finite number",
        ),
    ],
    ids=[
        "3 MB description",
        "instructions",
        "transition description",
        "fallback message",
        "enum value",
        "enum values",
        "collects",
        "transitions",
        "context keys",
        "states",
        "state id",
        "target",
        "approval timeout",
        "infinite maximum",
    ],
)
def test_every_size_is_bounded_with_one_line(patch: Any, expected: str) -> None:
    data = build()
    patch(data)
    lines = refusal_of(data)
    assert len(lines) == 1, lines
    assert lines[0].startswith(expected), lines
    assert len(lines[0]) < 400


def test_a_definition_too_large_to_record_is_refused() -> None:
    data = build()
    # Every field within its limit, the whole not: 20 states of 15,000 characters.
    for i in range(20):
        data["states"]["greeting"]["transitions"].append({"target": f"big{i}"})
        data["states"][f"big{i}"] = {"instructions": "x" * 15_000, "terminal": True}
    lines = refusal_of(data)
    assert lines == [
        "shop.yaml: the definition takes 303 KB as a run records it (JSON, with defaults); "
        f"the limit is {MAX_DEFINITION_BYTES // 1024} KB"
    ]


def test_recorded_definitions_are_exempt_from_the_limits() -> None:
    """A running run never fails to load because a limit was lowered after it started."""
    data = build()
    data["states"]["collect"]["instructions"] = "x" * (MAX_TEXT_LENGTH + 1)
    data["states"]["gate"]["approval"]["timeout"] = "5000d"
    data["states"].update({f"s{i}": {"terminal": True} for i in range(MAX_STATES)})
    with pytest.raises(ValueError, match="characters; the limit is"):
        AgentDefinition.model_validate(data)
    definition = AgentDefinition.model_validate(data, context=RECORDED)
    assert len(definition.states) == MAX_STATES + 6


def test_the_json_schema_shows_the_limits_to_editors() -> None:
    schema = definition_json_schema()
    assert schema["properties"]["persona"]["maxLength"] == MAX_TEXT_LENGTH
    assert schema["properties"]["states"]["maxProperties"] == MAX_STATES
    assert schema["$defs"]["State"]["properties"]["transitions"]["maxItems"] == MAX_TRANSITIONS


def test_values_quoted_in_messages_are_cut() -> None:
    data = build()
    data["k" * 100_000] = 1
    data["mode"] = "m" * 100_000
    data["states"]["adult"]["transitions"][0]["when"] = {"o" * 100_000: 1}
    lines = refusal_of(data)
    assert len(lines) == 2
    assert all(len(line) < 400 for line in lines), [len(line) for line in lines]
    data = build()
    data["states"]["adult"]["transitions"][0]["when"] = {"!": {"p" * 100_000: 1}}
    (line,) = refusal_of(data)
    assert "unknown operator 'ppp" in line and len(line) < 400


def test_a_refusal_lists_at_most_max_problems() -> None:
    data = build()
    data.update({f"unknown_{i}": 1 for i in range(3 * MAX_PROBLEMS)})
    with pytest.raises(DefinitionError) as info:
        parse_definition(data, source="shop.yaml")
    problems = info.value.problems
    assert len(problems) == MAX_PROBLEMS + 1
    assert problems[-1] == Problem(f"{2 * MAX_PROBLEMS} more problems not listed")
    assert str(info.value).splitlines()[0] == (
        f"shop.yaml: definition refused, {3 * MAX_PROBLEMS} problems"
    )


def test_alias_free_yaml_of_a_real_definition_still_loads() -> None:
    """The reader change keeps ordinary documents (and their lines) as they were."""
    text = yaml.safe_dump(build(), sort_keys=False)
    loaded = load_text(text, source="shop.yaml")
    assert loaded.definition.name == "shop"
    assert json.loads(loaded.definition.model_dump_json())["initial_state"] == "greeting"
