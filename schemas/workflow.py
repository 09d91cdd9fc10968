"""Inputs, outputs and query results of ``AgentWorkflow``.

These are what a user passes to ``temporal workflow start --input``, ``temporal
workflow update execute --input`` and ``temporal workflow signal --input``, so
every model a user writes forbids unknown fields.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.run import DialogueTurn, Reply, RunState, RunStatus, TraceEntry
from schemas.snapshot import FsmStatus, RunLimits, RunSnapshot
from schemas.tools import ToolInfo

__all__ = [
    "AgentResult",
    "AgentRunInput",
    "AgentStatus",
    "AgentWorkflowInput",
    "Carried",
    "DecideInput",
    "DecisionInput",
    "DecisionResult",
    "FsmStatus",
    "MessageInput",
    "Reply",
]


MAX_AGENT_CHARS = 200
MAX_TASK_CHARS = 16_000
MAX_CONTEXT_BYTES = 64_000
"""Bound of a start input's ``context`` as JSON (each value is also checked
against its key's declaration)."""
MAX_MESSAGE_CHARS = 200_000
"""Hard bound of a message; ``FSMFLOW_MAX_MESSAGE_CHARS`` (4,000) applies below it."""
MAX_BY_CHARS = 200
MAX_COMMENT_CHARS = 2_000
"""Bounds of a decision's ``by`` and ``comment``: what a caller sends is recorded in
the trace, carried across continue-as-new and returned with the result, all under
Temporal's 2 MB payload limit."""


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgentRunInput(_Input):
    """How a run starts: ``{"agent": "support", "context": {...}, "task": "..."}``.

    Exactly one of ``agent`` (a definition the worker loads from its agents
    directory) or ``definition`` (an inline definition document) is given.
    """

    agent: str | None = Field(None, max_length=MAX_AGENT_CHARS)
    definition: dict[str, Any] | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    task: str = Field("", max_length=MAX_TASK_CHARS)

    @model_validator(mode="after")
    def _one_source(self) -> AgentRunInput:
        if (self.agent is None) == (self.definition is None):
            raise ValueError('give exactly one of "agent" (a name) or "definition" (inline)')
        return self

    @field_validator("context")
    @classmethod
    def _context_bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value, default=str))
        if size > MAX_CONTEXT_BYTES:
            raise ValueError(f"{size} bytes as JSON; the limit is {MAX_CONTEXT_BYTES}")
        return value


class Carried(BaseModel):
    """What runs before ``RunSnapshot`` carried across continue-as-new (still read)."""

    model_config = ConfigDict(frozen=True)

    definition: dict[str, Any]
    definition_hash: str
    source: str
    limits: RunLimits
    tools: dict[str, ToolInfo] = Field(default_factory=dict)
    chain_id: str = ""
    """The first run id of the chain: scopes idempotency keys and artifacts."""
    run: RunState
    history: list[DialogueTurn] = Field(default_factory=list)
    total_tokens: int = 0
    gate_deadline: datetime | None = None
    """When the open approval gate times out (a gate's timer survives the hand-over)."""


class AgentWorkflowInput(AgentRunInput):
    """``AgentRunInput`` plus what continue-as-new carries.

    ``snapshot`` (and the older ``carried``) are internal: the workflow accepts
    them only in a run that fsmflow itself continued as new, and fails a run
    started with them at once.
    """

    agent: str | None = Field(None, max_length=MAX_AGENT_CHARS)
    snapshot: RunSnapshot | None = None
    carried: Carried | None = None

    @model_validator(mode="after")
    def _one_source(self) -> AgentWorkflowInput:
        if self.snapshot is None and self.carried is None:
            if (self.agent is None) == (self.definition is None):
                raise ValueError('give exactly one of "agent" (a name) or "definition" (inline)')
        return self


class MessageInput(_Input):
    """A user message: ``{"text": "..."}``."""

    text: str = Field(max_length=MAX_MESSAGE_CHARS)


class DecisionInput(_Input):
    """An approval decision as a signal (``approve`` / ``reject``): who, and why."""

    by: str = Field("", max_length=MAX_BY_CHARS)
    comment: str = Field("", max_length=MAX_COMMENT_CHARS)


class DecideInput(_Input):
    """An approval decision as an update: ``{"decision": "approve", "by": "..."}``."""

    decision: Literal["approve", "reject"]
    by: str = Field("", max_length=MAX_BY_CHARS)
    comment: str = Field("", max_length=MAX_COMMENT_CHARS)


class DecisionResult(BaseModel):
    """What ``decide`` returns."""

    state: str
    status: RunStatus


class AgentStatus(BaseModel):
    """The ``status`` query."""

    agent: str
    version: str
    definition_hash: str
    state: str
    status: RunStatus
    step: int
    max_steps: int
    waiting_for: Literal["message", "approval", "model", "tool", "nothing"]
    end_reason: str | None
    total_tokens: int
    turns: int
    fsm_status: FsmStatus = "active"
    """The ``FsmStatus`` search attribute's value."""
    waiting_since: datetime | None = None
    """While waiting for the model: since when."""
    model_failures: int = 0
    """While waiting for the model: failed calls and invalid turns so far."""
    last_error: str = ""
    """While waiting for the model: the last error or rejection."""
    pending_decision: str | None = None
    """A decision recorded by a signal, not yet applied at the gate."""
    last_reply: str = ""
    """The agent's newest message in the dialogue (its greeting before the first
    turn); empty when it has said nothing yet."""


class AgentResult(BaseModel):
    """The workflow's result."""

    agent: str
    state: str
    status: RunStatus
    end_reason: str | None
    context: dict[str, Any]
    """Context values, with keys declared ``secret`` redacted."""
    steps: int
    total_tokens: int
    trace: list[TraceEntry]
    """The trace tail of the last run of the chain (continue-as-new keeps a tail)."""
