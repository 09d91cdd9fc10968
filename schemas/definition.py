"""The agent definition format: what a user writes in a YAML or JSON file.

Every model forbids unknown fields, so a misspelt field is an error rather than a
silently ignored line. Structural rules live here (types, ranges, name syntax);
rules that need the whole definition (reachability, unknown targets, guards that
read undeclared keys) live in ``fsm.checks`` so that all of them can be reported
together.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import re2
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"
"""State ids, context keys and tier names: identifiers, so they read well in
JSON Logic paths, Mermaid diagrams and search attributes."""

AGENT_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]*$"

RECORDED: dict[str, Any] = {"recorded": True}
"""Validation context of a definition recorded in a run's history: checks added
after the run resolved it (RE2 patterns) do not keep the run from loading."""

DEFAULT_STRING_BOUND = 200
"""``maxLength`` given to a declared string key that sets none: every string the
model may write is bounded, or a constrained decoder may never stop."""

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
    enum: list[Any] | None = None
    maxLength: int | None = Field(default=None, ge=1)  # noqa: N815 - JSON Schema name


class ContextKey(_UserModel):
    """A declared context key: the only keys a run's context may hold.

    The constraint fields have their JSON Schema meaning and are copied into the
    turn schema, so a constrained decoder honours them and the engine checks them
    again before a value is applied.
    """

    type: ValueType
    description: str = ""
    enum: list[Any] | None = None
    pattern: str | None = None
    maxLength: int | None = Field(default=None, ge=1)  # noqa: N815
    minimum: float | None = None
    maximum: float | None = None
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

    target: str
    description: str = ""
    priority: int = 100
    requires: list[str] = Field(default_factory=list)
    when: Any = None
    """A JSON Logic expression, e.g. ``{"<": [{"var": "revisions"}, 3]}``."""


class Approval(_UserModel):
    """An approval gate: entering the state waits for a human decision."""

    on_approve: str
    on_reject: str
    approvers: list[str] = Field(default_factory=list)
    """Who may decide; empty means anyone who can signal the run."""
    timeout: str | None = None
    on_timeout: str | None = None

    @field_validator("timeout")
    @classmethod
    def _timeout_parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

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

    timeout: str | None = None
    """Upper bound of one attempt, e.g. ``30s``, ``5m``."""
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    """Attempts before the call fails the turn (1: never retried)."""
    heartbeat: str | None = None
    """How soon a dead worker is noticed during a long call."""
    writes: list[str] = Field(default_factory=list)
    """Context keys set from the result's fields of the same name (a successful
    call returning an object): tool results that guards read, not the model's copy."""

    @field_validator("timeout", "heartbeat")
    @classmethod
    def _duration_parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value


class InvalidGoto(_UserModel):
    """``on_invalid: {goto: STATE}``: where the FSM sends a run the model cannot move."""

    goto: str


OnInvalid = Literal["wait", "fail"] | InvalidGoto


class State(_UserModel):
    """One state of the machine: what the model is told here and where it may go."""

    description: str = ""
    purpose: str = ""
    instructions: str = ""
    collects: list[str] = Field(default_factory=list)
    sees: list[str] | None = None
    """Extra keys shown to (and writable by) the model; default: keys its guards read."""
    history_window: int = Field(default=4, ge=0)
    model: str = Field(default="default", pattern=NAME_PATTERN)
    tools: list[str] = Field(default_factory=list)
    """Tools the model may call here (autonomous runs): an allowlist."""
    max_tool_calls: int | None = Field(default=None, ge=1)
    """Tool calls allowed per visit; after that only transitions are offered."""
    transitions: list[Transition] = Field(default_factory=list)
    terminal: bool = False
    allow_stay: bool = True
    """Whether staying in the state is a move. Autonomous states that should not
    idle set it to false: the model must then pick a transition."""
    approval: Approval | None = None
    fallback_message: str = ""
    """Reply used when the model fails to produce a valid turn after its re-asks."""
    on_invalid: OnInvalid = "wait"
    """What follows when the model gives no valid turn after its re-asks: ``wait``
    (a conversation replies ``fallback_message`` and keeps the message as
    unanswered; an autonomous run backs off and asks again, with the fallback
    model), ``fail`` (the run ends failed), or ``{goto: STATE}`` (the FSM moves
    the run there itself)."""

    @field_validator("on_invalid", mode="wrap")
    @classmethod
    def _one_on_invalid(cls, value: Any, handler: Any) -> Any:
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
            raise ValueError(f"must be 'wait', 'fail' or {{goto: STATE}} (got {value!r})") from None


class AgentDefinition(_UserModel):
    """An agent: its persona, declared context keys and state machine."""

    name: str = Field(pattern=AGENT_NAME_PATTERN)
    version: Annotated[str, WithJsonSchema({"type": ["string", "integer"]})] = "1"
    description: str = ""
    persona: str = ""
    mode: Literal["conversation", "autonomous"] = "conversation"
    initial_state: str
    max_steps: int = 50
    """Hard bound on accepted turns per run (staying in a state and tool calls count)."""
    context: dict[str, ContextKey] = Field(default_factory=dict)
    tools: dict[str, ToolOptions] = Field(default_factory=dict)
    """Per-tool execution options (timeout, attempts, heartbeat) for this agent."""
    states: dict[str, State]

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
