"""``AgentWorkflow``: one execution per agent run; its deterministic code is the FSM.

The workflow is a thin shell around one ``RunSnapshot``: it asks the model and runs
tools as activities, hands what comes back to the pure core (``fsm.judge``,
``fsm.engine``), and replaces the snapshot whole with what the core returns.
Continue-as-new carries the snapshot; nothing else of importance lives here. Every
decision is a function of the history, so a run resumes exactly where it was after
a worker crash, a server restart or a model outage of any length.

Runs started before snapshots (their histories have no ``fsmflow-run-snapshot``
marker) keep their old behaviour where it changed what the workflow commands: a
model failure or a spent round of re-asks ends their turn as it did, and a failed
run completes instead of failing. ``tests/histories`` replays both kinds.

Every run hosts an event stream (Temporal's Workflow Streams, ``workflows.events``):
the workflow publishes what the run does (state changes, tool calls, gates,
replies, the end) and the LLM activity a conversation reply's text as it is
generated. Publishing appends to memory and issues no command, so it is the same
for every run, old histories included.
"""

from __future__ import annotations

import asyncio
import builtins
from datetime import datetime, timedelta
from typing import Any, Literal, NoReturn

from pydantic import ValidationError
from temporalio import workflow
from temporalio.common import MetricCounter, SearchAttributeKey
from temporalio.contrib.workflow_streams import WorkflowStream, WorkflowStreamState
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    TimeoutError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    # Pure modules (no clock, randomness or I/O; see fsm/__init__.py) and pydantic
    # models. Passing them through keeps one copy of pydantic and jsonschema
    # instead of re-importing them in every workflow sandbox; they keep no run data
    # between calls (only caches of compiled schemas and patterns), so sharing them
    # cannot leak anything across runs.
    from fsm import events
    from fsm.context import redact
    from fsm.engine import (
        ContextError,
        Decision,
        apply_decision,
        fail_run,
        record_rejection,
        start_run,
    )
    from fsm.judge import (
        Judgement,
        Usage,
        after_autonomous_turn,
        after_tool_call,
        answered_reply,
        bounded,
        bundle_hash,
        carry,
        details,
        fsm_status,
        handed_over,
        judge_reply,
        model_failed,
        note_decision,
        push_dialogue,
        rejected_text,
        remember_reply,
        reply_rejected,
        tool_call_key,
        tool_failed,
        unanswered,
        use_fallback,
    )
    from fsm.problems import validation_problem
    from fsm.prompt import dialogue_window
    from fsm.turn_schema import no_turn_reason
    from schemas.activity import (
        AgentBundle,
        LlmTurnInput,
        LlmTurnOutput,
        ResolveDefinitionInput,
        ResolvedRun,
        RunToolInput,
        ToolOutput,
    )
    from schemas.definition import RECORDED, AgentDefinition
    from schemas.run import DialogueTurn, Reply, RunState, TraceEntry
    from schemas.snapshot import (
        SNAPSHOT_VERSION,
        PendingDecision,
        ResolvedDefinition,
        RunSnapshot,
        TurnProgress,
    )
    from schemas.turn import ToolCallAction
    from schemas.workflow import (
        AgentResult,
        AgentStatus,
        AgentWorkflowInput,
        Carried,
        DecideInput,
        DecisionInput,
        DecisionResult,
        MessageInput,
    )
    from workflows import policies
    from workflows.events import RunEvents, WorkflowInput

FSM_STATE = SearchAttributeKey.for_keyword("FsmState")
FSM_AGENT = SearchAttributeKey.for_keyword("FsmAgent")
FSM_AWAITING_APPROVAL = SearchAttributeKey.for_bool("FsmAwaitingApproval")
FSM_STATUS = SearchAttributeKey.for_keyword("FsmStatus")
SEARCH_ATTRIBUTES = (FSM_STATE, FSM_AGENT, FSM_AWAITING_APPROVAL, FSM_STATUS)
"""Register these on the server before any run starts (``fsmflow dev up`` and the
test fixtures do), or upserting them fails the workflow task."""

PATCH_SNAPSHOT = "fsmflow-run-snapshot"
"""Marks runs that wait out outages and fail as Temporal failures (see the module doc)."""

PATCH_MAX_STEPS = "fsmflow-max-steps-fails"
"""Marks runs that close as a Temporal failure when they end on ``max_steps``.

Runs that ended on ``max_steps`` before it completed; their histories replay so."""

DEFAULT_FALLBACK_MESSAGE = "Sorry, I could not process that. Could you say it again?"

LAST_CALL = timedelta(seconds=2)
"""The least time a conversation turn keeps for a last model call before its deadline."""


def _failure(error: BaseException) -> tuple[str, str]:
    """The type and innermost message of an activity failure."""
    cause = error.__cause__ if isinstance(error, ActivityError) and error.__cause__ else error
    if isinstance(cause, ApplicationError):
        return cause.type or "", cause.message
    if isinstance(cause, TimeoutError):
        return "Timeout", f"the call timed out ({cause.type.name.lower() if cause.type else ''})"
    return type(cause).__name__, str(getattr(cause, "message", None) or cause)


def _snapshot_of(carried: Carried, chain_id: str) -> RunSnapshot:
    """A snapshot of what a run from before snapshots carried across continue-as-new."""
    return RunSnapshot(
        agent=ResolvedDefinition(
            definition=carried.definition,
            definition_hash=carried.definition_hash,
            source=carried.source,
        ),
        limits=carried.limits,
        tools=dict(carried.tools),
        chain_id=carried.chain_id or chain_id,
        run=carried.run,
        dialogue=tuple(carried.history),
        tokens=carried.total_tokens,
        gate_deadline=carried.gate_deadline,
    )


@workflow.defn(name="AgentWorkflow")
class AgentWorkflow:
    """An agent run: conversation (turn per message) or autonomous (turn after turn)."""

    @workflow.init
    def __init__(self, raw: Any) -> None:
        """Set up; the snapshot comes from the start (resolved) or the predecessor.

        The input is taken raw and checked here, so a malformed start input fails
        the run with a reason instead of failing its workflow tasks forever.
        """
        self._lock = asyncio.Lock()
        self._snapshot: RunSnapshot | None = None
        # Derived from the snapshot (parsed once per run of the chain).
        self._definition: AgentDefinition | None = None
        self._bundle_hash = ""
        # Transient: what the run is doing right now, for the status query.
        self._busy: Literal["model", "tool"] | None = None
        # Decisions signalled before the run resolved its definition.
        self._early: list[tuple[Decision, Any]] = []
        self._published: tuple[str, str, str] | None = None
        self._detailed = ""
        self._counters: dict[str, MetricCounter] = {}
        self._legacy = False
        # Handlers may run before ``run`` in a run's first task; what they change
        # is shown once ``run`` has started (where runs before snapshots showed it).
        self._running = False
        self._request: WorkflowInput | None = None
        self._refused = ""
        # Conversation messages being handled (or waiting for the lock): their
        # replies stream, so subscribers are detached only once they are done.
        self._messages = 0
        prior = self._take(raw)
        # The run's event stream: it registers its signal, update and queries here
        # (the library requires @workflow.init) and starts from the predecessor's log.
        self._events = RunEvents(
            WorkflowStream(prior), base_offset=prior.base_offset if prior is not None else 0
        )

    def _take(self, raw: Any) -> WorkflowStreamState | None:
        """Check the input; restore a handed-over snapshot; the stream state handed with it."""
        try:
            self._request = WorkflowInput.model_validate(raw)
        except ValidationError as exc:
            self._refused = f"invalid start input: {validation_problem(exc, 'input')}"
            return None
        info = workflow.info()
        handed = self._request.snapshot
        if handed is not None and not handed_over(handed, info.continued_run_id):
            handed = None  # written by a caller: run() refuses it
        carried = self._request.carried
        if carried is not None and info.continued_run_id and info.attempt == 1:
            # Runs before snapshots handed this over (it names no predecessor); a
            # workflow retry restarts with the caller's input, so it is not one.
            if not info.cron_schedule:
                handed = _snapshot_of(carried, info.first_execution_run_id)
        if handed is not None:
            # Restored before any handler runs: a signal or update in the first task
            # of a continued run finds the run where its predecessor left it.
            if handed.version > SNAPSHOT_VERSION:
                # Not the run's fault: fail this task, so a newer worker takes it.
                raise RuntimeError(
                    f"the run's snapshot has format {handed.version}; this worker reads "
                    f"up to {SNAPSHOT_VERSION}: run it on a worker of a newer fsmflow"
                )
            self._restore(handed)
            if handed is self._request.snapshot:
                return self._request.stream
        return None

    # ----------------------------------------------------------------- main loop

    @workflow.run
    async def run(self, raw: Any) -> AgentResult:
        """Drive the run until it ends; continue as new before history grows large."""
        self._running = True
        self._legacy = not workflow.patched(PATCH_SNAPSHOT)
        request = self._request
        if request is None:
            self._refuse(self._refused, "InputRefused")
        handed = request.snapshot is not None or request.carried is not None
        if handed and self._snapshot is None:
            self._refuse(
                "the start input holds a run snapshot, which only fsmflow itself passes "
                'when a run continues as new; start a run with "agent" or "definition"',
                "InputRefused",
            )
        if request.stream is not None and self._snapshot is None:
            self._refuse(
                "the start input holds a stream state, which only fsmflow itself passes "
                'when a run continues as new; start a run with "agent" or "definition"',
                "InputRefused",
            )
        if not handed:
            await self._start(request)
        self._publish()
        for kind, raw in self._early:
            if self._legacy:
                workflow.logger.warning("%s signal before the run started: ignored", kind)
            else:
                self._record_signal(kind, raw)
        self._early.clear()
        definition = self._require_definition()
        while not self._state().ended:
            if self._should_continue_as_new():
                await self._close_stream(ending=False)
                if not self._state().ended:
                    carried = carry(self._snap(), workflow.info().run_id)
                    workflow.continue_as_new(
                        WorkflowInput(snapshot=carried, stream=self._events.hand_over())
                    )
            elif self._state().status == "awaiting_approval":
                await self._await_decision()
            elif definition.mode == "autonomous":
                await self._autonomous_turn()
            else:
                await workflow.wait_condition(
                    lambda: self._state().status != "active" or self._should_continue_as_new()
                )
        await self._close_stream(ending=True)
        result = self._result()
        if result.status == "failed" and not self._legacy:
            # A failed agent run is a failed workflow: red in the Web UI, found by
            # ExecutionStatus="Failed"; the details hold the result with its trace.
            raise ApplicationError(
                f"agent run failed: {result.end_reason}",
                result,
                type="AgentRunFailed",
                non_retryable=True,
            )
        if result.status == "max_steps" and workflow.patched(PATCH_MAX_STEPS):
            # Out of steps before a terminal state: the agent did not finish, so
            # the workflow does not look like a success either.
            raise ApplicationError(
                f"agent run stopped: {result.end_reason}",
                result,
                type="AgentRunStopped",
                non_retryable=True,
            )
        return result

    async def _close_stream(self, *, ending: bool) -> None:
        """Wait for the handlers, detaching the stream's subscribers (before the run closes).

        Messages are answered first, their replies streaming to subscribers still
        attached (and, when the run has ended, ``ended`` is its last event); then
        waiting polls are released (a subscriber follows the chain to the next
        run, or reads what is left of this one) and the run waits for every
        handler, as it always did.
        """
        await workflow.wait_condition(lambda: self._messages == 0 and not self._lock.locked())
        run = self._state()
        if ending:
            self._events.publish(
                events.ended(run.state, run.status, run.end_reason or "", step=run.step)
            )
        self._events.detach()
        await workflow.wait_condition(
            lambda: workflow.all_handlers_finished() and not self._lock.locked()
        )

    async def _start(self, request: AgentWorkflowInput) -> None:
        source = request.agent or "inline definition"
        try:
            resolved = await workflow.execute_activity(
                "fsmflow.resolve_definition",
                ResolveDefinitionInput(agent=request.agent, definition=request.definition),
                result_type=ResolvedRun,
                start_to_close_timeout=policies.RESOLVE_TIMEOUT,
                retry_policy=policies.RESOLVE_RETRY,
                summary=f"resolve definition: {source}",
            )
        except ActivityError as exc:
            if is_cancelled_exception(exc) and not self._legacy:
                raise
            message = f"definition refused: {_failure(exc)[1]}"
            self._refuse(message, "DefinitionRefused", request.agent)
        # Checked by the activity; on replay, by the code of its day (see RECORDED).
        definition = AgentDefinition.model_validate(
            resolved.definition.definition, context=RECORDED
        )
        try:
            run = start_run(definition, request.context)
        except ContextError as exc:
            message = f"initial context refused: {exc}"
            self._refuse(message, "ContextRefused", definition.name)
        greeting = (
            (DialogueTurn(role="agent", text=definition.greeting, state=run.state),)
            if definition.greeting and definition.mode == "conversation"
            else ()
        )
        self._set(
            RunSnapshot(
                agent=resolved.definition,
                limits=resolved.limits,
                tools=dict(resolved.tools),
                chain_id=workflow.info().first_execution_run_id,
                task=request.task,
                run=run,
                dialogue=greeting,
            )
        )
        workflow.logger.info(
            "run started: agent %s v%s (%s)",
            definition.name,
            definition.version,
            resolved.definition.definition_hash[:12],
        )

    def _refuse(self, message: str, kind: str, agent: str | None = None) -> NoReturn:
        """Fail a run refused before it started, findable as ``FsmStatus='failed'``."""
        if not self._legacy:
            attributes = [FSM_STATUS.value_set("failed")]
            if agent:
                attributes.append(FSM_AGENT.value_set(agent[:100]))
            workflow.upsert_search_attributes(attributes)
        self._events.publish(events.ended("", "failed", message))
        self._events.detach()
        raise ApplicationError(message, type=kind, non_retryable=True) from None

    def _should_continue_as_new(self) -> bool:
        return (
            self._snap().turns >= self._snap().limits.continue_as_new_after
            or workflow.info().is_continue_as_new_suggested()
        )

    # ------------------------------------------------------------ the snapshot

    def _snap(self) -> RunSnapshot:
        if self._snapshot is None:
            raise ApplicationError("the run has not started yet (resolving its definition)")
        return self._snapshot

    def _state(self) -> RunState:
        return self._snap().run

    def _require_definition(self) -> AgentDefinition:
        if self._definition is None:
            raise ApplicationError("the run has not started yet (resolving its definition)")
        return self._definition

    def _restore(self, snapshot: RunSnapshot) -> None:
        """Hold a snapshot, parsing its definition when it is a new one."""
        if self._snapshot is None or snapshot.agent is not self._snapshot.agent:
            # Recorded definitions were checked when their run resolved them; a
            # check added since must not keep a running run from loading.
            self._definition = AgentDefinition.model_validate(
                snapshot.agent.definition, context=RECORDED
            )
            self._bundle_hash = bundle_hash(snapshot.agent.definition, snapshot.tools)
        self._snapshot = snapshot

    def _set(self, snapshot: RunSnapshot) -> None:
        """Replace the snapshot whole, and show where the run is (and on its stream)."""
        before = self._snapshot.run if self._snapshot is not None else None
        self._restore(bounded(snapshot))
        self._events.publish(*events.run_changed(before, self._snap().run))
        self._publish()

    def _set_run(self, run: RunState) -> None:
        self._set(self._snap().model_copy(update={"run": run}))

    def _publish(self) -> None:
        """Show where the run is: search attributes (Web UI filters) and details."""
        if not self._running:
            return
        snapshot = self._snap()
        definition = self._require_definition()
        run = snapshot.run
        status = fsm_status(snapshot)
        key = (run.state, run.status, status)
        if key != self._published:
            self._published = key
            workflow.upsert_search_attributes(
                [
                    FSM_STATE.value_set(run.state),
                    FSM_AGENT.value_set(definition.name),
                    FSM_AWAITING_APPROVAL.value_set(run.status == "awaiting_approval"),
                    FSM_STATUS.value_set(status),
                ]
            )
        text = details(definition, snapshot)
        if text != self._detailed:
            # Details are metadata, not a command: kept current (step, a waiting
            # run's attempts and last error) at no cost to the history.
            self._detailed = text
            workflow.set_current_details(text)

    # ----------------------------------------------------------------- metrics

    def _count(self, name: str, value: int = 1, **labels: str) -> None:
        """Add to an fsmflow counter (Temporal's meter: not emitted during replay)."""
        if value <= 0:
            return
        counter = self._counters.get(name)
        if counter is None:
            counter = self._counters[name] = workflow.metric_meter().create_counter(name)
        definition = self._definition
        counter.add(value, {"agent": definition.name if definition else "", **labels})

    # ------------------------------------------------------------- model turns

    async def _ask(
        self, deadline: datetime | None, *, turn: str = "", message_id: str = ""
    ) -> LlmTurnOutput:
        """One model call for the run's current state (the activity renders the prompt).

        With a ``turn`` id, the activity publishes the reply's message on the run's
        stream as it is generated (conversation turns).
        """
        snapshot = self._snap()
        definition = self._require_definition()
        run = snapshot.run
        progress = snapshot.progress
        fallback = use_fallback(snapshot.limits, progress)
        label = f"llm turn: {run.state}"
        if progress is not None and progress.invalid:
            label += f" (re-ask {progress.invalid})"
        request = LlmTurnInput(
            bundle_hash=self._bundle_hash,
            # Secret values stay out of the activity input (and so out of every
            # turn's history event): the prompt shows them redacted anyway.
            run=run.model_copy(update={"trace": (), "context": redact(definition, run.context)}),
            dialogue=dialogue_window(
                definition, run, snapshot.dialogue, dropped=snapshot.dialogue_dropped
            ),
            task=snapshot.task,
            feedback=progress.feedback if progress is not None else "",
            rejected_reply=progress.rejected_reply if progress is not None else "",
            fallback=fallback and not self._legacy,
            label=f"{definition.name}/{run.state}",
            turn=turn,
            message_id=message_id,
            reask=progress.invalid if progress is not None else 0,
        )
        self._busy = "model"
        try:
            while True:
                timeout = policies.LLM_TIMEOUT
                if deadline is not None:
                    timeout = min(timeout, max(deadline - workflow.now(), timedelta(seconds=1)))
                try:
                    return await workflow.execute_activity(
                        "fsmflow.llm_turn",
                        request,
                        result_type=LlmTurnOutput,
                        start_to_close_timeout=timeout,
                        schedule_to_close_timeout=timeout if deadline is not None else None,
                        heartbeat_timeout=policies.LLM_HEARTBEAT_TIMEOUT,
                        retry_policy=policies.LEGACY_LLM_RETRY
                        if self._legacy
                        else policies.LLM_RETRY,
                        summary=label,
                    )
                except ActivityError as exc:
                    if _failure(exc)[0] != "BundleMissing" or request.bundle is not None:
                        raise
                    # This worker has not seen the run's definition: send it once.
                    bundle = AgentBundle(definition=snapshot.agent.definition, tools=snapshot.tools)
                    request = request.model_copy(update={"bundle": bundle})
        finally:
            self._busy = None

    async def _decide_turn(
        self, *, conversation: bool, since: datetime | None = None, message_id: str = ""
    ) -> Judgement | str | None:
        """Ask the model until a reply is applied (a turn) or allowed (a tool call).

        Failures escalate as ``fsm.judge`` decides: re-asks with the reason, then
        the fallback model, then (for a model that is down or keeps replying
        invalid turns) a durable pause and another round, without limit in an
        autonomous run; the state's ``on_invalid`` rule may fail or move the run
        instead. A conversation turn gives up at its deadline.

        Args:
            conversation: A message's turn (bounded) rather than an autonomous one.
            since: When the message arrived: a turn's bound runs from then, also
                while earlier messages are being answered.
            message_id: The update id of the message (on the reply's stream events).

        Returns:
            The judgement of the applied reply; or why the turn ended without one
            (the run may have ended or moved); or None when an autonomous run
            should continue as new before it waits any longer.
        """
        limits = self._snap().limits
        deadline = (
            (since or workflow.now()) + timedelta(seconds=limits.turn_timeout_seconds)
            if conversation and not self._legacy
            else None
        )
        self._count("fsmflow_turns", state=self._state().state)
        while True:
            snapshot = self._snap()
            definition = self._require_definition()
            wait = snapshot.progress.wait if snapshot.progress is not None else None
            if deadline is not None and workflow.now() >= deadline:
                progress = snapshot.progress or TurnProgress()
                why = wait.last_error if wait is not None else progress.feedback
                within = f"no valid reply within {limits.turn_timeout_seconds:g} s"
                return f"{within}: {why}" if why else within
            if wait is not None and wait.retry_at is not None:
                pause = wait.retry_at - workflow.now()
                if deadline is not None:
                    # A conversation turn pauses no longer than its deadline allows
                    # and makes a last call with the time that is left.
                    left = deadline - workflow.now() - LAST_CALL
                    if left <= timedelta(0):
                        return f"no valid reply within {limits.turn_timeout_seconds:g} s: " + (
                            wait.last_error
                        )
                    pause = min(pause, left)
                elif self._should_continue_as_new():
                    return None
                if pause > timedelta(0):
                    await workflow.sleep(pause, summary=f"waiting for the model ({wait.kind})")
            reason = no_turn_reason(definition, snapshot.run, snapshot.tools)
            if reason is not None:
                return reason
            if (snapshot.progress or TurnProgress()).invalid:
                self._count("fsmflow_reasks", state=snapshot.run.state)
            calls = snapshot.model_calls + 1
            self._set(snapshot.model_copy(update={"model_calls": calls}))
            # Only a conversation's reply has a message to stream.
            turn = events.turn_id(snapshot.run.step, calls) if conversation else ""
            try:
                reply = await self._ask(deadline, turn=turn, message_id=message_id)
            except ActivityError as exc:
                if is_cancelled_exception(exc) and not self._legacy:
                    raise  # the run is being cancelled: not a model failure
                failure_type, message = _failure(exc)
                if turn:
                    # The call may have streamed before it failed (a killed worker,
                    # a deadline): what it showed is void.
                    why = "the model call failed; the turn goes on without it"
                    self._events.publish(events.reset(turn, why, message_id=message_id))
                self._count("fsmflow_rejections", state=snapshot.run.state, reason="model_error")
                if self._legacy:
                    reason = f"model call failed: {message}"
                    self._set_run(record_rejection(self._state(), reason))
                    return reason
                past = deadline is not None and workflow.now() >= deadline
                escalation = model_failed(
                    definition,
                    self._snap(),
                    failure_type,
                    message,
                    workflow.now(),
                    conversation=conversation,
                    past_deadline=past,
                )
            else:
                tokens = self._snap().tokens + reply.tokens
                self._set(self._snap().model_copy(update={"tokens": tokens}))
                judgement = self._judge(reply)
                if judgement.accepted:
                    self._set(self._snap().model_copy(update={"progress": None}))
                    return judgement
                if turn and reply.streamed:
                    # The activity's own check let it stream; the engine said no.
                    why = f"the reply was rejected ({judgement.rejection}); asking again"
                    self._events.publish(events.reset(turn, why, message_id=message_id))
                escalation = reply_rejected(
                    definition,
                    self._snap(),
                    judgement.problem,
                    workflow.now(),
                    can_wait=not conversation and not self._legacy,
                    reply=rejected_text(definition, reply),
                )
            self._set(escalation.snapshot)
            if escalation.ends_turn is not None:
                return escalation.ends_turn

    def _judge(self, reply: LlmTurnOutput) -> Judgement:
        """Let the engine judge a reply; the snapshot takes the run it returns."""
        definition = self._require_definition()
        before = self._state()
        self._count("fsmflow_tokens", reply.tokens, state=before.state, model=reply.model)
        self._count(
            "fsmflow_cached_tokens", reply.cached_tokens, state=before.state, model=reply.model
        )
        judgement = judge_reply(definition, before, reply, self._snap().tools)
        self._set_run(judgement.run)
        if judgement.rejection is not None:
            self._count("fsmflow_rejections", state=before.state, reason=judgement.rejection)
        elif judgement.turn is not None:
            target = judgement.turn.target_state
            self._count("fsmflow_transitions", from_state=before.state, to_state=target)
        return judgement

    async def _autonomous_turn(self) -> None:
        before = self._state()
        outcome = await self._decide_turn(conversation=False)
        if outcome is None:
            return  # continue as new first; the wait goes on in the next run
        self._set(self._snap().model_copy(update={"turns": self._snap().turns + 1}))
        if isinstance(outcome, str):
            if not self._state().ended and self._state().state == before.state:
                self._set_run(fail_run(self._state(), f"in state {before.state!r}: {outcome}"))
            return
        if outcome.call is not None:
            await self._run_tool(outcome.call, outcome.usage)
            return
        self._set(after_autonomous_turn(self._require_definition(), before, self._snap()))

    # ------------------------------------------------------------------ tools

    async def _run_tool(self, call: ToolCallAction, usage: Usage) -> None:
        """Execute an allowed call as an activity; its result is the next prompt's news."""
        definition = self._require_definition()
        snapshot = self._snap()
        run = snapshot.run
        info = snapshot.tools[call.tool]
        workflow_id = workflow.info().workflow_id
        request = RunToolInput(
            tool=call.tool,
            arguments=call.arguments,
            idempotency_key=tool_call_key(workflow_id, snapshot.chain_id, run, call),
            workflow_id=workflow_id,
            chain_id=snapshot.chain_id,
            step=run.step,
            call_index=run.tool_calls,
            writes=info.writes,
            label=f"{definition.name}/{run.state}",
        )
        self._events.publish(
            events.tool_called(call.tool, call.arguments, state=run.state, step=run.step)
        )
        while True:
            self._busy = "tool"
            try:
                output = await workflow.execute_activity(
                    "fsmflow.run_tool",
                    request,
                    result_type=ToolOutput,
                    start_to_close_timeout=timedelta(seconds=info.timeout_seconds),
                    heartbeat_timeout=timedelta(seconds=info.heartbeat_seconds),
                    retry_policy=policies.tool_retry(info.max_attempts),
                    summary=f"tool: {call.tool} ({run.state})",
                )
                break
            except ActivityError as exc:
                if is_cancelled_exception(exc) and not self._legacy:
                    raise  # the run is being cancelled: not a tool failure
                failure_type, message = _failure(exc)
                escalation = tool_failed(
                    self._snap(),
                    call,
                    usage,
                    failure_type,
                    message,
                    workflow.now(),
                    can_wait=not self._legacy,
                )
                self._set(escalation.snapshot)
                progress = escalation.snapshot.progress
                if escalation.ends_turn is None and progress and progress.wait:
                    # A rolling deploy: wait for a worker that has the tool, a while;
                    # a store outage: wait for the store, as long as it takes.
                    assert progress.wait.retry_at is not None
                    await workflow.sleep(
                        progress.wait.retry_at - workflow.now(),
                        summary=(
                            f"waiting for the store of tool {call.tool}"
                            if progress.wait.kind == "store"
                            else f"waiting for a worker with tool {call.tool}"
                        ),
                    )
                    continue
                self._count("fsmflow_tool_calls", state=run.state, tool=call.tool, outcome="failed")
                self._events.publish(
                    events.tool_returned(
                        call.tool, ok=False, text=message, state=run.state, step=run.step
                    )
                )
                return
            finally:
                self._busy = None
        outcome = "ok" if output.ok else "tool_error"
        self._count("fsmflow_tool_calls", state=run.state, tool=call.tool, outcome=outcome)
        account = f"ok, {output.result_chars} chars" if output.ok else output.text[:200]
        if output.artifacts:
            account += f"; artifacts: {', '.join(output.artifacts)}"
        self._events.publish(
            events.tool_returned(
                call.tool, ok=output.ok, text=output.text, state=run.state, step=run.step
            )
        )
        self._set(
            after_tool_call(
                definition,
                self._snap(),
                call,
                usage,
                ok=output.ok,
                text=output.text,
                outcome=account,
                artifacts=output.artifacts,
                values=output.values,
            )
        )

    # ---------------------------------------------------------- conversation

    @workflow.update
    async def send_message(self, message: MessageInput) -> Reply:
        """Handle one user message; returns the agent's reply and the state after it.

        The update id makes a message idempotent: a retried update with the id of
        an answered message returns that reply and changes nothing.
        """
        update = workflow.current_update_info()
        update_id = update.id if update is not None else None
        arrived = workflow.now()
        self._messages += 1
        try:
            return await self._answer(message, update_id, arrived)
        finally:
            self._messages -= 1

    async def _answer(
        self, message: MessageInput, update_id: str | None, arrived: datetime
    ) -> Reply:
        async with self._lock:
            await workflow.wait_condition(lambda: self._snapshot is not None)
            known = answered_reply(self._snap(), update_id)
            if known is not None:
                return known
            # The run may have moved on while this message waited for the lock.
            problem = self._message_problem(message)
            if problem is not None:
                raise ApplicationError(problem, type="MessageRejected", non_retryable=True)
            self._set(push_dialogue(self._snap(), DialogueTurn(role="user", text=message.text)))
            asked_in = self._state().state
            outcome = await self._decide_turn(
                conversation=True, since=arrived, message_id=update_id or ""
            )
            snapshot = self._snap()
            self._set(snapshot.model_copy(update={"turns": snapshot.turns + 1}))
            if isinstance(outcome, Judgement) and outcome.turn is not None:
                text, reason = outcome.turn.message, ""
            else:
                reason = outcome if isinstance(outcome, str) else "no valid turn"
                state = self._require_definition().states[asked_in]
                text = state.fallback_message or DEFAULT_FALLBACK_MESSAGE
                self._set(unanswered(self._snap(), reason))
            # Stamped with the state the reply was written in, not the one it led to.
            reply_turn = DialogueTurn(role="agent", text=text, state=asked_in)
            self._set(push_dialogue(self._snap(), reply_turn))
            run = self._state()
            reply = Reply(
                message=text,
                state=run.state,
                status=run.status,
                accepted=not reason,
                step=run.step,
                # What happened, not the endpoint's details (those are in the trace).
                reason=reason.split(":", 1)[0],
            )
            self._set(remember_reply(self._snap(), update_id, reply))
            self._events.publish(events.replied(reply, update_id or ""))
            return reply

    @send_message.validator
    def _validate_message(self, message: MessageInput) -> None:
        update = workflow.current_update_info()
        if self._snapshot is not None and update is not None:
            if answered_reply(self._snapshot, update.id) is not None:
                return  # a retry of an answered message: the handler returns its reply
        problem = self._message_problem(message)
        if problem is not None:
            raise ValueError(problem)

    def _message_problem(self, message: MessageInput) -> str | None:
        limits = self._snapshot.limits if self._snapshot is not None else None
        if not message.text.strip():
            return "the message is empty"
        if limits is not None and len(message.text) > limits.max_message_chars:
            return (
                f"the message has {len(message.text)} characters; "
                f"the limit is {limits.max_message_chars}"
            )
        if self._definition is not None and self._definition.mode == "autonomous":
            return "this is an autonomous run; it takes no messages"
        run = self._snapshot.run if self._snapshot is not None else None
        if run is not None and run.ended:
            return f"the run has ended ({run.end_reason})"
        if run is not None and run.status == "awaiting_approval":
            return f"the run is waiting for an approval decision in state {run.state!r}"
        return None

    # --------------------------------------------------------------- approval

    async def _await_decision(self) -> None:
        definition = self._require_definition()
        run = self._state()
        gate = definition.states[run.state].approval
        assert gate is not None
        timeout = None
        if gate.timeout_seconds is not None:
            if self._snap().gate_deadline is None:
                deadline = workflow.now() + timedelta(seconds=gate.timeout_seconds)
                self._set(self._snap().model_copy(update={"gate_deadline": deadline}))
            deadline = self._snap().gate_deadline
            assert deadline is not None
            timeout = max(deadline - workflow.now(), timedelta(0))
        try:
            await workflow.wait_condition(
                lambda: self._snap().pending is not None,
                timeout=timeout,
                timeout_summary=f"approval timeout: {run.state} -> {gate.on_timeout}",
            )
        except builtins.TimeoutError:
            current = self._state()
            pending = self._snap().pending
            if pending is not None and not self._legacy:
                # A decision that arrived with the timer: the timeout came first.
                reason = f"ignored: the gate {run.state!r} timed out first"
                current = record_rejection(
                    current, reason, kind=pending.decision, by=pending.by or None
                )
            timed_out = apply_decision(definition, current, "timeout").run
            self._events.publish(
                events.decided(run.state, "timeout", by="", comment="", step=current.step)
            )
            changes = {"gate_deadline": None, "run": timed_out, "pending": None}
            if self._legacy:
                del changes["pending"]
            self._set(self._snap().model_copy(update=changes))
            return
        pending = self._snap().pending
        assert pending is not None
        result = apply_decision(
            definition,
            self._state(),
            pending.decision,
            by=pending.by or None,
            comment=pending.comment,
        )
        changes: dict[str, Any] = {"pending": None, "run": result.run}
        if result.accepted:
            changes["gate_deadline"] = None
            noted = note_decision(
                self._snap().model_copy(update={"run": result.run}),
                run.state,
                pending.decision,
                pending.by,
                pending.comment,
            )
            changes["dialogue"] = noted.dialogue
            changes["dialogue_dropped"] = noted.dialogue_dropped
            self._events.publish(
                events.decided(
                    run.state,
                    pending.decision,
                    by=pending.by,
                    comment=pending.comment,
                    step=self._state().step,
                )
            )
        self._set(self._snap().model_copy(update=changes))

    def _record_signal(self, kind: Decision, raw: Any) -> None:
        """Record a decision signal; one that does not fit is traced as refused.

        Signal inputs are taken raw: a signal cannot be refused like an update, and
        one that failed to decode would vanish without a trace.
        """
        snapshot = self._snapshot
        if snapshot is None:
            # Not started yet (resolving its definition): judged once it has.
            self._early.append((kind, raw))
            return
        run = snapshot.run
        try:
            decision = DecisionInput.model_validate({} if raw is None else raw)
        except ValidationError as exc:
            reason = f"{kind} signal refused: {validation_problem(exc, 'input')}"
            self._set_run(record_rejection(run, reason, kind=kind))
            return
        by = decision.by or None
        if snapshot.pending is not None:
            reason = f"ignored: a decision is already pending at {run.state!r}"
            self._set_run(record_rejection(run, reason, kind=kind, by=by))
        elif run.status != "awaiting_approval":
            # The engine rejects it ("no approval gate is open") and traces that.
            self._set_run(apply_decision(self._require_definition(), run, kind, by=by).run)
        else:
            assert kind != "timeout"
            pending = PendingDecision(decision=kind, by=decision.by, comment=decision.comment)
            self._set(snapshot.model_copy(update={"pending": pending}))

    @workflow.signal
    def approve(self, raw: Any = None) -> None:
        """Approve at the open gate: ``{"by": "...", "comment": "..."}`` (the run applies it)."""
        self._record_signal("approve", raw)

    @workflow.signal
    def reject(self, raw: Any = None) -> None:
        """Reject at the open gate: ``{"by": "...", "comment": "..."}`` (the run applies it)."""
        self._record_signal("reject", raw)

    @workflow.update
    async def decide(self, decision: DecideInput) -> DecisionResult:
        """Approve or reject at the open gate; returns where the run went."""
        pending = PendingDecision(
            decision=decision.decision, by=decision.by, comment=decision.comment
        )
        self._set(self._snap().model_copy(update={"pending": pending}))
        await workflow.wait_condition(lambda: self._snap().pending is None)
        run = self._state()
        return DecisionResult(state=run.state, status=run.status)

    @decide.validator
    def _validate_decision(self, decision: DecideInput) -> None:
        snapshot = self._snapshot
        run = snapshot.run if snapshot is not None else None
        if run is None or run.status != "awaiting_approval":
            where = f" (state {run.state!r}, {run.status})" if run is not None else ""
            raise ValueError(f"no approval gate is open{where}")
        assert snapshot is not None
        if snapshot.pending is not None:
            raise ValueError("a decision is already being applied")
        gate = self._require_definition().states[run.state].approval
        if gate is not None and gate.approvers and decision.by not in gate.approvers:
            raise ValueError(
                f"{decision.by!r} may not decide at {run.state!r} "
                f"(approvers: {', '.join(gate.approvers)})"
            )

    # ----------------------------------------------------------------- queries

    @workflow.query
    def status(self) -> AgentStatus:
        """Where the run is and what it waits for."""
        snapshot = self._snap()
        run = snapshot.run
        definition = self._require_definition()
        wait = snapshot.progress.wait if snapshot.progress is not None else None
        if run.ended:
            waiting = "nothing"
        elif run.status == "awaiting_approval":
            waiting = "approval"
        elif self._busy is not None or wait is not None:
            store = wait is not None and wait.kind == "store"
            waiting = self._busy or ("tool" if store else "model")
        else:
            waiting = "message" if definition.mode == "conversation" else "model"
        pending = snapshot.pending
        said = next((t.text for t in reversed(snapshot.dialogue) if t.role == "agent"), "")
        return AgentStatus(
            agent=definition.name,
            version=definition.version,
            definition_hash=snapshot.agent.definition_hash,
            state=run.state,
            status=run.status,
            step=run.step,
            max_steps=definition.max_steps,
            waiting_for=waiting,  # type: ignore[arg-type]
            end_reason=run.end_reason,
            total_tokens=snapshot.tokens,
            turns=snapshot.turns,
            fsm_status=fsm_status(snapshot),
            waiting_since=wait.since if wait is not None else None,
            model_failures=wait.failures if wait is not None else 0,
            last_error=wait.last_error if wait is not None else "",
            pending_decision=f"{pending.decision} by {pending.by or 'anonymous'}"
            if pending is not None
            else None,
            last_reply=said,
        )

    @workflow.query
    def trace(self) -> list[TraceEntry]:
        """Every judged turn and decision of this run of the chain."""
        return list(self._state().trace)

    @workflow.query
    def context(self) -> dict[str, Any]:
        """Context values, with keys declared ``secret`` redacted."""
        return redact(self._require_definition(), self._state().context)

    def _result(self) -> AgentResult:
        snapshot = self._snap()
        run = snapshot.run
        definition = self._require_definition()
        return AgentResult(
            agent=definition.name,
            state=run.state,
            status=run.status,
            end_reason=run.end_reason,
            context=redact(definition, run.context),
            steps=run.step,
            total_tokens=snapshot.tokens,
            trace=list(run.trace),
        )
