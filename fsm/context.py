"""Declared context keys: their JSON Schema, value checks, system keys, redaction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonschema import ValidationError

from fsm.problems import did_you_mean
from fsm.validation import validator_for
from schemas.definition import DEFAULT_STRING_BOUND, AgentDefinition, ContextKey
from schemas.run import RunState

SYSTEM_KEYS = ("_state", "_step", "_visits", "_calls")
"""Keys the framework provides to guards. The model can never write them."""

REDACTED = "[redacted]"


FORMAT_PATTERNS = {
    "email": r"^[A-Za-z0-9._+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$",
    "date": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
}
"""Patterns a decoder can enforce for the formats that have a simple one."""


def key_schema(key: ContextKey) -> dict[str, Any]:
    """The JSON Schema of one declared key, with every string bounded."""
    schema: dict[str, Any] = {"type": key.type}
    if key.description:
        schema["description"] = key.description
    if key.enum is not None:
        schema["enum"] = list(key.enum)
    if key.type == "string":
        schema["maxLength"] = key.maxLength or DEFAULT_STRING_BOUND
        if key.pattern is not None:
            schema["pattern"] = key.pattern
        if key.format is not None:
            schema["format"] = key.format
            if key.pattern is None and key.format in FORMAT_PATTERNS:
                # Constrained decoders (llama.cpp, vLLM) enforce a pattern, rarely a
                # format: the pattern keeps a small model from writing a name into
                # an email key. The format is still checked in full afterwards.
                schema["pattern"] = FORMAT_PATTERNS[key.format]
    if key.minimum is not None:
        schema["minimum"] = key.minimum
    if key.maximum is not None:
        schema["maximum"] = key.maximum
    if key.type == "array" and key.items is not None:
        items: dict[str, Any] = {"type": key.items.type}
        if key.items.enum is not None:
            items["enum"] = list(key.items.enum)
        if key.items.type == "string":
            items["maxLength"] = key.items.maxLength or DEFAULT_STRING_BOUND
        schema["items"] = items
        schema["maxItems"] = key.maxItems or 20
    return schema


def _why(error: ValidationError) -> str:
    limit = error.validator_value
    reasons = {
        "type": f"expected {limit}",
        "maxLength": f"longer than {limit} characters",
        "enum": f"not one of {limit}",
        "format": f"not a valid {limit}",
        "minimum": f"below the minimum {limit}",
        "maximum": f"above the maximum {limit}",
        "pattern": f"does not match the pattern {limit}",
        "maxItems": f"more than {limit} items",
    }
    where = "".join(f"[{p}]" for p in error.path)
    return (f"item {where}: " if where else "") + reasons.get(str(error.validator), error.message)


def value_problem(name: str, key: ContextKey, value: Any) -> str | None:
    """Say why ``value`` does not fit the declared key, or None when it fits.

    The value of a key declared ``secret`` is not shown: reasons go to traces,
    logs and the model.
    """
    errors = validator_for(key_schema(key)).iter_errors(value)
    error = next(iter(sorted(errors, key=lambda e: list(e.path))), None)
    if error is None:
        return None
    if key.secret:
        shown = REDACTED
    else:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return f"value {shown} for key {name!r} does not fit its declaration: {_why(error)}"


def check_initial_context(definition: AgentDefinition, values: Mapping[str, Any]) -> list[str]:
    """Problems of a run's initial context: undeclared, reserved or ill-typed keys."""
    problems = []
    for name, value in values.items():
        if name.startswith("_"):
            problems.append(f"context key {name!r} is reserved for the framework")
        elif name not in definition.context:
            declared = ", ".join(sorted(definition.context)) or "none"
            problems.append(
                f"context key {name!r} is not declared{did_you_mean(name, definition.context)} "
                f"(declared: {declared})"
            )
        elif value is not None and (
            problem := value_problem(name, definition.context[name], value)
        ):
            problems.append(problem)
    return problems


def guard_data(run: RunState) -> dict[str, Any]:
    """The data guards see: the context plus the system keys."""
    data = dict(run.context)
    data.update(
        {
            "_state": run.state,
            "_step": run.step,
            "_visits": dict(run.visits),
            "_calls": dict(run.calls),
        }
    )
    return data


def is_present(value: Any) -> bool:
    """A key counts as present when it holds something: not null, not empty."""
    return value is not None and value != "" and value != [] and value != {}


def redact(definition: AgentDefinition, context: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``context`` with the values of keys declared ``secret`` hidden."""
    return {
        name: REDACTED
        if (key := definition.context.get(name)) is not None and key.secret and value is not None
        else value
        for name, value in context.items()
    }
