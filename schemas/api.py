"""Bodies of the HTTP API (``fsmflow api``; docs/api.md).

Requests forbid unknown fields and carry the same bounds as the workflow's own
inputs (``schemas.workflow``), so a request the API accepts is one the run
accepts too, and a refusal names the field before anything reaches Temporal.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.definition import AGENT_NAME_PATTERN
from schemas.limits import MAX_NAME_LENGTH
from schemas.run import RunStatus, TraceEntry
from schemas.workflow import (
    MAX_COMMENT_CHARS,
    MAX_CONTEXT_BYTES,
    MAX_MESSAGE_CHARS,
    MAX_TASK_CHARS,
    AgentStatus,
)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$"
"""A run id or message id the API accepts: it is a URL path segment and a header
value, so no slashes, spaces or controls."""
MAX_ID_CHARS = 200

Decision = Literal["approve", "reject"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _bounded_context(value: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(value, default=str))
    if size > MAX_CONTEXT_BYTES:
        raise ValueError(f"{size} bytes as JSON; the limit is {MAX_CONTEXT_BYTES}")
    return value


class StartRun(_Body):
    """``POST /v1/runs``: start a run of an agent the workers know."""

    agent: str = Field(max_length=MAX_NAME_LENGTH, pattern=AGENT_NAME_PATTERN)
    """The agent's name (or its file's stem) in the workers' agents directory."""
    context: dict[str, Any] = Field(default_factory=dict)
    """Initial context values (checked against the definition by the run)."""
    task: str = Field("", max_length=MAX_TASK_CHARS)
    """The request of an autonomous run."""
    id: str | None = Field(None, max_length=MAX_ID_CHARS, pattern=ID_PATTERN)
    """The run's workflow id (default: ``<agent>-<random>``)."""

    @field_validator("context")
    @classmethod
    def _context_bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _bounded_context(value)


class SendMessage(_Body):
    """``POST /v1/runs/{id}/messages``: one conversation turn."""

    text: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    agent: str | None = Field(None, max_length=MAX_NAME_LENGTH, pattern=AGENT_NAME_PATTERN)
    """Start the conversation with this agent if no run has the id yet."""
    context: dict[str, Any] = Field(default_factory=dict)
    """Initial context of a conversation this message starts (with ``agent`` only)."""
    message_id: str | None = Field(None, max_length=MAX_ID_CHARS, pattern=ID_PATTERN)
    """The message's id (Temporal's update id): sent again, it is answered once."""

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the message is empty")
        return value

    @field_validator("context")
    @classmethod
    def _context_bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _bounded_context(value)


class DecisionRequest(_Body):
    """``POST /v1/runs/{id}/decision``: approve or reject at the open gate.

    Who decides is the authenticated identity, never a field of the request.
    """

    decision: Decision
    comment: str = Field("", max_length=MAX_COMMENT_CHARS)


class RunStarted(BaseModel):
    """A run that was started: where it is, if it has resolved its definition."""

    id: str
    run_id: str
    state: str | None
    """None while the run has not resolved its definition (no worker took it yet)."""
    status: RunStatus | Literal["starting"]
    ui_url: str
    greeting: str = ""
    """The agent's first message (its definition's ``greeting``), when it has one."""


class MessageReply(BaseModel):
    """The reply to a message (``send_message``'s result), and which run gave it."""

    id: str
    message_id: str
    created: bool
    """The message started the conversation (update-with-start)."""
    message: str
    state: str
    status: RunStatus
    step: int
    accepted: bool
    reason: str = ""


class Gate(BaseModel):
    """An open approval gate: where, and who may decide (empty: anyone allowed the agent)."""

    state: str
    approvers: list[str]
    on_approve: str
    on_reject: str


class RunView(BaseModel):
    """``GET /v1/runs/{id}``: where a run is.

    ``detail`` is the run's own ``status`` query, answered by a worker; without
    one (``source: visibility``) the top-level fields come from the search
    attributes, which Temporal keeps with no worker running.
    """

    id: str
    run_id: str
    execution: str
    """Temporal's status of the execution: running, completed, failed, terminated, ..."""
    agent: str | None
    state: str | None
    fsm_status: str | None
    awaiting_approval: bool
    gate: Gate | None = None
    end_reason: str | None = None
    detail: AgentStatus | None = None
    source: Literal["query", "visibility"]
    ui_url: str


class TraceView(BaseModel):
    """``GET /v1/runs/{id}/trace``: every judged turn, tool call and decision."""

    id: str
    run_id: str
    entries: list[TraceEntry]
    source: Literal["query", "history"]
    """The run's ``trace`` query, or (no worker answered) a replay of its history."""


class RunSummary(BaseModel):
    """One row of ``GET /v1/runs``, from the visibility store."""

    id: str
    run_id: str
    agent: str | None
    state: str | None
    fsm_status: str | None
    awaiting_approval: bool
    execution: str
    started_at: datetime
    closed_at: datetime | None


class RunList(BaseModel):
    """A page of runs, newest first; ``next_page_token`` fetches the next one."""

    runs: list[RunSummary]
    next_page_token: str | None


class DecisionRecorded(BaseModel):
    """A decision signalled to the run, which applies it at its gate."""

    id: str
    decision: Decision
    by: str
    gate: str
    comment: str = ""


class ErrorDetail(BaseModel):
    """What went wrong, in the CLI's words; ``field`` names the input at fault."""

    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every error response: ``{"error": {"code", "message", "field"?}}``."""

    error: ErrorDetail
