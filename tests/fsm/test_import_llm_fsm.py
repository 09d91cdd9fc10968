"""`fsmflow import llm-fsm`: llm-fsm / fsm_llm JSON definitions converted to fsmflow."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from fsm.importers.llm_fsm import LlmFsmError, convert
from fsm.loader import load_file, load_text
from workers.cli import main

FIXTURES = Path(__file__).parent / "llm_fsm"


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def minimal(**states: dict[str, Any]) -> dict[str, Any]:
    """A two-state llm-fsm definition, with states added or replaced."""
    data: dict[str, Any] = {
        "name": "tiny",
        "description": "A tiny agent.",
        "initial_state": "ask",
        "states": {
            "ask": {
                "id": "ask",
                "description": "Ask",
                "purpose": "Ask for the answer.",
                "required_context_keys": ["answer"],
                "transitions": [
                    {
                        "target_state": "end",
                        "description": "answered",
                        "conditions": [
                            {"description": "known", "requires_context_keys": ["answer"]}
                        ],
                    }
                ],
            },
            "end": {"id": "end", "description": "End", "purpose": "Say bye.", "transitions": []},
        },
    }
    data["states"].update(states)
    return data


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_every_fixture_converts_to_a_definition_that_passes_check(name: str) -> None:
    result = convert(fixture(name), source=name)
    loaded = result.load()
    assert loaded.warnings == []
    # Round trip: the YAML holds exactly the document.
    assert yaml.safe_load(result.definition_yaml) == result.definition
    assert loaded.definition.model_dump(exclude_defaults=True)["states"].keys() == (
        result.definition["states"].keys()
    )


def test_six_state_form() -> None:
    result = convert(fixture("volunteer_form.json"), source="form.json")
    d = result.definition
    assert (d["name"], d["version"], d["initial_state"], d["mode"]) == (
        "volunteer_signup",
        "3.0",
        "welcome",
        "conversation",
    )
    assert d["persona"].startswith("A cheerful garden coordinator")
    assert list(d["states"]) == [
        "welcome",
        "ask_email",
        "ask_days",
        "ask_skills",
        "confirm",
        "done",
    ]
    assert d["states"]["done"]["terminal"] is True
    welcome = d["states"]["welcome"]
    assert welcome["purpose"] == "Welcome the visitor and ask for their full name."
    assert welcome["description"] == "Greet the volunteer"
    assert welcome["collects"] == ["full_name"]
    (move,) = welcome["transitions"]
    assert move["target"] == "ask_email" and move["requires"] == ["full_name"]
    assert move["description"].startswith("The volunteer gave their name (when: name is known)")
    assert "next: Ask for an email address" in move["description"]
    assert d["context"]["full_name"] == {
        "type": "string",
        "description": "full name; collected in welcome",
        "maxLength": 200,
    }
    # Compared with true in a guard: a boolean.
    assert d["context"]["confirmed"]["type"] == "boolean"
    confirm = d["states"]["confirm"]["transitions"]
    assert [(t["target"], t["priority"]) for t in confirm] == [("done", 1), ("welcome", 2)]
    assert confirm[0]["when"] == {"==": [{"var": "confirmed"}, True]}
    assert "(ends the conversation)" in confirm[0]["description"]
    assert result.report == [
        "llm-fsm writes the reply in the state a turn moves to; fsmflow writes it with the "
        "move, so each move's description names the next state's purpose",
        "max_steps: llm-fsm has no step bound; set to 50, raise it for longer conversations",
    ]


def test_recommender_merges_extraction_and_response_instructions() -> None:
    result = convert(fixture("recommender.json"), source="r.json")
    state = result.definition["states"]["ask_preferences"]
    assert state["instructions"] == (
        "What to extract: Extract player_count as a number and genre as one word "
        "(strategy, party, cooperative).\n\nHow to reply: Ask a short, friendly question "
        "about what is missing."
    )
    assert result.definition["name"] == "Board_Game_Recommender"
    assert result.report[0].startswith(
        "name 'Board Game Recommender' became 'Board_Game_Recommender'"
    )
    assert (
        "state 'goodbye': final state: response_instructions not shown to the model (the reply "
        "that enters it is written in the state before, with the move)" in result.report
    )
    assert "How to reply: Keep it to one sentence." in result.definition_yaml


def test_jsonlogic_conditions_become_requires_and_when() -> None:
    d = convert(fixture("loan_rules.json"), source="loan.json").definition
    too_young, approved, referred = d["states"]["collect"]["transitions"]
    assert too_young["requires"] == ["age"] and too_young["when"] == {"<": [{"var": "age"}, 18]}
    # Several conditions: requires is the union, when is their conjunction.
    assert approved["requires"] == ["income", "amount"]
    assert approved["when"] == {
        "and": [
            {">=": [{"var": "age"}, 18]},
            {"<=": [{"var": "amount"}, 20000]},
            {"in": [{"var": "employment"}, ["employed", "self-employed"]]},
        ]
    }
    # {"!": {"missing": [...]}} is fsmflow's requires.
    assert referred["requires"] == ["age", "income", "amount"] and "when" not in referred
    types = {key: spec["type"] for key, spec in d["context"].items()}
    assert types == {
        "age": "number",
        "income": "string",
        "amount": "number",
        "employment": "string",
    }


def test_priority_keeps_its_meaning() -> None:
    # Both order moves by ascending priority (lower first), both default to 100.
    data = fixture("loan_rules.json")
    loaded = convert(data, source="loan.json").load()
    ordered = sorted(loaded.definition.states["collect"].transitions, key=lambda t: t.priority)
    assert [t.target for t in ordered] == ["too_young", "approved", "referred"]
    no_priority = convert(minimal(), source="m.json").load().definition
    assert no_priority.states["ask"].transitions[0].priority == 100


def test_odd_fields_are_reported_one_line_each() -> None:
    result = convert(fixture("odd_fields.json"), source="odd.json")
    report = result.report
    expected = [
        "name 'helpdesk triage v2!' became 'helpdesk_triage_v2' (an agent name is letters, "
        "digits, '_' and '-', starting with a letter)",
        "state 'start-here' renamed 'start_here' (fsmflow names are letters, digits and '_', "
        "starting with a letter)",
        "context key 'user.name' renamed 'user_name' (fsmflow names are letters, digits and "
        "'_', starting with a letter)",
        "context key '_ticket' renamed 'ticket' (fsmflow names are letters, digits and '_', "
        "starting with a letter)",
        "function_handlers: not mapped (handlers are Python code; in fsmflow side effects are "
        "tools, called in autonomous runs)",
        "state 'start-here': field_extractions[0]: validation_rules min_length not mapped "
        "(no fsmflow key constraint for them)",
        "state 'start-here': classification_extractions[0]: fallback_intent not mapped "
        "(the model picks one of the intents itself)",
        "state 'start-here': transition 1 (-> 'billing'): condition 1 ('topic mentions money'): "
        "JsonLogic not supported by fsmflow guards (operator 'cat'); guard dropped",
        "state 'start-here': extraction_retries not mapped (fsmflow re-asks the model when a "
        "turn is invalid, not when a key is missing (a transition's requires holds the move "
        "until the key is set))",
        "state 'start-here': transition_classification not mapped (fsmflow lets the model "
        "choose among the allowed moves)",
        "state 'billing': transition 1: weight not mapped (unknown to this importer)",
        "state 'closed': final state (no transitions): required_context_keys not collected, "
        "fsmflow takes no model turn in a terminal state",
        "state 'closed': final state: response_instructions not shown to the model (the reply "
        "that enters it is written in the state before, with the move)",
        "guards were dropped (listed above): those moves are now less guarded than in "
        "llm-fsm; review them",
    ]
    assert report[: len(expected)] == expected
    d = result.definition
    start = d["states"]["start_here"]
    assert d["initial_state"] == "start_here" and d["version"] == "2"
    assert start["collects"] == ["user_name", "ticket", "seats", "urgency", "topic"]
    # context_scope.read_keys: seen, not collected.
    assert start["sees"] == ["account_tier"]
    billing, closed = start["transitions"]
    assert "when" not in billing
    assert billing["description"].startswith("Pick this for invoices, refunds and prices")
    assert closed["when"] == {
        "and": [{"==": [{"var": "urgency"}, "high"]}, {">": [{"var": "seats"}, 100]}]
    }
    assert d["context"]["urgency"] == {
        "type": "string",
        "description": "low: can wait a day; high: blocks work now",
        "enum": ["low", "high"],
    }
    assert d["context"]["seats"] == {
        "type": "integer",
        "description": "How many seats the customer's plan has.",
        "minimum": 1,
        "maximum": 500,
    }
    # A key only a final state named is not declared: nothing collects it.
    assert "satisfaction" not in d["context"]
    # Every report line is also in the YAML's header.
    assert all(f"#   - {line}" in result.definition_yaml for line in report)


def test_renamed_keys_are_renamed_in_guards_too() -> None:
    data = minimal()
    data["states"]["ask"]["required_context_keys"] = ["the answer"]
    data["states"]["ask"]["transitions"][0]["conditions"] = [
        {"description": "yes", "logic": {"==": [{"var": "the answer"}, "yes"]}}
    ]
    result = convert(data, source="m.json")
    assert result.definition["states"]["ask"]["transitions"][0]["when"] == {
        "==": [{"var": "the_answer"}, "yes"]
    }
    result.load()


def test_names_that_collide_after_sanitizing_stay_distinct() -> None:
    data = minimal()
    data["states"]["ask"]["required_context_keys"] = ["a-b", "a b"]
    result = convert(data, source="m.json")
    assert result.definition["states"]["ask"]["collects"] == ["a_b", "a_b_2"]
    result.load()


def test_conflicting_comparisons_are_reported() -> None:
    data = minimal()
    data["states"]["ask"]["transitions"][0]["conditions"] = [
        {
            "description": "n",
            "logic": {"or": [{"==": [{"var": "answer"}, 1]}, {"==": [{"var": "answer"}, "one"]}]},
        }
    ]
    result = convert(data, source="m.json")
    assert result.definition["context"]["answer"]["type"] == "string"
    assert (
        "context key 'answer': guards compare it with number and string; declared a string, "
        "review those guards" in result.report
    )


@pytest.mark.parametrize(
    ("logic", "reason"),
    [
        ({"missing_some": [1, ["answer"]]}, "operator 'missing_some'"),
        ({"==": [{"var": "answer"}, "x"], "!=": [1, 2]}, "an object with several keys"),
        ({"==": [{"var": "answer"}]}, "'==' takes 2..2 arguments, got 1"),
        ({"!!": {"var": ""}}, "a var without a key name"),
    ],
)
def test_guards_fsmflow_cannot_run_are_dropped_and_reported(logic: Any, reason: str) -> None:
    data = minimal()
    data["states"]["ask"]["transitions"][0]["conditions"].append(
        {"description": "odd", "logic": logic}
    )
    result = convert(data, source="m.json")
    (move,) = result.definition["states"]["ask"]["transitions"]
    assert "when" not in move and move["requires"] == ["answer"]
    (line,) = [line for line in result.report if "guard dropped" in line]
    assert line.startswith("state 'ask': transition 1 (-> 'end'): condition 2 ('odd'): ")
    assert reason in line
    result.load()


def test_context_scope_keeps_guard_keys_visible() -> None:
    data = minimal()
    data["states"]["ask"]["required_context_keys"] = []
    data["states"]["ask"]["context_scope"] = {"read_keys": ["topic"], "write_keys": []}
    result = convert(data, source="m.json")
    # An explicit sees replaces fsmflow's default (the guards' keys): they are added.
    assert result.definition["states"]["ask"]["sees"] == ["topic", "answer"]
    result.load()


def test_a_converted_definition_that_fails_check_is_refused_by_load() -> None:
    # llm-fsm itself refuses orphan states; a file that has one converts, and check says so.
    data = minimal(orphan={"id": "orphan", "description": "o", "purpose": "p", "transitions": []})
    from fsm.problems import DefinitionError

    with pytest.raises(DefinitionError, match="state 'orphan': unreachable"):
        convert(data, source="m.json").load()


def broken(edit: Any) -> dict[str, Any]:
    data = minimal()
    edit(data)
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "an llm-fsm definition is a JSON object, got list"),
        ({"initial_state": "a"}, "states: missing or empty (an object of state id -> state)"),
        (
            broken(lambda d: d.pop("initial_state")),
            "initial_state: missing (the id of the first state)",
        ),
        (
            broken(lambda d: d.update(initial_state="aks")),
            "initial_state: 'aks' is not a state; did you mean 'ask'?",
        ),
        (
            broken(lambda d: d["states"]["ask"]["transitions"][0].update(target_state="edn")),
            "states.ask.transitions[0].target_state: 'edn' is not a state; did you mean 'end'?",
        ),
        (
            broken(lambda d: d["states"]["ask"]["transitions"][0].pop("target_state")),
            "states.ask.transitions[0].target_state: missing",
        ),
        (broken(lambda d: d["states"].update(ask=3)), "states.ask: must be an object"),
        (
            broken(lambda d: d["states"]["ask"].update(required_context_keys="answer")),
            "states.ask.required_context_keys: must be a list of key names",
        ),
        (
            broken(
                lambda d: d["states"]["ask"]["transitions"][0]["conditions"][0].update(logic="x")
            ),
            "states.ask.transitions[0].conditions[0].logic: must be a JsonLogic object",
        ),
        (
            broken(lambda d: d["states"]["ask"]["transitions"][0].update(priority="high")),
            "states.ask.transitions[0].priority: must be an integer",
        ),
    ],
)
def test_invalid_input_is_refused_naming_the_field(data: Any, message: str) -> None:
    with pytest.raises(LlmFsmError) as caught:
        convert(copy.deepcopy(data), source="in.json")
    assert message in caught.value.problems
    assert str(caught.value).startswith("in.json: not an llm-fsm definition")


# --- the command line ------------------------------------------------------------------


def test_cli_writes_the_yaml_and_reports_on_stderr(tmp_path: Path) -> None:
    out_file = tmp_path / "odd.yaml"
    source = FIXTURES / "odd_fields.json"
    code, out, err = run_cli("import", "llm-fsm", str(source), "-o", str(out_file))
    assert (code, out) == (0, "")
    lines = err.splitlines()
    assert (
        f"{source}: function_handlers: not mapped (handlers are Python code; in fsmflow side "
        "effects are tools, called in autonomous runs)" in lines
    )
    assert lines[-1] == (
        f"{source}: imported as agent 'helpdesk_triage_v2': 3 states, 6 context keys, "
        f"16 report lines; written to {out_file}"
    )
    assert load_file(out_file).definition.name == "helpdesk_triage_v2"
    check = run_cli("check", str(out_file))
    assert check[0] == 0 and ": ok: agent 'helpdesk_triage_v2'" in check[1]

    # An existing file is not overwritten without --force.
    code, _, err = run_cli("import", "llm-fsm", str(source), "-o", str(out_file))
    assert (code, err) == (1, f"fsmflow import: {out_file} exists; give --force to overwrite it\n")
    code, _, _ = run_cli("import", "llm-fsm", str(source), "-o", str(out_file), "--force")
    assert code == 0


def test_cli_prints_to_stdout_without_output() -> None:
    code, out, err = run_cli("import", "llm-fsm", str(FIXTURES / "volunteer_form.json"))
    assert code == 0
    assert load_text(out, source="out.yaml").definition.name == "volunteer_signup"
    assert "imported as agent 'volunteer_signup': 6 states" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "{not json",
            "not JSON: Expecting property name enclosed in double quotes (line 1, column 2)",
        ),
        ("[]", "an llm-fsm definition is a JSON object, got list"),
        ('{"states": {}}', "states: missing or empty (an object of state id -> state)"),
    ],
)
def test_cli_refuses_invalid_input_naming_the_file(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "in.json"
    path.write_text(content)
    code, out, err = run_cli("import", "llm-fsm", str(path))
    assert (code, out) == (1, "")
    assert f"{path}: {message}" in err.splitlines()


def test_cli_missing_file(tmp_path: Path) -> None:
    code, _, err = run_cli("import", "llm-fsm", str(tmp_path / "nope.json"))
    assert code == 1 and err.startswith(f"{tmp_path / 'nope.json'}: cannot read file:")


def test_cli_exits_1_when_the_result_fails_check(tmp_path: Path) -> None:
    data = minimal(orphan={"id": "orphan", "description": "o", "purpose": "p", "transitions": []})
    path = tmp_path / "in.json"
    path.write_text(json.dumps(data))
    target = tmp_path / "out.yaml"
    code, _, err = run_cli("import", "llm-fsm", str(path), "-o", str(target))
    assert code == 1
    assert f"{target}: state 'orphan': unreachable from the initial state 'ask'" in err
    assert err.splitlines()[-1] == f"fsmflow import: {target} does not pass fsmflow check"
    assert target.exists()  # written anyway, to be fixed


def test_cli_help() -> None:
    with pytest.raises(SystemExit) as caught:
        run_cli("import", "llm-fsm", "--help")
    assert caught.value.code == 0
