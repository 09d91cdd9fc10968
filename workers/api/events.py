"""Server-sent events: a run's event stream, and one message's turn as it is generated.

Both read the run's Workflow Stream (``temporalio.contrib.workflow_streams``,
topic ``RUN_TOPIC``, items ``schemas.events.RunEvent``): the LLM activity
publishes a reply's text as ``delta`` (and ``reset`` when it is void), the
workflow what the run does. An SSE event's ``id`` is the item's offset in the
stream, so a client that reconnects with ``Last-Event-ID`` resumes after it.

A run whose workers predate streaming hosts no stream: ``GET .../events`` says
so (501), and a streamed message sends only its final ``reply``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import structlog
from sse_starlette import EventSourceResponse, ServerSentEvent
from temporalio.client import Client, WorkflowQueryFailedError, WorkflowUpdateFailedError
from temporalio.contrib.workflow_streams import WorkflowStreamClient, WorkflowStreamItem
from temporalio.service import RPCError, RPCStatusCode

from schemas.api import MessageReply, SendMessage
from schemas.events import RUN_TOPIC, RunEvent
from schemas.run import Reply
from workers.api.errors import ApiError

if TYPE_CHECKING:
    from workers.api.auth import Identity
    from workers.api.runs import Runs

log = structlog.get_logger("fsmflow.api")

OFFSET_TIMEOUT = 5.0
"""How long the stream's offset query waits for a worker."""
DRAIN_SECONDS = 5.0
"""How long a decided message's SSE waits for the rest of its turn's events."""
PING_SECONDS = 15
"""A comment line this often keeps proxies from closing an idle stream."""
_NO_HANDLER = "expected but not found"
"""The SDK's words for a query or update the workflow has no handler for."""


def stream_of(client: Client, workflow_id: str) -> WorkflowStreamClient:
    """The stream client of a run (follows continue-as-new)."""
    return WorkflowStreamClient.create(client, workflow_id)


def _no_stream(error: BaseException) -> bool:
    """Whether an error says the run hosts no stream (its workers predate streaming)."""
    if isinstance(error, WorkflowQueryFailedError):
        return _NO_HANDLER in error.message
    if isinstance(error, WorkflowUpdateFailedError):
        return _NO_HANDLER in str(getattr(error.cause, "message", error.cause))
    return False


async def stream_end(stream: WorkflowStreamClient) -> int | None:
    """The offset after the stream's last item; None when the run hosts no stream.

    Raises:
        RPCError: From Temporal (no such run: ``NOT_FOUND``; no worker: a timeout).
        WorkflowQueryFailedError: If the offset query failed otherwise.
    """
    try:
        return await asyncio.wait_for(stream.get_offset(), timeout=OFFSET_TIMEOUT)
    except WorkflowQueryFailedError as exc:
        if _no_stream(exc):
            return None
        raise


def run_event(item: WorkflowStreamItem[RunEvent]) -> ServerSentEvent:
    """One stream item as an SSE event: ``event`` its kind, ``id`` its offset."""
    return ServerSentEvent(
        item.data.model_dump_json(exclude_defaults=True), event=item.data.kind, id=str(item.offset)
    )


def error_event(error: ApiError) -> ServerSentEvent:
    """An error after the stream began, with the body an error response would have."""
    return ServerSentEvent(error.body().model_dump_json(exclude_none=True), event="error")


async def run_events(
    stream: WorkflowStreamClient, from_offset: int, *, workflow_id: str
) -> AsyncIterator[ServerSentEvent]:
    """Every event of a run from ``from_offset``, as it comes; ``end`` once the run closed.

    ``end`` tells a client not to reconnect: the subscription finishes when the run
    has closed and its retained events were delivered.
    """
    try:
        async for item in stream.subscribe([RUN_TOPIC], from_offset, result_type=RunEvent):
            yield run_event(item)
    except (RPCError, WorkflowUpdateFailedError, WorkflowQueryFailedError) as exc:
        message = str(getattr(exc, "message", exc))
        log.warning("api.stream_failed", workflow_id=workflow_id, error=message)
        yield error_event(ApiError(502, f"the run's event stream failed: {message}"))
        return
    yield ServerSentEvent("{}", event="end")


async def message_offset(stream: WorkflowStreamClient) -> int | None:
    """Where a message's events will start in the run's stream (read before sending it).

    0 for a run that does not exist yet (the message will start it); None when
    the stream cannot be read now (no stream, or no worker answered): the turn
    is then streamed as its final ``reply`` only.
    """
    try:
        return await stream_end(stream)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return 0
        return None
    except (WorkflowQueryFailedError, TimeoutError):
        return None


async def message_events(
    reply: Awaitable[Reply],
    render: Callable[[Reply], MessageReply],
    *,
    stream: WorkflowStreamClient | None,
    offset: int | None,
    message_id: str,
    workflow_id: str,
) -> AsyncIterator[ServerSentEvent]:
    """A turn as SSE: ``delta`` (``{"text"}``) and ``reset``, then ``reply`` or ``error``.

    ``reply`` is the update's result, the turn's record: it carries the whole
    message, so a client replaces what the deltas built with it. The stream
    carries every turn of the run; events name the message they belong to
    (``message_id``), and those of other messages are skipped. The update's result
    may come before the last deltas have travelled through the stream, so they
    are read until this message's ``reply`` event (at most ``DRAIN_SECONDS``).

    Args:
        reply: The accepted message's reply (raises ``ApiError``).
        render: The reply's JSON body.
        stream: The run's stream; None streams the final reply only.
        offset: Where this message's events start (from ``message_offset``).
        message_id: The message's update id (its ``reply`` event names it).
        workflow_id: The run (for logs).
    """
    outcome = asyncio.ensure_future(reply)
    items: asyncio.Queue[WorkflowStreamItem[RunEvent]] = asyncio.Queue()
    pump: asyncio.Task[None] | None = None
    if stream is not None and offset is not None:
        pump = asyncio.create_task(_pump(stream, offset, items, workflow_id))
    streamed = False  # deltas sent since the last reset
    drain_until: float | None = None
    loop = asyncio.get_running_loop()
    try:
        while pump is not None:
            if outcome.done():
                if outcome.exception() is not None:
                    break  # refused or failed: no reply event of ours will come
                # The reply is decided; its last deltas and its reply event may
                # still be on their way through the stream: read them, a while.
                drain_until = drain_until or loop.time() + DRAIN_SECONDS
            getter = asyncio.ensure_future(items.get())
            waiting: set[asyncio.Future[object]] = {getter}
            if not outcome.done():
                waiting.add(outcome)
            timeout = None if drain_until is None else max(0.0, drain_until - loop.time())
            await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                if drain_until is not None and loop.time() >= drain_until:
                    break
                continue
            event = getter.result().data
            mine = event.message_id == message_id
            if event.kind == "reply" and mine:
                break  # every delta of this turn came before it
            if event.message_id and not mine:
                # Another message's turn (messages are answered one at a time).
                if event.kind == "reply" and streamed:
                    streamed = False
                    reason = json.dumps({"reason": "another message's turn"})
                    yield ServerSentEvent(reason, event="reset")
                continue
            if event.kind == "delta":
                streamed = True
                yield ServerSentEvent(json.dumps({"text": event.text}), event="delta")
            elif event.kind == "reset" and streamed:
                streamed = False
                yield ServerSentEvent(json.dumps({"reason": event.text}), event="reset")
        try:
            answer = await outcome
        except ApiError as exc:
            yield error_event(exc)
            return
        yield ServerSentEvent(render(answer).model_dump_json(), event="reply")
    finally:
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
        if not outcome.done():
            outcome.cancel()


async def _pump(
    stream: WorkflowStreamClient,
    offset: int,
    items: asyncio.Queue[WorkflowStreamItem[RunEvent]],
    workflow_id: str,
) -> None:
    try:
        async for item in stream.subscribe([RUN_TOPIC], offset, result_type=RunEvent):
            await items.put(item)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - the reply still comes; only deltas are lost
        if not _no_stream(exc):
            log.warning("api.stream_failed", workflow_id=workflow_id, error=str(exc))


async def follow(
    runs: Runs, identity: Identity, workflow_id: str, from_offset: int
) -> EventSourceResponse:
    """A run's events from ``from_offset`` as SSE, for an identity allowed its agent.

    ``GET /v1/runs/{id}/events`` and the console's live run page both answer with it.

    Raises:
        ApiError: 404/403 for the run, 501 if it publishes no events.
    """
    facts = await runs.facts(workflow_id)
    await runs.authorize(identity, facts)
    client = await runs.client()
    stream = stream_of(client, workflow_id)
    try:
        end = await stream_end(stream)
    except Exception as exc:  # noqa: BLE001 - every Temporal error is mapped
        raise runs.error(exc, workflow_id) from None
    if end is None:
        raise ApiError(
            501,
            f"run {workflow_id!r} publishes no events (its workers predate streaming)",
            code="not_streaming",
        )
    return EventSourceResponse(
        run_events(stream, from_offset, workflow_id=workflow_id), ping=PING_SECONDS
    )


async def stream_message(
    runs: Runs, identity: Identity, workflow_id: str, body: SendMessage, message_id: str
) -> EventSourceResponse:
    """Send a message and stream its turn as SSE (``message_events``).

    ``POST /v1/runs/{id}/messages`` with ``Accept: text/event-stream`` and the
    console's chat both answer with it.

    Raises:
        ApiError: If the run, its agent or the message is refused before the stream.
    """
    client = await runs.client()
    stream = stream_of(client, workflow_id)
    offset = await message_offset(stream)
    handle, created = await runs.accept(identity, workflow_id, body, message_id, wait=True)

    def render(reply: Reply) -> MessageReply:
        return MessageReply(
            id=workflow_id, message_id=message_id, created=created, **reply.model_dump()
        )

    return EventSourceResponse(
        message_events(
            runs.reply(handle, workflow_id),
            render,
            stream=stream,
            offset=offset,
            message_id=message_id,
            workflow_id=workflow_id,
        ),
        ping=PING_SECONDS,
    )
