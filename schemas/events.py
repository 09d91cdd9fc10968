"""What a run's event stream carries (Temporal Workflow Streams, topic ``run``).

Every run hosts one offset-addressed stream. The ``fsmflow.llm_turn`` activity
publishes a reply's text as it is generated (``delta``), and ``reset`` when what
it published is void (a retried attempt, a reply rejected after it began to
stream); the workflow publishes what the run does (``reply``, ``state``,
``tool_call``, ``tool_result``, ``gate``, ``ended``). A client follows it from an
offset (``WorkflowStreamClient.subscribe``; the HTTP API's SSE): a UI can draw a
run live, and a chat can print a reply word by word.

Text in an event is bounded (``MAX_EVENT_TEXT``); the stream is a view of the run,
never its record: the workflow history and the trace are.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RUN_TOPIC = "run"
"""The stream topic every event is published on."""
MAX_EVENT_TEXT = 4_000
"""Characters of text an event holds at most (a tool result is cut to a preview)."""

EventKind = Literal["delta", "reset", "reply", "state", "tool_call", "tool_result", "gate", "ended"]


class RunEvent(BaseModel):
    """One event of a run's stream; ``kind`` says which fields mean something.

    - ``delta``: ``text`` is the next piece of the reply being generated in model
      turn ``turn`` (deltas of one turn concatenate to its message); ``message_id``
      is the update id of the message the turn answers.
    - ``reset``: forget the deltas of ``turn`` (``text`` says why; ``message_id`` as
      for ``delta``); a re-ask or a retried attempt streams anew.
    - ``reply``: a conversation turn is decided: ``text`` is the message, ``state``,
      ``status``, ``step`` and ``accepted`` as the update returns them; ``message_id``
      is the update id it answers.
    - ``state``: the run moved from ``from_state`` to ``state`` at ``step``.
    - ``tool_call`` / ``tool_result``: ``tool`` was called (``text``: its arguments as
      JSON) / returned (``accepted``: ok; ``text``: a bounded preview).
    - ``gate``: an approval gate at ``state`` opened (``decision`` empty) or was
      decided (``decision``, ``by``, ``text``: the comment).
    - ``ended``: the run ended in ``state`` with ``status``; ``text`` is the reason
      (the run's last event; ``state`` is empty for a run refused before it started).

    ``state`` and ``gate`` events also carry the run's ``status``. docs/runs.md
    says when each is published and in which order.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: EventKind
    step: int = 0
    turn: str = ""
    """The model turn a ``delta``/``reset`` belongs to: ``<step>.<call>`` of the run."""
    text: str = Field("", max_length=MAX_EVENT_TEXT)
    state: str = ""
    from_state: str = ""
    status: str = ""
    accepted: bool | None = None
    tool: str = ""
    decision: str = ""
    by: str = ""
    message_id: str = ""
