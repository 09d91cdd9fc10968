"""Tool schemas from type hints: strict, bounded, and exported in three formats."""

from __future__ import annotations

import datetime
import enum
import hashlib
from typing import Literal

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict, Field

from fsm.engine import tool_call_problem
from fsm.loader import parse_definition
from fsm.problems import DefinitionError
from fsm.tools import Artifact, ToolContext, ToolDefinitionError, ToolRegistry, call_identity
from fsm.turn_schema import turn_schema
from schemas.run import RunState
from tests.fsm.conftest import build
from tests.fsm.test_properties import string_schemas_are_bounded


class Tone(enum.Enum):
    FORMAL = "formal"
    CASUAL = "casual"


class Section(BaseModel):
    title: str
    words: int = 100


registry = ToolRegistry()


@registry.tool
def search_corpus(query: str, limit: int = 5, kind: Literal["web", "docs"] = "docs") -> list[str]:
    """Search the local corpus.

    Args:
        query: What to look for.
        limit: How many hits at most.
        kind: Which part of the corpus.
    """
    return [query] * limit


@registry.tool(name="outline", timeout_seconds=5, max_attempts=2)
async def make_outline(
    sections: list[Section], tone: Tone, ctx: ToolContext, note: str | None = None
) -> dict[str, str]:
    """Plan an article's sections."""
    return {}


def test_schema_from_hints_and_docstring() -> None:
    spec = registry["search_corpus"]
    assert spec.description == "Search the local corpus."
    properties = spec.parameters["properties"]
    assert properties["query"] == {
        "type": "string",
        "description": "What to look for.",
        "maxLength": 1000,
    }
    assert properties["limit"]["anyOf"][0]["type"] == "integer"
    assert properties["limit"]["anyOf"][1] == {"type": "null"}
    assert properties["kind"]["anyOf"][0]["enum"] == ["web", "docs"]
    assert spec.parameters["required"] == ["query", "limit", "kind"]
    assert spec.parameters["additionalProperties"] is False and not spec.is_async


def test_nested_models_enums_lists_and_context() -> None:
    spec = registry["outline"]
    assert spec.is_async and spec.context_parameter == "ctx" and spec.timeout_seconds == 5
    properties = spec.parameters["properties"]
    assert "ctx" not in properties  # fsmflow injects it; the model never sees it
    section = properties["sections"]["items"]
    assert section["additionalProperties"] is False and section["required"] == ["title", "words"]
    assert properties["tone"]["enum"] == ["formal", "casual"]
    assert "$defs" not in str(spec.parameters) and "$ref" not in str(spec.parameters)
    assert properties["note"]["anyOf"][-1] == {"type": "null"}


@pytest.mark.parametrize("name", ["search_corpus", "outline"])
def test_schemas_are_valid_strict_and_bounded(name: str) -> None:
    parameters = registry[name].parameters
    Draft202012Validator.check_schema(parameters)
    assert string_schemas_are_bounded(parameters)


def test_export_formats() -> None:
    openai = registry.export("openai")
    assert [t["function"]["name"] for t in openai] == ["outline", "search_corpus"]
    assert openai[1]["type"] == "function" and openai[1]["function"]["strict"] is True
    anthropic = registry.export("anthropic")
    assert anthropic[1]["input_schema"] == registry["search_corpus"].parameters
    google = registry.export("google")
    limit = google[1]["parameters"]["properties"]["limit"]
    assert (limit["type"], limit["nullable"]) == ("integer", True)
    assert "additionalProperties" not in str(google)


def test_arguments_are_judged_against_the_tool_schema() -> None:
    data = build({"mode": "autonomous"})
    data["states"]["collect"]["tools"] = ["search_corpus"]
    definition = parse_definition(data, tools=registry.names()).definition
    run = RunState(state="collect", visits={"collect": 1})
    schemas = registry.infos()
    good = {"query": "fsm", "limit": None, "kind": None}
    assert tool_call_problem(definition, run, "search_corpus", good, schemas) is None
    assert "bad arguments" in str(
        tool_call_problem(definition, run, "search_corpus", {**good, "kind": "blogs"}, schemas)
    )
    assert "not allowed in 'collect'" in str(
        tool_call_problem(definition, run, "outline", {}, schemas)
    )
    schema = turn_schema(definition, run, schemas)
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    call = {"kind": "call_tool", "tool": "search_corpus", "arguments": good}
    assert validator.is_valid({"reasoning": "", "action": call})
    assert not validator.is_valid({"reasoning": "", "action": {**call, "arguments": {"q": 1}}})


def test_functions_that_cannot_be_tools() -> None:
    bad = ToolRegistry()
    with pytest.raises(ToolDefinitionError, match="has no type hint"):
        bad.tool(lambda x: x, name="untyped")
    with pytest.raises(ToolDefinitionError, match="must be an identifier"):
        bad.tool(search_corpus, name="search corpus")
    with pytest.raises(ToolDefinitionError, match=r"\*args"):

        def spread(*items: str) -> None:
            """Spread."""

        bad.tool(spread)
    bad.tool(search_corpus)
    with pytest.raises(ToolDefinitionError, match="already registered"):
        bad.tool(search_corpus)


def test_a_state_with_tools_that_forbids_staying_must_call_one() -> None:
    from fsm.engine import allowed_targets, record_tool_call, start_run
    from fsm.prompt import build_messages

    data = {
        "name": "searcher",
        "mode": "autonomous",
        "initial_state": "collect",
        "states": {
            "collect": {
                "tools": ["search_corpus"],
                "allow_stay": False,
                "max_tool_calls": 2,
                "transitions": [
                    {"target": "bye", "when": {">=": [{"var": "_calls.search_corpus"}, 1]}}
                ],
            },
            "bye": {"terminal": True},
        },
    }
    definition = parse_definition(data, tools=registry.names()).definition
    infos = registry.infos()
    run = RunState(state="collect", visits={"collect": 1}, calls={"search_corpus": 0})
    assert allowed_targets(definition, run) == []
    action = turn_schema(definition, run, infos)["properties"]["action"]
    assert action["properties"]["kind"]["enum"] == ["call_tool"]
    now = build_messages(definition, run, tools=infos)[-1]["content"]
    assert "- none yet: call one of the tools first" in now
    assert "Tools you may call now: search_corpus (2 call(s) left in this state)" in now
    # A failed call (ToolError) counts neither for _calls nor for the call budget
    # (it spends the visit's max_tool_errors instead).
    run = record_tool_call(definition, run, "search_corpus", ok=False, outcome="error: x")
    assert allowed_targets(definition, run) == [] and run.calls == {"search_corpus": 0}
    assert (run.visit_tool_calls, run.visit_tool_errors) == (0, 1)
    run = record_tool_call(definition, run, "search_corpus", ok=True, outcome="ok")
    assert (
        "(1 call(s) left in this state)"
        in build_messages(definition, run, tools=infos)[-1]["content"]
    )
    run = record_tool_call(definition, run, "search_corpus", ok=True, outcome="ok")
    assert (run.step, run.visit_tool_calls, run.calls) == (3, 2, {"search_corpus": 2})
    # The budget is spent: only the transition is offered, and a call is refused.
    assert allowed_targets(definition, run) == ["bye"]
    assert "kind" in turn_schema(definition, run, infos)["properties"]["action"]["properties"]
    problem = tool_call_problem(definition, run, "search_corpus", {"query": "x"}, infos)
    assert problem == (
        "'collect' allows 2 tool call(s) per visit and they are spent; move on (allowed: bye)"
    )
    assert start_run(definition).calls == {"search_corpus": 0}


def test_artifact_arguments_enumerate_the_runs_artifacts() -> None:
    files = ToolRegistry()

    @files.tool
    def summarise(source: Artifact, extra: Artifact | None = None) -> str:
        """Summarise an artifact."""
        return source.text

    spec = files["summarise"]
    assert spec.artifact_parameters == ("source", "extra")
    assert spec.parameters["properties"]["source"]["maxLength"] == 80
    data = build({"mode": "autonomous"})
    data["states"]["collect"]["tools"] = ["summarise"]
    definition = parse_definition(data, tools=files.names()).definition
    infos = files.infos()
    empty = RunState(state="collect", visits={"collect": 1})
    # No artifact yet: the tool cannot be called, so it is not offered.
    action = turn_schema(definition, empty, infos)["properties"]["action"]
    assert action["properties"]["kind"]["enum"] == ["transition"]
    run = empty.model_copy(update={"artifacts": ("artifact:1/a.txt", "artifact:2/b.txt")})
    variants = turn_schema(definition, run, infos)["properties"]["action"]["anyOf"]
    arguments = variants[1]["properties"]["arguments"]["properties"]
    assert arguments["source"] == {
        "type": "string",
        "enum": ["artifact:1/a.txt", "artifact:2/b.txt"],
    }
    assert arguments["extra"]["anyOf"][1] == {"type": "null"}
    problem = tool_call_problem(
        definition, run, "summarise", {"source": "artifact:9/x", "extra": None}, infos
    )
    assert problem is not None and "is not an artifact of this run" in problem
    with pytest.raises(ToolDefinitionError, match="not inside other types"):

        @files.tool
        def many(sources: list[Artifact]) -> str:
            """Not supported."""
            return ""


def test_a_tool_writes_only_the_declared_keys_and_only_fitting_values() -> None:
    from fsm.engine import record_tool_call, start_run

    data = {
        "name": "reviewer",
        "mode": "autonomous",
        "initial_state": "review",
        "context": {
            "verdict": {"type": "string", "enum": ["approve", "revise"]},
            "score": {"type": "integer", "maximum": 10},
            "note": {"type": "string"},
        },
        "tools": {"search_corpus": {"writes": ["verdict", "score"]}},
        "states": {
            "review": {
                "tools": ["search_corpus"],
                "sees": [],
                "transitions": [
                    {"target": "done", "when": {"==": [{"var": "verdict"}, "approve"]}}
                ],
            },
            "done": {"terminal": True},
        },
    }
    definition = parse_definition(data, tools=registry.names()).definition
    run = start_run(definition)
    values = {"verdict": "approve", "score": 99, "note": "sneaky"}
    after = record_tool_call(definition, run, "search_corpus", ok=True, outcome="ok", values=values)
    assert after.context == {"verdict": "approve"}
    reason = after.trace[-1].reason
    assert (
        "wrote verdict" in reason and "not written: " in reason and "'note' is not a key" in reason
    )
    # A failed call (ToolError) writes nothing.
    failed = record_tool_call(
        definition, run, "search_corpus", ok=False, outcome="e", values=values
    )
    assert failed.context == {}
    data["tools"]["search_corpus"]["writes"] = ["verdcit"]
    with pytest.raises(DefinitionError, match="writes 'verdcit', which is not a declared context"):
        parse_definition(data)


def test_a_call_identity_is_canonical_json_of_tool_and_arguments() -> None:
    arguments = {"query": "Grüße aus Köln 東京", "limit": 5, "filters": {"b": [1, 2], "a": None}}
    reordered = {"filters": {"a": None, "b": [1, 2]}, "limit": 5, "query": "Grüße aus Köln 東京"}
    identity = call_identity("search_corpus", arguments)
    assert identity == call_identity("search_corpus", reordered)
    # The canonical text, spelled out: another worker (or language) hashing it agrees.
    canonical = (
        '{"arguments":{"filters":{"a":null,"b":[1,2]},"limit":5,'
        '"query":"Grüße aus Köln 東京"},"tool":"search_corpus"}'
    )
    assert identity == hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
    assert call_identity("search_corpus", {"query": "Grüße aus Köln 東京", "limit": 5}) == (
        "24b931d4ca8aefb3"
    )


def test_other_calls_have_other_identities() -> None:
    calls: list[tuple[str, dict[str, object]]] = [
        ("search_corpus", {"query": "Grüße aus Köln", "limit": 5}),
        ("search_corpus", {"query": "Grüße aus Koln", "limit": 5}),
        ("search_corpus", {"query": "Grüße aus Köln", "limit": 6}),
        ("search_corpus", {"query": "Grüße aus Köln", "limit": "5"}),
        ("search_corpus", {"query": "Grüße aus Köln"}),
        ("search_web", {"query": "Grüße aus Köln", "limit": 5}),
    ]
    identities = [call_identity(tool, arguments) for tool, arguments in calls]
    assert len(set(identities)) == len(calls)
    assert all(len(i) == 16 and set(i) <= set("0123456789abcdef") for i in identities)


class Code(BaseModel):
    # pydantic checks patterns with Rust's regex (no backreferences either),
    # unless a model asks for Python's re.
    model_config = ConfigDict(regex_engine="python-re")
    value: str = Field(pattern=r"^(\w)\1$")


class Booking(BaseModel):
    room: str = Field(pattern="[A-Z][0-9]{3}")
    day: datetime.date


def test_a_pattern_re2_cannot_run_is_refused_at_registration() -> None:
    def lookup(code: Code) -> str:
        """Look a code up."""
        return code.value

    with pytest.raises(ToolDefinitionError) as info:
        ToolRegistry().tool(lookup)
    assert str(info.value).startswith(
        "tool 'lookup': parameter 'code': pattern '^(\\\\w)\\\\1$' is not supported: patterns "
        "are evaluated with RE2"
    )


def test_tool_argument_patterns_and_formats_are_judged_with_re2() -> None:
    tools = ToolRegistry()

    @tools.tool
    def book(booking: Booking) -> str:
        """Book a room."""
        return booking.room

    data = build({"mode": "autonomous"})
    data["states"]["collect"]["tools"] = ["book"]
    definition = parse_definition(data, tools=tools.names()).definition
    run = RunState(state="collect", visits={"collect": 1})
    infos = tools.infos()

    def problem(room: str, day: str) -> str | None:
        arguments = {"booking": {"room": room, "day": day}}
        return tool_call_problem(definition, run, "book", arguments, infos)

    assert problem("room B101", "2024-02-29") is None  # a search, as JSON Schema has it
    assert "does not match" in str(problem("b101", "2024-02-29"))
    assert "is not a 'date'" in str(problem("B101", "2023-02-29"))
