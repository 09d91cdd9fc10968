"""What the API does with Temporal: start, message, decide, look up and list runs.

A stateless client: everything comes from Temporal (the runs' queries, their
search attributes and histories), so any number of API processes can serve the
same runs. Who may do what is checked here, against what the run says about
itself (its agent, its open gate and that gate's approvers), before anything is
sent to it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import re
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateHandle,
    WorkflowUpdateStage,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from schemas.api import (
    DecisionRecorded,
    DecisionRequest,
    Gate,
    RunList,
    RunStarted,
    RunSummary,
    RunView,
    SendMessage,
    StartRun,
    TraceView,
)
from schemas.definition import RECORDED, AgentDefinition
from schemas.run import TraceEntry
from schemas.snapshot import FSM_STATUSES
from schemas.workflow import (
    AgentResult,
    AgentStatus,
    AgentWorkflowInput,
    DecisionInput,
    MessageInput,
    Reply,
)
from workers.api.auth import Identity
from workers.api.errors import ApiError, from_temporal, unreachable
from workers.client import connect, run_result, send_message, start_message
from workers.commands import explain, ui_link
from workers.settings import Settings

log = structlog.get_logger("fsmflow.api")

WORKFLOW_TYPE = "AgentWorkflow"
RESOLVE_ACTIVITY = "fsmflow.resolve_definition"
QUERY_TIMEOUT = timedelta(seconds=5)
"""How long a query waits for a worker to answer (then: the visibility fallback)."""
START_WAIT = 5.0
"""How long ``POST /v1/runs`` waits for the run to resolve its definition."""
HISTORY_SCAN = 1_000
"""Events read at most to find the definition a run recorded (it is among the first)."""
DEFINITIONS_KEPT = 256
"""Recorded definitions cached, by run: a run's definition never changes."""
_STATE = re.compile(r"[\w-]{1,100}")


@dataclass(frozen=True)
class RunFacts:
    """What ``describe`` says about a run: the execution and its search attributes."""

    id: str
    run_id: str
    status: WorkflowExecutionStatus | None
    agent: str | None
    state: str | None
    fsm_status: str | None
    awaiting_approval: bool

    @property
    def execution(self) -> str:
        """Temporal's status in lower case (``running``, ``completed``, ``failed``...)."""
        return self.status.name.lower() if self.status is not None else "unknown"

    @property
    def running(self) -> bool:
        """The execution is open."""
        return self.status == WorkflowExecutionStatus.RUNNING


def _facts(execution: WorkflowExecution) -> RunFacts:
    attributes = {pair.key.name: pair.value for pair in execution.typed_search_attributes}
    return RunFacts(
        id=execution.id,
        run_id=execution.run_id,
        status=execution.status,
        agent=_text(attributes.get("FsmAgent")),
        state=_text(attributes.get("FsmState")),
        fsm_status=_text(attributes.get("FsmStatus")),
        awaiting_approval=attributes.get("FsmAwaitingApproval") is True,
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object (or a list holding one first), else ``{}``.

    What a history holds was written by whoever started the run: read it warily.
    """
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, dict) else {}


def _definition_name(start: dict[str, Any]) -> str | None:
    """The agent a start input names: by name, inline, or in a handed-over snapshot."""
    if isinstance(start.get("agent"), str):
        return str(start["agent"])
    for definition in (
        start.get("definition"),
        _mapping(_mapping(start.get("snapshot")).get("agent")).get("definition"),
        _mapping(start.get("carried")).get("definition"),
    ):
        if isinstance(definition, dict) and isinstance(definition.get("name"), str):
            return str(definition["name"])
    return None


class Runs:
    """The API's Temporal side; one per process, connected on first use."""

    def __init__(
        self,
        settings: Settings,
        *,
        connector: Callable[[Settings], Awaitable[Client]] = connect,
    ) -> None:
        """Runs reached through a client made by ``connector`` (``workers.client.connect``)."""
        self.settings = settings
        self._connector = connector
        self._client: Client | None = None
        self._connecting = asyncio.Lock()
        self._definitions: OrderedDict[tuple[str, str], AgentDefinition | None] = OrderedDict()
        self.reply_timeout = max(2 * settings.turn_timeout_seconds, 30.0)
        """How long a message waits for its reply (the run's own bound, twice, at least 30 s)."""

    # ------------------------------------------------------------------ plumbing

    async def client(self) -> Client:
        """The Temporal client, connected on first use (503 while Temporal is unreachable)."""
        if self._client is None:
            async with self._connecting:
                if self._client is None:
                    try:
                        self._client = await self._connector(self.settings)
                    except RuntimeError as exc:
                        raise ApiError(503, str(exc)) from None
        return self._client

    def error(
        self, exc: BaseException, workflow_id: str | None = None, doing: str = ""
    ) -> ApiError:
        """The API error for a failed Temporal call."""
        return from_temporal(exc, workflow_id, doing=doing, address=self.settings.temporal_address)

    def handle(self, client: Client, workflow_id: str, run_id: str | None = None) -> Any:
        """A handle on a run (its newest run of the chain without ``run_id``)."""
        return client.get_workflow_handle(workflow_id, run_id=run_id, result_type=AgentResult)

    async def ready(self) -> None:
        """Raise an ``ApiError`` (503) unless Temporal answers (``/readyz``)."""
        client = await self.client()
        try:
            await client.workflow_service.get_system_info(
                _system_info_request(), timeout=timedelta(seconds=2)
            )
        except RPCError as exc:
            raise unreachable(self.settings.temporal_address, exc.message) from None

    # ------------------------------------------------------------- a run's facts

    async def facts(self, workflow_id: str) -> RunFacts:
        """The newest run of ``workflow_id`` as ``describe`` shows it (404 if none)."""
        client = await self.client()
        try:
            return _facts(await self.handle(client, workflow_id).describe())
        except RPCError as exc:
            raise self.error(exc, workflow_id) from None

    async def _start_input(self, workflow_id: str, run_id: str) -> dict[str, Any]:
        client = await self.client()
        handle = self.handle(client, workflow_id, run_id)
        async for event in handle.fetch_history_events(page_size=1):
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                payloads = list(event.workflow_execution_started_event_attributes.input.payloads)
                return _mapping(await client.data_converter.decode(payloads) if payloads else [])
            break
        return {}

    async def agent_of(self, facts: RunFacts) -> str | None:
        """The run's agent: ``FsmAgent``, or (not resolved yet) what its start input names."""
        if facts.agent is not None:
            return facts.agent
        try:
            return _definition_name(await self._start_input(facts.id, facts.run_id))
        except RPCError as exc:
            raise self.error(exc, facts.id) from None

    async def authorize(self, identity: Identity, facts: RunFacts) -> str | None:
        """Refuse (403) an identity restricted to other agents than the run's; the agent."""
        if identity.agents is None:
            return facts.agent
        agent = await self.agent_of(facts)
        if not identity.may_use(agent):
            raise ApiError(403, f"{identity.describe()} may not use agent {agent or '(unknown)'!r}")
        return agent

    async def definition(self, facts: RunFacts) -> AgentDefinition | None:
        """The definition the run recorded (from its history; no worker needed).

        A new run records it as the result of its first activity; a continued run
        finds it in the snapshot its start input carries. None while the run has
        not resolved it.
        """
        key = (facts.id, facts.run_id)
        if key in self._definitions:
            self._definitions.move_to_end(key)
            return self._definitions[key]
        try:
            found = await self._recorded_definition(facts)
        except RPCError as exc:
            raise self.error(exc, facts.id) from None
        if found is not None:
            self._definitions[key] = found
            while len(self._definitions) > DEFINITIONS_KEPT:
                self._definitions.popitem(last=False)
        return found

    async def _recorded_definition(self, facts: RunFacts) -> AgentDefinition | None:
        client = await self.client()
        handle = self.handle(client, facts.id, facts.run_id)
        resolve_id: int | None = None
        raw: Any = None
        seen = 0
        async for event in handle.fetch_history_events():
            seen += 1
            kind = event.event_type
            if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                payloads = list(event.workflow_execution_started_event_attributes.input.payloads)
                start = _mapping((await client.data_converter.decode(payloads))[0:1])
                handed = _mapping(start.get("snapshot"))
                raw = _mapping(handed.get("agent")).get("definition") or _mapping(
                    start.get("carried")
                ).get("definition")
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                attributes = event.activity_task_scheduled_event_attributes
                if attributes.activity_type.name == RESOLVE_ACTIVITY:
                    resolve_id = event.event_id
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                attributes = event.activity_task_completed_event_attributes
                if attributes.scheduled_event_id == resolve_id:
                    payloads = list(attributes.result.payloads)
                    result = _mapping((await client.data_converter.decode(payloads))[0:1])
                    raw = _mapping(result.get("definition")).get("definition")
            if raw is not None or seen >= HISTORY_SCAN:
                break
        if not isinstance(raw, dict):
            return None
        # Checked when it was recorded; read the way the workflow reads it.
        return AgentDefinition.model_validate(raw, context=RECORDED)

    async def gate(self, facts: RunFacts) -> Gate | None:
        """The run's open approval gate, with its approvers (None when none is open)."""
        if not facts.awaiting_approval or facts.state is None:
            return None
        definition = await self.definition(facts)
        state = definition.states.get(facts.state) if definition is not None else None
        if state is None or state.approval is None:
            return None
        return Gate(
            state=facts.state,
            approvers=list(state.approval.approvers),
            on_approve=state.approval.on_approve,
            on_reject=state.approval.on_reject,
        )

    # ------------------------------------------------------------------ starting

    async def start(self, identity: Identity, request: StartRun) -> tuple[RunStarted, bool]:
        """Start a run; return it and whether it has resolved its definition yet.

        Waits up to ``START_WAIT`` for the run to take its first state, so an
        agent the workers do not know (or a context its definition refuses) is a
        422 naming the field rather than a run that failed out of sight.
        """
        if not identity.may_use(request.agent):
            raise ApiError(403, f"{identity.describe()} may not use agent {request.agent!r}")
        client = await self.client()
        workflow_id = request.id or f"{request.agent}-{uuid.uuid4().hex[:8]}"
        try:
            handle = await client.start_workflow(
                WORKFLOW_TYPE,
                AgentWorkflowInput(agent=request.agent, context=request.context, task=request.task),
                id=workflow_id,
                task_queue=self.settings.task_queue,
                result_type=AgentResult,
                memo={"started_by": identity.name},
            )
        except (RPCError, WorkflowAlreadyStartedError) as exc:
            raise self.error(exc, workflow_id, doing=f"cannot start {workflow_id!r}") from None
        run_id = handle.result_run_id or handle.run_id or ""
        log.info("api.run_started", workflow_id=workflow_id, agent=request.agent, by=identity.name)
        current = await self._first_state(handle)
        return (
            RunStarted(
                id=workflow_id,
                run_id=run_id,
                state=current.state if current else None,
                status=current.status if current else "starting",
                ui_url=ui_link(self.settings, workflow_id),
                greeting=current.last_reply if current else "",
            ),
            current is not None,
        )

    async def _first_state(self, handle: WorkflowHandle[Any, AgentResult]) -> AgentStatus | None:
        deadline = asyncio.get_running_loop().time() + START_WAIT
        while asyncio.get_running_loop().time() < deadline:
            try:
                return await handle.query(
                    "status", result_type=AgentStatus, rpc_timeout=timedelta(seconds=1)
                )
            except WorkflowQueryFailedError:
                pass  # not resolved yet
            except RPCError as exc:
                if exc.status not in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED):
                    raise self.error(exc, handle.id) from None
            try:
                description = await handle.describe()
            except RPCError as exc:
                raise self.error(exc, handle.id) from None
            if description.status == WorkflowExecutionStatus.FAILED:
                raise await self._refusal(handle)
            if description.status != WorkflowExecutionStatus.RUNNING:
                return None
            await asyncio.sleep(0.1)
        return None

    async def _refusal(self, handle: WorkflowHandle[Any, AgentResult]) -> ApiError:
        """Why a run failed at its start, as a 422 naming the field it refused."""
        try:
            await handle.result()
        except WorkflowFailureError as exc:
            kind = getattr(exc.cause, "type", "")
            field = {"DefinitionRefused": "agent", "ContextRefused": "context"}.get(kind)
            return ApiError(422, f"run {handle.id} failed: {explain(exc)}", field=field)
        return ApiError(409, f"run {handle.id} ended at once")

    # ----------------------------------------------------------------- messages

    async def message_target(
        self, identity: Identity, workflow_id: str, request: SendMessage
    ) -> RunFacts | None:
        """The run a message goes to (its agent allowed), or None: the message starts it.

        Raises:
            ApiError: 404 if there is no such run and no ``agent`` to start one;
                403 if the identity may not use the run's (or the given) agent.
        """
        try:
            facts = await self.facts(workflow_id)
        except ApiError as exc:
            if exc.status != 404 or request.agent is None:
                raise
            if not identity.may_use(request.agent):
                raise ApiError(
                    403, f"{identity.describe()} may not use agent {request.agent!r}"
                ) from None
            return None
        await self.authorize(identity, facts)
        return facts

    def _with_start(self, workflow_id: str, request: SendMessage, identity: Identity) -> Any:
        # FAIL, not USE_EXISTING: a run someone started with that id in the meantime
        # is refused here, then checked like any existing run (its agent may differ).
        # REJECT_DUPLICATE: a message never starts a second run under an ended one's id.
        return WithStartWorkflowOperation(
            WORKFLOW_TYPE,
            AgentWorkflowInput(agent=request.agent, context=request.context),
            id=workflow_id,
            task_queue=self.settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            result_type=AgentResult,
            memo={"started_by": identity.name},
        )

    async def send(
        self, identity: Identity, workflow_id: str, request: SendMessage, message_id: str
    ) -> tuple[Reply, bool]:
        """One turn; the reply and whether the message started the conversation."""
        reply, created = await self.accept(identity, workflow_id, request, message_id, wait=False)
        return reply, created

    async def accept(
        self,
        identity: Identity,
        workflow_id: str,
        request: SendMessage,
        message_id: str,
        *,
        wait: bool,
    ) -> tuple[Any, bool]:
        """Send a message through update-with-start or to the existing run.

        With ``wait`` false, returns ``(reply, created)`` once the reply is there;
        with ``wait`` true, ``(update handle, created)`` once the run accepted the
        message (its validator let it in), for a caller that streams the turn.

        Raises:
            ApiError: The run or its agent is refused, the message refused, the
                reply late (504), Temporal unreachable (503).
        """
        client = await self.client()
        for _ in range(2):
            facts = await self.message_target(identity, workflow_id, request)
            try:
                if facts is None:
                    # The run would be started even if it then refused the message:
                    # refuse it first, by the limit the workers' settings give new runs.
                    limit = self.settings.max_message_chars
                    if len(request.text) > limit:
                        raise ApiError(
                            422,
                            f"message refused: the message has {len(request.text)} "
                            f"characters; the limit is {limit}",
                            field="text",
                        )
                    operation = self._with_start(workflow_id, request, identity)
                    try:
                        outcome = await self._with_start_call(
                            client, operation, request, message_id, wait=wait
                        )
                    except WorkflowAlreadyStartedError:
                        # Started by someone else meanwhile: now an existing run.
                        with contextlib.suppress(Exception):
                            await operation.workflow_handle()
                        continue
                    log.info(
                        "api.run_started",
                        workflow_id=workflow_id,
                        agent=request.agent,
                        by=identity.name,
                    )
                    return outcome, True
                if wait:
                    handle = await asyncio.wait_for(
                        start_message(client, workflow_id, request.text, update_id=message_id),
                        timeout=self.reply_timeout,
                    )
                    await _raise_if_refused(handle)
                    return handle, False
                reply = await asyncio.wait_for(
                    send_message(client, workflow_id, request.text, update_id=message_id),
                    timeout=self.reply_timeout,
                )
                return reply, False
            except TimeoutError:
                raise self.late(message_id) from None
            except ApiError:
                raise
            except Exception as exc:  # noqa: BLE001 - every Temporal error is mapped
                raise self.error(exc, workflow_id, doing="message refused") from None
        raise ApiError(409, f"run {workflow_id!r} was started and ended meanwhile")

    async def _with_start_call(
        self, client: Client, operation: Any, request: SendMessage, message_id: str, *, wait: bool
    ) -> Any:
        if wait:
            handle = await asyncio.wait_for(
                client.start_update_with_start_workflow(
                    "send_message",
                    MessageInput(text=request.text),
                    start_workflow_operation=operation,
                    id=message_id,
                    wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                    result_type=Reply,
                ),
                timeout=self.reply_timeout,
            )
            await _raise_if_refused(handle)
            return handle
        return await asyncio.wait_for(
            client.execute_update_with_start_workflow(
                "send_message",
                MessageInput(text=request.text),
                start_workflow_operation=operation,
                id=message_id,
                result_type=Reply,
            ),
            timeout=self.reply_timeout,
        )

    def late(self, message_id: str) -> ApiError:
        """No reply in time: the message may still be answered; resending it is safe."""
        return ApiError(
            504,
            f"no reply within {self.reply_timeout:.0f} s (is a worker running?); send the "
            f"message again with message_id {message_id!r}: it is answered once",
        )

    async def reply(self, handle: WorkflowUpdateHandle[Reply], workflow_id: str) -> Reply:
        """The reply to an accepted message (bounded like ``accept``)."""
        try:
            return await asyncio.wait_for(handle.result(), timeout=self.reply_timeout)
        except TimeoutError:
            raise self.late(handle.id) from None
        except Exception as exc:  # noqa: BLE001 - every Temporal error is mapped
            raise self.error(exc, workflow_id, doing="message refused") from None

    # ---------------------------------------------------------------- decisions

    async def decide(
        self, identity: Identity, workflow_id: str, request: DecisionRequest
    ) -> DecisionRecorded:
        """Signal a decision by ``identity``, once it is known to be allowed at the open gate.

        The gate and its approvers are read from the run (its search attributes
        and the definition it recorded), so a worker need not be up: the run
        applies the signal when one is. The run checks the gate again when it
        does (a decision that arrives after the gate closed is traced as refused).
        """
        facts = await self.facts(workflow_id)
        await self.authorize(identity, facts)
        doing = f"{request.decision} refused"
        if not facts.running:
            raise ApiError(409, f"{doing}: run {workflow_id!r} has ended ({facts.execution})")
        gate = await self.gate(facts)
        if gate is None:
            where = f" (state {facts.state!r}, {facts.fsm_status})" if facts.state else ""
            raise ApiError(409, f"{doing}: no approval gate is open{where}", code="no_gate")
        if gate.approvers and identity.name not in gate.approvers:
            raise ApiError(
                403,
                f"{doing}: {identity.name!r} may not decide at {gate.state!r} "
                f"(approvers: {', '.join(gate.approvers)})",
                code="not_an_approver",
            )
        client = await self.client()
        try:
            await self.handle(client, workflow_id, facts.run_id).signal(
                request.decision, DecisionInput(by=identity.name, comment=request.comment)
            )
        except RPCError as exc:
            raise self.error(exc, workflow_id, doing=doing) from None
        log.info(
            "api.decision",
            workflow_id=workflow_id,
            decision=request.decision,
            gate=gate.state,
            by=identity.name,
        )
        return DecisionRecorded(
            id=workflow_id,
            decision=request.decision,
            by=identity.name,
            gate=gate.state,
            comment=request.comment,
        )

    # ------------------------------------------------------------------- reading

    async def view(self, identity: Identity, workflow_id: str) -> RunView:
        """Where a run is: its ``status`` query, else its search attributes."""
        facts = await self.facts(workflow_id)
        agent = await self.authorize(identity, facts)
        client = await self.client()
        handle = self.handle(client, workflow_id, facts.run_id)
        detail: AgentStatus | None = None
        try:
            detail = await handle.query(
                "status", result_type=AgentStatus, rpc_timeout=QUERY_TIMEOUT
            )
        except WorkflowQueryFailedError:
            pass  # not started (resolving its definition, or refused at its start)
        except RPCError as exc:
            if exc.status not in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED):
                raise self.error(exc, workflow_id) from None
        end_reason = detail.end_reason if detail is not None else None
        if facts.status == WorkflowExecutionStatus.FAILED and end_reason is None:
            try:
                end_reason = (await run_result(handle)).end_reason
            except WorkflowFailureError as exc:
                end_reason = explain(exc)
            except RPCError:
                end_reason = None
        return RunView(
            id=workflow_id,
            run_id=facts.run_id,
            execution=facts.execution,
            agent=detail.agent if detail is not None else agent,
            state=detail.state if detail is not None else facts.state,
            fsm_status=detail.fsm_status if detail is not None else facts.fsm_status,
            awaiting_approval=facts.awaiting_approval
            if detail is None
            else detail.status == "awaiting_approval",
            gate=await self.gate(facts),
            end_reason=end_reason,
            detail=detail,
            source="query" if detail is not None else "visibility",
            ui_url=ui_link(self.settings, workflow_id),
        )

    async def context(self, identity: Identity, workflow_id: str) -> dict[str, Any] | None:
        """The run's context, keys declared ``secret`` redacted by the run itself.

        Its ``context`` query; for a closed run no worker answers, its result
        (redacted the same way). None when neither is there (no worker yet, or a
        run terminated or refused at its start).
        """
        facts = await self.facts(workflow_id)
        await self.authorize(identity, facts)
        client = await self.client()
        handle = self.handle(client, workflow_id, facts.run_id)
        try:
            found = await handle.query(
                "context", result_type=dict[str, Any], rpc_timeout=QUERY_TIMEOUT
            )
            return dict(found)
        except WorkflowQueryFailedError:
            pass
        except RPCError as exc:
            if exc.status not in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED):
                raise self.error(exc, workflow_id) from None
        if not facts.running:
            try:
                # Completed, or failed by its own rules (the failure carries the result).
                return dict((await run_result(handle)).context)
            except (WorkflowFailureError, RPCError):
                return None
        return None

    async def trace(self, identity: Identity, workflow_id: str) -> TraceView:
        """The run's trace: its ``trace`` query, else a replay of its history."""
        from workers.history_trace import ReplayError, trace_from_history

        facts = await self.facts(workflow_id)
        await self.authorize(identity, facts)
        client = await self.client()
        handle = self.handle(client, workflow_id, facts.run_id)
        try:
            entries = await handle.query(
                "trace", result_type=list[TraceEntry], rpc_timeout=QUERY_TIMEOUT
            )
            return TraceView(id=workflow_id, run_id=facts.run_id, entries=entries, source="query")
        except WorkflowQueryFailedError:
            pass
        except RPCError as exc:
            if exc.status not in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED):
                raise self.error(exc, workflow_id) from None
        try:
            history = await handle.fetch_history()
            entries = await trace_from_history(history, data_converter=client.data_converter)
        except RPCError as exc:
            raise self.error(exc, workflow_id) from None
        except ReplayError as exc:
            raise ApiError(502, f"cannot replay {workflow_id!r}: {exc}") from None
        return TraceView(id=workflow_id, run_id=facts.run_id, entries=entries, source="history")

    async def list(
        self,
        identity: Identity,
        *,
        agent: str | None,
        state: str | None,
        status: str | None,
        awaiting_approval: bool | None,
        page_token: str | None,
        limit: int,
    ) -> RunList:
        """A page of runs from the visibility store, newest first.

        A restricted identity sees only runs of its agents.
        """
        clauses = [f"WorkflowType = '{WORKFLOW_TYPE}'"]
        if agent is not None:
            if not identity.may_use(agent):
                raise ApiError(403, f"{identity.describe()} may not use agent {agent!r}")
            clauses.append(f"FsmAgent = '{agent}'")
        elif identity.agents is not None:
            names = ", ".join(f"'{name}'" for name in sorted(identity.agents))
            clauses.append(f"FsmAgent IN ({names})")
        if state is not None:
            if not _STATE.fullmatch(state):
                raise ApiError(
                    422, f"invalid state {state!r}: letters, digits, _ and -", field="state"
                )
            clauses.append(f"FsmState = '{state}'")
        if status is not None:
            if status not in FSM_STATUSES:
                raise ApiError(
                    422,
                    f"invalid status {status!r}: one of {', '.join(FSM_STATUSES)}",
                    field="status",
                )
            clauses.append(f"FsmStatus = '{status}'")
        if awaiting_approval is not None:
            clauses.append(f"FsmAwaitingApproval = {'true' if awaiting_approval else 'false'}")
        token: bytes | None = None
        if page_token:
            try:
                padded = page_token + "=" * (-len(page_token) % 4)
                token = base64.b64decode(padded, altchars=b"-_", validate=True)
            except (binascii.Error, ValueError):
                token = b""
            if not token:
                raise ApiError(422, "page_token: not a page token", field="page_token")
        client = await self.client()
        pages = client.list_workflows(" AND ".join(clauses), page_size=limit, next_page_token=token)
        try:
            await pages.fetch_next_page()
        except RPCError as exc:
            if exc.status == RPCStatusCode.INVALID_ARGUMENT and token is not None:
                raise ApiError(
                    422, f"invalid page_token: {exc.message}", field="page_token"
                ) from None
            raise self.error(exc, doing="cannot list runs") from None
        rows = []
        for execution in pages.current_page or []:
            facts = _facts(execution)
            rows.append(
                RunSummary(
                    id=facts.id,
                    run_id=facts.run_id,
                    agent=facts.agent,
                    state=facts.state,
                    fsm_status=facts.fsm_status,
                    awaiting_approval=facts.awaiting_approval,
                    execution=facts.execution,
                    started_at=execution.start_time,
                    closed_at=execution.close_time,
                )
            )
        following = pages.next_page_token
        return RunList(
            runs=rows,
            next_page_token=base64.urlsafe_b64encode(following).decode().rstrip("=")
            if following
            else None,
        )


async def _raise_if_refused(handle: WorkflowUpdateHandle[Reply]) -> None:
    """Raise now if the run refused the message (its validator), before a stream begins.

    A refused update returns from the accepted stage with its outcome already
    known (the SDK keeps it in ``_known_outcome``); ``result()`` then raises at
    once, so the caller gets an HTTP error rather than a 200 stream with an
    ``error`` event. Without the attribute (another SDK), the refusal comes as
    that ``error`` event instead.
    """
    if getattr(handle, "_known_outcome", None) is not None:
        await handle.result()


def _system_info_request() -> Any:
    from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

    return GetSystemInfoRequest()
