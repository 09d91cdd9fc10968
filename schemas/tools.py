"""What a run knows of a tool: its argument schema and how its calls are run."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ToolInfo(BaseModel):
    """A tool as the workflow and the engine see it: schema and execution options.

    Registration options overridden by the definition's ``tools`` section; recorded
    in history with the definition, so a redeployed worker cannot change a run.
    """

    model_config = ConfigDict(frozen=True)

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
