"""The prompt for one turn: only what the current state needs, laid out for the prefix cache.

An inference server (llama.cpp, vLLM, OpenAI) reuses the longest prefix a prompt
shares with one it saw before, so the messages go from what never changes to what
changes every turn:

1. **The agent** (system): persona, the agent, the reply format. The same for
   every turn of every run of the agent (and the task, in an autonomous run).
2. **The transcript**, append-only: the dialogue, with each state's block (its
   purpose, instructions and keys) where the dialogue entered that state. A turn
   adds messages at the end and changes nothing before them; the window is cut in
   blocks (``dialogue_window``), so most turns share everything up to the newest
   messages with the turn before.
3. **Now** (system, last): the current state in one line, the known context, the
   moves allowed now (staying last), the tool budget. Small, and read last.
4. A re-ask adds the rejected reply (as the model's own message) and the reason.

Never the whole context, never the whole history.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from fsm.context import REDACTED, key_schema
from fsm.engine import (
    Move,
    allowed_moves,
    callable_tools,
    visible_keys,
    writable_keys,
)
from schemas.definition import AgentDefinition
from schemas.run import DialogueTurn, RunState
from schemas.tools import ToolInfo

_ROLES = {"user": "user", "agent": "assistant", "tool": "user"}

ARTIFACTS_SHOWN = 10
"""Artifact references the prompt lists (the newest)."""


def _describe_move(move: Move, current: str) -> str:
    line = f'- "{move.target}"'
    line += ": stay here" if move.target == current else f": {move.description or 'go there'}"
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


def _reply_format(definition: AgentDefinition) -> str:
    """The reply format in a line: the same in every state (the schema enforces the rest)."""
    if definition.mode == "autonomous":
        return (
            "Reply with one JSON object: an action, either a transition (target_state: "
            "one of the moves allowed now) or a tool call (tool, arguments)."
        )
    return (
        "Reply with one JSON object: context_update (what the user told you; null if "
        "nothing new), target_state (a move allowed now), message (your short reply)."
    )


def agent_prompt(definition: AgentDefinition) -> str:
    """The system message every turn starts with: it depends on the definition only."""
    parts = []
    if definition.persona:
        parts.append(definition.persona.strip())
    intro = f'You are the agent "{definition.name}".'
    if definition.description:
        intro += " " + definition.description.strip()
    parts.append(intro)
    parts.append(_reply_format(definition))
    return "\n".join(parts)


def state_block(
    definition: AgentDefinition, state_id: str, tools: Mapping[str, ToolInfo] | None = None
) -> str:
    """A state's part of the prompt, shown where the dialogue entered it.

    It depends on the definition only (never on the run), so it reads the same
    on every turn that shows it.
    """
    state = definition.states[state_id]
    lines = [f"## State: {state_id}"]
    if state.purpose or state.description:
        lines.append(f"Purpose: {(state.purpose or state.description).strip()}")
    if state.instructions:
        lines.append(f"Instructions: {state.instructions.strip()}")
    writable = writable_keys(definition, state_id)
    if writable:
        lines.append("Keys you may fill in (context_update):")
        lines += [_describe_key(definition, k) for k in writable]
    # Keys it only sees are in the last message's "Known" (read-only: not listed here).
    if state.tools and definition.mode == "autonomous":
        known = tools or {}
        lines.append('Tools (action.kind "call_tool"):')
        lines += [_describe_tool(t, known.get(t)) for t in state.tools]
    return "\n".join(lines)


def visible_context(definition: AgentDefinition, run: RunState) -> dict[str, Any]:
    """The context keys the state may see, secrets redacted, unset keys as null."""
    shown: dict[str, Any] = {}
    for name in visible_keys(definition, run.state):
        value = run.context.get(name)
        shown[name] = REDACTED if definition.context[name].secret and value is not None else value
    return shown


def now_prompt(
    definition: AgentDefinition, run: RunState, moves: Sequence[Move] | None = None
) -> str:
    """The last system message: where the run is and what it may do, this turn only."""
    state = definition.states[run.state]
    moves = allowed_moves(definition, run) if moves is None else moves
    lines = [f"## Now: state {run.state}"]
    purpose = (state.purpose or state.description).strip()
    if purpose:
        lines[0] += f" ({purpose})"
    context = visible_context(definition, run)
    known = {k: v for k, v in context.items() if v is not None}
    if known:
        lines.append("Known: " + json.dumps(known, ensure_ascii=False, separators=(", ", ": ")))
    waiting = {k for t in (*state.transitions, *state.always) for k in t.requires}
    missing = [
        k for k in writable_keys(definition, run.state) if k in waiting and context.get(k) is None
    ]
    if missing:
        # What the state's moves wait for, named (unset keys are not shown as
        # nulls: a small model copies a null it has just read).
        lines.append("Still needed: " + ", ".join(missing))
    if run.artifacts and state.tools:
        lines.append(
            "Artifacts (pass a reference to a tool): " + ", ".join(run.artifacts[-ARTIFACTS_SHOWN:])
        )
    if definition.mode == "autonomous":
        lines.append('Moves (action.kind "transition", target_state):')
        lines += [_describe_move(m, run.state) for m in moves] or [
            "- none yet: call one of the tools first"
        ]
        callable_now = callable_tools(definition, run)
        if callable_now:
            line = "Tools you may call now: " + ", ".join(callable_now)
            if state.max_tool_calls is not None:
                left = state.max_tool_calls - run.visit_tool_calls
                line += f" ({left} call(s) left in this state)"
            lines.append(line)
    elif [m.target for m in moves] != [run.state]:
        # Staying the only move: the schema allows nothing else, nothing to choose.
        lines.append("Moves (target_state):")
        lines += [_describe_move(m, run.state) for m in moves]
    return "\n".join(lines)


def dialogue_window(
    definition: AgentDefinition,
    run: RunState,
    history: Sequence[DialogueTurn],
    *,
    dropped: int = 0,
) -> list[DialogueTurn]:
    """The dialogue a state shows, cut in blocks so the prompt's prefix stays put.

    A state shows at most ``2 * history_window + 1`` messages. The window starts
    at a position of the whole conversation (``dropped`` messages came before
    ``history``) that only moves when the window is over that bound, and then
    by half of it: so consecutive turns show the same oldest messages (an
    inference server reuses the prompt's prefix), and a cut happens once every
    few turns rather than on every one.
    """
    if not history:
        return []
    limit = 2 * definition.states[run.state].history_window + 1
    step = max(1, limit // 2)
    total = dropped + len(history)
    start = 0 if total <= limit else -(-(total - limit) // step) * step
    return list(history)[max(0, start - dropped) :]


def _transcript(
    definition: AgentDefinition,
    run: RunState,
    window: Sequence[DialogueTurn],
    tools: Mapping[str, ToolInfo] | None,
) -> list[dict[str, str]]:
    """The dialogue with each state's block before its first message in the window."""
    messages: list[dict[str, str]] = []
    shown = None
    for turn in window:
        # A message without a state (a run of an older version) counts as said here.
        said_in = turn.state if turn.state in definition.states else run.state
        if said_in != shown:
            block = state_block(definition, said_in, tools)
            messages.append({"role": "system", "content": block})
            shown = said_in
        prefix = "Tool result: " if turn.role == "tool" else ""
        messages.append({"role": _ROLES[turn.role], "content": prefix + turn.text})
    if shown != run.state:
        # Entered since the last message (or the window holds none said in it):
        # its block goes at the end, where the next message will follow it.
        messages.append({"role": "system", "content": state_block(definition, run.state, tools)})
    return messages


def build_messages(
    definition: AgentDefinition,
    run: RunState,
    history: Sequence[DialogueTurn] = (),
    *,
    task: str = "",
    feedback: str = "",
    rejected_reply: str = "",
    tools: Mapping[str, ToolInfo] | None = None,
) -> list[dict[str, str]]:
    """The chat messages for the model's next turn.

    Args:
        definition: The agent definition.
        run: The run; its state decides the prompt.
        history: The dialogue window (``dialogue_window``), oldest first.
        task: The request of an autonomous run.
        feedback: Why the previous reply was rejected, when re-asking.
        rejected_reply: That reply, shown as the model's own message before the reason.
        tools: The run's tools (descriptions for the state's tool list).

    Returns:
        OpenAI-style ``{"role", "content"}`` messages.
    """
    messages = [{"role": "system", "content": agent_prompt(definition)}]
    if task:
        messages.append({"role": "user", "content": f"Task: {task}"})
    transcript = _transcript(definition, run, history, tools)
    now = {"role": "system", "content": now_prompt(definition, run)}
    if transcript and transcript[-1]["role"] == "user":
        # The newest message stays last (what a small model answers best): the
        # "now" part goes right before it. Both are new on every turn anyway.
        messages += [*transcript[:-1], now, transcript[-1]]
    else:
        messages += [*transcript, now]
    if feedback:
        if rejected_reply:
            messages.append({"role": "assistant", "content": rejected_reply})
        # The feedback says what to change (a reply cut off: "reply again, shorter").
        messages.append(
            {
                "role": "user",
                "content": f"That reply was rejected: {feedback}. "
                "Reply again with one valid JSON object.",
            }
        )
    return messages
