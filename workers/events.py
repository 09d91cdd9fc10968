"""Following a run's event stream from a client: the CLI and the Python API.

Every run hosts a stream of ``RunEvent`` (``schemas/events.py``, topic ``run``),
read with Temporal's ``WorkflowStreamClient`` from an offset; a subscription
follows the run across continue-as-new and, once the run has closed, reads what
is left of its stream and ends. ``send_streaming`` sends a message and hands the
reply's pieces to a callback as the model generates them, then returns what the
update returned, which is the reply: the stream is a view of it, the update its
result.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

from pydantic import ValidationError
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.contrib.workflow_streams import WorkflowStreamClient
from temporalio.service import RPCError

from schemas.events import RUN_TOPIC, RunEvent
from schemas.run import Reply
from workers.client import new_message_id, send_message

OFFSET_QUERY = "__temporal_workflow_stream_offset"
"""The stream's query of its end offset (the protocol's documented name)."""
OFFSET_TIMEOUT = timedelta(seconds=5)
"""How long asking for the offset may take (no worker running: no streaming)."""
LINGER_SECONDS = 2.0
"""How long, after the update returned, a reply that began to stream may take to
reach its end on the stream (the subscriber polls behind the update)."""


async def stream_offset(client: Client, workflow_id: str) -> int | None:
    """The end offset of the newest run's stream: where a new subscriber starts.

    None when it cannot be read in time (no worker, a worker of a version without
    streams): the caller goes on without streaming.
    """
    handle = client.get_workflow_handle(workflow_id)
    try:
        return await handle.query(OFFSET_QUERY, result_type=int, rpc_timeout=OFFSET_TIMEOUT)
    except (RPCError, WorkflowQueryFailedError):
        return None


async def run_events(
    client: Client, workflow_id: str, *, from_offset: int = 0
) -> AsyncIterator[tuple[int, RunEvent]]:
    """The run's events from ``from_offset``, with their offsets, until the run closes.

    Follows continue-as-new; an offset the run no longer retains (the log is
    bounded) continues from the oldest event it keeps. Items on the topic that
    are not fsmflow events are skipped.
    """
    stream = WorkflowStreamClient.create(client, workflow_id)
    async for item in stream.subscribe([RUN_TOPIC], from_offset=from_offset):
        try:
            event = RunEvent.model_validate(item.data)
        except ValidationError:
            continue
        yield item.offset, event


async def send_streaming(
    client: Client,
    workflow_id: str,
    text: str,
    *,
    on_event: Callable[[RunEvent], None],
    update_id: str | None = None,
) -> Reply:
    """Send one message; pass its reply's ``delta`` and ``reset`` events to ``on_event``.

    The subscription starts at the stream's current offset before the message is
    sent, and only this message's events are passed on (by update id). Returns
    what ``workers.client.send_message`` returns, whether or not anything streamed
    (no worker with streams, a resend of an answered message).
    """
    update_id = update_id or new_message_id()
    offset = await stream_offset(client, workflow_id)
    began = False
    done = asyncio.Event()

    async def follow(start: int) -> None:
        nonlocal began
        async for _, event in run_events(client, workflow_id, from_offset=start):
            if event.message_id != update_id:
                continue
            if event.kind == "reply":
                break
            if event.kind in ("delta", "reset"):
                began = began or event.kind == "delta"
                on_event(event)
        done.set()

    follower = asyncio.create_task(follow(offset)) if offset is not None else None
    try:
        reply = await send_message(client, workflow_id, text, update_id=update_id)
        if follower is not None and began and not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), LINGER_SECONDS)
        return reply
    finally:
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await follower
