"""The pure FSM core: definitions, checks, the engine, prompts, schemas, tool registry.

What a tool author imports is here too: ``ToolRegistry``, ``ToolContext``,
``ToolError``, ``Artifact``. No Temporal, no clock, no network: everything here is a
function of its inputs, so the workflow can call it deterministically and tests can
call it directly.
"""

from fsm.diagram import mermaid
from fsm.engine import (
    ContextError,
    Move,
    TurnParseError,
    TurnResult,
    allowed_moves,
    allowed_targets,
    apply_decision,
    apply_turn,
    fail_run,
    parse_turn,
    record_tool_call,
    start_run,
    tool_call_problem,
)
from fsm.loader import Loaded, load_definition, load_file, load_text, parse_definition
from fsm.problems import DefinitionError, Problem
from fsm.prompt import build_messages
from fsm.tools import Artifact, ToolContext, ToolError, ToolRegistry, call_identity
from fsm.turn_schema import turn_schema

__all__ = [
    "Artifact",
    "ContextError",
    "DefinitionError",
    "Loaded",
    "Move",
    "Problem",
    "ToolContext",
    "ToolError",
    "ToolRegistry",
    "TurnParseError",
    "TurnResult",
    "allowed_moves",
    "allowed_targets",
    "apply_decision",
    "apply_turn",
    "build_messages",
    "call_identity",
    "fail_run",
    "load_definition",
    "load_file",
    "load_text",
    "mermaid",
    "parse_definition",
    "parse_turn",
    "start_run",
    "record_tool_call",
    "tool_call_problem",
    "turn_schema",
]
