"""Judging what a model or a tool returned, and keeping a run's snapshot.

The workflow asks the model and runs tools; what it does with what came back is
decided here, purely: parse a reply, check a tool call, let the engine apply a
turn, record rejections, nudge a model that made no progress, escalate a turn
that keeps failing (re-asks, the fallback model, a pause, the state's
``on_invalid`` rule), and keep the dialogue, the trace and the remembered replies
within their bounds. Every function takes a ``RunSnapshot`` (or a ``RunState``)
and returns a new one; time comes in as an argument.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from fsm.context import redact
from fsm.engine import (
    TurnParseError,
    allowed_targets,
    apply_on_invalid,
    apply_turn,
    fail_run,
    parse_turn,
    record_rejection,
    record_tool_call,
    tool_call_problem,
)
from fsm.problems import clip
from fsm.tools import call_identity
from schemas.definition import AgentDefinition
from schemas.run import DialogueTurn, Reply, RunState
from schemas.snapshot import (
    AnsweredMessage,
    FsmStatus,
    ModelWait,
    RunLimits,
    RunSnapshot,
    TurnProgress,
    WaitKind,
)
from schemas.tools import ToolInfo
from schemas.turn import AutonomousDecision, ModelReply, ToolCallAction, TurnDecision

Rejection = Literal["invalid_json", "schema", "truncated", "shape", "tool", "engine"]

BACKOFF_FIRST_SECONDS = 2.0
"""The first pause of a run waiting for its model; each failure doubles it up to
``RunLimits.model_backoff_max_seconds``."""

ERROR_CHARS = 300
"""Bound of an error message kept in a snapshot's wait (and shown in the status)."""


@dataclass(frozen=True)
class Usage:
    """What a model call cost, for the trace entry its reply produces."""

    model: str | None = None
    tokens: int | None = None
    latency_ms: int | None = None
    cached_tokens: int | None = None

    def fields(self) -> dict[str, Any]:
        """As keyword arguments of the engine's trace-recording functions."""
        return {
            "model": self.model,
            "tokens": self.tokens,
            "latency_ms": self.latency_ms,
            "cached_tokens": self.cached_tokens,
        }


@dataclass(frozen=True)
class Judgement:
    """The verdict on one reply.

    Attributes:
        run: The run after it (a rejection is in its trace).
        usage: What the call cost.
        turn: The applied turn, when the reply was a turn the engine accepted.
        call: The allowed tool call (not executed yet), when it was one.
        problem: Why it was rejected, for the re-ask.
        rejection: What kind of rejection, for metrics.
    """

    run: RunState
    usage: Usage
    turn: TurnDecision | None = None
    call: ToolCallAction | None = None
    problem: str = ""
    rejection: Rejection | None = None

    @property
    def accepted(self) -> bool:
        """Whether the reply was applied (a turn) or allowed (a tool call)."""
        return self.turn is not None or self.call is not None


def judge_reply(
    definition: AgentDefinition,
    run: RunState,
    reply: ModelReply,
    tools: Mapping[str, ToolInfo],
) -> Judgement:
    """Judge a model's reply: a problem, a malformed turn, a tool call or a turn.

    A reply that the activity found invalid, that is not a turn of the run's mode,
    a tool call the engine refuses, or a turn the engine rejects changes nothing
    but the trace; a turn the engine accepts is applied.
    """
    usage = Usage(reply.model, reply.tokens, reply.latency_ms, reply.cached_tokens)
    if reply.problem is not None:
        kind = reply.problem_kind or (
            "invalid_json" if "not valid JSON" in reply.problem else "schema"
        )
        rejected = record_rejection(run, reply.problem, **usage.fields())
        return Judgement(rejected, usage, problem=reply.problem, rejection=kind)
    try:
        parsed = parse_turn(definition, reply.parsed if reply.parsed is not None else reply.content)
    except TurnParseError as exc:
        rejected = record_rejection(run, str(exc), **usage.fields())
        return Judgement(rejected, usage, problem=str(exc), rejection="shape")
    if isinstance(parsed, AutonomousDecision):
        action = parsed.action
        if isinstance(action, ToolCallAction):
            problem = tool_call_problem(definition, run, action.tool, action.arguments, tools)
            if problem is None:
                return Judgement(run, usage, call=action)
            rejected = record_rejection(
                run, problem, target=run.state, kind="tool_call", tool=action.tool, **usage.fields()
            )
            return Judgement(rejected, usage, problem=problem, rejection="tool")
        turn = TurnDecision(
            target_state=action.target_state,
            context_update=action.context_update,
            reasoning=parsed.reasoning,
        )
    else:
        turn = parsed
    result = apply_turn(definition, run, turn, **usage.fields())
    if not result.accepted:
        return Judgement(result.run, usage, problem=result.reason, rejection="engine")
    return Judgement(result.run, usage, turn=turn)


def move_decided(
    definition: AgentDefinition,
    run: RunState,
    partial: Mapping[str, Any],
    tools: Mapping[str, ToolInfo],
) -> bool:
    """Whether a conversation reply still being generated has decided a move the engine applies.

    ``partial`` holds the reply's keys and target, complete, and its message so far
    (a constrained decoder writes them in the turn schema's order, the message
    last). The reply's text is shown as it streams only when this holds: the same
    judgement as ``judge_reply`` on a copy of the run, with the message left out
    (its final length is not known yet; the whole reply is judged again).
    """
    if definition.mode != "conversation":
        return False
    candidate = ModelReply(parsed={**partial, "message": ""}, model="")
    return judge_reply(definition, run, candidate, tools).turn is not None


# ------------------------------------------------------------------ escalation


def backoff_seconds(limits: RunLimits, failures: int) -> float:
    """The pause before the next model call after ``failures`` failed ones."""
    exponent = min(max(failures - 1, 0), 30)
    return min(BACKOFF_FIRST_SECONDS * 2.0**exponent, limits.model_backoff_max_seconds)


def note_failure(
    progress: TurnProgress | None,
    kind: WaitKind,
    error: str,
    now: datetime,
    limits: RunLimits,
) -> TurnProgress:
    """A model call failed (or a round of re-asks was spent): wait, then ask again.

    The wait remembers since when the run waits for this kind of reason and how
    often it failed (a new kind of reason starts a new wait: the deploy grace
    counts from the first missing tier, not from an outage before it); its
    ``retry_at`` is when the next call is due.
    """
    progress = progress or TurnProgress()
    wait = progress.wait if progress.wait is not None and progress.wait.kind == kind else None
    failures = (wait.failures if wait is not None else 0) + 1
    return progress.model_copy(
        update={
            "failures": progress.failures + 1,
            "wait": ModelWait(
                kind=kind,
                since=wait.since if wait is not None else now,
                failures=failures,
                last_error=clip(error, ERROR_CHARS),
                retry_at=now + timedelta(seconds=backoff_seconds(limits, failures)),
            ),
        }
    )


REJECTED_REPLY_CHARS = 1200
"""Bound of a rejected reply a re-ask shows the model (its own words, verbatim)."""


def rejected_text(definition: AgentDefinition, reply: ModelReply) -> str:
    """A rejected reply as the model wrote it (compact JSON when it parsed), bounded.

    Values written to keys declared ``secret`` are redacted, as in every prompt:
    the text goes into the run's history and the re-ask. A reply that is not JSON
    cannot be redacted, so it is left out when the agent has secret keys.
    """
    if reply.problem_kind == "truncated":
        return ""  # a stub: the feedback asks for a shorter reply instead
    parsed: Any = reply.parsed
    if parsed is None:
        if not any(key.secret for key in definition.context.values()):
            return reply.content[:REJECTED_REPLY_CHARS]
        try:
            parsed = json.loads(reply.content)
        except ValueError:
            return ""
    update = parsed.get("context_update") if isinstance(parsed, dict) else None
    if isinstance(update, dict):
        parsed = {**parsed, "context_update": redact(definition, update)}
    return json.dumps(parsed, ensure_ascii=False, separators=(",", ":"))[:REJECTED_REPLY_CHARS]


def note_invalid(progress: TurnProgress | None, problem: str, reply: str = "") -> TurnProgress:
    """An invalid reply: the next call re-asks with ``problem`` as feedback.

    ``reply`` is the rejected reply (empty when it was cut off: the model is asked
    for a shorter one, not shown the stub).
    """
    progress = progress or TurnProgress()
    return progress.model_copy(
        update={
            "failures": progress.failures + 1,
            "invalid": progress.invalid + 1,
            "feedback": problem,
            "rejected_reply": reply,
        }
    )


def reasks_spent(limits: RunLimits, progress: TurnProgress | None) -> bool:
    """Whether the current round of re-asks is spent (``max_reasks`` + 1 replies)."""
    return progress is not None and progress.invalid > limits.max_reasks


def use_fallback(limits: RunLimits, progress: TurnProgress | None) -> bool:
    """Whether the next call goes to the fallback model (the turn failed often enough)."""
    return progress is not None and progress.failures >= limits.fallback_after


def give_up_invalid(
    definition: AgentDefinition,
    snapshot: RunSnapshot,
    now: datetime,
    *,
    can_wait: bool,
) -> RunSnapshot:
    """The model gave no valid turn after its re-asks: the state's ``on_invalid`` rule.

    ``fail`` and ``{goto}`` are applied to the run; ``wait`` pauses the run when it
    ``can_wait`` (an autonomous run: a new round of re-asks after the pause) and
    otherwise leaves it as it is (a conversation replies with the fallback).
    """
    progress = snapshot.progress or TurnProgress()
    reason = f"no valid turn after {progress.invalid} attempts; last problem: {progress.feedback}"
    run = snapshot.run
    if definition.states[run.state].on_invalid != "wait":
        after = apply_on_invalid(definition, run, reason)
        return snapshot.model_copy(update={"run": after, "progress": None})
    if not can_wait:
        return snapshot
    waiting = note_failure(progress, "invalid", reason, now, snapshot.limits)
    # The pause starts a new round of re-asks; the feedback stays for the next one.
    # The replies were counted as failures already (note_invalid), the pause is not.
    resumed = waiting.model_copy(update={"invalid": 0, "failures": progress.failures})
    return snapshot.model_copy(update={"progress": resumed})


@dataclass(frozen=True)
class Escalation:
    """What a failed call or a rejected reply leads to.

    Attributes:
        snapshot: The snapshot after it (trace, the turn's progress, maybe the run
            moved or ended by the definition's rules).
        ends_turn: Why the turn ends without a valid reply, or None to ask again
            (after the pause ``snapshot.progress.wait.retry_at`` says, if any).
    """

    snapshot: RunSnapshot
    ends_turn: str | None = None


FAILURE_KINDS: Mapping[str, WaitKind] = {
    "LlmRequestRejected": "rejected",
    "UnknownTier": "deploy",
}
"""Wait kinds of the LLM activity's error types (every other failure: unavailable)."""


def reply_rejected(
    definition: AgentDefinition,
    snapshot: RunSnapshot,
    problem: str,
    now: datetime,
    *,
    can_wait: bool,
    reply: str = "",
) -> Escalation:
    """An invalid reply: a re-ask with the reason, or, once they are spent, ``on_invalid``.

    The re-ask shows the model ``reply`` (what it wrote) and the reason. See
    ``give_up_invalid`` for what the state's rule does.
    """
    progress = note_invalid(snapshot.progress, problem, reply)
    snapshot = snapshot.model_copy(update={"progress": progress})
    if not reasks_spent(snapshot.limits, progress):
        return Escalation(snapshot)
    after = give_up_invalid(definition, snapshot, now, can_wait=can_wait)
    moved = after.run.ended or after.run.state != snapshot.run.state
    if not can_wait or moved:
        return Escalation(after, f"no valid turn after {progress.invalid} attempts: {problem}")
    return Escalation(after)


def model_failed(
    definition: AgentDefinition,
    snapshot: RunSnapshot,
    failure_type: str,
    message: str,
    now: datetime,
    *,
    conversation: bool,
    past_deadline: bool = False,
) -> Escalation:
    """A model call failed (after the activity's own retries): wait, or end the turn.

    An outage or a refused request makes the run wait (one trace entry per
    distinct error, however long it lasts); a conversation turn ends at once on a
    refused request or past its deadline; a worker fleet still without the
    state's model tier after the deploy grace fails the run naming it.
    """
    reason = f"model call failed: {message}"
    if failure_type == "NoTurn":
        return Escalation(snapshot, message)
    progress = snapshot.progress
    last = progress.wait.last_error if progress is not None and progress.wait else None
    # One trace entry per distinct error (as kept: clipped), however long it lasts.
    run = (
        snapshot.run
        if last == clip(reason, ERROR_CHARS)
        else record_rejection(snapshot.run, reason)
    )
    kind = FAILURE_KINDS.get(failure_type, "unavailable")
    progress = note_failure(progress, kind, reason, now, snapshot.limits)
    snapshot = snapshot.model_copy(update={"run": run, "progress": progress})
    if conversation and (kind == "rejected" or past_deadline):
        return Escalation(snapshot, reason)
    if kind == "deploy" and deploy_grace_over(snapshot.limits, progress, now):
        tier = definition.states[run.state].model
        return Escalation(fail_after_grace(snapshot, f"model tier {tier!r}", message), reason)
    return Escalation(snapshot)


def tool_failed(
    snapshot: RunSnapshot,
    call: ToolCallAction,
    usage: Usage,
    failure_type: str,
    message: str,
    now: datetime,
    *,
    can_wait: bool,
) -> Escalation:
    """A tool call failed after its attempts: wait for what it lacks, or fail.

    While the run ``can_wait``: a store the call cannot reach (``StoreUnavailable``:
    the effect ledger or artifact store is down) is waited for as long as it takes,
    like a model outage, and the same call (same idempotency key) runs again; a
    tool the worker lacks (``UnknownTool``, a rolling deploy) is waited for until
    the deploy grace is over. Any other failure (the tool kept raising, bad
    arguments, a conflicting idempotency key) fails the run naming the tool, its
    call traced as not accepted.
    """
    run = snapshot.run
    if failure_type == "StoreUnavailable" and can_wait:
        progress = note_failure(snapshot.progress, "store", message, now, snapshot.limits)
        return Escalation(snapshot.model_copy(update={"progress": progress}))
    if failure_type == "UnknownTool" and can_wait:
        progress = note_failure(snapshot.progress, "deploy", message, now, snapshot.limits)
        waiting = snapshot.model_copy(update={"progress": progress})
        if not deploy_grace_over(snapshot.limits, progress, now):
            return Escalation(waiting)
        return Escalation(fail_after_grace(waiting, f"tool {call.tool!r}", message), message)
    reason = f"tool {call.tool!r} failed: {message}"
    failed = record_rejection(
        run, reason, target=run.state, kind="tool_call", tool=call.tool, **usage.fields()
    )
    ended = fail_run(failed, f"in state {run.state!r}: {reason}")
    return Escalation(snapshot.model_copy(update={"run": ended, "progress": None}), reason)


def deploy_grace_over(limits: RunLimits, progress: TurnProgress, now: datetime) -> bool:
    """Whether a run has waited longer than a rolling deploy for a worker that can serve it."""
    wait = progress.wait
    return (
        wait is not None
        and wait.kind == "deploy"
        and (now - wait.since).total_seconds() >= limits.deploy_grace_seconds
    )


def fail_after_grace(snapshot: RunSnapshot, what: str, error: str) -> RunSnapshot:
    """End a run whose workers still lack ``what`` after the deploy grace."""
    grace = snapshot.limits.deploy_grace_seconds
    reason = f"no worker has {what} after {grace:g} s: {error}"
    run = fail_run(snapshot.run, f"in state {snapshot.run.state!r}: {reason}")
    return snapshot.model_copy(update={"run": run, "progress": None})


# -------------------------------------------------------------------- dialogue


def push_dialogue(snapshot: RunSnapshot, *turns: DialogueTurn) -> RunSnapshot:
    """Append messages to the dialogue, keeping the newest ``history_keep``.

    A message without a state is stamped with the run's current state.
    """
    keep = snapshot.limits.history_keep
    stamped = [t if t.state else t.model_copy(update={"state": snapshot.run.state}) for t in turns]
    every = (*snapshot.dialogue, *stamped)
    dialogue = every[-keep:] if keep else ()
    dropped = snapshot.dialogue_dropped + len(every) - len(dialogue)
    return snapshot.model_copy(update={"dialogue": dialogue, "dialogue_dropped": dropped})


def after_autonomous_turn(
    definition: AgentDefinition, before: RunState, snapshot: RunSnapshot
) -> RunSnapshot:
    """Point out a turn that stayed and changed nothing.

    At temperature 0 an unchanged prompt gets the same reply again; saying so makes
    the next prompt differ, so the model can make progress.
    """
    after = snapshot.run
    if after.ended or after.state != before.state or after.context != before.context:
        return snapshot
    return push_dialogue(
        snapshot,
        DialogueTurn(
            role="user",
            text=f"Your last step stayed in {before.state!r} and changed nothing. "
            "Make progress: fill in the keys this state collects, or move on.",
        ),
    )


def tool_call_key(workflow_id: str, chain_id: str, run: RunState, call: ToolCallAction) -> str:
    """The idempotency key of a call: the same on every retry, naming the call it keys."""
    identity = call_identity(call.tool, call.arguments)
    return f"{workflow_id}/{chain_id}/{run.step}/{run.tool_calls}/{identity}"


def after_tool_call(
    definition: AgentDefinition,
    snapshot: RunSnapshot,
    call: ToolCallAction,
    usage: Usage,
    *,
    ok: bool,
    text: str,
    outcome: str,
    artifacts: list[str],
    values: Mapping[str, Any],
) -> RunSnapshot:
    """Record an executed call: a step, its result as the next prompt's news.

    A call identical to the previous one gets the same result again; the model is
    told so (as for a stay that changed nothing) so it moves on.
    """
    before = snapshot.run
    run = record_tool_call(
        definition,
        before,
        call.tool,
        ok=ok,
        outcome=outcome,
        artifacts=artifacts,
        values=values,
        **usage.fields(),
    )
    signature = f"{before.state}/{call_identity(call.tool, call.arguments)}"
    # Stamped with the state the call was made in (a write may have moved the run).
    turns = [DialogueTurn(role="tool", text=f"{call.tool}: {text}", state=before.state)]
    if signature == snapshot.last_call:
        moves = ", ".join(allowed_targets(definition, run)) or "none yet"
        turns.append(
            DialogueTurn(
                role="user",
                text=f"You called {call.tool} with the same arguments as before; its "
                f"result is above. Make progress: move on (allowed: {moves}) or call "
                "another tool.",
                state=before.state,
            )
        )
    updated = snapshot.model_copy(update={"run": run, "last_call": signature, "progress": None})
    return push_dialogue(updated, *turns)


def note_decision(
    snapshot: RunSnapshot, gate: str, decision: str, by: str, comment: str
) -> RunSnapshot:
    """Tell the model about a human decision, in the state it led to.

    A reviewer's comment ("too short, add an example") is what the next turns
    should act on; without it a redraft repeats the rejected one.
    """
    if decision not in ("approve", "reject"):
        return snapshot
    who = f"The reviewer {by}" if by else "The reviewer"
    verb = "approved" if decision == "approve" else "rejected"
    text = f"{who} {verb} at {gate}" + (f": {comment}" if comment.strip() else ".")
    return push_dialogue(snapshot, DialogueTurn(role="user", text=text))


def unanswered(snapshot: RunSnapshot, reason: str) -> RunSnapshot:
    """A message the run could not answer: traced; it stays in the dialogue."""
    run = record_rejection(snapshot.run, f"message not answered: {reason}", kind="unanswered")
    return snapshot.model_copy(update={"run": run, "progress": None})


# ------------------------------------------------------- messages by update id


def answered_reply(snapshot: RunSnapshot, update_id: str | None) -> Reply | None:
    """The reply already given to the message delivered by ``update_id``, if any."""
    if not update_id:
        return None
    for answered in reversed(snapshot.answered):
        if answered.update_id == update_id:
            return answered.reply
    return None


def remember_reply(snapshot: RunSnapshot, update_id: str | None, reply: Reply) -> RunSnapshot:
    """Remember a reply by its update id, keeping the newest ``answered_keep``."""
    if not update_id:
        return snapshot
    keep = snapshot.limits.answered_keep
    answered = (*snapshot.answered, AnsweredMessage(update_id=update_id, reply=reply))
    return snapshot.model_copy(update={"answered": answered[-keep:] if keep else ()})


# -------------------------------------------------------------- the whole run


def carry(snapshot: RunSnapshot, run_id: str) -> RunSnapshot:
    """What run ``run_id`` hands to the next run of its chain: the snapshot within its bounds.

    The snapshot names the run that handed it over, so the next run can tell it
    from one a caller wrote (see ``handed_over``).
    """
    limits = snapshot.limits
    run = snapshot.run
    kept = snapshot.dialogue[-limits.history_keep :] if limits.history_keep else ()
    return snapshot.model_copy(
        update={
            "run": run.model_copy(update={"trace": run.trace[-limits.trace_keep :]}),
            "dialogue": kept,
            "dialogue_dropped": snapshot.dialogue_dropped + len(snapshot.dialogue) - len(kept),
            "turns": 0,
            "continued_from": run_id,
        }
    )


def handed_over(snapshot: RunSnapshot, continued_run_id: str | None) -> bool:
    """Whether a snapshot in a start input was handed over by the run before this one.

    Temporal sets the previous run's id when a run continues as new, and also for
    a cron run or a workflow retry, which restart with the input a caller wrote.
    Only fsmflow's own hand-over names that run: a caller writes the input before
    the previous run (and so its id) exists.
    """
    return bool(continued_run_id) and snapshot.continued_from == continued_run_id


def bounded(snapshot: RunSnapshot) -> RunSnapshot:
    """The snapshot with its trace cut to the newest ``trace_keep`` entries past twice that.

    So the run's state and result stay small whatever callers send (a flood of
    refused signals, a long wait); the whole trace is in the history (``fsmflow
    trace`` rebuilds it).
    """
    keep = snapshot.limits.trace_keep
    run = snapshot.run
    if len(run.trace) <= 2 * keep:
        return snapshot
    return snapshot.model_copy(update={"run": run.model_copy(update={"trace": run.trace[-keep:]})})


def fsm_status(snapshot: RunSnapshot) -> FsmStatus:
    """The ``FsmStatus`` search attribute of a run."""
    progress = snapshot.progress
    if progress is not None and progress.wait is not None and not snapshot.run.ended:
        return "waiting_for_store" if progress.wait.kind == "store" else "waiting_for_model"
    return snapshot.run.status


def details(definition: AgentDefinition, snapshot: RunSnapshot) -> str:
    """The run's current details in the Web UI: where it is and what it waits for."""
    run = snapshot.run
    text = f"**{definition.name}** in state **{run.state}** ({run.status})"
    text += f", step {run.step}/{definition.max_steps}"
    if run.end_reason:
        text += f": {run.end_reason}"
    gate = definition.states[run.state].approval
    if run.status == "awaiting_approval" and gate is not None:
        who = f" from {', '.join(gate.approvers)}" if gate.approvers else ""
        text += (
            f"\n\nwaiting for an approval decision{who}: on approve to {gate.on_approve}, "
            f"on reject to {gate.on_reject} (`fsmflow approve|reject ID`, or the console's inbox)"
        )
    wait = snapshot.progress.wait if snapshot.progress is not None else None
    if wait is not None and not run.ended:
        what = {
            "unavailable": "waiting for the model",
            "rejected": "waiting for the model endpoint to accept requests",
            "invalid": "waiting: the model's replies were invalid",
            "deploy": "waiting for a worker with the run's model tier or tool",
            "store": "waiting for the tools' store (effect ledger, artifacts)",
        }[wait.kind]
        text += (
            f"\n\n{what} since {wait.since:%Y-%m-%d %H:%M:%S} UTC, {wait.failures} "
            f"failed attempt{'s' if wait.failures != 1 else ''}, last error: {wait.last_error}"
        )
    return text


def bundle_hash(definition: Mapping[str, Any], tools: Mapping[str, ToolInfo]) -> str:
    """sha256 of what a turn is rendered from that does not change during a run."""
    canonical = json.dumps(
        {
            "definition": definition,
            "tools": {name: info.model_dump(mode="json") for name, info in sorted(tools.items())},
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
