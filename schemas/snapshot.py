"""The durable state of one run: one versioned snapshot, replaced whole.

``AgentWorkflow`` holds a ``RunSnapshot`` and nothing else of importance: every
handler reads it and replaces it, and continue-as-new carries it whole (trimmed
to its bounds) to the next run of the chain. Nothing a caller sends can set it:
the workflow refuses a snapshot in a start input.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from schemas.run import DialogueTurn, Reply, RunState
from schemas.tools import ToolInfo

SNAPSHOT_VERSION = 1
"""The format of ``RunSnapshot``. A worker refuses (fails the workflow task of) a
newer format than its own, so a newer worker takes the run; a later format must
read the older ones."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class RunLimits(_Frozen):
    """Worker settings the workflow obeys; they reach it through history, not globals."""

    max_reasks: int = 2
    """Re-asks per turn after an invalid reply (so up to max_reasks + 1 model calls)."""
    max_message_chars: int = 4000
    continue_as_new_after: int = 100
    """Model turns in one run of the chain before it continues as new."""
    history_keep: int = 40
    """Dialogue messages carried across continue-as-new (prompts show fewer)."""
    trace_keep: int = 200
    """Trace entries carried across continue-as-new (and kept in the workflow)."""
    turn_timeout_seconds: float = 60.0
    """How long a conversation turn may wait for a valid model reply before the
    user gets the state's fallback reply (the message stays, marked unanswered)."""
    model_backoff_max_seconds: float = 300.0
    """Longest pause between two model calls of a run waiting for its model."""
    fallback_after: int = 2
    """Failed calls and invalid replies in one turn before the fallback model is asked."""
    deploy_grace_seconds: float = 600.0
    """How long a run waits for a worker that has its model tier or tool (a
    rolling deploy) before it fails naming what is missing."""
    answered_keep: int = 32
    """Replies remembered by update id, so a retried message is answered once."""


class ResolvedDefinition(_Frozen):
    """A checked definition, recorded in history so later file edits never affect the run."""

    definition: dict[str, Any]
    definition_hash: str
    """sha256 of the definition's canonical JSON."""
    source: str


class PendingDecision(_Frozen):
    """A decision a signal recorded; the run applies it at its gate."""

    decision: Literal["approve", "reject"]
    by: str = ""
    comment: str = ""


FsmStatus = Literal[
    "active",
    "awaiting_approval",
    "waiting_for_model",
    "waiting_for_store",
    "completed",
    "failed",
    "max_steps",
]
"""The ``FsmStatus`` search attribute: a run's status, plus ``waiting_for_model``
while it waits out a model outage or a run of invalid replies, and
``waiting_for_store`` while its tools cannot reach their shared store."""
FSM_STATUSES: tuple[str, ...] = get_args(FsmStatus)

WaitKind = Literal["unavailable", "rejected", "invalid", "deploy", "store"]
"""Why a run waits: the model's endpoint fails (``unavailable``) or refuses the
request (``rejected``: credentials, unknown model), its replies keep being invalid
(``invalid``), no worker has the model tier or tool yet (``deploy``), or a tool
call cannot reach the effect ledger or artifact store (``store``)."""


class ModelWait(_Frozen):
    """A run waiting for its model: since when, how often it failed, the last error."""

    kind: WaitKind
    since: datetime
    failures: int = 1
    """Failed model calls (after the activity's own quick retries) and invalid turns."""
    last_error: str = ""
    retry_at: datetime | None = None
    """When the next call is due (a durable timer; survives continue-as-new)."""


class TurnProgress(_Frozen):
    """A model turn not yet decided: what its re-asks and escalation know."""

    failures: int = 0
    """Failed calls and invalid replies so far (the fallback model is asked after
    ``RunLimits.fallback_after``)."""
    invalid: int = 0
    """Invalid replies in the current round of re-asks."""
    feedback: str = ""
    """Why the last reply was rejected (the re-ask tells the model)."""
    rejected_reply: str = ""
    """The rejected reply itself, bounded (the re-ask shows it as the model's own)."""
    wait: ModelWait | None = None


class AnsweredMessage(_Frozen):
    """A message's reply, remembered by the update id that delivered it."""

    update_id: str
    reply: Reply


class RunSnapshot(_Frozen):
    """Everything durable about a run; the workflow replaces it whole."""

    version: int = SNAPSHOT_VERSION
    agent: ResolvedDefinition
    limits: RunLimits = Field(default_factory=RunLimits)
    tools: dict[str, ToolInfo] = Field(default_factory=dict)
    chain_id: str
    """The first run id of the continue-as-new chain: scopes idempotency keys and artifacts."""
    task: str = ""
    """The request of an autonomous run (every prompt shows it)."""
    run: RunState
    dialogue: tuple[DialogueTurn, ...] = ()
    """Recent messages and tool results, bounded by ``limits.history_keep``."""
    dialogue_dropped: int = 0
    """Messages dropped from the front of ``dialogue`` so far: with it, a message's
    position in the whole conversation is known, and the prompt's window is cut at
    the same positions turn after turn (``fsm.prompt.dialogue_window``)."""
    pending: PendingDecision | None = None
    gate_deadline: datetime | None = None
    """When the open approval gate times out (its timer survives the hand-over)."""
    tokens: int = 0
    """Tokens spent by the whole chain."""
    turns: int = 0
    """Model turns in this run of the chain (continue-as-new resets it)."""
    last_call: str = ""
    """Identity of the last executed tool call (state, tool, arguments), so a
    repeated identical call is pointed out to the model."""
    progress: TurnProgress | None = None
    """The autonomous turn in progress, when one is (re-asks, a wait for the model)."""
    answered: tuple[AnsweredMessage, ...] = ()
    """The latest replies by update id (bounded by ``limits.answered_keep``)."""
    continued_from: str = ""
    """The run id of the run that handed this snapshot over (continue-as-new)."""
    model_calls: int = 0
    """Model calls the chain asked for; names each call's turn on the run's stream
    (``<step>.<model_calls>``), so a turn id is never reused, also across
    continue-as-new."""
