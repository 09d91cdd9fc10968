"""Mermaid state diagrams of definitions, guards and approval edges labelled."""

from __future__ import annotations

import re

from fsm.engine import guard_text
from schemas.definition import AgentDefinition, InvalidGoto, Transition

_UNSAFE = re.compile(r"[:;#{}\[\]\"`]")


def _label(text: str) -> str:
    # Mermaid ends a label at ';' and misreads ':' and braces; keep labels plain.
    return _UNSAFE.sub(" ", text).replace("  ", " ").strip()


def _transition_label(transition: Transition) -> str:
    guard = guard_text(transition)
    return f"if {guard}" if guard else transition.description[:40]


def mermaid(definition: AgentDefinition) -> str:
    """A ``stateDiagram-v2`` of the definition.

    Terminal states lead to ``[*]``; approval gates are notes, with ``approve``,
    ``reject`` and ``timeout`` edges; guarded transitions show their guard;
    eventless ones (``always``) are labelled "always".
    """
    lines = ["stateDiagram-v2", f"    [*] --> {definition.initial_state}"]
    for state_id, state in definition.states.items():
        for transition in state.transitions:
            label = _label(_transition_label(transition))
            lines.append(
                f"    {state_id} --> {transition.target}" + (f": {label}" if label else "")
            )
        for transition in state.always:
            # The FSM's own move: drawn with its guard, marked "always".
            guard = (
                _label(_transition_label(transition))
                if transition.requires or transition.when is not None
                else ""
            )
            lines.append(
                f"    {state_id} --> {transition.target}: always" + (f" {guard}" if guard else "")
            )
        if isinstance(state.on_invalid, InvalidGoto):
            lines.append(f"    {state_id} --> {state.on_invalid.goto}: no valid turn")
        if isinstance(state.on_dead_end, InvalidGoto):
            lines.append(f"    {state_id} --> {state.on_dead_end.goto}: dead end")
        if state.approval is not None:
            gate = state.approval
            lines.append(f"    {state_id} --> {gate.on_approve}: approve")
            lines.append(f"    {state_id} --> {gate.on_reject}: reject")
            if gate.on_timeout is not None:
                lines.append(f"    {state_id} --> {gate.on_timeout}: timeout {gate.timeout}")
            lines.append(f"    note right of {state_id}: approval gate")
        if state.terminal:
            lines.append(f"    {state_id} --> [*]")
    return "\n".join(lines) + "\n"
