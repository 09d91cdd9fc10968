"""A definition written to hurt cannot: every bomb is refused with one line naming
the limit, in time and memory bounded by the limits, before the work it would cost.

No test asserts a speed: the per-test timeout guards the time, and where an
operation count says more, it is counted.
"""

from __future__ import annotations

import json
import math
import re
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import fsm.checks
from activities.bundles import BundleCache
from activities.definitions import DefinitionActivities
from fsm.checks import check_definition, guard_depth
from fsm.loader import load_file, load_text, parse_definition
from fsm.problems import DefinitionError, Problem
from schemas.activity import AgentBundle, ResolveDefinitionInput, RunLimits
from schemas.definition import RECORDED, AgentDefinition, definition_json_schema
from schemas.limits import (
    MAX_APPROVERS,
    MAX_CONTEXT_KEYS,
    MAX_DEFINITION_BYTES,
    MAX_DURATION_SECONDS,
    MAX_ENUM_VALUES,
    MAX_GUARD_DEPTH,
    MAX_NAME_LENGTH,
    MAX_NESTING,
    MAX_PROBLEMS,
    MAX_SOURCE_BYTES,
    MAX_STATES,
    MAX_TEXT_LENGTH,
    MAX_TOOLS,
    MAX_TRANSITIONS,
    MAX_VALUE_LENGTH,
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


def chain(count: int, fan: int = 1) -> dict[str, Any]:
    """``count`` states, each moving to the next ``fan``; the last one ends the run."""
    states: dict[str, Any] = {}
    for i in range(count - 1):
        targets = range(i + 1, min(i + 1 + fan, count))
        states[f"s{i}"] = {"transitions": [{"target": f"s{j}"} for j in targets]}
    states[f"s{count - 1}"] = {"terminal": True}
    return {"name": "chain", "initial_state": "s0", "states": states}


def recorded(data: dict[str, Any]) -> AgentDefinition:
    """A definition past the limits, as only a recorded one may be.

    What the checks themselves cost, apart from the limits that keep such input out.
    """
    return AgentDefinition.model_validate(data, context=RECORDED)


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


def test_a_guard_at_the_limit_is_accepted() -> None:
    data = build()
    data["states"]["adult"]["transitions"][0]["when"] = not_guard(MAX_GUARD_DEPTH)
    assert guard_depth(not_guard(MAX_GUARD_DEPTH)) == MAX_GUARD_DEPTH
    parse_definition(data, source="shop.yaml")


def test_a_guard_deeper_than_the_limit_is_one_line_naming_state_and_transition() -> None:
    data = build()
    data["states"]["adult"]["transitions"][0]["when"] = not_guard(MAX_GUARD_DEPTH + 1)
    assert refusal_of(data) == [
        f"shop.yaml: state 'adult': transition 1: when: nested {MAX_GUARD_DEPTH + 1} levels "
        f"deep; the limit is {MAX_GUARD_DEPTH}"
    ]


def test_a_guard_deeper_than_a_document_may_be_is_refused_before_validation() -> None:
    data = build()
    data["states"]["adult"]["transitions"][0]["when"] = not_guard(600)
    assert refusal_of(data) == [
        "shop.yaml: state 'adult': transition 1: when: nested deeper than the limit of "
        f"{MAX_NESTING} levels"
    ]


def test_guard_depth_counts_objects_and_lists() -> None:
    assert guard_depth(None) == 0
    assert guard_depth({">=": [{"var": "age"}, 18]}) == 3
    assert guard_depth([[[[]]]]) == 4
    assert guard_depth(not_guard(5000)) == 5000  # no recursion: any depth is measured


async def test_a_deep_guard_inline_is_refused_at_run_start(tmp_path: Path) -> None:
    """What the workflow's first activity does with an inline definition."""
    definitions = DefinitionActivities(tmp_path, RunLimits())
    for depth, message in [
        (MAX_GUARD_DEPTH + 1, f"when: nested {MAX_GUARD_DEPTH + 1} levels deep"),
        (600, f"when: nested deeper than the limit of {MAX_NESTING} levels"),
    ]:
        data = build()
        data["states"]["adult"]["transitions"][0]["when"] = not_guard(depth)
        with pytest.raises(ApplicationError) as info:
            await ActivityEnvironment().run(
                definitions.resolve_definition, ResolveDefinitionInput(definition=data)
            )
        assert info.value.type == "DefinitionRefused"
        assert info.value.non_retryable
        refused = str(info.value).splitlines()
        assert len(refused) == 2
        assert f"inline definition: state 'adult': transition 1: {message}" in refused[1]


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
    # About 300 KB: the instructions plus every state's defaults.
    match = re.fullmatch(
        r"shop\.yaml: the definition takes (\d+) KB as a run records it \(JSON, with "
        rf"defaults\); the limit is {MAX_DEFINITION_BYTES // 1024} KB",
        lines[0],
    )
    assert len(lines) == 1 and match is not None, lines
    assert 300 <= int(match[1]) < 320


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
    # A worker handed the bundle of such a run (its model turns) parses it too.
    held = BundleCache().add("hash", AgentBundle(definition=definition.model_dump(mode="json")))
    assert held.definition == definition


def test_the_json_schema_shows_the_limits_to_editors() -> None:
    schema = definition_json_schema()
    assert schema["properties"]["persona"]["maxLength"] == MAX_TEXT_LENGTH
    assert schema["properties"]["states"]["maxProperties"] == MAX_STATES
    assert schema["$defs"]["State"]["properties"]["transitions"]["maxItems"] == MAX_TRANSITIONS


def test_docs_list_every_limit() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "format.md").read_text()
    limits = docs.split("## Limits", 1)[1]
    rows = {
        "a definition file": f"{MAX_SOURCE_BYTES // 1024} KB",
        "nesting of mappings and lists": f"{MAX_NESTING} levels",
        "keys, values and list items": f"{MAX_VALUES:,}",
        "the definition as a run records it": f"{MAX_DEFINITION_BYTES // 1024} KB",
        "`states`": f"{MAX_STATES}",
        "`transitions` of one state": f"{MAX_TRANSITIONS}",
        "`context` keys": f"{MAX_CONTEXT_KEYS}",
        "`tools` of one state": f"{MAX_TOOLS}",
        "`enum` values": f"{MAX_ENUM_VALUES}, each string at most {MAX_VALUE_LENGTH:,}",
        "`approvers`": f"{MAX_APPROVERS}, each at most {MAX_VALUE_LENGTH:,}",
        "prose:": f"{MAX_TEXT_LENGTH:,} characters",
        "names:": f"{MAX_NAME_LENGTH} characters",
        "`pattern`": f"{MAX_VALUE_LENGTH:,} characters",
        "a `when` guard": f"{MAX_GUARD_DEPTH} levels",
        "durations": f"{MAX_DURATION_SECONDS // 86400}d",
    }
    for what, limit in rows.items():
        (row,) = [line for line in limits.splitlines() if line.startswith(f"| {what}")]
        assert limit in row.split("|")[2], row
    assert f"at most {MAX_PROBLEMS} problems" in limits


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


# ------------------------------------------------------------------ the graph


@pytest.fixture
def successor_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """How often the graph checks ask for a state's moves (the real function runs)."""
    calls: list[str] = []
    real = fsm.checks.successors

    def counting(state: Any) -> list[str]:
        calls.append("")
        return real(state)

    monkeypatch.setattr(fsm.checks, "successors", counting)
    return calls


def test_a_10000_state_chain_is_checked_in_linear_work(successor_calls: list[str]) -> None:
    # The backward search used to sweep the states once per state it added:
    # 50 million calls here, 39 s. Now: reachability, then one reverse pass.
    definition = recorded(chain(10_000))
    assert check_definition(definition) == []
    assert len(successor_calls) == 2 * 10_000


def test_a_10000_state_definition_with_100000_transitions_is_checked(
    successor_calls: list[str],
) -> None:
    definition = recorded(chain(10_000, fan=10))
    assert sum(len(s.transitions) for s in definition.states.values()) > 99_000
    assert check_definition(definition) == []
    assert len(successor_calls) == 2 * 10_000


def test_10000_traps_are_found_and_the_first_listed() -> None:
    data = chain(10_000)
    # s1 ... s9999 can never end: the last state leads back instead of ending.
    data["states"]["s9999"] = {"transitions": [{"target": "s9998"}]}
    data["states"]["s0"]["transitions"].append({"target": "done"})
    data["states"]["done"] = {"terminal": True}
    problems = check_definition(recorded(data))
    assert [p.path for p in problems[:MAX_PROBLEMS]] == [
        ("states", f"s{i}") for i in range(1, MAX_PROBLEMS + 1)
    ]
    assert problems[-1].message == f"checks stopped after {MAX_PROBLEMS} problems; fix these first"


def test_10000_unknown_targets_among_10000_states_stop_at_max_problems() -> None:
    data = chain(10_000)
    for i in range(9_999):
        data["states"][f"s{i}"]["transitions"].append({"target": f"x{i}"})
    problems = check_definition(recorded(data))
    assert len(problems) == MAX_PROBLEMS + 1
    # Past MAX_SUGGESTION_CHOICES names, "did you mean" does not compare.
    assert problems[0].message == "target 'x0' is not a state"


def test_alias_free_yaml_of_a_real_definition_still_loads() -> None:
    """The reader change keeps ordinary documents (and their lines) as they were."""
    text = yaml.safe_dump(build(), sort_keys=False)
    loaded = load_text(text, source="shop.yaml")
    assert loaded.definition.name == "shop"
    assert json.loads(loaded.definition.model_dump_json())["initial_state"] == "greeting"
