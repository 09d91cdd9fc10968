"""The JSON Schema of one turn, generated from the current state.

The schema is what a constrained decoder (OpenAI structured outputs, llama.cpp,
vLLM) enforces, so an illegal move cannot even be generated there. It follows
OpenAI's strict-mode rules so one schema serves every endpoint: every object has
``additionalProperties: false`` and lists all its properties as required
(optional values are nullable), and every string is bounded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fsm.context import key_schema
from fsm.engine import allowed_targets, callable_tools, keys_every_move_needs, writable_keys
from schemas.definition import AgentDefinition
from schemas.run import RunState
from schemas.tools import ToolInfo

MESSAGE_MAX_LENGTH = 600
"""The default bound of a reply's message (``reply_max_length``)."""
REASONING_MAX_LENGTH = 300
"""The bound of ``reasoning: full``."""
SHORT_REASONING_MAX_LENGTH = 100
"""The bound of ``reasoning: short`` (the default): a sentence."""

_REASONING_BOUNDS = {"short": SHORT_REASONING_MAX_LENGTH, "full": REASONING_MAX_LENGTH}


def reasoning_bound(definition: AgentDefinition, state_id: str) -> int:
    """Characters of reasoning a turn may write in a state (0: none at all)."""
    level = definition.states[state_id].reasoning or definition.reasoning
    return _REASONING_BOUNDS.get(level, 0)


def reply_bound(definition: AgentDefinition, state_id: str) -> int:
    """Characters a conversation reply's message may have in a state."""
    return definition.states[state_id].reply_max_length or definition.reply_max_length


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def allows_null(schema: dict[str, Any]) -> bool:
    """Whether a (sub)schema admits null: the turn schema's "nothing new" / optional."""
    options = schema.get("anyOf", [schema])
    return any(isinstance(o, dict) and o.get("type") == "null" for o in options)


def context_update_schema(definition: AgentDefinition, run: RunState) -> dict[str, Any]:
    """The ``context_update`` object: the state's writable keys, typed.

    A key may be null ("nothing new") unless every allowed move requires it and it
    is still missing: then the turn cannot be legal without it.
    """
    keys = writable_keys(definition, run.state)
    needed = set(keys_every_move_needs(definition, run))
    return {
        "type": "object",
        "properties": {
            key: key_schema(definition.context[key])
            if key in needed
            else _nullable(key_schema(definition.context[key]))
            for key in keys
        },
        "required": keys,
        "additionalProperties": False,
    }


def _bounded(max_length: int, description: str) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_length, "description": description}


def _turn_object(fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": fields,
        "required": list(fields),
        "additionalProperties": False,
    }


def _reasoning(definition: AgentDefinition, run: RunState) -> dict[str, Any]:
    bound = reasoning_bound(definition, run.state)
    return {"reasoning": _bounded(bound, "brief private reasoning")} if bound else {}


def conversation_turn_schema(definition: AgentDefinition, run: RunState) -> dict[str, Any]:
    """The schema of a conversation turn in the run's current state.

    As small as the state allows, in the order a constrained decoder writes it:
    reasoning (unless the state's ``reasoning`` is ``none``), the keys (left out
    when the state collects none), the move, then the message, so the move is
    decided before a word of the reply is written (and streamed).
    """
    fields = _reasoning(definition, run)
    if writable_keys(definition, run.state):
        fields["context_update"] = context_update_schema(definition, run)
    fields["target_state"] = {"type": "string", "enum": allowed_targets(definition, run)}
    fields["message"] = _bounded(reply_bound(definition, run.state), "the reply to the user")
    return _turn_object(fields)


def tool_arguments_schema(info: ToolInfo, run: RunState) -> dict[str, Any] | None:
    """A tool's argument schema in this run: artifact arguments enumerate its artifacts.

    Returns None when the tool cannot be called yet: it needs an artifact and the
    run has none.
    """
    schema = dict(info.parameters)
    properties = dict(schema.get("properties", {}))
    for name in info.artifact_parameters:
        if name not in properties:
            continue
        optional = allows_null(properties[name])
        if not run.artifacts and not optional:
            return None
        refs: dict[str, Any] = {"type": "string", "enum": list(run.artifacts)}
        if not run.artifacts:
            properties[name] = {"type": "null"}
        else:
            properties[name] = _nullable(refs) if optional else refs
    schema["properties"] = properties
    return schema


def autonomous_turn_schema(
    definition: AgentDefinition,
    run: RunState,
    tools: Mapping[str, ToolInfo] | None = None,
) -> dict[str, Any]:
    """The schema of an autonomous declaration: a transition or a tool call.

    Args:
        definition: The agent definition.
        run: The run (its state and context decide the allowed moves).
        tools: The registered tools the run knows; only the current state's tools
            appear, each as its own variant.

    Raises:
        ValueError: If there is neither a move nor a callable tool.
    """
    variants: list[dict[str, Any]] = []
    targets = allowed_targets(definition, run)
    if targets:
        fields: dict[str, Any] = {"kind": {"type": "string", "enum": ["transition"]}}
        if writable_keys(definition, run.state):
            # Keys before the move: the model writes what it found, then picks
            # where to go (a constrained decoder generates in this order).
            fields["context_update"] = context_update_schema(definition, run)
        fields["target_state"] = {"type": "string", "enum": targets}
        variants.append(_turn_object(fields))
    known = tools or {}
    for tool in callable_tools(definition, run):
        arguments = tool_arguments_schema(known[tool], run) if tool in known else None
        if arguments is not None:
            variants.append(
                {
                    "type": "object",
                    "properties": {
                        "kind": {"type": "string", "enum": ["call_tool"]},
                        "tool": {"type": "string", "enum": [tool]},
                        "arguments": arguments,
                    },
                    "required": ["kind", "tool", "arguments"],
                    "additionalProperties": False,
                }
            )
    if not variants:
        raise ValueError(
            f"no move and no callable tool in state {run.state!r}: its transitions "
            "cannot hold yet and its tools need an artifact the run does not have"
        )
    action = variants[0] if len(variants) == 1 else {"anyOf": variants}
    return _turn_object({**_reasoning(definition, run), "action": action})


def no_turn_reason(
    definition: AgentDefinition,
    run: RunState,
    tools: Mapping[str, ToolInfo] | None = None,
) -> str | None:
    """Why the run cannot take a model turn now, or None when it can.

    The cheap twin of ``turn_schema``'s refusal, asked before every model call:
    an open state without callable tools always offers a move (staying, at
    least), so the moves are only computed for a state with tools.
    """
    state = definition.states[run.state]
    if run.status != "active" or state.terminal or state.approval is not None:
        return f"the run takes no turn in state {run.state!r} ({run.status})"
    callable_now = callable_tools(definition, run)
    if not callable_now or allowed_targets(definition, run):
        return None
    known = tools or {}
    if any(t in known and tool_arguments_schema(known[t], run) is not None for t in callable_now):
        return None
    return (
        f"no move and no callable tool in state {run.state!r}: its transitions "
        "cannot hold yet and its tools need an artifact the run does not have"
    )


def turn_schema(
    definition: AgentDefinition,
    run: RunState,
    tools: Mapping[str, ToolInfo] | None = None,
) -> dict[str, Any]:
    """The turn schema for the definition's mode in the run's current state.

    Raises:
        ValueError: If the run takes no turns now (ended, or waiting for approval),
            or an autonomous state has neither a move nor a callable tool.
    """
    if not (allowed_targets(definition, run) or callable_tools(definition, run)):
        raise ValueError(f"the run takes no turn in state {run.state!r} ({run.status})")
    if definition.mode == "autonomous":
        return autonomous_turn_schema(definition, run, tools)
    return conversation_turn_schema(definition, run)
