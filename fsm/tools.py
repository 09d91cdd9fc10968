"""Tool registry: typed Python functions as tools, with JSON Schemas from their hints.

The schema of a tool's arguments comes from its type hints and docstring through
pydantic, then is made strict: every object closed (``additionalProperties:
false``), every property required (an optional argument is nullable instead),
every string bounded, no ``$ref``. That one schema is used inside fsmflow's turn
schema (so a constrained decoder emits only valid calls) and exported in the
formats other frameworks expect: OpenAI, Anthropic and Google GenAI.

This module is also what a tool author imports: ``ToolContext`` (the call's
idempotency key, the effect ledger and the artifact store), ``Artifact`` (a
parameter type: the full content of an earlier result, passed by reference) and
``ToolError`` (an error the model should read). ``call_identity`` names a call (its
tool and arguments) for the key and the ledger, which raises ``LedgerConflict``
when a key comes back with a different call. Executing tools is the activity
``fsmflow.run_tool`` in ``activities/tools.py``; the stores live there too.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import inspect
import json
import re
import types
import typing
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, Field, create_model

from fsm.turn_schema import allows_null
from schemas.definition import compile_pattern
from schemas.tools import ToolInfo

DEFAULT_TOOL_STRING_BOUND = 1000
TOOL_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
ARTIFACT_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ARTIFACT_PREFIX = "artifact:"
ARTIFACT_REF_BOUND = 80
"""``maxLength`` of an artifact reference: ``artifact:<step>/<name>``, name <= 64."""
CALL_HASH_CHARS = 16
"""Hex characters of a call identity: 64 bits, enough to tell the calls of one key apart."""


class ToolError(Exception):
    """An error the model should know about: its message becomes the call's result.

    Raise it for what the model can act on (no document by that name, a draft too
    short to publish). Any other exception is a failure: retried per the tool's
    policy, then recorded in the trace, and the turn fails.
    """


@dataclass(frozen=True)
class Artifact:
    """The full content of an artifact, given to a parameter typed ``Artifact``.

    The model passes only the reference (``artifact:3/draft.md``); the activity
    reads the content from the artifact store, so it never goes through the
    prompt or the workflow history.
    """

    ref: str
    data: bytes = field(repr=False)

    @property
    def text(self) -> str:
        """The content as UTF-8 text."""
        return self.data.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The content parsed as JSON."""
        return json.loads(self.data)


def artifact_ref(step: int, name: str) -> str:
    """The reference of artifact ``name`` created at ``step`` of a run.

    Raises:
        ValueError: If the name is not a plain file name (letters, digits, ``._-``).
    """
    if not ARTIFACT_NAME_PATTERN.match(name):
        raise ValueError(
            f"artifact name {name!r} must be 1-64 letters, digits, '.', '_' or '-' "
            "and start with a letter or digit"
        )
    return f"{ARTIFACT_PREFIX}{step}/{name}"


def artifact_path(ref: str) -> str:
    """The run-relative path (``3/draft.md``) of a reference.

    Raises:
        ValueError: If the text is not an artifact reference.
    """
    step, _, name = ref.removeprefix(ARTIFACT_PREFIX).partition("/")
    if not ref.startswith(ARTIFACT_PREFIX) or not step.isdigit():
        raise ValueError(f"{ref!r} is not an artifact reference (artifact:<step>/<name>)")
    artifact_ref(int(step), name)
    return f"{int(step)}/{name}"


def call_identity(tool: str, arguments: Mapping[str, Any]) -> str:
    """A short stable hash naming one call: its tool and its arguments.

    The hash is taken over canonical JSON (``{"arguments": ..., "tool": ...}`` with
    sorted keys, no whitespace, UTF-8 text unescaped), so two workers, or the
    workflow and the activity, agree on it whatever order the arguments' keys
    came in. It tells the ledger which call a key was recorded for.

    Args:
        tool: The tool's name.
        arguments: The call's arguments as JSON values (as the model sent them).

    Returns:
        The first ``CALL_HASH_CHARS`` hex characters of the SHA-256 of that JSON.

    Raises:
        TypeError: If an argument is not a JSON value.
    """
    canonical = json.dumps(
        {"tool": tool, "arguments": dict(arguments)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:CALL_HASH_CHARS]


class LedgerConflict(Exception):
    """An idempotency key reached the ledger with a call other than the one it recorded.

    Replaying the recorded result would answer the new call with the old call's
    result, and skipping the effect would lose it, so the ledger does neither.
    A key reused for a different call is a bug (or a reset history, or a changed
    definition), not something a retry fixes.
    """


class StoreUnavailable(Exception):
    """The effect ledger or artifact store cannot be reached (down, restarting).

    The message names the store, never its credentials. Not the tool's fault and
    not the model's: the call is retried as it is (same idempotency key), and the
    run waits for the store as long as it takes.
    """


class ArtifactTooLarge(ValueError):
    """An artifact over the store's limit (``FSMFLOW_ARTIFACT_MAX_BYTES``); nothing is stored.

    A retry would produce the same bytes, so the call's result tells the model
    instead (an error result, like a ``ToolError``).
    """


class EffectLedger(Protocol):
    """A durable record of side effects by idempotency key (SQLite, or shared in PostgreSQL)."""

    async def once(
        self,
        key: str,
        effect: Callable[[], Any],
        *,
        tool: str,
        call: str = "",
        reconcile: Callable[[], Any] | None = None,
        scope: str = "",
    ) -> Any:
        """Run ``effect`` unless ``key`` is recorded as done; return its result.

        ``call`` is the call's identity (``call_identity``); a record of ``key``
        for another tool or another non-empty call raises ``LedgerConflict``.
        ``scope`` is the run's store scope, by which ended runs are cleaned up. See
        ``activities.ledger.LedgerBase.once`` for the contract.
        """


class ArtifactStore(Protocol):
    """Bytes by (run scope, run-relative path): a directory by default, PostgreSQL shared."""

    async def put(self, scope: str, path: str, data: bytes) -> None:
        """Store (or overwrite) one artifact."""

    async def get(self, scope: str, path: str) -> bytes:
        """Read one artifact.

        Raises:
            KeyError: If there is no such artifact.
        """


@dataclass(frozen=True)
class ToolContext:
    """What a tool may ask for besides its arguments (a parameter typed ``ToolContext``).

    Attributes:
        idempotency_key: Stable across retries of the same call (workflow id, the
            chain's first run id, step, call index, call hash): the key that makes
            a side effect happen once.
        workflow_id: The run's workflow id.
        step: The run's step when the call was made.
        call_index: The number of tool calls the run made before this one.
        call_hash: The call's identity (``call_identity`` of its tool and
            arguments), computed by the activity; the ledger refuses a key
            recorded for another call. Empty: not known, not checked.
        attempt: The activity attempt (1 first; more after a failure or crash).
        ledger: The effect ledger (``once``); None outside a worker.
        artifacts: The artifact store (``save_artifact``); None outside a worker.
        scope: Where the run's artifacts live in the store.
        saved: References of the artifacts this call saved so far.
        loop: The worker's event loop: a plain (sync) tool runs in a thread and
            reaches the ledger and the store through it.
    """

    idempotency_key: str
    workflow_id: str = ""
    step: int = 0
    call_index: int = 0
    call_hash: str = ""
    attempt: int = 1
    ledger: EffectLedger | None = field(default=None, repr=False, compare=False)
    artifacts: ArtifactStore | None = field(default=None, repr=False, compare=False)
    scope: str = ""
    saved: list[str] = field(default_factory=list, repr=False, compare=False)
    loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False, compare=False)

    def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """An awaitable in an async tool; the result itself in a sync tool's thread."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            if self.loop is None:
                coroutine.close()
                raise RuntimeError("no event loop: ToolContext runs inside a worker") from None
            return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()
        return coroutine

    def once(
        self,
        effect: Callable[[], Awaitable[Any] | Any],
        *,
        reconcile: Callable[[], Awaitable[Any] | Any] | None = None,
        tool: str = "",
    ) -> Any:
        """Run a side effect at most once per call, however often the call is retried.

        In an ``async def`` tool, await it; in a plain tool, it returns the result.

        Args:
            effect: Does the effect and returns a JSON-serialisable result (sync
                or async); the result is recorded under this call's key.
            reconcile: Asked only when an earlier attempt started the effect and
                died before recording it: return the effect's result if it did
                happen (looked up in the external system), or None to run it.
            tool: The tool's name, for the ledger's record.

        Raises:
            RuntimeError: If no ledger is configured (outside a worker).
            LedgerConflict: If the key is recorded for another call (another
                tool or other arguments); the effect does not run.
        """
        if self.ledger is None:
            raise RuntimeError("no effect ledger: ToolContext.once runs inside a worker")
        return self._run(
            self.ledger.once(
                self.idempotency_key,
                effect,
                tool=tool or "tool",
                call=self.call_hash,
                reconcile=reconcile,
                scope=self.scope,
            )
        )

    def save_artifact(self, name: str, data: bytes | str) -> Any:
        """Store an artifact of this call (keyed by run and step); gives its reference.

        In an ``async def`` tool, await it; in a plain tool, it returns the reference.
        A retried call saving the same name overwrites it, so saving is idempotent.
        """
        if self.artifacts is None:
            raise RuntimeError("no artifact store: ToolContext.save_artifact runs in a worker")
        return self._run(self._save(self.artifacts, name, data))

    async def _save(self, store: ArtifactStore, name: str, data: bytes | str) -> str:
        ref = artifact_ref(self.step, name)
        payload = data.encode() if isinstance(data, str) else data
        await store.put(self.scope, artifact_path(ref), payload)
        if ref not in self.saved:
            self.saved.append(ref)
        return ref


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
    arguments_model: type[BaseModel] | None = field(default=None, repr=False, compare=False)
    """Validates the model's arguments into Python values (nested models, enums)."""
    context_parameter: str | None = None
    artifact_parameters: tuple[str, ...] = ()
    timeout_seconds: float = 60.0
    max_attempts: int = 3
    heartbeat_seconds: float = 20.0
    model_errors: tuple[type[BaseException], ...] = ()
    """Exception types (besides ``ToolError``) whose message goes to the model."""
    is_async: bool = False

    def info(self) -> ToolInfo:
        """What the workflow needs to know of the tool (recorded in history)."""
        return ToolInfo(
            description=self.description,
            parameters=self.parameters,
            artifact_parameters=list(self.artifact_parameters),
            timeout_seconds=self.timeout_seconds,
            max_attempts=self.max_attempts,
            heartbeat_seconds=self.heartbeat_seconds,
        )

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
        heartbeat_seconds: float = 20.0,
        model_errors: tuple[type[BaseException], ...] = (),
        string_bound: int = DEFAULT_TOOL_STRING_BOUND,
    ) -> Any:
        """Register a function as a tool (usable bare or with options).

        Args:
            function: The tool (when used bare, ``@registry.tool``).
            name: The tool's name (default: the function's).
            timeout_seconds: Upper bound of one attempt.
            max_attempts: Attempts before a failing call fails the turn.
            heartbeat_seconds: How soon a worker that died mid-call is noticed.
            model_errors: Exception types whose message the model should read
                (like ``ToolError``) instead of the call failing.
            string_bound: ``maxLength`` given to strings that set none.

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
                heartbeat_seconds=heartbeat_seconds,
                model_errors=model_errors,
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

    def __len__(self) -> int:
        return len(self._tools)

    def add(self, spec: ToolSpec) -> None:
        """Add a spec built elsewhere (merging registries).

        Raises:
            ToolDefinitionError: If the name is taken.
        """
        if spec.name in self._tools:
            raise ToolDefinitionError(f"tool {spec.name!r} is already registered")
        self._tools[spec.name] = spec

    def specs(self) -> list[ToolSpec]:
        """Every spec, sorted by name."""
        return [spec for _, spec in sorted(self._tools.items())]

    def names(self) -> list[str]:
        """Registered tool names, sorted."""
        return sorted(self._tools)

    def schemas(self) -> dict[str, dict[str, Any]]:
        """Argument schemas by tool name."""
        return {name: spec.parameters for name, spec in sorted(self._tools.items())}

    def infos(self) -> dict[str, ToolInfo]:
        """What runs know of each tool (schema, execution options), by name."""
        return {name: spec.info() for name, spec in sorted(self._tools.items())}

    def export(self, fmt: typing.Literal["openai", "anthropic", "google"]) -> list[dict[str, Any]]:
        """Every tool in one provider's format."""
        return [getattr(spec, fmt)() for _, spec in sorted(self._tools.items())]


def build_spec(
    function: Callable[..., Any],
    *,
    name: str | None = None,
    timeout_seconds: float = 60.0,
    max_attempts: int = 3,
    heartbeat_seconds: float = 20.0,
    model_errors: tuple[type[BaseException], ...] = (),
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
    if timeout_seconds <= 0 or heartbeat_seconds <= 0 or max_attempts < 1:
        raise ToolDefinitionError(
            f"tool {tool_name!r}: timeout and heartbeat must be > 0 and max_attempts >= 1"
        )
    fields: dict[str, Any] = {}
    context_parameter = None
    artifact_parameters: list[str] = []
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
        description = argument_docs.get(parameter.name)
        if _is_artifact_hint(hint):
            # The model names the artifact; the activity passes its content.
            artifact_parameters.append(parameter.name)
            hint = str | None if hint is not Artifact else str
            description = (description + " " if description else "") + (
                "(an artifact reference, artifact:<step>/<name>, from an earlier result)"
            )
        elif _mentions_artifact(hint):
            raise ToolDefinitionError(
                f"tool {tool_name!r}: parameter {parameter.name!r}: Artifact is supported "
                "as a parameter's type or 'Artifact | None', not inside other types"
            )
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (hint, Field(default, description=description))
    try:
        model = create_model(f"{tool_name}_arguments", **fields)
        parameters = strict_schema(model.model_json_schema(), string_bound=string_bound)
    except Exception as exc:  # noqa: BLE001 - pydantic's errors for unsupported types vary
        raise ToolDefinitionError(
            f"tool {tool_name!r}: no JSON Schema for its hints: {exc}"
        ) from None
    for name, prop in parameters["properties"].items():
        # Arguments are checked in workflow code with RE2: refuse now what it cannot run.
        for pattern in _patterns(prop):
            try:
                compile_pattern(pattern)
            except ValueError as exc:
                raise ToolDefinitionError(
                    f"tool {tool_name!r}: parameter {name!r}: {exc}"
                ) from None
    for name in artifact_parameters:
        prop = parameters["properties"][name]
        for option in prop.get("anyOf", [prop]):
            if option.get("type") == "string":
                option["maxLength"] = ARTIFACT_REF_BOUND
    return ToolSpec(
        name=tool_name,
        description=summary or tool_name.replace("_", " "),
        parameters=parameters,
        function=function,
        arguments_model=model,
        context_parameter=context_parameter,
        artifact_parameters=tuple(artifact_parameters),
        timeout_seconds=timeout_seconds,
        max_attempts=max_attempts,
        heartbeat_seconds=heartbeat_seconds,
        model_errors=tuple(model_errors),
        is_async=inspect.iscoroutinefunction(function),
    )


def _patterns(schema: Any) -> Iterator[str]:
    """The regular expressions in a JSON Schema: ``pattern`` and ``patternProperties``."""
    if isinstance(schema, list):
        for item in schema:
            yield from _patterns(item)
        return
    if not isinstance(schema, dict):
        return
    for keyword, value in schema.items():
        if keyword == "pattern" and isinstance(value, str):
            yield value
        elif keyword in ("properties", "patternProperties") and isinstance(value, dict):
            # Their keys are property names or patterns, not keywords.
            if keyword == "patternProperties":
                yield from value
            for sub in value.values():
                yield from _patterns(sub)
        else:
            yield from _patterns(value)


def _union_members(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _is_artifact_hint(hint: Any) -> bool:
    """``Artifact`` or ``Artifact | None``."""
    members = set(_union_members(hint))
    return hint is Artifact or members == {Artifact, type(None)}


def _mentions_artifact(hint: Any) -> bool:
    return hint is Artifact or any(_mentions_artifact(a) for a in typing.get_args(hint))
