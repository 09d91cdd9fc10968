"""The state of one run as the pure engine sees it, and its trace."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

RunStatus = Literal["active", "awaiting_approval", "completed", "max_steps", "failed"]
"""``active``: the model acts next; ``awaiting_approval``: a gate is open;
``completed``: a terminal state was entered; ``max_steps``: the step bound ended
the run; ``failed``: the run ended on an error it could not recover from."""

REASON_CHARS = 2_000
"""Bound of a trace entry's reason."""

TraceKind = Literal[
    "turn",
    "approve",
    "reject",
    "timeout",
    "tool_call",
    "fail",
    "unanswered",
    "on_invalid",
    "always",
    "dead_end",
]
"""``turn``: a model turn; ``approve``/``reject``/``timeout``: a gate's decision;
``tool_call``: a tool call (refused, executed or failed); ``fail``: the run ended
on an error; ``unanswered``: a message the run could not answer in time (kept in
the dialogue); ``on_invalid``: the state's ``on_invalid`` rule applied after its
re-asks were spent; ``always``: an eventless transition the FSM took itself;
``dead_end``: the state's ``on_dead_end`` move, taken when no way out was left."""


class TraceEntry(BaseModel):
    """One judged event of a run: a model turn (applied or rejected) or a decision."""

    model_config = ConfigDict(frozen=True)

    step: int
    """The run's step count when the event was judged (before it was applied)."""
    kind: TraceKind = "turn"
    from_state: str
    to_state: str | None
    accepted: bool
    reason: str = ""
    by: str | None = None
    model: str | None = None
    tokens: int | None = None
    latency_ms: int | None = None
    tool: str | None = None
    """The tool called (``tool_call`` entries)."""
    cached_tokens: int | None = None
    """Prompt tokens the endpoint served from its prefix cache (model turns)."""

    @field_validator("reason", mode="before")
    @classmethod
    def _bounded(cls, value: object) -> object:
        # Reasons quote what models, tools and callers said: each entry stays small.
        if isinstance(value, str) and len(value) > REASON_CHARS:
            return value[: REASON_CHARS - 1] + "\u2026"
        return value


class DialogueTurn(BaseModel):
    """One message of recent dialogue, as shown to the model."""

    model_config = ConfigDict(frozen=True)

    role: Literal["user", "agent", "tool"]
    text: str
    state: str = ""
    """The state the run was in when the message was said (empty in older runs): the
    prompt shows a state's instructions where the dialogue entered it."""


class RunState(BaseModel):
    """Where a run is: state, context, step count and how it ended (if it did).

    Values are replaced, never mutated: the engine returns a new ``RunState``.
    """

    model_config = ConfigDict(frozen=True)

    state: str
    context: dict[str, Any] = Field(default_factory=dict)
    step: int = 0
    visits: dict[str, int] = Field(default_factory=dict)
    status: RunStatus = "active"
    end_reason: str | None = None
    trace: tuple[TraceEntry, ...] = ()
    tool_calls: int = 0
    """Tool calls executed so far in the run (the call index of the next one)."""
    visit_tool_calls: int = 0
    """Successful tool calls since the run entered its current state (the visit's
    ``max_tool_calls`` budget)."""
    visit_tool_errors: int = 0
    """Failed tool calls since the run entered its current state (the visit's
    ``max_tool_errors`` budget): a call that fails spends no call budget."""
    calls: dict[str, int] = Field(default_factory=dict)
    """Successful calls by tool (guards read them as ``_calls.<tool>``)."""
    artifacts: tuple[str, ...] = ()
    """References of the artifacts the run's tools created, oldest first (bounded)."""

    @property
    def ended(self) -> bool:
        """True once the run can take no more turns or decisions."""
        return self.status in ("completed", "max_steps", "failed")


class Reply(BaseModel):
    """What ``send_message`` returns: the agent's reply and where the run is now."""

    model_config = ConfigDict(frozen=True)

    message: str
    state: str
    status: RunStatus
    accepted: bool
    """False when no valid turn was applied (the state's fallback reply was used)."""
    step: int
    reason: str = ""
    """Why the message was not answered, when ``accepted`` is false."""
