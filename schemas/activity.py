"""Inputs and outputs of fsmflow's activities."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.run import DialogueTurn, RunState
from schemas.snapshot import ResolvedDefinition, RunLimits
from schemas.tools import ToolInfo
from schemas.turn import ModelReply

__all__ = [
    "AgentBundle",
    "LlmTurnInput",
    "LlmTurnOutput",
    "ResolveDefinitionInput",
    "ResolvedDefinition",
    "ResolvedRun",
    "RunLimits",
    "RunToolInput",
    "ToolInfo",
    "ToolOutput",
]


class _Io(BaseModel):
    model_config = ConfigDict(frozen=True)


class ResolveDefinitionInput(_Io):
    """Which definition a run uses: a name in the agents directory, or inline."""

    agent: str | None = None
    definition: dict[str, Any] | None = None


class ResolvedRun(_Io):
    """Everything a new run needs from outside the workflow, recorded in history."""

    definition: ResolvedDefinition
    limits: RunLimits = Field(default_factory=RunLimits)
    tools: dict[str, ToolInfo] = Field(default_factory=dict)
    """The tools the definition's states name."""


class AgentBundle(_Io):
    """What a model turn is rendered from that does not change during a run.

    Sent to the LLM activity only when the worker does not hold it yet (the
    activity asks for it with a ``BundleMissing`` error): turns carry its hash.
    """

    definition: dict[str, Any]
    tools: dict[str, ToolInfo] = Field(default_factory=dict)


class LlmTurnInput(_Io):
    """One request for a model turn: the activity renders the prompt and the schema.

    Only what changes from turn to turn is here (the run without its trace, the
    dialogue window, the task, a re-ask's feedback), so a turn adds little to the
    workflow history; the definition and the tools come as ``bundle_hash``.
    """

    bundle_hash: str
    bundle: AgentBundle | None = None
    run: RunState
    dialogue: list[DialogueTurn] = Field(default_factory=list)
    """The dialogue window the state shows (already cut to its ``history_window``)."""
    task: str = ""
    feedback: str = ""
    rejected_reply: str = ""
    """The reply a re-ask answers (shown to the model as its own, with ``feedback``)."""
    fallback: bool = False
    """Ask the tier's fallback model (the turn's earlier calls failed)."""
    label: str = ""
    """Where the run is (``support/greeting``), for logs."""
    turn: str = ""
    """The call's model turn on the run's stream (``<step>.<call>``): a conversation
    reply's text is published there as it is generated. Empty: nothing is published."""
    message_id: str = ""
    """The update id of the message a conversation turn answers (on its stream events)."""
    reask: int = 0
    """Invalid replies the turn had before this call (its re-asks so far; telemetry)."""


class LlmTurnOutput(ModelReply):
    """A model's reply (not yet judged by the engine), and how it was obtained."""

    attempt: int = 1
    used_fallback: bool = False
    streamed: bool = False
    """Part of the reply's message was published to the run's stream."""


class RunToolInput(_Io):
    """One tool call the engine allowed, with the key that makes its effect once."""

    tool: str
    arguments: dict[str, Any]
    idempotency_key: str
    """``<workflow id>/<chain run id>/<step>/<call index>/<call hash>``: the same on
    every retry, and naming the call it keys."""
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
