"""Every static check: a broken definition is refused with a message naming the
file, the state and the field; a valid one loads with its warnings."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fsm.checks import check_definition
from fsm.loader import load_file, load_text, parse_definition
from fsm.problems import DefinitionError
from tests.fsm.conftest import build


def refused(data: dict[str, Any]) -> list[str]:
    with pytest.raises(DefinitionError) as info:
        parse_definition(data, source="shop.yaml")
    lines = str(info.value).splitlines()
    assert lines[0].startswith("shop.yaml: definition refused")
    return [line.strip() for line in lines[1:]]


def mutate(fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = build()
    fn(data)
    return data


def states(data: dict[str, Any]) -> dict[str, Any]:
    return data["states"]


CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "unknown top-level field",
        lambda d: d.update(inital_state="greeting"),
        "shop.yaml: unknown field 'inital_state'; did you mean 'initial_state'?",
    ),
    (
        "unknown state field",
        lambda d: states(d)["greeting"].update(colects=["name"]),
        "shop.yaml: state 'greeting': unknown field 'colects'; did you mean 'collects'?",
    ),
    (
        "unknown transition field",
        lambda d: states(d)["greeting"]["transitions"][1].update(tagret="bye"),
        "shop.yaml: state 'greeting': transition 2: unknown field 'tagret'",
    ),
    (
        "unknown approval field",
        lambda d: states(d)["gate"]["approval"].update(on_aprove="done"),
        "shop.yaml: state 'gate': approval: unknown field 'on_aprove'",
    ),
    (
        "wrong type",
        lambda d: states(d)["greeting"].update(history_window="four"),
        "shop.yaml: state 'greeting': history_window: Input should be a valid integer",
    ),
    (
        "wrong context type",
        lambda d: d["context"]["age"].update(type="int"),
        "shop.yaml: context key 'age': type: Input should be",
    ),
    (
        "missing initial_state",
        lambda d: d.pop("initial_state"),
        "shop.yaml: missing required field 'initial_state'",
    ),
    (
        "initial state not a state",
        lambda d: d.update(initial_state="greting"),
        "shop.yaml: initial_state 'greting' is not a state; did you mean 'greeting'?",
    ),
    (
        "unknown target",
        lambda d: states(d)["greeting"]["transitions"][1].update(target="by"),
        "shop.yaml: state 'greeting': transition 2: target 'by' is not a state",
    ),
    (
        "no terminal state",
        lambda d: [s.pop("terminal", None) for s in states(d).values()],
        "shop.yaml: no terminal state",
    ),
    (
        "terminal with transitions",
        lambda d: states(d)["done"].update(transitions=[{"target": "bye"}]),
        "shop.yaml: state 'done': transitions: a terminal state cannot have transitions",
    ),
    (
        "terminal with approval",
        lambda d: states(d)["done"].update(approval={"on_approve": "bye", "on_reject": "bye"}),
        "shop.yaml: state 'done': approval: a terminal state cannot be an approval gate",
    ),
    (
        "approval target unknown",
        lambda d: states(d)["gate"]["approval"].update(on_reject="adlt"),
        "shop.yaml: state 'gate': approval: on_reject 'adlt' is not a state; did you mean 'adult'?",
    ),
    (
        "approval timeout target unknown",
        lambda d: states(d)["gate"]["approval"].update(on_timeout="nowhere"),
        "shop.yaml: state 'gate': approval: on_timeout 'nowhere' is not a state",
    ),
    (
        "unreachable state",
        lambda d: states(d).update(island={"terminal": True}),
        "shop.yaml: state 'island': unreachable from the initial state 'greeting'",
    ),
    (
        "trap",
        lambda d: (
            states(d).update(
                loop_a={"transitions": [{"target": "loop_b"}]},
                loop_b={"transitions": [{"target": "loop_a"}]},
            )
            or states(d)["greeting"]["transitions"].append({"target": "loop_a"})
        ),
        "shop.yaml: state 'loop_a': no terminal state can be reached from here (a trap)",
    ),
    (
        "collects undeclared key",
        lambda d: states(d)["greeting"].update(collects=["nme"]),
        "shop.yaml: state 'greeting': collects: 'nme' is not a declared context key; "
        "did you mean 'name'?",
    ),
    (
        "sees undeclared key",
        lambda d: states(d)["collect"].update(sees=["phone"]),
        "shop.yaml: state 'collect': sees: 'phone' is not a declared context key",
    ),
    (
        "requires undeclared key",
        lambda d: states(d)["greeting"]["transitions"][0].update(requires=["emale"]),
        "shop.yaml: state 'greeting': transition 1: requires: 'emale' is not a declared",
    ),
    (
        "when undeclared key",
        lambda d: states(d)["collect"]["transitions"][0].update(when={">": [{"var": "height"}, 1]}),
        "shop.yaml: state 'collect': transition 1: when: 'height' is not a declared context key",
    ),
    (
        "when unknown operator",
        lambda d: states(d)["collect"]["transitions"][0].update(
            when={"between": [{"var": "age"}, 1, 2]}
        ),
        "shop.yaml: state 'collect': transition 1: when: unknown operator 'between'",
    ),
    (
        "when unknown nested operator",
        lambda d: states(d)["collect"]["transitions"][0].update(
            when={"and": [{"==": [1, 1]}, {"regex": ["a", "b"]}]}
        ),
        "unknown operator 'regex' at and[1]",
    ),
    (
        "when unknown system key",
        lambda d: states(d)["collect"]["transitions"][0].update(when={"<": [{"var": "_turns"}, 3]}),
        "'_turns' is not a system key",
    ),
    (
        "when visits of unknown state",
        lambda d: states(d)["collect"]["transitions"][0].update(
            when={"<": [{"var": "_visits.colect"}, 3]}
        ),
        "'_visits.colect' names no state; did you mean 'collect'?",
    ),
    (
        "reserved declared key",
        lambda d: d["context"].update(_state={"type": "string"}),
        "shop.yaml: context key '_state' starts with '_', which is reserved",
    ),
    (
        "reserved key in collects",
        lambda d: states(d)["greeting"].update(collects=["_step"]),
        "shop.yaml: state 'greeting': collects: '_step' is a reserved key",
    ),
    (
        "reserved state id",
        lambda d: states(d).update(_hidden={"terminal": True}),
        "state id '_hidden' starts with '_', which is reserved",
    ),
    (
        "state id with a space",
        lambda d: states(d).update({"good bye": {"terminal": True}}),
        "state id 'good bye' must be letters, digits and '_'",
    ),
    (
        "invalid timeout",
        lambda d: states(d)["gate"]["approval"].update(timeout="1 day"),
        "shop.yaml: state 'gate': approval: timeout: invalid duration '1 day'",
    ),
    (
        "zero timeout",
        lambda d: states(d)["gate"]["approval"].update(timeout="0h"),
        "invalid duration '0h': must be longer than zero",
    ),
    (
        "timeout without target",
        lambda d: states(d)["gate"]["approval"].pop("on_timeout"),
        "a timeout needs on_timeout",
    ),
    (
        "max_steps below one",
        lambda d: d.update(max_steps=0),
        "shop.yaml: max_steps must be at least 1, got 0",
    ),
    (
        "gate with transitions",
        lambda d: states(d)["gate"].update(transitions=[{"target": "done"}]),
        "shop.yaml: state 'gate': transitions: an approval gate moves only by a decision",
    ),
    (
        "bad pattern",
        lambda d: d["context"]["name"].update(pattern="([a-z]"),
        "shop.yaml: context key 'name': pattern '([a-z]' is not a valid regular expression",
    ),
    (
        "pattern RE2 cannot run",
        lambda d: d["context"]["name"].update(pattern="^(a)\\1$"),
        "shop.yaml: context key 'name': pattern '^(a)\\\\1$' is not supported: patterns are "
        "evaluated with RE2, in linear time, so backreferences and lookaround are not available",
    ),
    (
        "constraint of another type",
        lambda d: d["context"]["age"].update(maxLength=3),
        "shop.yaml: context key 'age': maxLength applies to string keys only",
    ),
    (
        "array without items",
        lambda d: d["context"].update(tags={"type": "array"}),
        "context key 'tags': an array key needs items",
    ),
]


@pytest.mark.parametrize(("patch", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_check_names_file_state_and_field(
    patch: Callable[[dict[str, Any]], None], expected: str
) -> None:
    problems = refused(mutate(patch))
    assert any(expected in line for line in problems), problems


def test_base_definition_is_valid() -> None:
    loaded = parse_definition(build(), source="shop.yaml")
    assert loaded.warnings == []
    assert loaded.definition.states["gate"].approval is not None
    assert loaded.definition.states["gate"].approval.timeout_seconds == 3600


def test_every_problem_is_listed_not_only_the_first() -> None:
    data = build()
    states(data)["greeting"]["transitions"][1]["target"] = "nowhere"
    states(data)["collect"]["collects"] = ["undeclared"]
    data["max_steps"] = 0
    problems = refused(data)
    assert len(problems) == 3
    assert any("nowhere" in p for p in problems)
    assert any("undeclared" in p for p in problems)
    assert any("max_steps" in p for p in problems)


def test_structural_errors_are_all_listed() -> None:
    data = build()
    states(data)["greeting"]["colects"] = []
    states(data)["done"]["terminal"] = "maybe"
    data["context"]["age"]["type"] = "int"
    assert len(refused(data)) == 3


def test_self_only_state_is_a_warning() -> None:
    data = build()
    states(data)["lobby"] = {"transitions": [{"target": "lobby"}]}
    states(data)["greeting"]["transitions"].append({"target": "lobby"})
    loaded = parse_definition(data, source="shop.yaml")
    rendered = [w.render("shop.yaml") for w in loaded.warnings]
    assert rendered == [
        "shop.yaml: warning: state 'lobby': no transition leaves this state except to itself; "
        "a run that enters it stays until max_steps ends it"
    ]


def test_duplicate_transition_is_a_warning() -> None:
    data = build()
    states(data)["greeting"]["transitions"].append({"target": "bye"})
    loaded = parse_definition(data, source="shop.yaml")
    assert len(loaded.warnings) == 1
    assert "transitions 2 and 3 both go to 'bye'" in loaded.warnings[0].message


def test_same_target_with_different_guards_is_fine() -> None:
    data = build()
    states(data)["greeting"]["transitions"].append({"target": "bye", "requires": ["name"]})
    assert parse_definition(data, source="shop.yaml").warnings == []


def test_unknown_tool_is_an_error_when_tools_are_known() -> None:
    data = build({"mode": "autonomous"})
    states(data)["collect"]["tools"] = ["lookup_customr"]
    with pytest.raises(DefinitionError, match="tool 'lookup_customr' is not registered; did you"):
        parse_definition(data, source="shop.yaml", tools=["lookup_customer"])
    # Without a registry (plain `fsmflow check`) tool names are not judged.
    parse_definition(data, source="shop.yaml")


def test_tools_belong_to_autonomous_runs() -> None:
    data = build()
    states(data)["collect"]["tools"] = ["lookup_customer"]
    with pytest.raises(DefinitionError, match="state 'collect': tools: tools are called in auto"):
        parse_definition(data, source="shop.yaml", tools=["lookup_customer"])


def test_tool_options_and_call_guards_name_known_tools() -> None:
    data = build({"mode": "autonomous", "tools": {"lookup": {"timeout": "5s"}, "spare": {}}})
    states(data)["collect"]["tools"] = ["lookup"]
    states(data)["greeting"]["transitions"].append(
        {"target": "bye", "when": {">=": [{"var": "_calls.lookpu"}, 1]}}
    )
    with pytest.raises(DefinitionError) as refused:
        parse_definition(data, source="shop.yaml", tools=["lookup"])
    messages = [p.message for p in refused.value.problems]
    assert any(
        "'_calls.lookpu' names no tool a state lists; did you mean 'lookup'" in m for m in messages
    )
    assert any("tool 'spare' is not registered" in m for m in messages)
    states(data)["greeting"]["transitions"].pop()
    loaded = parse_definition(data, source="shop.yaml")
    assert [w.message for w in loaded.warnings] == [
        "options for tool 'spare', which no state lists in its tools"
    ]
    data["tools"]["lookup"]["timeout"] = "soon"
    with pytest.raises(DefinitionError, match="tools: lookup: timeout: .*invalid duration 'soon'"):
        parse_definition(data, source="shop.yaml")


YAML_TEXT = """\
name: shop
initial_state: a
states:
  a:
    transitions:
      - target: b
  b:
    terminal: true
"""


def test_yaml_problems_carry_line_numbers() -> None:
    text = YAML_TEXT.replace("target: b", "target: c")
    with pytest.raises(DefinitionError) as info:
        load_text(text, source="flow.yaml")
    assert info.value.problems[0].render("flow.yaml") == (
        "flow.yaml: state 'a': transition 1: target 'c' is not a state (line 6)"
    )


def test_yaml_syntax_error_names_line() -> None:
    with pytest.raises(DefinitionError) as info:
        load_text(YAML_TEXT + "  c: [unclosed\n", source="flow.yaml")
    (problem,) = info.value.problems
    assert problem.message.startswith("YAML syntax error")
    assert problem.line is not None and problem.line >= 9


def test_yaml_duplicate_state_ids_are_refused() -> None:
    text = YAML_TEXT + "  a:\n    terminal: true\n"
    with pytest.raises(DefinitionError) as info:
        load_text(text, source="flow.yaml")
    rendered = info.value.problems[0].render("flow.yaml")
    assert "duplicate key 'a' (first defined on line 4)" in rendered
    assert rendered.endswith("(line 9)")


def test_json_syntax_error_names_line() -> None:
    with pytest.raises(DefinitionError, match=r"JSON syntax error: .* \(line 3\)"):
        load_text('{"name": "x",\n "initial_state": "a",\n "states": {,}}', source="f.json")


def test_json_duplicate_state_ids_are_refused() -> None:
    text = json.dumps(build())[:-2] + ', "done": {"terminal": true}}}'
    with pytest.raises(DefinitionError, match="duplicate key 'done'"):
        load_text(text, source="shop.json")


def test_empty_and_non_mapping_documents() -> None:
    with pytest.raises(DefinitionError, match="a definition is a mapping of fields"):
        load_text("", source="empty.yaml")
    with pytest.raises(DefinitionError, match="got list"):
        load_text("- a\n- b\n", source="list.yaml")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="cannot read file"):
        load_file(tmp_path / "missing.yaml")


@pytest.mark.parametrize("name", ["support.yaml", "form.yaml", "research.yaml"])
def test_examples_are_valid_without_warnings(name: str) -> None:
    loaded = load_file(Path(__file__).parents[2] / "examples" / name)
    assert loaded.warnings == []


def test_unknown_model_tier_is_an_error_when_tiers_are_known() -> None:
    data = build()
    data["states"]["collect"]["model"] = "capabel"
    with pytest.raises(DefinitionError) as info:
        parse_definition(data, source="shop.yaml", tiers=["default", "capable"])
    assert str(info.value).splitlines()[1].strip() == (
        "shop.yaml: state 'collect': model: model tier 'capabel' is not configured "
        "(set FSMFLOW_MODEL_CAPABEL); did you mean 'capable'?"
    )
    parse_definition(data, source="shop.yaml")  # plain `fsmflow check` knows no tiers


def test_a_greeting_on_an_autonomous_agent_is_a_warning() -> None:
    data = build({"mode": "autonomous", "greeting": "Hello!"})
    definition = parse_definition(data, source="shop.yaml").definition
    (warning,) = [p for p in check_definition(definition) if p.severity == "warning"]
    assert warning.message.startswith("greeting is a conversation's first message")
