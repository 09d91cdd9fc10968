"""Connecting to Temporal with fsmflow's data converter and the settings' TLS."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from temporalio.client import (
    Client,
    TLSConfig,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateHandle,
    WorkflowUpdateStage,
)
from temporalio.exceptions import ApplicationError, CancelledError, TerminatedError
from temporalio.exceptions import TimeoutError as WorkflowTimeoutError
from temporalio.runtime import Runtime
from temporalio.service import RPCError

from schemas.workflow import AgentResult, MessageInput, Reply
from workers.codec import data_converter
from workers.settings import Settings

T = TypeVar("T")


def _tls(settings: Settings) -> TLSConfig | bool:
    if settings.temporal_tls_cert is None and settings.temporal_tls_ca is None:
        # An API key (Temporal Cloud) implies TLS.
        return settings.temporal_tls or settings.temporal_api_key is not None
    return TLSConfig(
        client_cert=settings.temporal_tls_cert.read_bytes() if settings.temporal_tls_cert else None,
        client_private_key=(
            settings.temporal_tls_key.read_bytes() if settings.temporal_tls_key else None
        ),
        server_root_ca_cert=settings.temporal_tls_ca.read_bytes()
        if settings.temporal_tls_ca
        else None,
    )


async def connect(
    settings: Settings, *, runtime: Runtime | None = None, plugins: Sequence[Any] = ()
) -> Client:
    """A client for the settings' address and namespace (pydantic data converter).

    With ``FSMFLOW_PAYLOAD_KEY`` set, the converter encrypts every payload
    (``workers.codec``): the worker, the CLI and Python callers all connect here,
    so they all read and write the same payloads.

    Raises:
        RuntimeError: If the server cannot be reached; the message names the address.
    """
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=settings.temporal_namespace,
            api_key=(
                settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
            ),
            tls=_tls(settings),
            data_converter=data_converter(settings.payload_keys()),
            runtime=runtime,
            plugins=list(plugins),
        )
    except RuntimeError as exc:
        raise RuntimeError(
            f"cannot reach Temporal at {settings.temporal_address} "
            f"(namespace {settings.temporal_namespace!r}): {exc}"
        ) from None


async def run_result(handle: WorkflowHandle[Any, Any]) -> AgentResult:
    """A run's result, also of a run that closed as a Temporal failure.

    A run that failed (``AgentRunFailed``) or ran out of steps (``AgentRunStopped``)
    holds its result in the failure's details.

    Raises:
        WorkflowFailureError: If the run failed otherwise (refused definition or
            input, terminated, cancelled).
    """
    try:
        return AgentResult.model_validate(await handle.result())
    except WorkflowFailureError as exc:
        cause = exc.cause
        if (
            isinstance(cause, ApplicationError)
            and cause.type in ("AgentRunFailed", "AgentRunStopped")
            and cause.details
        ):
            return AgentResult.model_validate(cause.details[0])
        raise


RUN_OUTCOMES = ("completed", "max_steps", "failed", "terminated", "canceled", "timed_out")
"""How a run can end: its ``RunStatus`` (``completed``, ``max_steps``, ``failed``),
or how Temporal closed it from outside (``terminated``, ``canceled``, ``timed_out``)."""


@dataclass(frozen=True)
class RunEnd:
    """How a closed run ended, as its history records it."""

    outcome: str
    """One of ``RUN_OUTCOMES``."""
    reason: str
    """The run's end reason, or the failure's or termination's message."""
    result: AgentResult | None
    """The run's result; None when it closed before it started (its definition or
    initial context refused) or was closed from outside."""

    def describe(self) -> str:
        """``outcome: reason`` (or the outcome alone when there is no reason)."""
        return f"{self.outcome}: {self.reason}" if self.reason else self.outcome


def is_closed(status: WorkflowExecutionStatus | None) -> bool:
    """Whether a run's newest execution has closed (a continue-as-new hand-over has not)."""
    return status not in (
        None,
        WorkflowExecutionStatus.RUNNING,
        WorkflowExecutionStatus.CONTINUED_AS_NEW,
    )


async def run_end(handle: WorkflowHandle[Any, Any]) -> RunEnd:
    """How the run ended, read from its history (waits while it runs; no worker needed)."""
    try:
        result = await run_result(handle)
    except WorkflowFailureError as exc:
        cause = exc.cause
        outcome = "failed"
        if isinstance(cause, TerminatedError):
            outcome = "terminated"
        elif isinstance(cause, CancelledError):
            outcome = "canceled"
        elif isinstance(cause, WorkflowTimeoutError):
            outcome = "timed_out"
        message = getattr(cause, "message", None) or str(cause or exc)
        return RunEnd(outcome=outcome, reason=message, result=None)
    return RunEnd(outcome=result.status, reason=result.end_reason or "", result=result)


async def register_search_attributes(client: Client, namespace: str = "default") -> None:
    """Register fsmflow's search attributes on a server that lacks them.

    The dev server started by fsmflow registers them at start; this is for servers
    started otherwise (the time-skipping test server, a self-hosted cluster).
    """
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

    from workflows.agent import SEARCH_ATTRIBUTES

    kinds = {
        "KEYWORD": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
        "BOOL": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
    }
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=namespace,
            search_attributes={
                key.name: kinds[key.indexed_value_type.name.removeprefix("INDEXED_VALUE_TYPE_")]
                for key in SEARCH_ATTRIBUTES
            },
        )
    )


async def _to_newest_run(
    client: Client,
    workflow_id: str,
    call: Callable[[WorkflowHandle[Any, Any]], Awaitable[T]],
    attempts: int,
) -> T:
    """``call`` on the newest run of ``workflow_id``, again if that run just continued as new.

    A run continues as new between two messages; a message that reaches the old
    run in that instant is refused ("workflow execution already completed") and
    never applied, so it is sent again, with the same id, to the new run.
    """
    for attempt in range(attempts):
        handle = client.get_workflow_handle(workflow_id)
        try:
            return await call(handle)
        except RPCError as exc:
            if "already completed" not in exc.message or attempt == attempts - 1:
                raise
            status = (await handle.describe()).status
            if status not in (
                WorkflowExecutionStatus.RUNNING,
                WorkflowExecutionStatus.CONTINUED_AS_NEW,
            ):
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def new_message_id() -> str:
    """A message's own update id (``msg-<uuid>``), reused when it is sent again."""
    return f"msg-{uuid.uuid4()}"


async def send_message(
    client: Client,
    workflow_id: str,
    text: str,
    *,
    update_id: str | None = None,
    attempts: int = 6,
) -> Reply:
    """Send one message to the newest run of ``workflow_id`` and return the reply.

    The message goes as an update with ``update_id`` (a new one when not given):
    sending it again with the same id returns the same reply and runs no second
    turn, also after the run continued as new.
    """
    update_id = update_id or new_message_id()

    async def call(handle: WorkflowHandle[Any, Any]) -> Reply:
        return await handle.execute_update(
            "send_message", MessageInput(text=text), id=update_id, result_type=Reply
        )

    return await _to_newest_run(client, workflow_id, call, attempts)


async def start_message(
    client: Client, workflow_id: str, text: str, *, update_id: str, attempts: int = 6
) -> WorkflowUpdateHandle[Reply]:
    """``send_message``, returning once the run accepted the message (its validator let it in).

    ``await handle.result()`` is the reply. For callers that do something while
    the turn runs (the HTTP API streams its events); ``send_message`` costs one
    call less.
    """

    async def call(handle: WorkflowHandle[Any, Any]) -> WorkflowUpdateHandle[Reply]:
        return await handle.start_update(
            "send_message",
            MessageInput(text=text),
            id=update_id,
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            result_type=Reply,
        )

    return await _to_newest_run(client, workflow_id, call, attempts)
