"""The events a run publishes on its stream, derived purely from what it did.

The workflow publishes them (``schemas.events``): a change of state, a gate that
opens, the end of the run, found by comparing the run before and after a change;
a tool call and its result, a decision, a reply, and a ``reset`` of a model turn
whose streamed text is void. Every text is cut to ``MAX_EVENT_TEXT``. The stream
is a view of the run, never its record: nothing here changes a run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fsm.problems import clip
from schemas.events import MAX_EVENT_TEXT, RunEvent
from schemas.run import Reply, RunState

TOOL_PREVIEW_CHARS = 500
"""Characters of a tool's arguments or result an event shows (a preview)."""


def turn_id(step: int, call: int) -> str:
    """A model call's name on the stream: ``<step>.<call>`` (``call`` counts the chain's calls)."""
    return f"{step}.{call}"


def run_changed(before: RunState | None, after: RunState) -> list[RunEvent]:
    """What a change of the run shows: a new state, a gate that opened.

    The end is published once the run has answered every message (``ended``), so
    it is the last event of a run.

    Args:
        before: The run before the change, or None when the run has just started
            (its first state is then announced, from no state).
        after: The run after it.
    """
    events: list[RunEvent] = []
    moved = before is None or before.state != after.state
    if moved:
        events.append(
            RunEvent(
                kind="state",
                from_state=before.state if before is not None else "",
                state=after.state,
                status=after.status,
                step=after.step,
            )
        )
    opened = after.status == "awaiting_approval" and (
        moved or before is None or before.status != "awaiting_approval"
    )
    if opened:
        gate = RunEvent(kind="gate", state=after.state, status=after.status, step=after.step)
        events.append(gate)
    return events


def ended(state: str, status: str, reason: str, *, step: int = 0) -> RunEvent:
    """The run ended in ``state`` with ``status``, for ``reason``."""
    return RunEvent(
        kind="ended", state=state, status=status, step=step, text=clip(reason, MAX_EVENT_TEXT)
    )


def decided(state: str, decision: str, *, by: str, comment: str, step: int) -> RunEvent:
    """The gate at ``state`` was decided (``approve``, ``reject`` or ``timeout``)."""
    return RunEvent(
        kind="gate",
        state=state,
        decision=decision,
        by=by,
        text=clip(comment, MAX_EVENT_TEXT),
        step=step,
    )


def tool_called(tool: str, arguments: Mapping[str, Any], *, state: str, step: int) -> RunEvent:
    """A tool call the engine allowed is about to run; ``text`` previews its arguments."""
    text = json.dumps(arguments, ensure_ascii=False, sort_keys=True, default=str)
    return RunEvent(
        kind="tool_call", tool=tool, state=state, step=step, text=clip(text, TOOL_PREVIEW_CHARS)
    )


def tool_returned(tool: str, *, ok: bool, text: str, state: str, step: int) -> RunEvent:
    """A tool call returned (``ok``) or failed; ``text`` previews what the model reads."""
    return RunEvent(
        kind="tool_result",
        tool=tool,
        accepted=ok,
        state=state,
        step=step,
        text=clip(text, TOOL_PREVIEW_CHARS),
    )


def replied(reply: Reply, message_id: str) -> RunEvent:
    """A conversation turn is decided: the reply the update ``message_id`` returns."""
    return RunEvent(
        kind="reply",
        text=clip(reply.message, MAX_EVENT_TEXT),
        state=reply.state,
        status=reply.status,
        step=reply.step,
        accepted=reply.accepted,
        message_id=message_id,
    )


def reset(turn: str, why: str, *, message_id: str = "", step: int = 0) -> RunEvent:
    """Forget what model turn ``turn`` streamed (a retried call, a rejected reply)."""
    return RunEvent(
        kind="reset", turn=turn, text=clip(why, MAX_EVENT_TEXT), message_id=message_id, step=step
    )


def delta(turn: str, text: str, *, message_id: str = "", step: int = 0) -> RunEvent:
    """The next piece of the message model turn ``turn`` is generating."""
    return RunEvent(kind="delta", turn=turn, text=text, message_id=message_id, step=step)


def wire(event: RunEvent) -> dict[str, Any]:
    """An event as published: only the fields that mean something (the rest are defaults).

    A subscriber decodes it into a ``RunEvent`` again; leaving the defaults out keeps
    each stream item (in publish signals, polls and the continue-as-new input) small.
    """
    return event.model_dump(mode="json", exclude_defaults=True)
