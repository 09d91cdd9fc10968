"""The API's server-sent events of runs that stream (Workflow Streams, ``schemas.events``):
a message's deltas then its reply, a run's events resumed with ``Last-Event-ID``,
and a worker SIGKILLed while a reply streams to an HTTP client (who sees ``reset``,
then the whole reply from the worker that took over)."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from tests.api_helpers import Sse, agents_dir, api_settings, gated, serving
from tests.conftest import make_settings, running_worker
from tests.llm_server import ScriptedLlm, say
from tests.workflows.test_crash import drain, kill_if_running, spawn_worker, wait_until
from tests.workflows.test_streaming import slow
from workers.settings import Settings


def offsets(events: list[Sse]) -> list[int]:
    return [int(event.id) for event in events if event.id is not None]


async def test_a_streamed_message_is_deltas_then_its_reply(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(
        model_name,
        say("ask_email", "Hi Ada, what is your email address?", name="Ada"),
        say("ask_phone", "Thanks! And your phone number?", email="ada@example.com"),
    )
    workflow_id = f"api-{uuid.uuid4().hex[:8]}"
    settings = api_settings(settings, client)
    async with running_worker(client, settings), serving(settings) as api:
        turns = [
            await api.events(
                "POST",
                f"/v1/runs/{workflow_id}/messages",
                {"text": text, "agent": "contact_form", "message_id": f"m-{n}"},
            )
            for n, text in enumerate(["I'm Ada", "ada@example.com"])
        ]
        await client.get_workflow_handle(workflow_id).terminate("test over")
    for response, received in turns:
        assert response.status_code == 200
        kinds = [event.event for event in received]
        assert kinds[-1] == "reply" and set(kinds) <= {"delta", "reset", "reply"}, kinds
        # What the deltas built since the last reset is the reply's message.
        built = ""
        for event in received[:-1]:
            built = "" if event.event == "reset" else built + event.json()["text"]
        assert built in ("", received[-1].json()["message"]), (built, received[-1].json())
    assert [turn[1][-1].json()["state"] for turn in turns] == ["ask_email", "ask_phone"]


async def test_the_events_of_a_run_resume_after_the_last_event_id(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(
        model_name,
        say("ask_email", "Your email?", name="Ada"),
        say("cancelled", "Stopped.", cancelled=True),
    )
    workflow_id = f"api-{uuid.uuid4().hex[:8]}"
    settings = api_settings(settings, client)
    async with running_worker(client, settings), serving(settings) as api:
        await api.post("/v1/runs", {"agent": "contact_form", "id": workflow_id})
        await api.post(f"/v1/runs/{workflow_id}/messages", {"text": "I'm Ada", "message_id": "a"})
        await api.post(f"/v1/runs/{workflow_id}/messages", {"text": "stop", "message_id": "b"})
        await client.get_workflow_handle(workflow_id).result()
        response, everything = await api.events("GET", f"/v1/runs/{workflow_id}/events")
        replies = [event for event in everything if event.event == "reply"]
        assert replies, [event.event for event in everything]
        resumed_response, resumed = await api.events(
            "GET",
            f"/v1/runs/{workflow_id}/events",
            headers={"Last-Event-ID": str(replies[0].id)},
        )
        _, from_offset = await api.events(
            "GET", f"/v1/runs/{workflow_id}/events?from_offset={int(str(replies[0].id)) + 1}"
        )
    assert response.status_code == 200 and resumed_response.status_code == 200
    # The run closed: every event, then `end`.
    assert everything[-1].event == "end" and resumed[-1].event == "end"
    numbered = offsets(everything)
    assert numbered == sorted(numbered) and len(set(numbered)) == len(numbered)
    assert [reply.json()["message_id"] for reply in replies] == ["a", "b"]
    assert "state" in {event.event for event in everything}
    assert everything[-2].event == "ended" and everything[-2].json()["status"] == "completed"
    tail = [
        event
        for event in everything
        if event.id is not None and int(event.id) > int(str(replies[0].id))
    ]
    assert [(e.event, e.id) for e in resumed[:-1]] == [(e.event, e.id) for e in tail]
    assert [(e.event, e.id) for e in from_offset] == [(e.event, e.id) for e in resumed]


async def test_a_follower_sees_a_decision_as_it_happens(
    tmp_path: Path, client: Client, llm: ScriptedLlm, model_name: str, task_queue: str
) -> None:
    agent = f"gate_{uuid.uuid4().hex[:6]}"
    worker = make_settings(
        llm, model_name, task_queue, agents_dir=agents_dir(tmp_path, gated(agent))
    )
    settings = api_settings(worker, client)
    async with running_worker(client, settings), serving(settings) as api:
        run = (await api.post("/v1/runs", {"agent": agent})).json()["id"]
        following = asyncio.create_task(
            api.events("GET", f"/v1/runs/{run}/events", who="bob", until="end")
        )
        await asyncio.sleep(1.0)
        decided = await api.post(f"/v1/runs/{run}/decision", {"decision": "approve"})
        response, received = await asyncio.wait_for(following, timeout=60)
    assert decided.status_code == 202 and response.status_code == 200
    gates = [event.json() for event in received if event.event == "gate"]
    assert gates[0]["state"] == "review" and not gates[0].get("decision")
    assert (gates[-1]["decision"], gates[-1]["by"]) == ("approve", "alice")
    assert received[-1].event == "end"


async def test_a_worker_killed_mid_stream_gives_the_client_reset_then_the_full_reply(
    temporal_env: WorkflowEnvironment,
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    settings: Settings,
    tmp_path: Path,
) -> None:
    never = "This reply is cut short by a dying worker and is never finished at all."
    full = "Hi Ada! What is your email address, so that we can write to you?"
    llm.script(
        model_name,
        slow(say("ask_email", never, name="Ada"), chunk=2, delay=0.2),  # ~7 s: killed mid-way
        slow(say("ask_email", full, name="Ada")),
    )
    workflow_id = f"api-{uuid.uuid4().hex[:8]}"
    settings = api_settings(settings, client)
    first = spawn_worker(temporal_env, llm, model_name, settings.task_queue, tmp_path)
    second = None
    received: list[Sse] = []
    try:
        async with serving(settings) as api:
            message = asyncio.create_task(
                api.events(
                    "POST",
                    f"/v1/runs/{workflow_id}/messages",
                    {"text": "I'm Ada", "agent": "contact_form", "message_id": "m-1"},
                    into=received,
                )
            )
            # Part of the reply has reached the HTTP client: kill the worker streaming it.
            await wait_until(lambda: any(e.event == "delta" for e in received), timeout=60)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            second = spawn_worker(temporal_env, llm, model_name, settings.task_queue, tmp_path)
            response, events = await asyncio.wait_for(message, timeout=120)
        await client.get_workflow_handle(workflow_id).terminate("test over")
    finally:
        kill_if_running(first)
        if second is not None:
            drain(second)
    assert response.status_code == 200
    kinds = [event.event for event in events]
    assert kinds[-1] == "reply" and "reset" in kinds, kinds
    reset = len(kinds) - 1 - kinds[::-1].index("reset")
    withdrawn = "".join(
        e.json()["text"] for e in events[: kinds.index("reset")] if e.event == "delta"
    )
    assert withdrawn and never.startswith(withdrawn) and withdrawn != never
    streamed = "".join(e.json()["text"] for e in events[reset:] if e.event == "delta")
    assert streamed == full == events[-1].json()["message"]
    assert events[-1].json()["state"] == "ask_email"
