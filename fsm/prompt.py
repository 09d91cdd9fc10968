"""The prompt for one turn: only what the current state needs.

The messages start with a prefix that depends only on the definition and the
moves allowed now (persona, purpose, instructions, moves, keys, reply format), so
an inference server's prompt cache reuses it turn after turn. Then come the
visible context keys and a bounded window of recent dialogue; never the whole
context, never the whole history.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from fsm.context import REDACTED, key_schema
from fsm.engine import Move, allowed_moves, callable_tools, writable_keys
from schemas.definition import AgentDefinition
from schemas.run import DialogueTurn, RunState
from schemas.tools import ToolInfo

_ROLES = {"user": "user", "agent": "assistant", "tool": "user"}


def _describe_move(move: Move, current: str) -> str:
    line = f'- "{move.target}"'
    if move.target == current:
        line += " (stay)"
    if move.description:
        line += f": {move.description}"
    notes = []
    if move.needs:
        notes.append("needs " + ", ".join(move.needs) + " set")
    if move.condition:
        notes.append("only when " + move.condition)
    return line + (f" [{'; '.join(notes)}]" if notes else "")


def _describe_key(definition: AgentDefinition, name: str) -> str:
    key = definition.context[name]
    schema = key_schema(key)
    kind: str = key.type
    if "enum" in schema:
        kind += " one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    if key.format:
        kind += f", {key.format}"
    return f"- {name} ({kind})" + (f": {key.description}" if key.description else "")


def _describe_tool(name: str, info: ToolInfo | None) -> str:
    if info is None:
        return f"- {name}"
    line = f"- {name}: {info.description}"
    arguments = list(info.parameters.get("properties", {}))
    if arguments:
        line += f" (arguments: {', '.join(arguments)})"
    return line


def system_prompt(
    definition: AgentDefinition,
    run: RunState,
    moves: Sequence[Move],
    tools: Mapping[str, ToolInfo] | None = None,
) -> str:
    """The stable part of the prompt for the run's current state."""
    state = definition.states[run.state]
    parts = []
    if definition.persona:
        parts.append(definition.persona.strip())
    intro = f'You are the agent "{definition.name}".'
    if definition.description:
        intro += " " + definition.description.strip()
    parts.append(intro)
    section = [f"## Current state: {run.state}"]
    if state.purpose or state.description:
        section.append(f"Purpose: {(state.purpose or state.description).strip()}")
    if state.instructions:
        section.append(f"Instructions: {state.instructions.strip()}")
    parts.append("\n".join(section))
    if definition.mode == "autonomous":
        parts.append(
            '## Allowed moves (action.target_state when action.kind is "transition")\n'
            + (
                "\n".join(_describe_move(m, run.state) for m in moves)
                or "- none yet: call one of the tools first"
            )
        )
        callable_now = callable_tools(definition, run)
        if callable_now:
            known = tools or {}
            heading = '## Tools (action.kind "call_tool")'
            if state.max_tool_calls is not None:
                left = state.max_tool_calls - run.visit_tool_calls
                heading += f", {left} call(s) left in this state"
            parts.append(
                heading + "\n" + "\n".join(_describe_tool(t, known.get(t)) for t in callable_now)
            )
    else:
        parts.append(
            "## Allowed moves (target_state)\n"
            + "\n".join(_describe_move(m, run.state) for m in moves)
        )
    keys = writable_keys(definition, run.state)
    if keys:
        parts.append(
            "## Keys you may fill in (context_update; null when you learned nothing new)\n"
            + "\n".join(_describe_key(definition, k) for k in keys)
        )
    if definition.mode == "autonomous":
        parts.append(
            "## Reply format\nOne JSON object: "
            '{"reasoning": short, "action": {"kind": "transition", "context_update": {...}, '
            '"target_state": one of the allowed moves} or {"kind": "call_tool", "tool": name, '
            '"arguments": {...}}}.'
        )
    else:
        parts.append(
            "## Reply format\nOne JSON object: "
            '{"reasoning": short, "context_update": {...}, "target_state": one of the allowed '
            'moves, "message": your reply to the user}.'
        )
    return "\n\n".join(parts)


def visible_context(definition: AgentDefinition, run: RunState) -> dict[str, Any]:
    """The context keys the state may see, secrets redacted, unset keys as null."""
    shown: dict[str, Any] = {}
    for name in writable_keys(definition, run.state):
        value = run.context.get(name)
        shown[name] = REDACTED if definition.context[name].secret and value is not None else value
    return shown


def dialogue_window(
    definition: AgentDefinition, run: RunState, history: Sequence[DialogueTurn]
) -> list[DialogueTurn]:
    """The dialogue a state shows: the last message and ``history_window`` exchanges before it."""
    window = definition.states[run.state].history_window
    return list(history)[-(2 * window + 1) :] if history else []


def build_messages(
    definition: AgentDefinition,
    run: RunState,
    history: Sequence[DialogueTurn] = (),
    *,
    task: str = "",
    feedback: str = "",
    tools: Mapping[str, ToolInfo] | None = None,
) -> list[dict[str, str]]:
    """The chat messages for the model's next turn.

    Args:
        definition: The agent definition.
        run: The run; its state decides the prompt.
        history: Dialogue so far, oldest first; only the last message and the
            ``history_window`` exchanges before it are shown.
        task: The request of an autonomous run.
        feedback: Why the previous reply was rejected, when re-asking.
        tools: The run's tools (descriptions for the state's tool list).

    Returns:
        OpenAI-style ``{"role", "content"}`` messages.
    """
    moves = allowed_moves(definition, run)
    messages = [{"role": "system", "content": system_prompt(definition, run, moves, tools)}]
    if task:
        messages.append({"role": "user", "content": f"Task: {task}"})
    context = visible_context(definition, run)
    if context:
        messages.append(
            {
                "role": "system",
                "content": "Known context: " + json.dumps(context, ensure_ascii=False),
            }
        )
    if run.artifacts and definition.states[run.state].tools:
        messages.append(
            {
                "role": "system",
                "content": "Artifacts of this run (pass a reference to a tool): "
                + ", ".join(run.artifacts[-10:]),
            }
        )
    for turn in dialogue_window(definition, run, history):
        prefix = "Tool result: " if turn.role == "tool" else ""
        messages.append({"role": _ROLES[turn.role], "content": prefix + turn.text})
    if feedback:
        messages.append(
            {
                "role": "user",
                "content": f"Your previous reply was rejected: {feedback}. "
                "Reply again with one valid JSON object.",
            }
        )
    return messages
