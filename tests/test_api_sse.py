"""The API's server-sent events against real Workflow Streams, hosted by a stand-in
workflow (``tests/api_stub.py``): a run's events with their offsets as ids,
``Last-Event-ID``, ``end``; a streamed message's deltas, resets and reply."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker

from schemas.events import RunEvent
from tests.api_helpers import Api, Sse, api_settings, serving
from tests.api_stub import StreamStub
from workers.settings import Settings

SCRIPT = [
    RunEvent(kind="state", from_state="start", state="chat", step=1),
    RunEvent(kind="gate", state="review"),
    RunEvent(kind="gate", state="review", decision="approve", by="alice", text="ok"),
]


@pytest.fixture
async def stub(client: Client, settings: Settings) -> AsyncIterator[tuple[Api, str]]:
    """The API, and a running stand-in run publishing ``SCRIPT``."""
    settings = api_settings(settings, client)
    workflow_id = f"stub-{uuid.uuid4().hex[:8]}"
    async with (
        Worker(client, task_queue=settings.task_queue, workflows=[StreamStub]),
        serving(settings) as api,
    ):
        handle = await client.start_workflow(
            StreamStub.run, SCRIPT, id=workflow_id, task_queue=settings.task_queue
        )
        yield api, workflow_id
        with contextlib.suppress(RPCError):  # finished by the test
            await handle.signal(StreamStub.finish)
        await handle.result()


def kinds(events: list[Sse]) -> list[str]:
    return [event.event for event in events]


async def test_the_events_of_a_run_carry_their_offsets_and_resume(
    stub: tuple[Api, str], client: Client
) -> None:
    api, workflow_id = stub
    live, first = await api.events("GET", f"/v1/runs/{workflow_id}/events", until="gate")
    resumed, rest = await api.events(
        "GET",
        f"/v1/runs/{workflow_id}/events",
        headers={"Last-Event-ID": "0"},
        until="gate",
    )
    await client.get_workflow_handle(workflow_id).signal(StreamStub.finish)
    _, everything = await api.events("GET", f"/v1/runs/{workflow_id}/events")
    _, tail = await api.events("GET", f"/v1/runs/{workflow_id}/events?from_offset=2")
    assert live.status_code == 200 and resumed.status_code == 200
    assert [(e.event, e.id) for e in first] == [("state", "0"), ("gate", "1")]
    assert first[0].json() == {"kind": "state", "from_state": "start", "state": "chat", "step": 1}
    assert [(e.event, e.id) for e in rest] == [("gate", "1")]
    # The run closed: everything it published, then `end`.
    assert kinds(everything) == ["state", "gate", "gate", "ended", "end"]
    assert [e.id for e in everything] == ["0", "1", "2", "3", None]
    assert everything[2].json()["by"] == "alice"
    assert kinds(tail) == ["gate", "ended", "end"]


async def test_a_streamed_message_is_its_deltas_then_its_reply(stub: tuple[Api, str]) -> None:
    api, workflow_id = stub
    path = f"/v1/runs/{workflow_id}/messages"
    plain, plain_events = await api.events("POST", path, {"text": "hi", "message_id": "m-1"})
    retried, retried_events = await api.events("POST", path, {"text": "retry"})
    crossed, crossed_events = await api.events("POST", path, {"text": "interleave"})
    refused, _ = await api.events("POST", path, {"text": "refuse"})
    as_json = await api.post(path, {"text": "hi", "message_id": "m-1"})
    assert plain.status_code == 200 and plain.headers["content-type"].startswith(
        "text/event-stream"
    )
    assert kinds(plain_events) == ["delta", "delta", "reply"]
    assert [e.json()["text"] for e in plain_events[:2]] == ["Hello", " there"]
    reply = plain_events[-1].json()
    assert (reply["message"], reply["message_id"], reply["created"]) == (
        "Hello there",
        "m-1",
        False,
    )
    # A void attempt: its deltas are reset, then the turn streams anew.
    assert kinds(retried_events) == ["delta", "reset", "delta", "delta", "reply"]
    assert retried_events[1].json() == {"reason": "attempt 1 failed"}
    # Another message's deltas are reset when its reply shows they were not ours.
    assert kinds(crossed_events) == ["delta", "reset", "delta", "delta", "reply"]
    assert crossed_events[1].json() == {"reason": "another message's turn"}
    # Refused by the run's validator: an HTTP error, before any stream.
    assert refused.status_code == 409
    assert refused.json()["error"]["message"] == (
        "message refused: the run is waiting for an approval decision in state 'review'"
    )
    # The same message id as JSON: the same reply, no second turn.
    assert as_json.status_code == 200 and as_json.json()["message"] == "Hello there"


async def test_a_follower_sees_events_as_they_are_published(stub: tuple[Api, str]) -> None:
    api, workflow_id = stub
    following = asyncio.create_task(
        api.events("GET", f"/v1/runs/{workflow_id}/events?from_offset=3", until="reply")
    )
    await asyncio.sleep(0.5)
    await api.post(f"/v1/runs/{workflow_id}/messages", {"text": "hi", "message_id": "m-9"})
    _, received = await asyncio.wait_for(following, timeout=30)
    assert kinds(received) == ["delta", "delta", "reply"]
    assert received[-1].json()["message_id"] == "m-9"
    assert [int(str(e.id)) for e in received] == [3, 4, 5]
