"""``AgentWorkflow``: one execution per agent run; its deterministic code is the FSM.

The workflow is a thin shell: it feeds messages, decisions and model replies to the
pure engine in ``fsm`` and runs the effects (definition lookup, model calls) as
activities. Everything it decides is a function of its history, so a run resumes
exactly where it was after a worker crash.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    # Pure modules (no clock, randomness or I/O; see fsm/__init__.py) and pydantic
    # models. Passing them through keeps one copy of pydantic and jsonschema
    # instead of re-importing them in every workflow sandbox; they hold no state
    # between calls, so sharing them cannot leak anything across runs.
    from fsm.context import redact
    from fsm.engine import (
        ContextError,
        Decision,
        TurnParseError,
        allowed_targets,
        apply_decision,
        apply_turn,
        fail_run,
        parse_turn,
        record_rejection,
        record_tool_call,
        start_run,
        tool_call_problem,
    )
    from fsm.prompt import build_messages
    from fsm.turn_schema import turn_schema
    from schemas.activity import (
        LlmTurnInput,
        LlmTurnOutput,
        ResolvedDefinition,
        ResolveDefinitionInput,
        ResolvedRun,
        RunLimits,
        RunToolInput,
        ToolInfo,
        ToolOutput,
    )
    from schemas.definition import AgentDefinition
    from schemas.run import DialogueTurn, RunState, TraceEntry
    from schemas.turn import AutonomousDecision, ToolCallAction, TurnDecision
    from schemas.workflow import (
        AgentResult,
        AgentStatus,
        AgentWorkflowInput,
        Carried,
        DecideInput,
        DecisionInput,
        DecisionResult,
        MessageInput,
        Reply,
    )
    from workflows import policies

FSM_STATE = SearchAttributeKey.for_keyword("FsmState")
FSM_AGENT = SearchAttributeKey.for_keyword("FsmAgent")
FSM_AWAITING_APPROVAL = SearchAttributeKey.for_bool("FsmAwaitingApproval")
SEARCH_ATTRIBUTES = (FSM_STATE, FSM_AGENT, FSM_AWAITING_APPROVAL)
"""Register these on the server before any run starts (``fsmflow dev up`` and the
test fixtures do), or upserting them fails the workflow task."""

DEFAULT_FALLBACK_MESSAGE = "Sorry, I could not process that. Could you say it again?"


@dataclass(frozen=True)
class _AllowedCall:
    """A tool call the engine allowed, with what the model call that made it cost."""

    call: ToolCallAction
    usage: dict[str, Any]


class _NoTurn(Exception):
    """The state offers neither a move nor a callable tool (see ``turn_schema``)."""


def _failure_message(error: BaseException) -> str:
    """The innermost message of an activity failure, for traces and replies."""
    cause = error.__cause__ if isinstance(error, ActivityError) and error.__cause__ else error
    return str(getattr(cause, "message", None) or cause)


@workflow.defn(name="AgentWorkflow")
class AgentWorkflow:
    """An agent run: conversation (turn per message) or autonomous (turn after turn)."""

    @workflow.init
    def __init__(self, request: AgentWorkflowInput) -> None:
        """Set up state; a continued run restores what its predecessor carried."""
        self._request = request
        self._lock = asyncio.Lock()
        self._definition: AgentDefinition | None = None
        self._resolved: ResolvedDefinition | None = None
        self._limits = RunLimits()
        self._tools: dict[str, ToolInfo] = {}
        self._chain_id = workflow.info().first_execution_run_id
        self._run: RunState | None = None
        self._history: list[DialogueTurn] = []
        self._decision: tuple[Decision, str, str] | None = None
        self._gate_deadline: datetime | None = None
        self._tokens = 0
        self._turns = 0
        self._calling_model = False
        self._calling_tool = False
        self._last_call: tuple[str, str, str] | None = None
        self._published: tuple[str, str] | None = None
        carried = request.carried
        if carried is not None:
            self._resolved = ResolvedDefinition(
                definition=carried.definition,
                definition_hash=carried.definition_hash,
                source=carried.source,
            )
            self._definition = AgentDefinition.model_validate(carried.definition)
            self._limits = carried.limits
            self._tools = dict(carried.tools)
            self._chain_id = carried.chain_id or self._chain_id
            self._run = carried.run
            self._history = list(carried.history)
            self._tokens = carried.total_tokens
            self._gate_deadline = carried.gate_deadline

    # ----------------------------------------------------------------- main loop

    @workflow.run
    async def run(self, request: AgentWorkflowInput) -> AgentResult:
        """Drive the run until it ends; continue as new before history grows large."""
        if self._run is None:
            await self._start(request)
        self._publish()
        definition = self._require_definition()
        while not self._state().ended:
            if self._should_continue_as_new():
                await workflow.wait_condition(
                    lambda: workflow.all_handlers_finished() and not self._lock.locked()
                )
                if not self._state().ended:
                    workflow.continue_as_new(AgentWorkflowInput(carried=self._carry()))
            elif self._state().status == "awaiting_approval":
                await self._await_decision()
            elif definition.mode == "autonomous":
                await self._autonomous_turn()
            else:
                await workflow.wait_condition(
                    lambda: self._state().status != "active" or self._should_continue_as_new()
                )
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._result()

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
            raise ApplicationError(
                f"definition refused: {_failure_message(exc)}",
                type="DefinitionRefused",
                non_retryable=True,
            ) from None
        definition = AgentDefinition.model_validate(resolved.definition.definition)
        try:
            run = start_run(definition, request.context)
        except ContextError as exc:
            raise ApplicationError(
                f"initial context refused: {exc}", type="ContextRefused", non_retryable=True
            ) from None
        self._resolved = resolved.definition
        self._definition = definition
        self._limits = resolved.limits
        self._tools = dict(resolved.tools)
        self._run = run
        workflow.logger.info(
            "run started: agent %s v%s (%s)",
            definition.name,
            definition.version,
            resolved.definition.definition_hash[:12],
        )

    def _should_continue_as_new(self) -> bool:
        return (
            self._turns >= self._limits.continue_as_new_after
            or workflow.info().is_continue_as_new_suggested()
        )

    def _carry(self) -> Carried:
        run = self._state()
        resolved = self._resolved
        assert resolved is not None
        return Carried(
            definition=resolved.definition,
            definition_hash=resolved.definition_hash,
            source=resolved.source,
            limits=self._limits,
            tools=self._tools,
            chain_id=self._chain_id,
            run=run.model_copy(update={"trace": run.trace[-self._limits.trace_keep :]}),
            history=self._history[-self._limits.history_keep :],
            total_tokens=self._tokens,
            gate_deadline=self._gate_deadline,
        )

    # ------------------------------------------------------------ state helpers

    def _state(self) -> RunState:
        if self._run is None:
            raise ApplicationError("the run has not started yet (resolving its definition)")
        return self._run

    def _require_definition(self) -> AgentDefinition:
        if self._definition is None:
            raise ApplicationError("the run has not started yet (resolving its definition)")
        return self._definition

    def _set_run(self, run: RunState) -> None:
        self._run = run
        self._publish()

    def _publish(self) -> None:
        """Show where the run is: search attributes (Web UI filters) and details."""
        run = self._state()
        definition = self._require_definition()
        key = (run.state, run.status)
        if key == self._published:
            return
        self._published = key
        workflow.upsert_search_attributes(
            [
                FSM_STATE.value_set(run.state),
                FSM_AGENT.value_set(definition.name),
                FSM_AWAITING_APPROVAL.value_set(run.status == "awaiting_approval"),
            ]
        )
        details = f"**{definition.name}** in state **{run.state}** ({run.status})"
        details += f", step {run.step}/{definition.max_steps}"
        if run.end_reason:
            details += f": {run.end_reason}"
        workflow.set_current_details(details)

    # ----------------------------------------------------------------- metrics

    def _count(self, name: str, value: int = 1, **labels: str) -> None:
        """Add to an fsmflow counter (Temporal's meter: not emitted during replay)."""
        if value <= 0:
            return
        definition = self._definition
        attributes = {"agent": definition.name if definition else "", **labels}
        workflow.metric_meter().create_counter(name).add(value, attributes)

    # ------------------------------------------------------------- model turns

    async def _call_model(self, attempt: int, feedback: str) -> LlmTurnOutput:
        definition = self._require_definition()
        run = self._state()
        state = definition.states[run.state]
        label = f"llm turn: {run.state}" + (f" (re-ask {attempt - 1})" if attempt > 1 else "")
        try:
            schema = turn_schema(definition, run, self._tools)
        except ValueError as exc:
            raise _NoTurn(str(exc)) from None
        request = LlmTurnInput(
            tier=state.model,
            messages=build_messages(
                definition,
                run,
                self._history,
                task=self._request.task,
                feedback=feedback,
                tools=self._tools,
            ),
            schema_name=f"{definition.name}_{run.state}_turn",
            turn_schema=schema,
            label=f"{definition.name}/{run.state}",
        )
        self._calling_model = True
        try:
            return await workflow.execute_activity(
                "fsmflow.llm_turn",
                request,
                result_type=LlmTurnOutput,
                start_to_close_timeout=policies.LLM_TIMEOUT,
                heartbeat_timeout=policies.LLM_HEARTBEAT_TIMEOUT,
                retry_policy=policies.LLM_RETRY,
                summary=label,
            )
        finally:
            self._calling_model = False

    def _judge(self, output: LlmTurnOutput) -> tuple[TurnDecision | _AllowedCall | None, str]:
        """Parse and apply a reply; returns the applied turn (or allowed tool call)."""
        definition = self._require_definition()
        run = self._state()
        # What the call cost goes on whichever trace entry the reply produces.
        usage: dict[str, Any] = {
            "model": output.model,
            "tokens": output.tokens,
            "latency_ms": output.latency_ms,
        }
        self._count("fsmflow_tokens", output.tokens, state=run.state, model=output.model)
        if output.problem is not None:
            kind = "invalid_json" if "not valid JSON" in output.problem else "schema"
            self._count("fsmflow_rejections", state=run.state, reason=kind)
            self._set_run(record_rejection(run, output.problem, **usage))
            return None, output.problem
        try:
            parsed = parse_turn(definition, output.parsed or output.content)
        except TurnParseError as exc:
            self._count("fsmflow_rejections", state=run.state, reason="shape")
            reason = str(exc)
            self._set_run(record_rejection(run, reason, **usage))
            return None, reason
        if isinstance(parsed, AutonomousDecision) and isinstance(parsed.action, ToolCallAction):
            call = parsed.action
            problem = tool_call_problem(definition, run, call.tool, call.arguments, self._tools)
            if problem is None:
                return _AllowedCall(call, usage), ""
            self._count("fsmflow_rejections", state=run.state, reason="tool")
            self._set_run(
                record_rejection(
                    run, problem, target=run.state, kind="tool_call", tool=call.tool, **usage
                )
            )
            return None, problem
        if isinstance(parsed, AutonomousDecision):
            action = parsed.action
            assert not isinstance(action, ToolCallAction)
            turn = TurnDecision(
                target_state=action.target_state,
                context_update=action.context_update,
                reasoning=parsed.reasoning,
            )
        else:
            turn = parsed
        result = apply_turn(definition, run, turn, **usage)
        self._set_run(result.run)
        if not result.accepted:
            self._count("fsmflow_rejections", state=run.state, reason="engine")
            return None, result.reason
        self._count("fsmflow_transitions", from_state=run.state, to_state=turn.target_state)
        return turn, ""

    async def _valid_turn(self) -> tuple[TurnDecision | _AllowedCall | None, str]:
        """Ask the model until a reply is applied, re-asking with the reason."""
        feedback = ""
        self._count("fsmflow_turns", state=self._state().state)
        for attempt in range(1, self._limits.max_reasks + 2):
            if attempt > 1:
                self._count("fsmflow_reasks", state=self._state().state)
            try:
                output = await self._call_model(attempt, feedback)
            except ActivityError as exc:
                self._count("fsmflow_rejections", state=self._state().state, reason="model_error")
                reason = f"model call failed: {_failure_message(exc)}"
                self._set_run(record_rejection(self._state(), reason))
                return None, reason
            except _NoTurn as exc:
                return None, str(exc)
            self._tokens += output.tokens
            turn, feedback = self._judge(output)
            if turn is not None:
                return turn, ""
        attempts = self._limits.max_reasks + 1
        return None, f"no valid turn after {attempts} attempts; last problem: {feedback}"

    async def _autonomous_turn(self) -> None:
        before = self._state()
        turn, reason = await self._valid_turn()
        self._turns += 1
        if isinstance(turn, _AllowedCall):
            await self._run_tool(turn)
            return
        after = self._state()
        if turn is None:
            self._set_run(fail_run(after, f"in state {before.state!r}: {reason}"))
        elif after.state == before.state and after.context == before.context:
            # At temperature 0 an unchanged prompt gets the same reply again; say
            # so, so the next prompt differs and the model can make progress.
            self._history.append(
                DialogueTurn(
                    role="user",
                    text=f"Your last step stayed in {before.state!r} and changed nothing. "
                    "Make progress: fill in the keys this state collects, or move on.",
                )
            )
            del self._history[: -self._limits.history_keep]

    # ------------------------------------------------------------------ tools

    async def _run_tool(self, allowed: _AllowedCall) -> None:
        """Execute an allowed call as an activity; its result is the next prompt's news."""
        definition = self._require_definition()
        run = self._state()
        call = allowed.call
        info = self._tools[call.tool]
        workflow_id = workflow.info().workflow_id
        key = f"{workflow_id}/{self._chain_id}/{run.step}/{run.tool_calls}"
        self._calling_tool = True
        try:
            output = await workflow.execute_activity(
                "fsmflow.run_tool",
                RunToolInput(
                    tool=call.tool,
                    arguments=call.arguments,
                    idempotency_key=key,
                    workflow_id=workflow_id,
                    chain_id=self._chain_id,
                    step=run.step,
                    call_index=run.tool_calls,
                    writes=info.writes,
                    label=f"{definition.name}/{run.state}",
                ),
                result_type=ToolOutput,
                start_to_close_timeout=timedelta(seconds=info.timeout_seconds),
                heartbeat_timeout=timedelta(seconds=info.heartbeat_seconds),
                retry_policy=policies.tool_retry(info.max_attempts),
                summary=f"tool: {call.tool} ({run.state})",
            )
        except ActivityError as exc:
            reason = f"tool {call.tool!r} failed: {_failure_message(exc)}"
            self._count("fsmflow_tool_calls", state=run.state, tool=call.tool, outcome="failed")
            failed = record_rejection(
                run, reason, target=run.state, kind="tool_call", tool=call.tool, **allowed.usage
            )
            self._set_run(fail_run(failed, f"in state {run.state!r}: {reason}"))
            return
        finally:
            self._calling_tool = False
        outcome = "ok" if output.ok else "tool_error"
        self._count("fsmflow_tool_calls", state=run.state, tool=call.tool, outcome=outcome)
        account = f"ok, {output.result_chars} chars" if output.ok else output.text[:200]
        if output.artifacts:
            account += f"; artifacts: {', '.join(output.artifacts)}"
        self._set_run(
            record_tool_call(
                definition,
                run,
                call.tool,
                ok=output.ok,
                outcome=account,
                artifacts=output.artifacts,
                values=output.values,
                **allowed.usage,
            )
        )
        self._history.append(DialogueTurn(role="tool", text=f"{call.tool}: {output.text}"))
        signature = (run.state, call.tool, json.dumps(call.arguments, sort_keys=True))
        if signature == self._last_call:
            # The same call again gets the same result; say so (as for a stay that
            # changed nothing), so the next prompt differs and the model moves on.
            moves = ", ".join(allowed_targets(definition, self._state())) or "none yet"
            self._history.append(
                DialogueTurn(
                    role="user",
                    text=f"You called {call.tool} with the same arguments as before; its "
                    f"result is above. Make progress: move on (allowed: {moves}) or call "
                    "another tool.",
                )
            )
        self._last_call = signature
        del self._history[: -self._limits.history_keep]

    # ---------------------------------------------------------- conversation

    @workflow.update
    async def send_message(self, message: MessageInput) -> Reply:
        """Handle one user message; returns the agent's reply and the state after it."""
        async with self._lock:
            await workflow.wait_condition(lambda: self._run is not None)
            # The run may have moved on while this message waited for the lock.
            problem = self._message_problem(message)
            if problem is not None:
                raise ApplicationError(problem, type="MessageRejected", non_retryable=True)
            self._history.append(DialogueTurn(role="user", text=message.text))
            turn, _ = await self._valid_turn()
            self._turns += 1
            run = self._state()
            if isinstance(turn, TurnDecision):
                text = turn.message
            else:
                text = (
                    self._require_definition().states[run.state].fallback_message
                    or DEFAULT_FALLBACK_MESSAGE
                )
            self._history.append(DialogueTurn(role="agent", text=text))
            del self._history[: -self._limits.history_keep]
            return Reply(
                message=text,
                state=run.state,
                status=run.status,
                accepted=turn is not None,
                step=run.step,
            )

    @send_message.validator
    def _validate_message(self, message: MessageInput) -> None:
        problem = self._message_problem(message)
        if problem is not None:
            raise ValueError(problem)

    def _message_problem(self, message: MessageInput) -> str | None:
        if not message.text.strip():
            return "the message is empty"
        if len(message.text) > self._limits.max_message_chars:
            return (
                f"the message has {len(message.text)} characters; "
                f"the limit is {self._limits.max_message_chars}"
            )
        if self._definition is not None and self._definition.mode == "autonomous":
            return "this is an autonomous run; it takes no messages"
        run = self._run
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
            if self._gate_deadline is None:
                self._gate_deadline = workflow.now() + timedelta(seconds=gate.timeout_seconds)
            timeout = max(self._gate_deadline - workflow.now(), timedelta(0))
        try:
            await workflow.wait_condition(
                lambda: self._decision is not None,
                timeout=timeout,
                timeout_summary=f"approval timeout: {run.state} -> {gate.on_timeout}",
            )
        except TimeoutError:
            self._gate_deadline = None
            self._set_run(apply_decision(definition, run, "timeout").run)
            return
        assert self._decision is not None
        kind, by, comment = self._decision
        self._decision = None
        result = apply_decision(definition, self._state(), kind, by=by or None, comment=comment)
        if result.accepted:
            self._gate_deadline = None
        self._set_run(result.run)

    def _record_signal(self, kind: Decision, decision: DecisionInput) -> None:
        run = self._run
        by = decision.by or None
        if run is None:
            workflow.logger.warning("%s signal before the run started: ignored", kind)
        elif self._decision is not None:
            reason = f"ignored: a decision is already pending at {run.state!r}"
            self._set_run(record_rejection(run, reason, kind=kind, by=by))
        elif run.status != "awaiting_approval":
            # The engine rejects it ("no approval gate is open") and traces that.
            self._set_run(apply_decision(self._require_definition(), run, kind, by=by).run)
        else:
            self._decision = (kind, decision.by, decision.comment)

    @workflow.signal
    def approve(self, decision: DecisionInput) -> None:
        """Approve at the open gate (recorded; the run applies it)."""
        self._record_signal("approve", decision)

    @workflow.signal
    def reject(self, decision: DecisionInput) -> None:
        """Reject at the open gate (recorded; the run applies it)."""
        self._record_signal("reject", decision)

    @workflow.update
    async def decide(self, decision: DecideInput) -> DecisionResult:
        """Approve or reject at the open gate; returns where the run went."""
        self._decision = (decision.decision, decision.by, decision.comment)
        await workflow.wait_condition(lambda: self._decision is None)
        run = self._state()
        return DecisionResult(state=run.state, status=run.status)

    @decide.validator
    def _validate_decision(self, decision: DecideInput) -> None:
        run = self._run
        if run is None or run.status != "awaiting_approval":
            where = f" (state {run.state!r}, {run.status})" if run is not None else ""
            raise ValueError(f"no approval gate is open{where}")
        if self._decision is not None:
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
        run = self._state()
        definition = self._require_definition()
        if run.ended:
            waiting = "nothing"
        elif run.status == "awaiting_approval":
            waiting = "approval"
        elif self._calling_model:
            waiting = "model"
        elif self._calling_tool:
            waiting = "tool"
        else:
            waiting = "message" if definition.mode == "conversation" else "model"
        assert self._resolved is not None
        return AgentStatus(
            agent=definition.name,
            version=definition.version,
            definition_hash=self._resolved.definition_hash,
            state=run.state,
            status=run.status,
            step=run.step,
            max_steps=definition.max_steps,
            waiting_for=waiting,  # type: ignore[arg-type]
            end_reason=run.end_reason,
            total_tokens=self._tokens,
            turns=self._turns,
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
        run = self._state()
        definition = self._require_definition()
        return AgentResult(
            agent=definition.name,
            state=run.state,
            status=run.status,
            end_reason=run.end_reason,
            context=redact(definition, run.context),
            steps=run.step,
            total_tokens=self._tokens,
            trace=list(run.trace),
        )
