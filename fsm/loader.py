"""Loading definitions from YAML or JSON, with every problem reported at once.

The YAML reader keeps the line of every node, so a problem found later (an
unknown target, an unreachable state) still names the line it is on, and it
refuses duplicate keys, which plain YAML loaders silently overwrite: a second
state with the same id would otherwise replace the first without a word.

A definition may come from anyone who can write to the agents directory or start
a run, so reading one is bounded before the work it would cost is done (the
numbers are in ``schemas.limits``): the file's size, its nesting, how many values
it holds, and YAML aliases, which are refused outright: ten lines of them expand
to a billion values (the "billion laughs").
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
from fsm.problems import DefinitionError, Path, Problem, clip, did_you_mean, locate, quote
from schemas.definition import (
    AgentDefinition,
    Approval,
    ArrayItems,
    ContextKey,
    InvalidGoto,
    State,
    Transition,
)
from schemas.limits import (
    KIB,
    MAX_DEFINITION_BYTES,
    MAX_NESTING,
    MAX_SOURCE_BYTES,
    MAX_VALUES,
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


def _too_deep(line: int | None = None) -> Problem:
    return Problem(f"nested deeper than the limit of {MAX_NESTING} levels", line=line)


def _too_many(line: int | None = None) -> Problem:
    return Problem(f"more keys and values than the limit of {MAX_VALUES:,}", line=line)


class _BoundedLoader(yaml.SafeLoader):
    """A YAML loader that refuses aliases and bounds nesting and nodes as it composes.

    All three are refused before anything is built from the document. An alias
    makes one node appear in many places, so a few lines can stand for more
    values than memory holds; a definition is short enough to write out.
    Composing recurses once per level, so the depth is checked on the way down.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            alias = clip(event.anchor or "", 40)
            message = f"aliases (*{alias}) are not allowed in a definition; write the value out"
            raise _DocumentError([Problem(message, line=line)])
        self._nodes += 1
        if self._nodes > MAX_VALUES:
            raise _DocumentError([_too_many(line)])
        nested = isinstance(event, yaml.CollectionStartEvent)
        if nested:
            self._depth += 1
            if self._depth > MAX_NESTING:
                raise _DocumentError([_too_deep(line)])
        try:
            return super().compose_node(parent, index)
        finally:
            if nested:
                self._depth -= 1


def _read_yaml(text: str) -> tuple[Any, dict[Path, int], list[Problem]]:
    """Parse YAML keeping node lines; duplicate keys are returned as problems.

    Raises:
        _DocumentError: On a syntax error, an alias, or a document nested too deep
            or holding too many values (nothing else can be checked then).
    """
    loader = _BoundedLoader(text)
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
                            f"duplicate key {quote(key)} (first defined on line {first}); "
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
        try:
            return loader.construct_object(node, deep=True)
        except ValueError as exc:
            # A value that matches a YAML type but does not fit it: `2024-13-01`,
            # or an integer longer than Python converts (4,300 digits).
            kind = str(node.tag).rsplit(":", 1)[-1]
            reason = clip(str(exc).split(";")[0], 120)
            raise _DocumentError(
                [
                    Problem(
                        f"{quote(node.value)} is not a valid {kind}: {reason}",
                        line=node.start_mark.line + 1,
                    )
                ]
            ) from exc

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
                message = f"duplicate key {quote(key)}; a second definition would replace the first"
                duplicates.append(Problem(message))
            result[key] = value
        return result

    try:
        data = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise _DocumentError(
            [Problem(f"JSON syntax error: {exc.msg} (column {exc.colno})", line=exc.lineno)]
        ) from exc
    except RecursionError:
        # The decoder recurses per level and stops cleanly at Python's limit.
        raise _DocumentError([_too_deep()]) from None
    except ValueError as exc:
        # An integer longer than Python converts (4,300 digits).
        raise _DocumentError([Problem(f"JSON: {clip(str(exc).split(';')[0], 120)}")]) from None
    return data, duplicates


def _shape_problems(data: Any) -> list[Problem]:
    """Refuse a document nested too deep or holding too many keys and values.

    Walks without recursing, before anything else walks the document
    (validation, the checks, serialization for a run's history).
    """
    values = 1
    stack: list[tuple[Any, Path]] = [(data, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            items: list[tuple[str | int, Any]] = list(node.items())
            values += 2 * len(items)
        elif isinstance(node, list):
            items = list(enumerate(node))
            values += len(items)
        else:
            continue
        if values > MAX_VALUES:
            return [_too_many()]
        if len(path) + 1 > MAX_NESTING:
            # Named by the first levels only: no path of the format is longer
            # than five, so those say which part (a state's guard, a context key).
            return [Problem(_too_deep().message, path[:5])]
        stack.extend(
            (value, (*path, key)) for key, value in items if isinstance(value, dict | list)
        )
    return []


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
                Problem(f"unknown field {quote(name)}{did_you_mean(name, fields)}", loc[:-1])
            )
        elif kind == "missing":
            problems.append(Problem(f"missing required field {loc[-1]!r}", loc[:-1]))
        else:
            message = item["msg"].removeprefix("Value error, ")
            shown = item.get("input")
            if kind.endswith("_type") or kind.endswith("_parsing") or kind == "literal_error":
                message = (
                    f"{message} (got {quote(shown)})"
                    if not isinstance(shown, dict | list)
                    else message
                )
            if loc and loc[-1] == "[key]":
                # A mapping's key (a state id, a context key) is refused, not its value.
                problems.append(Problem(f"the name: {message}", loc[:-1]))
            elif loc and isinstance(loc[-1], int):
                problems.append(Problem(message, loc))  # shown as `collects[2]: ...`
            elif not loc or _model_at(loc) is not None:
                # A model-level rule (e.g. "an array key needs items") is about the
                # object itself, not about one of its fields.
                problems.append(Problem(message, loc))
            elif message.startswith(f"{loc[-1]} "):
                problems.append(Problem(message, loc[:-1], anchor=loc))
            else:
                problems.append(Problem(f"{loc[-1]}: {message}", loc[:-1], anchor=loc))
    return problems


def _size_problems(definition: AgentDefinition) -> list[Problem]:
    """Refuse a definition too large for a run to record.

    ``resolve_definition`` records it as this JSON; it must fit in a Temporal
    payload next to the run's state.
    """
    size = len(definition.model_dump_json().encode())
    if size <= MAX_DEFINITION_BYTES:
        return []
    return [
        Problem(
            f"the definition takes {size / KIB:,.0f} KB as a run records it (JSON, with "
            f"defaults); the limit is {MAX_DEFINITION_BYTES // KIB:,} KB"
        )
    ]


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
    shape = _shape_problems(data)
    if shape:
        raise DefinitionError(source, [*found, *locate(shape, lines or {})])
    try:
        definition = AgentDefinition.model_validate(data)
    except ValidationError as exc:
        structural = locate(_pydantic_problems(exc), lines or {})
        raise DefinitionError(source, [*found, *structural]) from None
    problems = [
        *found,
        *_size_problems(definition),
        *locate(check_definition(definition, tools=tools, tiers=tiers), lines or {}),
    ]
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise DefinitionError(source, errors)
    return Loaded(definition, source, [p for p in problems if p.severity == "warning"])


def _too_large() -> Problem:
    return Problem(f"larger than the limit of {MAX_SOURCE_BYTES // KIB:,} KB")


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
    # A character takes one to four bytes: only a text that may be too large is encoded.
    if len(text) > MAX_SOURCE_BYTES // 4 and len(text.encode()) > MAX_SOURCE_BYTES:
        raise DefinitionError(source, [_too_large()])
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
        with path.open("rb") as file:
            # Never more than the limit, whatever the file is (huge, a device, a pipe).
            raw = file.read(MAX_SOURCE_BYTES + 1)
        if len(raw) > MAX_SOURCE_BYTES:
            raise DefinitionError(str(path), [_too_large()])
        text = raw.decode("utf-8")
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
