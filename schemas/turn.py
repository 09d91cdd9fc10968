"""What a model returns for one turn, as parsed before the engine judges it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Turn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TurnDecision(_Turn):
    """A conversation turn: the move the model picks, what it extracted, its reply."""

    target_state: str
    context_update: dict[str, Any] = Field(default_factory=dict)
    """Keys to set; a null value means "nothing new for this key"."""
    message: str = ""
    reasoning: str = ""


class TransitionAction(_Turn):
    """An autonomous declaration: move to another state (or stay)."""

    kind: Literal["transition"]
    target_state: str
    context_update: dict[str, Any] = Field(default_factory=dict)


class ToolCallAction(_Turn):
    """An autonomous declaration: call one of the current state's tools."""

    kind: Literal["call_tool"]
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class AutonomousDecision(_Turn):
    """One step of an autonomous run: a transition or a tool call."""

    reasoning: str = ""
    action: Annotated[TransitionAction | ToolCallAction, Field(discriminator="kind")]


class ModelReply(BaseModel):
    """What a model produced for one turn, before the engine judges it.

    Either ``parsed`` (the reply fits the turn schema) or ``problem`` (why it does
    not: bad JSON, a schema violation, a reply cut off) with the raw ``content``.
    """

    model_config = ConfigDict(frozen=True)

    content: str = ""
    """The raw reply, kept only when it could not be parsed (bounded)."""
    parsed: dict[str, Any] | None = None
    problem: str | None = None
    problem_kind: Literal["invalid_json", "schema", "truncated"] | None = None
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    """Prompt tokens the endpoint served from its prefix cache."""
    latency_ms: int = 0

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens
