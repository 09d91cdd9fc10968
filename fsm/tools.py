"""Tool registry: typed Python functions as tools, with JSON Schemas from their hints.

The schema of a tool's arguments comes from its type hints and docstring through
pydantic, then is made strict: every object closed (``additionalProperties:
false``), every property required (an optional argument is nullable instead),
every string bounded, no ``$ref``. That one schema is used inside fsmflow's turn
schema (so a constrained decoder emits only valid calls) and exported in the
formats other frameworks expect: OpenAI, Anthropic and Google GenAI.

Executing tools (activities, idempotency ledger, artifacts) is built on this.
"""

from __future__ import annotations

import copy
import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, create_model

from fsm.turn_schema import allows_null

DEFAULT_TOOL_STRING_BOUND = 1000
TOOL_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True)
class ToolContext:
    """What a tool may ask for besides its arguments (a parameter typed ``ToolContext``).

    Attributes:
        idempotency_key: Stable across retries of the same call (workflow id, step,
            call index): the key that makes a side effect happen once.
        workflow_id: The run's workflow id.
        step: The run's step when the call was made.
        call_index: The call's index within the step.
    """

    idempotency_key: str
    workflow_id: str = ""
    step: int = 0
    call_index: int = 0


class ToolDefinitionError(TypeError):
    """A function cannot be a tool (missing hints, bad name, unsupported type)."""


def _docstring_parts(function: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The summary and the ``Args:`` descriptions of a Google-style docstring."""
    doc = inspect.getdoc(function) or ""
    summary = doc.split("\n\n", 1)[0].replace("\n", " ").strip()
    arguments: dict[str, str] = {}
    match = re.search(r"^Args:\n((?:[ \t]+.*\n?)+)", doc, flags=re.MULTILINE)
    if match:
        current = None
        for line in match.group(1).splitlines():
            item = re.match(r"^\s{2,8}(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
            if item:
                current = item.group(1)
                arguments[current] = item.group(2).strip()
            elif current and line.strip():
                arguments[current] += " " + line.strip()
    return summary, arguments


def _resolve_refs(schema: Any, defs: dict[str, Any]) -> Any:
    if isinstance(schema, dict):
        if "$ref" in schema:
            target = defs[schema["$ref"].rsplit("/", 1)[-1]]
            merged = {
                **_resolve_refs(target, defs),
                **{k: v for k, v in schema.items() if k != "$ref"},
            }
            return _resolve_refs(merged, defs)
        return {k: _resolve_refs(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_resolve_refs(item, defs) for item in schema]
    return schema


def strict_schema(
    schema: dict[str, Any], *, string_bound: int = DEFAULT_TOOL_STRING_BOUND
) -> dict[str, Any]:
    """Make a pydantic JSON Schema strict: closed objects, all required, bounded strings."""
    resolved = _resolve_refs(copy.deepcopy(schema), schema.get("$defs", {}))

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        # "title" and "default" are keywords here, but may also be property names.
        node = {
            k: ({n: walk(p) for n, p in v.items()} if k == "properties" else walk(v))
            for k, v in node.items()
            if k not in ("title", "default")
        }
        if node.get("type") == "string" and "enum" not in node and "const" not in node:
            node.setdefault("maxLength", string_bound)
        if node.get("type") == "array":
            node.setdefault("maxItems", 50)
        if node.get("type") == "object" or "properties" in node:
            properties = node.setdefault("properties", {})
            required = set(node.get("required", []))
            for name, sub in list(properties.items()):
                if name not in required and not allows_null(sub):
                    properties[name] = {"anyOf": [sub, {"type": "null"}]}
            node["required"] = list(properties)
            node["additionalProperties"] = False
            node["type"] = "object"
        return node

    return typing.cast(dict[str, Any], walk(resolved))


@dataclass(frozen=True)
class ToolSpec:
    """A registered tool: its function, schema, and execution options."""

    name: str
    description: str
    parameters: dict[str, Any]
    function: Callable[..., Any] = field(repr=False, compare=False)
    context_parameter: str | None = None
    timeout_seconds: float = 60.0
    max_attempts: int = 3
    is_async: bool = False

    def openai(self) -> dict[str, Any]:
        """The OpenAI Chat Completions ``tools`` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
                "strict": True,
            },
        }

    def anthropic(self) -> dict[str, Any]:
        """The Anthropic Messages ``tools`` entry."""
        return {"name": self.name, "description": self.description, "input_schema": self.parameters}

    def google(self) -> dict[str, Any]:
        """The Google GenAI ``FunctionDeclaration`` (OpenAPI subset: no closed objects)."""

        def openapi(node: Any) -> Any:
            if isinstance(node, list):
                return [openapi(item) for item in node]
            if not isinstance(node, dict):
                return node
            node = {k: openapi(v) for k, v in node.items() if k != "additionalProperties"}
            options = node.get("anyOf")
            if isinstance(options, list) and len(options) == 2 and {"type": "null"} in options:
                (other,) = [o for o in options if o != {"type": "null"}]
                node = {
                    **{k: v for k, v in node.items() if k != "anyOf"},
                    **other,
                    "nullable": True,
                }
            return node

        return {
            "name": self.name,
            "description": self.description,
            "parameters": openapi(self.parameters),
        }


class ToolRegistry:
    """Tools by name; ``@registry.tool`` registers a typed function."""

    def __init__(self) -> None:
        """An empty registry."""
        self._tools: dict[str, ToolSpec] = {}

    def tool(
        self,
        function: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        timeout_seconds: float = 60.0,
        max_attempts: int = 3,
        string_bound: int = DEFAULT_TOOL_STRING_BOUND,
    ) -> Any:
        """Register a function as a tool (usable bare or with options).

        Raises:
            ToolDefinitionError: If the function lacks type hints, its name is not
                an identifier, or the name is taken.
        """

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            spec = build_spec(
                fn,
                name=name,
                timeout_seconds=timeout_seconds,
                max_attempts=max_attempts,
                string_bound=string_bound,
            )
            if spec.name in self._tools:
                raise ToolDefinitionError(f"tool {spec.name!r} is already registered")
            self._tools[spec.name] = spec
            return fn

        return register(function) if function is not None else register

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __getitem__(self, name: str) -> ToolSpec:
        return self._tools[name]

    def names(self) -> list[str]:
        """Registered tool names, sorted."""
        return sorted(self._tools)

    def schemas(self) -> dict[str, dict[str, Any]]:
        """Argument schemas by tool name, for the turn schema and the engine's checks."""
        return {name: spec.parameters for name, spec in sorted(self._tools.items())}

    def export(self, fmt: typing.Literal["openai", "anthropic", "google"]) -> list[dict[str, Any]]:
        """Every tool in one provider's format."""
        return [getattr(spec, fmt)() for _, spec in sorted(self._tools.items())]


def build_spec(
    function: Callable[..., Any],
    *,
    name: str | None = None,
    timeout_seconds: float = 60.0,
    max_attempts: int = 3,
    string_bound: int = DEFAULT_TOOL_STRING_BOUND,
) -> ToolSpec:
    """The ``ToolSpec`` of a typed function (see ``ToolRegistry.tool``)."""
    tool_name = name or function.__name__
    if not TOOL_NAME_PATTERN.match(tool_name):
        raise ToolDefinitionError(
            f"tool name {tool_name!r} must be an identifier of at most 64 characters"
        )
    try:
        hints = typing.get_type_hints(function)
    except Exception as exc:  # noqa: BLE001 - any failure to resolve hints
        raise ToolDefinitionError(f"tool {tool_name!r}: cannot resolve type hints: {exc}") from None
    summary, argument_docs = _docstring_parts(function)
    fields: dict[str, Any] = {}
    context_parameter = None
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ToolDefinitionError(f"tool {tool_name!r}: *args and **kwargs are not supported")
        hint = hints.get(parameter.name)
        if hint is ToolContext:
            context_parameter = parameter.name
            continue
        if hint is None:
            raise ToolDefinitionError(
                f"tool {tool_name!r}: parameter {parameter.name!r} has no type hint"
            )
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (
            hint,
            Field(default, description=argument_docs.get(parameter.name)),
        )
    model = create_model(f"{tool_name}_arguments", **fields)
    parameters = strict_schema(model.model_json_schema(), string_bound=string_bound)
    return ToolSpec(
        name=tool_name,
        description=summary or tool_name.replace("_", " "),
        parameters=parameters,
        function=function,
        context_parameter=context_parameter,
        timeout_seconds=timeout_seconds,
        max_attempts=max_attempts,
        is_async=inspect.iscoroutinefunction(function),
    )
