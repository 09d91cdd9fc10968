"""Inputs and outputs of fsmflow's activities."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Io(BaseModel):
    model_config = ConfigDict(frozen=True)


class ResolveDefinitionInput(_Io):
    """Which definition a run uses: a name in the agents directory, or inline."""

    agent: str | None = None
    definition: dict[str, Any] | None = None


class ResolvedDefinition(_Io):
    """A checked definition, recorded in history so later file edits never affect the run."""

    definition: dict[str, Any]
    definition_hash: str
    """sha256 of the definition's canonical JSON."""
    source: str


class LlmTurnInput(_Io):
    """One request for a model turn, built by the workflow from the pure core."""

    tier: str
    messages: list[dict[str, str]]
    schema_name: str
    turn_schema: dict[str, Any]
    label: str = ""
    """Where the run is (``support/greeting``), for logs."""


class LlmTurnOutput(_Io):
    """A model's reply: parsed JSON (not yet judged by the engine) or what was wrong."""

    content: str
    parsed: dict[str, Any] | None = None
    problem: str | None = None
    """Why the reply is not a valid turn (bad JSON, schema violation); None if valid."""
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    attempt: int = 1
    used_fallback: bool = False
    settings_echo: dict[str, Any] = Field(default_factory=dict)
    """Non-secret settings the call used (endpoint, response format), for the record."""

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


class RunLimits(_Io):
    """Worker settings the workflow obeys; they reach it through history, not globals."""

    max_reasks: int = 2
    """Re-asks per turn after an invalid reply (so up to max_reasks + 1 model calls)."""
    max_message_chars: int = 4000
    continue_as_new_after: int = 100
    """Model turns in one run of the chain before it continues as new."""
    history_keep: int = 40
    """Dialogue messages carried across continue-as-new (prompts show fewer)."""
    trace_keep: int = 200
    """Trace entries carried across continue-as-new (and kept in the workflow)."""


class ToolInfo(_Io):
    """What the workflow knows of a tool: its schema and how its activity is run.

    Registration options overridden by the definition's ``tools`` section; recorded
    in history with the definition, so a redeployed worker cannot change a run.
    """

    description: str = ""
    parameters: dict[str, Any]
    """The strict JSON Schema of the arguments (artifact parameters are strings)."""
    artifact_parameters: list[str] = Field(default_factory=list)
    """Arguments that name an artifact of the run (the turn schema enumerates them)."""
    timeout_seconds: float = 60.0
    max_attempts: int = 3
    heartbeat_seconds: float = 20.0
    writes: list[str] = Field(default_factory=list)
    """Context keys the result's fields of the same name set (the definition's)."""


class ResolvedRun(_Io):
    """Everything a new run needs from outside the workflow, recorded in history."""

    definition: ResolvedDefinition
    limits: RunLimits = Field(default_factory=RunLimits)
    tools: dict[str, ToolInfo] = Field(default_factory=dict)
    """The tools the definition's states name."""


class RunToolInput(_Io):
    """One tool call the engine allowed, with the key that makes its effect once."""

    tool: str
    arguments: dict[str, Any]
    idempotency_key: str
    """``<workflow id>/<chain run id>/<step>/<call index>``: the same on every retry."""
    workflow_id: str
    chain_id: str
    """The first run id of the continue-as-new chain (workflow ids may be reused)."""
    step: int
    call_index: int
    writes: list[str] = Field(default_factory=list)
    """Result fields to return as values for the context."""
    label: str = ""


class ToolOutput(_Io):
    """What a tool call returned, as the model will see it (bounded)."""

    tool: str
    ok: bool
    """False when the tool raised an error meant for the model (``ToolError``)."""
    text: str
    """The result (or error) as shown to the model: JSON or text, or, for a large
    result, its artifact reference and a bounded summary."""
    artifacts: list[str] = Field(default_factory=list)
    """References of the artifacts the call created."""
    result_chars: int = 0
    """Size of the full result (which may live in an artifact)."""
    values: dict[str, Any] = Field(default_factory=dict)
    """The result's fields named by ``writes`` (each bounded), for the context."""
    latency_ms: int = 0
