"""The agent definition format: what a user writes in a YAML or JSON file.

Every model forbids unknown fields, so a misspelt field is an error rather than a
silently ignored line. Structural rules live here (types, ranges, name syntax);
rules that need the whole definition (reachability, unknown targets, guards that
read undeclared keys) live in ``fsm.checks`` so that all of them can be reported
together.
"""

from __future__ import annotations

import re
import reprlib
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import re2
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from schemas.limits import (
    MAX_APPROVERS,
    MAX_CONTEXT_KEYS,
    MAX_DURATION_SECONDS,
    MAX_ENUM_VALUES,
    MAX_NAME_LENGTH,
    MAX_STATES,
    MAX_TEXT_LENGTH,
    MAX_TOOLS,
    MAX_TRANSITIONS,
    MAX_VALUE_LENGTH,
)

NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"
"""State ids, context keys and tier names: identifiers, so they read well in
JSON Logic paths, Mermaid diagrams and search attributes."""

AGENT_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]*$"

RECORDED: dict[str, Any] = {"recorded": True}
"""Validation context of a definition recorded in a run's history: checks added
after the run resolved it (RE2 patterns, the limits of ``schemas.limits``) do not
keep the run from loading."""

DEFAULT_STRING_BOUND = 200
"""``maxLength`` given to a declared string key that sets none: every string the
model may write is bounded, or a constrained decoder may never stop."""

_SHORT = reprlib.Repr()
# A value quoted in a message is cut: a refusal must stay one readable line.
_SHORT.maxstring = _SHORT.maxother = 60

_JSON_SCHEMA_BOUND = {"characters": "maxLength", "items": "maxItems", "entries": "maxProperties"}
_SIZED = {"characters": str, "items": list, "entries": dict}


def _recorded(info: ValidationInfo) -> bool:
    return bool((info.context or {}).get("recorded"))


@dataclass(frozen=True)
class _Bound:
    """A size limit that a recorded definition is exempt from.

    ``Annotated[str, _Bound(100, "characters")]``; editors see it as ``maxLength``,
    ``maxItems`` or ``maxProperties`` in the JSON Schema. pydantic's own
    ``max_length`` cannot be lifted for recorded definitions, and a running run
    must never fail to load because a limit was lowered.
    """

    limit: int
    unit: Literal["characters", "items", "entries"]

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        sized = _SIZED[self.unit]

        def check(value: Any, info: ValidationInfo) -> Any:
            if isinstance(value, sized) and len(value) > self.limit and not _recorded(info):
                raise ValueError(f"{len(value):,} {self.unit}; the limit is {self.limit:,}")
            return value

        return core_schema.with_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema[_JSON_SCHEMA_BOUND[self.unit]] = self.limit
        return json_schema


MAX_GREETING_LENGTH = 4000
"""Bound of an agent's ``greeting`` (the largest reply a state may allow)."""

Text = Annotated[str, _Bound(MAX_TEXT_LENGTH, "characters")]
"""Prose the model reads."""
Name = Annotated[str, _Bound(MAX_NAME_LENGTH, "characters")]
"""A state id, context key, tool, target or duration."""
Names = Annotated[list[Name], _Bound(MAX_CONTEXT_KEYS, "items")]
"""A list of context keys (collects, sees, requires, writes)."""
EnumValues = Annotated[
    list[Annotated[Any, _Bound(MAX_VALUE_LENGTH, "characters")]], _Bound(MAX_ENUM_VALUES, "items")
]


_RE2_OPTIONS = re2.Options()
# A refused pattern is reported to the user; RE2 writing it to stderr too is noise.
_RE2_OPTIONS.log_errors = False

_DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")

ValueType = Literal["string", "integer", "number", "boolean", "array"]
ItemType = Literal["string", "integer", "number", "boolean"]


def parse_duration(text: str) -> int:
    """Parse a duration such as ``90s``, ``15m``, ``24h``, ``7d`` or ``1h30m``.

    Args:
        text: The duration as written in a definition.

    Returns:
        The duration in whole seconds (always > 0).

    Raises:
        ValueError: If the text is not such a duration or is zero.
    """
    match = _DURATION_RE.match(text.strip()) if text else None
    if not match or not any(match.groups()):
        raise ValueError(
            f"invalid duration {text!r}: use a number with d, h, m or s, e.g. '24h', '1h30m'"
        )
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise ValueError(f"invalid duration {text!r}: must be longer than zero")
    return total


def _bounded_duration(value: str | None, info: ValidationInfo) -> str | None:
    """Check a duration field (exempt from the bound when recorded)."""
    if value is not None:
        seconds = parse_duration(value)
        if seconds > MAX_DURATION_SECONDS and not _recorded(info):
            raise ValueError(
                f"duration {value!r} is longer than the limit of {MAX_DURATION_SECONDS // 86400}d"
            )
    return value


def compile_pattern(pattern: str) -> Any:
    """Compile a JSON Schema ``pattern`` for RE2, the engine every pattern runs on.

    RE2 matches in time linear in the value, so no pattern can stall a worker
    (Python's ``re`` needs 17 s for ``^(a+)+$`` against 30 characters). The price:
    no backreferences and no lookaround.

    Args:
        pattern: The regular expression, as written in a definition or schema.

    Returns:
        The compiled expression (its ``search`` is JSON Schema's ``pattern``).

    Raises:
        ValueError: If the pattern is not a regular expression, or uses what RE2
            does not support; the message names the pattern and says why.
    """
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else ""
        reason = detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)
    try:
        # Only to tell a typo from a feature RE2 lacks: nothing is matched with it.
        re.compile(pattern)
    except re.error:
        raise ValueError(
            f"pattern {pattern!r} is not a valid regular expression: {reason}"
        ) from None
    raise ValueError(
        f"pattern {pattern!r} is not supported: patterns are evaluated with RE2, in linear "
        f"time, so backreferences and lookaround are not available: {reason}"
    )


class _UserModel(BaseModel):
    """Base of everything a user writes: unknown fields are errors; values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ArrayItems(_UserModel):
    """The element type of an ``array`` context key."""

    type: ItemType
    enum: EnumValues | None = None
    maxLength: int | None = Field(default=None, ge=1)  # noqa: N815 - JSON Schema name


class ContextKey(_UserModel):
    """A declared context key: the only keys a run's context may hold.

    The constraint fields have their JSON Schema meaning and are copied into the
    turn schema, so a constrained decoder honours them and the engine checks them
    again before a value is applied.
    """

    type: ValueType
    description: Text = ""
    enum: EnumValues | None = None
    pattern: Annotated[str, _Bound(MAX_VALUE_LENGTH, "characters")] | None = None
    maxLength: int | None = Field(default=None, ge=1)  # noqa: N815
    minimum: float | None = Field(default=None, allow_inf_nan=False)
    maximum: float | None = Field(default=None, allow_inf_nan=False)
    format: Literal["email", "date", "date-time", "uri"] | None = None
    items: ArrayItems | None = None
    maxItems: int | None = Field(default=None, ge=1)  # noqa: N815
    secret: bool = False

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not (info.context or {}).get("recorded"):
            compile_pattern(value)
        return value

    @model_validator(mode="after")
    def _constraints_fit_type(self) -> ContextKey:
        if self.type != "string":
            for name in ("pattern", "maxLength", "format"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} applies to string keys only, not to {self.type}")
        if self.type not in ("integer", "number"):
            for name in ("minimum", "maximum"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} applies to numeric keys only, not to {self.type}")
        if self.type != "array" and (self.items is not None or self.maxItems is not None):
            raise ValueError(f"items and maxItems apply to array keys only, not to {self.type}")
        if self.type == "array" and self.items is None:
            raise ValueError("an array key needs items: {type: ...}")
        if self.enum is not None and not self.enum:
            raise ValueError("enum must list at least one value")
        return self


class Transition(_UserModel):
    """A move out of a state.

    ``requires`` and ``when`` are guards the FSM evaluates itself over the context;
    a move whose guard does not hold is not offered to the model and is rejected
    if the model takes it anyway.
    """

    target: Name
    description: Text = ""
    priority: int = 100
    requires: Names = Field(default_factory=list)
    when: Any = None
    """A JSON Logic expression, e.g. ``{"<": [{"var": "revisions"}, 3]}``."""


class Approval(_UserModel):
    """An approval gate: entering the state waits for a human decision."""

    on_approve: Name
    on_reject: Name
    approvers: Annotated[
        list[Annotated[str, _Bound(MAX_VALUE_LENGTH, "characters")]],
        _Bound(MAX_APPROVERS, "items"),
    ] = Field(default_factory=list)
    """Who may decide; empty means anyone who can signal the run."""
    timeout: Name | None = None
    on_timeout: Name | None = None

    @field_validator("timeout")
    @classmethod
    def _timeout_parses(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _bounded_duration(value, info)

    @model_validator(mode="after")
    def _timeout_has_target(self) -> Approval:
        if self.timeout is not None and self.on_timeout is None:
            raise ValueError("a timeout needs on_timeout: the state a timed-out run goes to")
        if self.on_timeout is not None and self.timeout is None:
            raise ValueError("on_timeout needs a timeout, e.g. timeout: 24h")
        return self

    @property
    def timeout_seconds(self) -> int | None:
        """The timeout in seconds, or None when the gate waits forever."""
        return parse_duration(self.timeout) if self.timeout else None


class ToolOptions(_UserModel):
    """How one tool's calls run in this agent (overrides its registration)."""

    timeout: Name | None = None
    """Upper bound of one attempt, e.g. ``30s``, ``5m``."""
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    """Attempts before the call fails the turn (1: never retried)."""
    heartbeat: Name | None = None
    """How soon a dead worker is noticed during a long call."""
    writes: Names = Field(default_factory=list)
    """Context keys set from the result's fields of the same name (a successful
    call returning an object): tool results that guards read, not the model's copy."""

    @field_validator("timeout", "heartbeat")
    @classmethod
    def _duration_parses(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _bounded_duration(value, info)


class InvalidGoto(_UserModel):
    """``on_invalid: {goto: STATE}``: where the FSM sends a run the model cannot move."""

    goto: Name


OnInvalid = Literal["wait", "fail"] | InvalidGoto

OnDeadEnd = Literal["fail"] | InvalidGoto

Reasoning = Literal["none", "short", "full"]
"""How much private reasoning a turn may write before it decides: ``none`` (the
reply is the keys, the move and the message), ``short`` (a sentence) or ``full``.
Small models fill what the schema allows, so each level is a hard bound."""

ReplyLength = Annotated[int, Field(ge=20, le=4000)]
"""Bound of a conversation reply's message, in characters."""


class State(_UserModel):
    """One state of the machine: what the model is told here and where it may go."""

    description: Text = ""
    purpose: Text = ""
    instructions: Text = ""
    collects: Names = Field(default_factory=list)
    sees: Names | None = None
    """Keys shown to the model, read-only (``collects`` are the keys it may write);
    default: the keys its guards read."""
    history_window: int = Field(default=4, ge=0)
    model: Name = Field(default="default", pattern=NAME_PATTERN)
    tools: Annotated[list[Name], _Bound(MAX_TOOLS, "items")] = Field(default_factory=list)
    """Tools the model may call here (autonomous runs): an allowlist."""
    max_tool_calls: int | None = Field(default=None, ge=1)
    """Successful tool calls allowed per visit; after that only transitions are
    offered."""
    max_tool_errors: int = Field(default=3, ge=1, le=100)
    """Failed tool calls allowed per visit (they spend no ``max_tool_calls``);
    after that the state's tools are no longer offered."""
    transitions: Annotated[list[Transition], _Bound(MAX_TRANSITIONS, "items")] = Field(
        default_factory=list
    )
    always: Annotated[list[Transition], _Bound(MAX_TRANSITIONS, "items")] = Field(
        default_factory=list
    )
    """Eventless transitions: after a turn, decision or tool call has been applied,
    the FSM itself takes the first (by priority) whose guard holds; the model never
    picks them. ``always: [{target: ask_age, requires: [email]}]`` moves on the
    moment the email is known."""
    reasoning: Reasoning | None = None
    """Reasoning a turn may write here; default: the agent's."""
    reply_max_length: ReplyLength | None = None
    """Bound of the reply's message here; default: the agent's."""
    terminal: bool = False
    allow_stay: bool = True
    """Whether staying in the state is a move. Autonomous states that should not
    idle set it to false: the model must then pick a transition."""
    approval: Approval | None = None
    fallback_message: Text = ""
    """Reply used when the model fails to produce a valid turn after its re-asks."""
    on_invalid: OnInvalid = "wait"
    """What follows when the model gives no valid turn after its re-asks: ``wait``
    (a conversation replies ``fallback_message`` and keeps the message as
    unanswered; an autonomous run backs off and asks again, with the fallback
    model), ``fail`` (the run ends failed), or ``{goto: STATE}`` (the FSM moves
    the run there itself)."""

    on_dead_end: OnDeadEnd = "fail"
    """What follows when no way out of the state is left (no transition can ever
    hold and no tool can be called, e.g. its calls kept failing): ``fail`` (the
    run ends failed, naming the state) or ``{goto: STATE}`` (the FSM moves the run
    there itself, traced as ``dead_end``)."""

    @field_validator("on_invalid", "on_dead_end", mode="wrap")
    @classmethod
    def _one_rule(cls, value: Any, handler: Any, info: ValidationInfo) -> Any:
        # One clear message instead of one per member of the union.
        if isinstance(value, dict) and set(value) != {"goto"}:
            extra = sorted(set(value) - {"goto"})
            raise ValueError(
                f"unknown field {extra[0]!r}; use {{goto: STATE}}"
                if extra
                else "{goto: STATE} needs the state to go to"
            )
        try:
            return handler(value)
        except ValidationError:
            words = "'wait', 'fail'" if info.field_name == "on_invalid" else "'fail'"
            raise ValueError(
                f"must be {words} or {{goto: STATE}} (got {_SHORT.repr(value)})"
            ) from None


class AgentDefinition(_UserModel):
    """An agent: its persona, declared context keys and state machine."""

    name: Name = Field(pattern=AGENT_NAME_PATTERN)
    version: Annotated[
        str,
        WithJsonSchema({"type": ["string", "integer"]}),
        _Bound(MAX_NAME_LENGTH, "characters"),
    ] = "1"
    description: Text = ""
    persona: Text = ""
    mode: Literal["conversation", "autonomous"] = "conversation"
    initial_state: Name
    max_steps: int = 50
    """Hard bound on accepted turns per run (staying in a state and tool calls count)."""
    reasoning: Reasoning = "short"
    """Reasoning a turn may write (states may override it)."""
    reply_max_length: ReplyLength = 600
    """Bound of a conversation reply's message (states may override it)."""
    greeting: Annotated[str, _Bound(MAX_GREETING_LENGTH, "characters")] = ""
    """A conversation's first message, said by the agent when the run starts (fixed
    text: no model call). It is the first message of the dialogue the model reads."""
    sees_writable: bool = False
    """Let the model write the keys a state only ``sees`` too, as before
    ``collects``/``sees`` split into writable and read-only. Set on definitions
    recorded by runs started before then (see ``_recorded_before_v2``), so they
    replay as they ran."""
    context: Annotated[dict[Name, ContextKey], _Bound(MAX_CONTEXT_KEYS, "entries")] = Field(
        default_factory=dict
    )
    tools: Annotated[dict[Name, ToolOptions], _Bound(MAX_TOOLS, "entries")] = Field(
        default_factory=dict
    )
    """Per-tool execution options (timeout, attempts, heartbeat) for this agent."""
    states: Annotated[dict[Name, State], _Bound(MAX_STATES, "entries")]

    @model_validator(mode="before")
    @classmethod
    def _recorded_before_v2(cls, data: Any, info: ValidationInfo) -> Any:
        # A definition recorded without the fields prompt engine v2 added (every
        # field is recorded, defaults included) ran when seen keys were writable.
        if _recorded(info) and isinstance(data, dict) and "reasoning" not in data:
            return {**data, "sees_writable": True}
        return data

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        # `version: 2` in YAML is an int; a version is a label, not a number.
        return (
            str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
        )

    def state(self, state_id: str) -> State:
        """Return the state with this id.

        Raises:
            KeyError: If there is no such state.
        """
        return self.states[state_id]


def definition_json_schema() -> dict[str, Any]:
    """The JSON Schema of the definition format, for editors and other tools."""
    schema = AgentDefinition.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "fsmflow agent definition"
    return schema
