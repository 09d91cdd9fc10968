"""The transition engine: which moves are allowed, and applying a turn or a decision.

Pure and synchronous. Every function takes the definition and a ``RunState`` and
returns a new ``RunState``; nothing is mutated, and a rejected turn changes
nothing but the trace.

Guards are judged on the context *as the turn would leave it*: a model that
extracts ``email`` and moves to ``confirm`` (which requires ``email``) in the same
turn is doing the right thing. So the moves offered to the model are those whose
guards hold now or may hold once this state's writable keys are filled in, and
the engine decides on the updated context.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from fsm import jsonlogic
from fsm.checks import guard_keys
from fsm.context import check_initial_context, guard_data, is_present, value_problem
from fsm.problems import validation_problem
from fsm.validation import first_error
from schemas.definition import AgentDefinition, InvalidGoto, State, Transition
from schemas.run import RunState, TraceEntry, TraceKind
from schemas.tools import ToolInfo
from schemas.turn import AutonomousDecision, TurnDecision

Decision = Literal["approve", "reject", "timeout"]

STAY = "stay here (ask for what is still missing)"
"""What the model reads about staying: always the last move offered."""

ARTIFACTS_KEPT = 50
"""Artifact references a run keeps offering to its tools (the newest)."""


class ContextError(ValueError):
    """Initial context values that do not fit the definition; lists every problem."""


class TurnParseError(ValueError):
    """A model reply that is not a well-formed turn (bad JSON or wrong shape)."""


@dataclass(frozen=True)
class Move:
    """One move the model may pick now.

    Attributes:
        target: The state the move goes to (the current state for staying).
        description: What the model reads about the move.
        needs: Keys that must be set (now or by this turn) for the move to apply.
        condition: The guard, as short text, when the move has one.
    """

    target: str
    description: str
    needs: tuple[str, ...] = ()
    condition: str = ""


@dataclass(frozen=True)
class TurnResult:
    """The engine's verdict on a turn or decision.

    Attributes:
        accepted: Whether it was applied.
        run: The run after it (unchanged but for the trace when rejected).
        reason: Why it was rejected, in words a model or person can act on.
        entry: The trace entry appended.
    """

    accepted: bool
    run: RunState
    reason: str
    entry: TraceEntry


def writable_keys(definition: AgentDefinition, state_id: str) -> list[str]:
    """Keys the model may write in a state: its ``collects``.

    A definition recorded before ``sees`` became read-only (``sees_writable``)
    keeps its rule: the keys it sees are writable too.
    """
    if definition.sees_writable:
        return visible_keys(definition, state_id)
    return list(dict.fromkeys(definition.states[state_id].collects))


def visible_keys(definition: AgentDefinition, state_id: str) -> list[str]:
    """Keys the model sees in a state: ``collects``, then ``sees`` (read-only).

    A state without ``sees`` shows the keys its guards read, so the model knows
    what a move waits for.
    """
    state = definition.states[state_id]
    sees = state.sees if state.sees is not None else sorted(guard_keys(state))
    return list(dict.fromkeys([*state.collects, *sees]))


def guard_holds(transition: Transition, run: RunState) -> bool:
    """Whether a transition's ``requires`` and ``when`` hold for this run."""
    if not all(is_present(run.context.get(key)) for key in transition.requires):
        return False
    if transition.when is None:
        return True
    return jsonlogic.truthy(jsonlogic.evaluate(transition.when, guard_data(run)))


def _may_hold(transition: Transition, run: RunState, writable: set[str]) -> bool:
    """Whether the guard holds now, or may once this turn writes its keys."""
    if guard_holds(transition, run):
        return True
    requires_ok = all(
        is_present(run.context.get(key)) or key in writable for key in transition.requires
    )
    if not requires_ok:
        return False
    if transition.when is None:
        return True
    return jsonlogic.may_hold(transition.when, guard_data(run), writable)


def callable_tools(definition: AgentDefinition, run: RunState) -> list[str]:
    """The state's tools the model may call now.

    None once the visit's budget of successful calls (``max_tool_calls``) or of
    failed ones (``max_tool_errors``) is spent.
    """
    if run.status != "active":
        return []
    state = definition.states[run.state]
    if state.max_tool_calls is not None and run.visit_tool_calls >= state.max_tool_calls:
        return []
    if run.visit_tool_errors >= state.max_tool_errors:
        return []
    return list(state.tools)


def _needs(transition: Transition, run: RunState, writable: list[str]) -> tuple[str, ...]:
    """Keys the turn must set for the transition to apply.

    The missing ``requires``, and the unset keys its guard cannot hold without
    (``verdict == 'approve'`` needs ``verdict``).
    """
    needs = [k for k in transition.requires if not is_present(run.context.get(k))]
    if transition.when is None:
        return tuple(needs)
    data = guard_data(run)
    unknown = set(writable)
    for key in writable:
        if key in needs or is_present(run.context.get(key)):
            continue
        if not jsonlogic.may_hold(transition.when, {**data, key: None}, unknown - {key}):
            needs.append(key)
    return tuple(needs)


def _ordered(transitions: State | list[Transition]) -> list[Transition]:
    # sorted() is stable: equal priorities keep the order of the file.
    listed = transitions.transitions if isinstance(transitions, State) else transitions
    return sorted(listed, key=lambda t: t.priority)


def allowed_moves(definition: AgentDefinition, run: RunState) -> list[Move]:
    """The moves the model may pick now, by priority, staying last.

    Empty when the run has ended, is waiting for approval, or is in a terminal
    state; also when a state with tools forbids staying and no transition can hold
    yet (the model must call a tool).
    """
    if run.status != "active":
        return []
    state = definition.states[run.state]
    if state.terminal or state.approval is not None:
        return []
    ordered = writable_keys(definition, run.state)
    writable = set(ordered)
    moves: dict[str, Move] = {}
    for transition in _ordered(state):
        if not _may_hold(transition, run, writable):
            continue
        if transition.target in moves:
            # Several transitions to one target: the move needs only what all of
            # them need (any one of them may apply).
            known = moves[transition.target]
            missing = set(_needs(transition, run, ordered))
            needs = tuple(k for k in known.needs if k in missing)
            moves[transition.target] = Move(known.target, known.description, needs, known.condition)
            continue
        moves[transition.target] = Move(
            target=transition.target,
            description=transition.description,
            needs=_needs(transition, run, ordered),
            condition=jsonlogic.describe(transition.when) if transition.when is not None else "",
        )
    if run.state not in moves and (
        state.allow_stay or not (moves or callable_tools(definition, run))
    ):
        # A state that forbids staying still offers it when no transition can
        # hold this turn and it has no tools: the run must not be left without a
        # legal move. With tools, calling one is the way forward.
        moves[run.state] = Move(run.state, STAY)
    return list(moves.values())


def keys_every_move_needs(definition: AgentDefinition, run: RunState) -> list[str]:
    """Missing keys that every allowed move requires: the turn must fill them in."""
    moves = allowed_moves(definition, run)
    if not moves:
        return []
    needed = set(moves[0].needs)
    for move in moves[1:]:
        needed &= set(move.needs)
    return [key for key in writable_keys(definition, run.state) if key in needed]


def allowed_targets(definition: AgentDefinition, run: RunState) -> list[str]:
    """The target states of ``allowed_moves``: exactly the enum of the turn schema."""
    return [move.target for move in allowed_moves(definition, run)]


def start_run(definition: AgentDefinition, context: Mapping[str, Any] | None = None) -> RunState:
    """The run before its first turn: initial state, checked initial context.

    Raises:
        ContextError: If a value is undeclared, reserved or does not fit its type.
    """
    values = dict(context or {})
    problems = check_initial_context(definition, values)
    if problems:
        raise ContextError("; ".join(problems))
    run = RunState(
        state=definition.initial_state,
        context={k: v for k, v in values.items() if v is not None},
        visits={definition.initial_state: 1},
        # Every listed tool starts at 0, so a guard on _calls.<tool> is never null.
        calls={t: 0 for t in sorted({t for s in definition.states.values() for t in s.tools})},
    )
    return _settle(definition, run)


MAX_ALWAYS_HOPS = 64
"""Eventless transitions followed in a row at most (checks refuse a cycle of them;
this bounds a definition loaded without its checks)."""


def _follow_always(definition: AgentDefinition, run: RunState) -> RunState:
    """Take the state's eventless transitions while one's guard holds.

    Not a step: the model took no turn. Each hop is traced as ``always``.
    """
    for _ in range(MAX_ALWAYS_HOPS):
        state = definition.states[run.state]
        if state.terminal or state.approval is not None or not state.always:
            return run
        taken = next((t for t in _ordered(state.always) if guard_holds(t, run)), None)
        if taken is None or taken.target not in definition.states:
            return run
        run = _hop(run, taken.target, "always", taken.description or guard_text(taken) or "always")
    return run


def _hop(run: RunState, target: str, kind: TraceKind, reason: str) -> RunState:
    """A move the FSM takes itself (not a step): traced as ``kind``, the visit counted."""
    entry = TraceEntry(
        step=run.step,
        kind=kind,
        from_state=run.state,
        to_state=target,
        accepted=True,
        reason=reason,
    )
    visits = dict(run.visits)
    if target != run.state:
        visits[target] = visits.get(target, 0) + 1
    return run.model_copy(
        update={
            "state": target,
            "visits": visits,
            **_visit_counters(run, target),
            "trace": (*run.trace, entry),
        }
    )


def _visit_counters(run: RunState, target: str) -> dict[str, int]:
    """The visit's tool counters after a move to ``target``: reset on entering a state."""
    if target == run.state:
        return {
            "visit_tool_calls": run.visit_tool_calls,
            "visit_tool_errors": run.visit_tool_errors,
        }
    return {"visit_tool_calls": 0, "visit_tool_errors": 0}


def dead_end(definition: AgentDefinition, run: RunState) -> str | None:
    """Why an active run can never leave its state, or None while it may.

    A dead end: the state declares ways out, but no transition leaving it can
    ever hold (whatever the model writes to the keys it collects, however many
    steps pass) and no tool can be called: its budget is spent or its calls kept
    failing. Only a decision from outside could change the context, and none
    reaches a state that is not a gate. A state without ways out (one that only
    stays, a chat) is not a dead end: it ends by ``max_steps`` by design.
    """
    state = definition.states[run.state]
    if run.status != "active" or state.terminal or state.approval is not None:
        return None
    leaving = [t for t in (*state.transitions, *state.always) if t.target != run.state]
    if not leaving or callable_tools(definition, run):
        return None
    changing = {*writable_keys(definition, run.state), "_step"}
    if any(_may_hold(t, run, changing) for t in leaving):
        return None
    why = f"dead end in state {run.state!r}: no transition out can hold"
    if state.tools:
        spent = (
            f"{run.visit_tool_errors} failed calls"
            if run.visit_tool_errors >= state.max_tool_errors
            else f"{run.visit_tool_calls} of {state.max_tool_calls} calls made"
        )
        why += f" and no tool can be called ({spent} on this visit)"
    return why


def _leave_dead_end(definition: AgentDefinition, run: RunState, why: str) -> RunState:
    """Apply the state's ``on_dead_end``: fail the run, or move it (no step)."""
    rule = definition.states[run.state].on_dead_end
    if not isinstance(rule, InvalidGoto) or rule.goto not in definition.states:
        return fail_run(run, why)
    return _hop(run, rule.goto, "dead_end", why)


def guard_text(transition: Transition) -> str:
    """A transition's guard in words (``has email and age >= 18``); empty without one."""
    parts = []
    if transition.requires:
        parts.append("has " + ", ".join(transition.requires))
    if transition.when is not None:
        parts.append(jsonlogic.describe(transition.when))
    return " and ".join(parts)


def _settle(definition: AgentDefinition, run: RunState) -> RunState:
    """Follow eventless transitions, then set status from the state reached.

    Terminal, gate, or the step bound. Eventless transitions are followed even
    when the last step reached ``max_steps``: they are not steps, and the state
    they lead to (a terminal one, say) is where the run is. A dead end is left at
    once (``on_dead_end``), not idled in until ``max_steps``.
    """
    run = _follow_always(definition, run)
    for _ in range(MAX_ALWAYS_HOPS):
        why = dead_end(definition, run.model_copy(update={"status": "active"}))
        if why is None or run.step >= definition.max_steps:
            break
        run = _leave_dead_end(definition, run, why)
        if run.ended:
            return run
        run = _follow_always(definition, run)
    state = definition.states[run.state]
    if state.terminal:
        return run.model_copy(
            update={"status": "completed", "end_reason": f"reached terminal state {run.state!r}"}
        )
    if run.step >= definition.max_steps:
        return run.model_copy(
            update={
                "status": "max_steps",
                "end_reason": f"max_steps ({definition.max_steps}) reached in state {run.state!r}",
            }
        )
    if state.approval is not None:
        return run.model_copy(update={"status": "awaiting_approval"})
    return run.model_copy(update={"status": "active"})


def _not_open_reason(run: RunState) -> str | None:
    if run.ended:
        return f"the run has ended ({run.end_reason})"
    if run.status == "awaiting_approval":
        return f"the run is waiting for an approval decision in {run.state!r}"
    return None


def _reject(
    run: RunState,
    reason: str,
    target: str | None,
    *,
    kind: TraceKind = "turn",
    by: str | None = None,
    model: str | None = None,
    tokens: int | None = None,
    latency_ms: int | None = None,
    cached_tokens: int | None = None,
    tool: str | None = None,
) -> TurnResult:
    entry = TraceEntry(
        step=run.step,
        kind=kind,
        from_state=run.state,
        to_state=target,
        accepted=False,
        reason=reason,
        by=by,
        model=model,
        tokens=tokens,
        latency_ms=latency_ms,
        cached_tokens=cached_tokens,
        tool=tool,
    )
    return TurnResult(False, run.model_copy(update={"trace": (*run.trace, entry)}), reason, entry)


def _enter(
    definition: AgentDefinition,
    run: RunState,
    target: str,
    context: dict[str, Any],
    entry: TraceEntry,
) -> TurnResult:
    visits = dict(run.visits)
    if target != run.state:
        visits[target] = visits.get(target, 0) + 1
    moved = run.model_copy(
        update={
            "state": target,
            "context": context,
            "step": run.step + 1,
            "visits": visits,
            **_visit_counters(run, target),
            "trace": (*run.trace, entry),
        }
    )
    return TurnResult(True, _settle(definition, moved), "", entry)


def _update_problem(
    definition: AgentDefinition, state_id: str, update: Mapping[str, Any]
) -> str | None:
    writable = writable_keys(definition, state_id)
    listing = ", ".join(writable) or "none"
    for key, value in update.items():
        if key.startswith("_"):
            return f"key {key!r} is reserved for the framework and cannot be written"
        if key not in definition.context:
            return f"key {key!r} is not a declared context key; writable here: {listing}"
        if key not in writable:
            shown = " (it is read-only here)" if key in visible_keys(definition, state_id) else ""
            return (
                f"key {key!r} cannot be written in state {state_id!r}{shown}; "
                f"writable here: {listing}"
            )
        if value is not None and (problem := value_problem(key, definition.context[key], value)):
            return problem
    return None


def _target_problem(
    definition: AgentDefinition, run: RunState, target: str, after: RunState
) -> str | None:
    offered = allowed_targets(definition, run)
    listing = ", ".join(offered)
    if target not in definition.states:
        return f"{target!r} is not a state; allowed now: {listing}"
    if target not in offered:
        return f"{target!r} is not reachable from {run.state!r} now; allowed: {listing}"
    if target == run.state:
        return None
    candidates = [t for t in _ordered(definition.states[run.state]) if t.target == target]
    if any(guard_holds(t, after) for t in candidates):
        return None
    first = candidates[0]
    missing = [k for k in first.requires if not is_present(after.context.get(k))]
    if missing:
        needed = ", ".join(map(repr, missing))
        return f"{target!r} needs {needed} set first; set it in context_update or stay"
    return f"{target!r} is only allowed when {jsonlogic.describe(first.when)}; that does not hold"


def apply_turn(
    definition: AgentDefinition,
    run: RunState,
    turn: TurnDecision,
    *,
    model: str | None = None,
    tokens: int | None = None,
    latency_ms: int | None = None,
    cached_tokens: int | None = None,
) -> TurnResult:
    """Judge a model's turn and apply it when the table allows it.

    A turn is rejected (changing nothing but the trace) when the run is not open
    for turns, it writes a reserved, undeclared or non-writable key or a value that
    does not fit its declaration, or its target is not an allowed move on the
    context the turn would leave.

    Args:
        definition: The agent definition.
        run: The run before the turn.
        turn: The parsed turn.
        model: The model that produced it, for the trace.
        tokens: Tokens it cost, for the trace.
        latency_ms: How long the model took, for the trace.
        cached_tokens: Prompt tokens the endpoint served from its cache, for the trace.

    Returns:
        The verdict, with the run after it.
    """

    def reject(reason: str) -> TurnResult:
        return _reject(
            run,
            reason,
            turn.target_state,
            model=model,
            tokens=tokens,
            latency_ms=latency_ms,
            cached_tokens=cached_tokens,
        )

    if (reason := _not_open_reason(run)) is not None:
        return reject(reason)
    if (reason := _update_problem(definition, run.state, turn.context_update)) is not None:
        return reject(reason)
    context = dict(run.context)
    context.update({k: v for k, v in turn.context_update.items() if v is not None})
    after = run.model_copy(update={"context": context})
    if (reason := _target_problem(definition, run, turn.target_state, after)) is not None:
        return reject(reason)
    entry = TraceEntry(
        step=run.step,
        kind="turn",
        from_state=run.state,
        to_state=turn.target_state,
        accepted=True,
        model=model,
        tokens=tokens,
        latency_ms=latency_ms,
        cached_tokens=cached_tokens,
    )
    return _enter(definition, run, turn.target_state, context, entry)


def apply_decision(
    definition: AgentDefinition,
    run: RunState,
    decision: Decision,
    *,
    by: str | None = None,
    comment: str = "",
) -> TurnResult:
    """Apply a human decision (or the gate's timeout) at an open approval gate.

    Returns:
        The verdict; rejected when no gate is open or ``by`` may not decide.
    """
    state = definition.states[run.state]
    gate = state.approval
    if run.status != "awaiting_approval" or gate is None:
        return _reject(
            run, f"no approval gate is open in {run.state!r}", None, kind=decision, by=by
        )
    if decision == "timeout":
        target = gate.on_timeout
        if target is None:
            return _reject(run, f"gate {run.state!r} has no timeout", None, kind=decision, by=by)
    else:
        if gate.approvers and by not in gate.approvers:
            return _reject(
                run,
                f"{by!r} may not decide at {run.state!r} (approvers: {', '.join(gate.approvers)})",
                None,
                kind=decision,
                by=by,
            )
        target = gate.on_approve if decision == "approve" else gate.on_reject
    entry = TraceEntry(
        step=run.step,
        kind=decision,
        from_state=run.state,
        to_state=target,
        accepted=True,
        reason=comment,
        by=by,
    )
    return _enter(definition, run, target, dict(run.context), entry)


def record_rejection(
    run: RunState,
    reason: str,
    *,
    target: str | None = None,
    kind: TraceKind = "turn",
    by: str | None = None,
    model: str | None = None,
    tokens: int | None = None,
    latency_ms: int | None = None,
    cached_tokens: int | None = None,
    tool: str | None = None,
) -> RunState:
    """Append a rejected event to the trace.

    For what never reached the engine's judgement: a reply that is bad JSON or
    breaks the schema, a model that could not be reached, an ignored decision, a
    refused or failed tool call.
    """
    return _reject(
        run,
        reason,
        target,
        kind=kind,
        by=by,
        model=model,
        tokens=tokens,
        latency_ms=latency_ms,
        cached_tokens=cached_tokens,
        tool=tool,
    ).run


def fail_run(run: RunState, reason: str) -> RunState:
    """End a run in the ``failed`` status, recording why in its trace."""
    entry = TraceEntry(
        step=run.step,
        kind="fail",
        from_state=run.state,
        to_state=None,
        accepted=False,
        reason=reason,
    )
    return run.model_copy(
        update={"status": "failed", "end_reason": reason, "trace": (*run.trace, entry)}
    )


def apply_on_invalid(definition: AgentDefinition, run: RunState, reason: str) -> RunState:
    """Apply the state's ``on_invalid`` rule: the model gave no valid turn.

    ``fail`` ends the run ``failed`` naming the reason; ``{goto: STATE}`` moves the
    run there (a step, traced as ``on_invalid``, the FSM's own move); ``wait``
    changes nothing (the caller answers with the fallback reply or backs off).
    """
    rule = definition.states[run.state].on_invalid
    if rule == "fail":
        return fail_run(run, f"in state {run.state!r}: {reason}")
    if not isinstance(rule, InvalidGoto) or run.ended:
        return run
    entry = TraceEntry(
        step=run.step,
        kind="on_invalid",
        from_state=run.state,
        to_state=rule.goto,
        accepted=True,
        reason=reason,
    )
    return _enter(definition, run, rule.goto, dict(run.context), entry).run


def tool_call_problem(
    definition: AgentDefinition,
    run: RunState,
    tool: str,
    arguments: Mapping[str, Any],
    tools: Mapping[str, ToolInfo],
) -> str | None:
    """Say why a tool call may not execute now, or None when it may.

    A call may execute when the run is open for turns, the current state lists
    the tool, the arguments fit its schema, and every artifact argument names an
    artifact this run created.
    """
    if (reason := _not_open_reason(run)) is not None:
        return reason
    state = definition.states[run.state]
    if tool not in state.tools:
        listing = ", ".join(state.tools) or "none"
        return f"tool {tool!r} is not allowed in {run.state!r}; allowed: {listing}"
    if tool not in callable_tools(definition, run):
        moves = ", ".join(allowed_targets(definition, run))
        if run.visit_tool_errors >= state.max_tool_errors:
            return (
                f"{run.state!r} allows {state.max_tool_errors} failed tool call(s) per visit "
                f"and they are spent; move on (allowed: {moves})"
            )
        return (
            f"{run.state!r} allows {state.max_tool_calls} tool call(s) per visit and they "
            f"are spent; move on (allowed: {moves})"
        )
    info = tools.get(tool)
    if info is None:
        return f"tool {tool!r} is not registered"
    error = first_error(info.parameters, dict(arguments))
    if error is not None:
        where = ".".join(str(p) for p in error.path) or "arguments"
        return f"bad arguments for {tool!r}: {where}: {error.message[:200]}"
    for name in info.artifact_parameters:
        ref = arguments.get(name)
        if ref is not None and ref not in run.artifacts:
            known = ", ".join(run.artifacts[-5:]) or "none yet"
            return (
                f"bad arguments for {tool!r}: {name}: {str(ref)[:80]!r} is not an artifact "
                f"of this run (latest: {known})"
            )
    return None


def record_tool_call(
    definition: AgentDefinition,
    run: RunState,
    tool: str,
    *,
    ok: bool,
    outcome: str,
    artifacts: tuple[str, ...] | list[str] = (),
    values: Mapping[str, Any] | None = None,
    model: str | None = None,
    tokens: int | None = None,
    latency_ms: int | None = None,
    cached_tokens: int | None = None,
) -> RunState:
    """Record an executed tool call: a step in the current state.

    A tool call counts as a step (``max_steps`` bounds a model that calls tools
    forever); the run stays in its state, learns the call's artifacts, and sets
    the context keys the definition lets the tool write (``tools: {t: {writes}}``),
    each checked against its declaration (a value that does not fit is not written,
    and the trace says why).

    Args:
        definition: The agent definition.
        run: The run before the call.
        tool: The tool called.
        ok: Whether it succeeded (a ``ToolError`` result did not); successful
            calls count in ``_calls.<tool>``.
        outcome: A short account for the trace (``ok, 120 chars``, ``tool error: ...``).
        artifacts: References the call created.
        values: Context values from the result (of successful calls).
        model: The model that declared the call.
        tokens: Tokens the declaration cost.
        latency_ms: How long the model took.
        cached_tokens: Prompt tokens the endpoint served from its cache.
    """
    context = dict(run.context)
    writes = definition.tools[tool].writes if tool in definition.tools else []
    for key, value in (values or {}).items() if ok else ():
        # ``writes`` names declared keys only (a check); null means nothing to write.
        if key not in writes:
            outcome += f"; not written: {key!r} is not a key {tool!r} writes"
        elif value is not None:
            if problem := value_problem(key, definition.context[key], value):
                outcome += f"; not written: {problem}"
            else:
                context[key] = value
                outcome += f"; wrote {key}"
    entry = TraceEntry(
        step=run.step,
        kind="tool_call",
        from_state=run.state,
        to_state=run.state,
        accepted=True,
        reason=outcome,
        model=model,
        tokens=tokens,
        latency_ms=latency_ms,
        cached_tokens=cached_tokens,
        tool=tool,
    )
    known = [ref for ref in run.artifacts if ref not in artifacts]
    calls = dict(run.calls)
    if ok:
        calls[tool] = calls.get(tool, 0) + 1
    called = run.model_copy(
        update={
            "step": run.step + 1,
            "tool_calls": run.tool_calls + 1,
            "visit_tool_calls": run.visit_tool_calls + ok,
            "visit_tool_errors": run.visit_tool_errors + (not ok),
            "calls": calls,
            "context": context,
            "artifacts": tuple([*known, *artifacts][-ARTIFACTS_KEPT:]),
            "trace": (*run.trace, entry),
        }
    )
    return _settle(definition, called)


def parse_turn(
    definition: AgentDefinition, raw: str | Mapping[str, Any]
) -> TurnDecision | AutonomousDecision:
    """Parse a model's reply (raw text or decoded JSON) into the mode's turn shape.

    Raises:
        TurnParseError: If the reply is not JSON or not a turn; the message says
            what was wrong, for re-asking the model.
    """
    if isinstance(raw, Mapping):
        data: Any = dict(raw)
    else:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise TurnParseError(
                f"the reply is not valid JSON: {exc.msg.removesuffix(' at')} at column {exc.colno}"
            ) from None
    model = AutonomousDecision if definition.mode == "autonomous" else TurnDecision
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise TurnParseError(
            f"the reply is not a valid turn: {validation_problem(exc, 'reply')}"
        ) from None
