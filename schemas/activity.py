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


class ResolvedRun(_Io):
    """Everything a new run needs from outside the workflow, recorded in history."""

    definition: ResolvedDefinition
    limits: RunLimits = Field(default_factory=RunLimits)
    tool_schemas: dict[str, dict[str, Any]] = Field(default_factory=dict)
