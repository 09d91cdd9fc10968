"""Tool schemas from type hints: strict, bounded, and exported in three formats."""

from __future__ import annotations

import enum
from typing import Literal

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel

from fsm.engine import tool_call_problem
from fsm.loader import parse_definition
from fsm.tools import ToolContext, ToolDefinitionError, ToolRegistry
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
