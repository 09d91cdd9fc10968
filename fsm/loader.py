"""Loading definitions from YAML or JSON, with every problem reported at once.

The YAML reader keeps the line of every node, so a problem found later (an
unknown target, an unreachable state) still names the line it is on, and it
refuses duplicate keys, which plain YAML loaders silently overwrite: a second
state with the same id would otherwise replace the first without a word.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any

import yaml
from pydantic import ValidationError

from fsm.checks import check_definition
from fsm.problems import DefinitionError, Path, Problem, did_you_mean, locate
from schemas.definition import (
    AgentDefinition,
    Approval,
    ArrayItems,
    ContextKey,
    InvalidGoto,
    State,
    Transition,
)

# Which model sits at each step of a document path: (model, field) -> (model, skip).
# ``skip`` is True where the field holds a mapping or list whose next path item is
# a key or index rather than a field name.
_CHILD_MODELS: dict[tuple[type, str], tuple[type, bool]] = {
    (AgentDefinition, "states"): (State, True),
    (AgentDefinition, "context"): (ContextKey, True),
    (State, "transitions"): (Transition, True),
    (State, "approval"): (Approval, False),
    (State, "on_invalid"): (InvalidGoto, False),
    (ContextKey, "items"): (ArrayItems, False),
}


@dataclass
class Loaded:
    """A definition with its warnings (errors are raised, never returned)."""

    definition: AgentDefinition
    source: str
    warnings: list[Problem] = field(default_factory=list)


class _DocumentError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems


def _read_yaml(text: str) -> tuple[Any, dict[Path, int], list[Problem]]:
    """Parse YAML keeping node lines; duplicate keys are returned as problems.

    Raises:
        _DocumentError: On a syntax error (nothing else can be checked then).
    """
    loader = yaml.SafeLoader(text)
    lines: dict[Path, int] = {}
    problems: list[Problem] = []

    def build(node: yaml.Node, path: Path) -> Any:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            loader.flatten_mapping(node)
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, str | int | float | bool) or key is None:
                    problems.append(
                        Problem(
                            "a key must be a plain value", path, line=key_node.start_mark.line + 1
                        )
                    )
                    continue
                key = str(key) if not isinstance(key, str) else key
                if key in result:
                    first = lines.get((*path, key))
                    problems.append(
                        Problem(
                            f"duplicate key {key!r} (first defined on line {first}); "
                            "a second definition would silently replace the first",
                            path,
                            line=key_node.start_mark.line + 1,
                        )
                    )
                    continue
                lines[(*path, key)] = key_node.start_mark.line + 1
                result[key] = build(value_node, (*path, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [build(item, (*path, i)) for i, item in enumerate(node.value)]
        return loader.construct_object(node, deep=True)

    try:
        root = loader.get_single_node()
        data = build(root, ()) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = exc.problem or exc.context or "invalid YAML"
        raise _DocumentError(
            [Problem(f"YAML syntax error: {reason}", line=mark.line + 1 if mark else None)]
        ) from exc
    finally:
        loader.dispose()
    return data, lines, problems


def _read_json(text: str) -> tuple[Any, list[Problem]]:
    duplicates: list[Problem] = []

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                duplicates.append(
                    Problem(f"duplicate key {key!r}; a second definition would replace the first")
                )
            result[key] = value
        return result

    try:
        data = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise _DocumentError(
            [Problem(f"JSON syntax error: {exc.msg} (column {exc.colno})", line=exc.lineno)]
        ) from exc
    return data, duplicates


def _model_at(path: Path) -> type | None:
    """The model of the object at ``path`` (None when it is not a model)."""
    model: type | None = AgentDefinition
    items = list(path)
    while items and model is not None:
        name = items.pop(0)
        child = _CHILD_MODELS.get((model, str(name)))
        if child is None:
            return None
        model, keyed = child
        if keyed:
            if not items:
                return None
            items.pop(0)
    return model


def _pydantic_problems(error: ValidationError) -> list[Problem]:
    problems = []
    for item in error.errors(include_url=False):
        loc: Path = tuple(item["loc"])
        kind = item["type"]
        if kind == "extra_forbidden":
            name = str(loc[-1])
            model = _model_at(loc[:-1])
            fields = list(getattr(model, "model_fields", {}))
            problems.append(
                Problem(f"unknown field {name!r}{did_you_mean(name, fields)}", loc[:-1])
            )
        elif kind == "missing":
            problems.append(Problem(f"missing required field {loc[-1]!r}", loc[:-1]))
        else:
            message = item["msg"].removeprefix("Value error, ")
            shown = item.get("input")
            if kind.endswith("_type") or kind.endswith("_parsing") or kind == "literal_error":
                message = (
                    f"{message} (got {shown!r})" if not isinstance(shown, dict | list) else message
                )
            if not loc or _model_at(loc) is not None:
                # A model-level rule (e.g. "an array key needs items") is about the
                # object itself, not about one of its fields.
                problems.append(Problem(message, loc))
            elif message.startswith(f"{loc[-1]} "):
                problems.append(Problem(message, loc[:-1], anchor=loc))
            else:
                problems.append(Problem(f"{loc[-1]}: {message}", loc[:-1], anchor=loc))
    return problems


def parse_definition(
    data: Any,
    *,
    source: str = "<definition>",
    tools: Collection[str] | None = None,
    tiers: Collection[str] | None = None,
    lines: Mapping[Path, int] | None = None,
    found: Sequence[Problem] = (),
) -> Loaded:
    """Validate an already-parsed definition document (e.g. inline JSON).

    Args:
        data: The document, as loaded from YAML or JSON.
        source: A label for messages (a file name).
        tools: Registered tool names; when given, unknown tools are errors.
        tiers: Configured model tiers; when given, unknown tiers are errors.
        lines: Path -> line map from the reader, for line numbers in messages.
        found: Problems the reader already found (duplicate keys), reported
            together with the rest.

    Returns:
        The definition and its warnings.

    Raises:
        DefinitionError: Listing every problem found.
    """
    if not isinstance(data, dict):
        kind = type(data).__name__ if data is not None else "an empty document"
        raise DefinitionError(source, [Problem(f"a definition is a mapping of fields, got {kind}")])
    try:
        definition = AgentDefinition.model_validate(data)
    except ValidationError as exc:
        structural = locate(_pydantic_problems(exc), lines or {})
        raise DefinitionError(source, [*found, *structural]) from None
    problems = [
        *found,
        *locate(check_definition(definition, tools=tools, tiers=tiers), lines or {}),
    ]
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise DefinitionError(source, errors)
    return Loaded(definition, source, [p for p in problems if p.severity == "warning"])


def load_text(
    text: str,
    *,
    source: str,
    tools: Collection[str] | None = None,
    tiers: Collection[str] | None = None,
    fmt: str | None = None,
) -> Loaded:
    """Load a definition from text; ``fmt`` is ``json`` or ``yaml`` (default: by source)."""
    fmt = fmt or ("json" if source.endswith(".json") else "yaml")
    lines: dict[Path, int] = {}
    try:
        if fmt == "json":
            data, found = _read_json(text)
        else:
            data, lines, found = _read_yaml(text)
    except _DocumentError as exc:
        raise DefinitionError(source, exc.problems) from None
    return parse_definition(data, source=source, tools=tools, tiers=tiers, lines=lines, found=found)


def load_file(
    path: str | FilePath,
    *,
    tools: Collection[str] | None = None,
    tiers: Collection[str] | None = None,
) -> Loaded:
    """Load and check a definition file (``.yaml``, ``.yml`` or ``.json``).

    Raises:
        DefinitionError: If the file cannot be read or the definition has errors.
    """
    path = FilePath(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(str(path), [Problem(f"cannot read file: {exc}")]) from None
    return load_text(text, source=str(path), tools=tools, tiers=tiers)


def load_definition(
    path: str | FilePath, *, tools: Collection[str] | None = None
) -> AgentDefinition:
    """Load, validate and statically check a definition file.

    Raises:
        DefinitionError: Listing every problem, not only the first.
    """
    return load_file(path, tools=tools).definition
