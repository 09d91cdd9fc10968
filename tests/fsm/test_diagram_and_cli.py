"""`fsmflow check`, `schema` and `diagram` as a user runs them."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from fsm.diagram import mermaid
from fsm.loader import load_file, parse_definition
from tests.fsm.conftest import build
from workers.cli import main

EXAMPLES = Path(__file__).parents[2] / "examples"


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_check_valid_files() -> None:
    code, out, err = run_cli("check", *(str(p) for p in sorted(EXAMPLES.glob("*.yaml"))))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 4
    assert all(": ok: agent " in line for line in lines)
    assert (
        "callback.yaml: ok: agent 'callback' v1, conversation, 5 states, 0 transitions, "
        in (lines[0])
    )
    assert "5 eventless, 0 approval gates" in lines[0]


def test_check_invalid_file_exits_1_with_one_line_per_problem(tmp_path: Path) -> None:
    text = (EXAMPLES / "support.yaml").read_text().replace("target: closing", "target: clsoing", 1)
    bad = tmp_path / "support.yaml"
    bad.write_text(text)
    code, out, err = run_cli("check", str(bad), str(EXAMPLES / "form.yaml"))
    assert code == 1
    assert (
        f"{bad}: state 'information': transition 1: target 'clsoing' is not a state; "
        "did you mean 'closing'?" in err
    )
    assert "form.yaml: ok" in out


def test_check_prints_warnings_and_exits_0(tmp_path: Path) -> None:
    data = build()
    data["states"]["greeting"]["transitions"].append({"target": "bye"})
    path = tmp_path / "shop.json"
    path.write_text(json.dumps(data))
    code, out, _ = run_cli("check", str(path))
    assert code == 0
    assert f"{path}: warning: state 'greeting': transition 3: transitions 2 and 3" in out


def test_check_refuses_a_pattern_re2_cannot_run(tmp_path: Path) -> None:
    text = (EXAMPLES / "form.yaml").read_text()
    declared = 'pattern: "^\\\\+?[0-9 ()-]{6,20}$"'
    assert declared in text
    path = tmp_path / "form.yaml"
    path.write_text(text.replace(declared, 'pattern: "^([0-9])\\\\1+$"'))
    code, out, err = run_cli("check", str(path))
    line = text.splitlines().index(f"    {declared}") + 1
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"{path}: context key 'phone': pattern '^([0-9])\\\\1+$' is not supported: patterns "
        "are evaluated with RE2, in linear time, so backreferences and lookaround are not "
        f"available: invalid escape sequence: \\1 (line {line})"
    ]


def test_schema_is_a_json_schema_that_validates_the_examples() -> None:
    import yaml

    code, out, _ = run_cli("schema")
    assert code == 0
    schema = json.loads(out)
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    for path in EXAMPLES.glob("*.yaml"):
        assert validator.is_valid(yaml.safe_load(path.read_text())), path
    assert not validator.is_valid({"name": "x", "initial_state": "a", "states": {}, "typo": 1})


def test_diagram_labels_guards_and_approval_edges() -> None:
    code, out, _ = run_cli("diagram", str(EXAMPLES / "research.yaml"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert "    [*] --> research" in lines
    assert "    review --> write: if (verdict == 'revise' and _visits.write < 3 and " in out
    assert "    publish_gate --> publish: approve" in lines
    assert "    publish_gate --> write: reject" in lines
    assert "    publish_gate --> abandoned: timeout 24h" in lines
    assert "    published --> [*]" in lines


def test_diagram_has_an_edge_per_transition() -> None:
    definition = parse_definition(build()).definition
    text = mermaid(definition)
    transitions = sum(len(s.transitions) for s in definition.states.values())
    gate_edges = 3
    assert text.count(" --> ") == 1 + transitions + gate_edges + 2  # start, ..., two terminals


@pytest.mark.parametrize("name", ["support.yaml", "form.yaml", "callback.yaml", "research.yaml"])
def test_docs_hold_the_current_diagram_of_each_example(name: str) -> None:
    docs = (Path(__file__).parents[2] / "docs" / "examples.md").read_text()
    assert mermaid(load_file(EXAMPLES / name).definition) in docs


def test_console_script_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "workers", "check", str(missing)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"{missing}: cannot read file")
    assert "Traceback" not in result.stderr


def test_readme_example_is_valid_and_its_diagram_current() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    yaml_block = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    diagram = readme.split("```mermaid\n", 1)[1].split("```", 1)[0]
    from fsm.loader import load_text

    assert mermaid(load_text(yaml_block, source="README.md").definition) == diagram


RESEARCH_TOOLS = str(EXAMPLES / "research_tools.py")


def test_check_with_tool_modules_refuses_unknown_tools(tmp_path: Path) -> None:
    research = str(EXAMPLES / "research.yaml")
    code, out, err = run_cli("check", "--tools", RESEARCH_TOOLS, research)
    assert code == 0 and err == ""
    assert out.rstrip().endswith(
        "tools publish_article, read_document, review_draft, search_corpus, write_draft"
    )
    misspelt = tmp_path / "research.yaml"
    misspelt.write_text(Path(research).read_text().replace("[write_draft]", "[write_drafts]"))
    code, out, err = run_cli("check", "--tools", RESEARCH_TOOLS, str(misspelt))
    assert code == 1
    lines = misspelt.read_text().splitlines()
    tools_line = lines.index("    tools: [write_drafts]") + 1
    guard_line = next(i for i, line in enumerate(lines) if "_calls.write_draft" in line) + 1
    # The guard that counts write_draft calls now names no listed tool either.
    assert err.splitlines() == [
        f"{misspelt}: state 'write': transition 1: when: '_calls.write_draft' names no tool a "
        f"state lists; did you mean 'write_drafts'? (line {guard_line})",
        f"{misspelt}: state 'write': tools: tool 'write_drafts' is not registered; did you mean "
        f"'write_draft'? (tool modules come from FSMFLOW_TOOL_MODULES) (line {tools_line})",
    ]
    code, _, err = run_cli("check", "--tools", str(tmp_path / "missing.py"), research)
    assert code == 1 and "tool module" in err and "no such file" in err


def test_tools_lists_and_exports_the_registry() -> None:
    code, out, _ = run_cli("tools", "--tools", RESEARCH_TOOLS)
    assert code == 0
    assert "search_corpus(query, limit): Search the local corpus by keywords" in out
    for fmt, key in (("openai", "function"), ("anthropic", "input_schema"), ("google", "name")):
        code, out, _ = run_cli("tools", "--tools", RESEARCH_TOOLS, "--format", fmt)
        exported = json.loads(out)
        assert code == 0 and len(exported) == 5 and all(key in tool for tool in exported)
    code, _, err = run_cli("tools", "--tools", "")
    assert code == 2 and "no tool modules" in err
