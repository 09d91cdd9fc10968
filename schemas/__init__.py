"""Pydantic models: the definition format, turns, and the state of a run."""

from schemas.definition import AgentDefinition, Approval, ContextKey, State, Transition
from schemas.run import DialogueTurn, RunState, TraceEntry
from schemas.turn import AutonomousDecision, ToolCallAction, TransitionAction, TurnDecision

__all__ = [
    "AgentDefinition",
    "Approval",
    "AutonomousDecision",
    "ContextKey",
    "DialogueTurn",
    "RunState",
    "State",
    "ToolCallAction",
    "TraceEntry",
    "Transition",
    "TransitionAction",
    "TurnDecision",
]
