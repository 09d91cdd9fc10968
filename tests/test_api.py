"""The HTTP API over real HTTP (uvicorn on a free port), against the real dev server and
a worker with the scripted model: runs, messages, decisions, lists, errors, limits."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from schemas.api import RunView
from schemas.workflow import AgentResult
from tests.api_helpers import agents_dir, api_settings, gated, serving
from tests.conftest import free_port, make_settings, running_worker
from tests.llm_server import ScriptedLlm, say
from workers.api import Identity, Runs
from workers.settings import Settings


async def test_start_a_run_send_a_message_and_read_it(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(model_name, say("ask_email", "Hi Ada, your email?", name="Ada"))
    workflow_id = f"api-{uuid.uuid4().hex[:8]}"
    settings = api_settings(settings, client)
    async with running_worker(client, settings), serving(settings) as api:
        started = await api.post("/v1/runs", {"agent": "contact_form", "id": workflow_id})
        sent = await api.post(f"/v1/runs/{workflow_id}/messages", {"text": "I'm Ada"})
        view = await api.get(f"/v1/runs/{workflow_id}")
        trace = await api.get(f"/v1/runs/{workflow_id}/trace")
    assert started.status_code == 201, started.text
    assert started.json() == {
        "id": workflow_id,
        "run_id": started.json()["run_id"],
        "state": "ask_name",
        "status": "active",
        "ui_url": f"http://ui.test/namespaces/default/workflows/{workflow_id}",
        "greeting": "Hello! I'll take your details for a call-back. What's your full name?",
    }
    assert sent.status_code == 200, sent.text
    reply = sent.json()
    assert reply["message"] == "Hi Ada, your email?" and reply["state"] == "ask_email"
    assert (reply["status"], reply["step"], reply["accepted"], reply["created"]) == (
        "active",
        1,
        True,
        False,
    )
    assert reply["message_id"].startswith("msg-")
    assert view.status_code == 200, view.text
    shown = view.json()
    assert (shown["source"], shown["state"], shown["agent"], shown["execution"]) == (
        "query",
        "ask_email",
        "contact_form",
        "running",
    )
    assert shown["detail"]["waiting_for"] == "message" and shown["gate"] is None
    assert trace.status_code == 200, trace.text
    entries = trace.json()["entries"]
    assert [(e["from_state"], e["to_state"]) for e in entries] == [("ask_name", "ask_email")]


async def test_update_with_start_and_a_resent_message_is_one_turn(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    # One scripted reply: a second turn would find none and fall back.
    llm.script(model_name, say("ask_email", "Hi Ada, your email?", name="Ada"))
    workflow_id = f"api-{uuid.uuid4().hex[:8]}"
    body = {"text": "I'm Ada", "agent": "contact_form", "message_id": "m-1"}
    settings = api_settings(settings, client)
    async with running_worker(client, settings), serving(settings) as api:
        first = await api.post(f"/v1/runs/{workflow_id}/messages", body)
        again = await api.post(f"/v1/runs/{workflow_id}/messages", body)
        trace = await api.get(f"/v1/runs/{workflow_id}/trace")
        calls = len(llm.requests(model_name))
        handle = client.get_workflow_handle(workflow_id)
        await handle.terminate("test over")
    assert first.status_code == 200, first.text
    assert first.json()["created"] is True and again.json()["created"] is False
    for field in ("message", "state", "status", "step", "accepted", "message_id"):
        assert first.json()[field] == again.json()[field], field
    assert first.json()["state"] == "ask_email"
    assert len(trace.json()["entries"]) == 1 and calls == 1


async def test_a_message_to_no_run_without_an_agent_is_404(
    client: Client, settings: Settings
) -> None:
    settings = api_settings(settings, client)
    async with serving(settings) as api:
        sent = await api.post("/v1/runs/no-such-run/messages", {"text": "hello"})
        shown = await api.get("/v1/runs/no-such-run")
    for response in (sent, shown):
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "not_found"
    assert sent.json()["error"]["message"].startswith(
        "message refused: no workflow 'no-such-run' ("
    ) or sent.json()["error"]["message"].startswith("no workflow 'no-such-run' (")
    assert shown.json()["error"]["message"].startswith("no workflow 'no-such-run' (")


async def test_decisions_are_made_by_authenticated_approvers(
    tmp_path: Path, client: Client, llm: ScriptedLlm, model_name: str, task_queue: str
) -> None:
    agent = f"gate_{uuid.uuid4().hex[:6]}"
    worker = make_settings(
        llm, model_name, task_queue, agents_dir=agents_dir(tmp_path, gated(agent))
    )
    settings = api_settings(worker, client)
    async with running_worker(client, settings), serving(settings) as api:
        started = await api.post("/v1/runs", {"agent": agent})
        run = started.json()["id"]
        view = await api.get(f"/v1/runs/{run}")
        nobody = await api.post(f"/v1/runs/{run}/decision", {"decision": "approve"}, who=None)
        forged = await api.post(
            f"/v1/runs/{run}/decision", {"decision": "approve"}, who="not-a-token-0123456789"
        )
        bob = await api.post(f"/v1/runs/{run}/decision", {"decision": "approve"}, who="bob")
        carol = await api.post(f"/v1/runs/{run}/decision", {"decision": "approve"}, who="carol")
        alice = await api.post(
            f"/v1/runs/{run}/decision", {"decision": "approve", "comment": "ship it"}
        )
        result = await client.get_workflow_handle(run, result_type=AgentResult).result()
        late = await api.post(f"/v1/runs/{run}/decision", {"decision": "reject"})
    assert started.status_code == 201 and started.json()["state"] == "review", started.text
    gate = view.json()["gate"]
    assert gate == {
        "state": "review",
        "approvers": ["alice"],
        "on_approve": "done",
        "on_reject": "rejected",
    }
    assert view.json()["awaiting_approval"] is True
    assert nobody.status_code == 401 and nobody.json()["error"]["code"] == "unauthorized"
    assert nobody.headers["www-authenticate"] == "Bearer"
    assert forged.status_code == 401 and "not-a-token" not in forged.text
    assert bob.status_code == 403, bob.text
    assert bob.json()["error"] == {
        "code": "not_an_approver",
        "message": "approve refused: 'bob' may not decide at 'review' (approvers: alice)",
    }
    assert carol.status_code == 403, carol.text
    assert (
        carol.json()["error"]["message"] == f"carol (agents: research) may not use agent '{agent}'"
    )
    assert alice.status_code == 202, alice.text
    assert alice.json() == {
        "id": run,
        "decision": "approve",
        "by": "alice",
        "gate": "review",
        "comment": "ship it",
    }
    assert result.state == "done"
    assert [(e.kind, e.by, e.reason) for e in result.trace] == [("approve", "alice", "ship it")]
    assert late.status_code == 409 and "has ended" in late.json()["error"]["message"]


async def test_an_identity_restricted_to_other_agents_is_403(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    settings = api_settings(settings, client)
    fresh = f"api-{uuid.uuid4().hex[:8]}"
    async with running_worker(client, settings), serving(settings) as api:
        run = (await api.post("/v1/runs", {"agent": "contact_form"})).json()["id"]
        refused = [
            await api.post("/v1/runs", {"agent": "contact_form"}, who="carol"),
            await api.post(
                f"/v1/runs/{fresh}/messages", {"text": "hi", "agent": "contact_form"}, who="carol"
            ),
            await api.post(f"/v1/runs/{run}/messages", {"text": "hi"}, who="carol"),
            await api.get(f"/v1/runs/{run}", who="carol"),
            await api.get(f"/v1/runs/{run}/trace", who="carol"),
            await api.get(f"/v1/runs/{run}/events", who="carol"),
        ]
        never_started = await api.get(f"/v1/runs/{fresh}")
        await client.get_workflow_handle(run).terminate("test over")
    for response in refused:
        assert response.status_code == 403, response.text
        assert response.json()["error"] == {
            "code": "forbidden",
            "message": "carol (agents: research) may not use agent 'contact_form'",
        }
    assert never_started.status_code == 404


async def test_no_token_is_401_on_every_route(client: Client, settings: Settings) -> None:
    settings = api_settings(settings, client)
    async with serving(settings) as api:
        responses = [
            await api.get("/v1/runs", who=None),
            await api.get("/v1/runs/x", who=None),
            await api.post("/v1/runs", {"agent": "contact_form"}, who=None),
            await api.http.get("/v1/runs", headers={"Authorization": "Basic YWxpY2U6eA=="}),
        ]
        health = await api.get("/healthz", who=None)
        schema = await api.get("/openapi.json", who=None)
    for response in responses:
        assert response.status_code == 401, response.text
    assert health.status_code == 200
    paths = schema.json()["paths"]
    assert {"/v1/runs", "/v1/runs/{id}/messages", "/v1/runs/{id}/decision"} <= set(paths)
    assert "HTTPBearer" in schema.json()["components"]["securitySchemes"]


async def test_lists_filter_and_page_through_runs(
    tmp_path: Path, client: Client, llm: ScriptedLlm, model_name: str, task_queue: str
) -> None:
    agent = f"gate_{uuid.uuid4().hex[:6]}"
    worker = make_settings(
        llm, model_name, task_queue, agents_dir=agents_dir(tmp_path, gated(agent))
    )
    settings = api_settings(worker, client)
    async with running_worker(client, settings), serving(settings) as api:
        ids = [(await api.post("/v1/runs", {"agent": agent})).json()["id"] for _ in range(3)]
        await api.post(f"/v1/runs/{ids[0]}/decision", {"decision": "approve"})
        await client.get_workflow_handle(ids[0]).result()
        every = await api.wait_listed(f"agent={agent}&limit=10", 3)
        waiting = await api.wait_listed(f"agent={agent}&awaiting_approval=true", 2)
        by_status = await api.wait_listed(f"agent={agent}&status=completed", 1)
        by_state = await api.wait_listed(f"agent={agent}&state=done", 1)
        first = await api.get(f"/v1/runs?agent={agent}&limit=2")
        token = first.json()["next_page_token"]
        second = await api.get(f"/v1/runs?agent={agent}&limit=2&page_token={token}")
        # Carol may use the research agent only: she sees none of these runs.
        hidden = await api.get("/v1/runs?limit=100", who="carol")
        refused = await api.get(f"/v1/runs?agent={agent}", who="carol")
        bad_token = await api.get(f"/v1/runs?agent={agent}&page_token=%%%")
        bad_status = await api.get("/v1/runs?status=broken")
        injected = await api.get("/v1/runs", params={"state": "x' OR 1=1"})
        for run in ids[1:]:
            await client.get_workflow_handle(run).terminate("test over")
    assert {r["id"] for r in every["runs"]} == set(ids)
    assert {r["id"] for r in waiting["runs"]} == set(ids[1:])
    assert all(r["awaiting_approval"] and r["state"] == "review" for r in waiting["runs"])
    assert [r["id"] for r in by_status["runs"]] == [ids[0]]
    assert [r["id"] for r in by_state["runs"]] == [ids[0]]
    assert by_status["runs"][0]["execution"] == "completed"
    assert by_status["runs"][0]["agent"] == agent
    assert len(first.json()["runs"]) == 2 and token
    assert len(second.json()["runs"]) == 1 and second.json()["next_page_token"] is None
    assert {r["id"] for r in first.json()["runs"] + second.json()["runs"]} == set(ids)
    assert not {r["id"] for r in hidden.json()["runs"]} & set(ids)
    assert refused.status_code == 403
    assert (bad_token.status_code, bad_token.json()["error"]["field"]) == (422, "page_token")
    assert (bad_status.status_code, bad_status.json()["error"]["field"]) == (422, "status")
    assert (injected.status_code, injected.json()["error"]["field"]) == (422, "state")


@pytest.mark.parametrize(
    ("path", "body", "field", "message"),
    [
        ("/v1/runs", {"agent": "contact_form", "contxt": {}}, "contxt", "Extra inputs"),
        ("/v1/runs", {"agent": "no such agent"}, "agent", "String should match pattern"),
        ("/v1/runs", {}, "agent", "Field required"),
        ("/v1/runs", {"agent": "contact_form", "id": "a/b"}, "id", "String should match"),
        ("/v1/runs", {"agent": "contact_form", "task": "x" * 16_001}, "task", "at most 16000"),
        ("/v1/runs/x/messages", {"text": "   "}, "text", "the message is empty"),
        ("/v1/runs/x/messages", {"text": "hi", "message_id": "a b"}, "message_id", "pattern"),
        ("/v1/runs/x/decision", {"decision": "maybe"}, "decision", "'approve' or 'reject'"),
        ("/v1/runs/x/decision", [1, 2], "body", "valid dictionary"),
    ],
)
async def test_bad_input_is_422_naming_the_field(
    client: Client, settings: Settings, path: str, body: object, field: str, message: str
) -> None:
    settings = api_settings(settings, client)
    async with serving(settings) as api:
        response = await api.post(path, body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid", field)
    assert error["message"].startswith(f"{field}: ") and message in error["message"]


async def test_not_json_and_bad_query_parameters_are_422(
    client: Client, settings: Settings
) -> None:
    settings = api_settings(settings, client)
    async with serving(settings) as api:
        garbled = await api.http.post(
            "/v1/runs",
            content=b"{not json",
            headers={**api.headers("alice"), "Content-Type": "application/json"},
        )
        limit = await api.get("/v1/runs?limit=0")
        flag = await api.get("/v1/runs?awaiting_approval=perhaps")
        offset = await api.http.get(
            "/v1/runs/x/events", headers=api.headers("alice", **{"Last-Event-ID": "abc"})
        )
    assert (garbled.status_code, garbled.json()["error"]["field"]) == (422, "body")
    assert garbled.json()["error"]["message"].startswith("body: not JSON")
    assert (limit.status_code, limit.json()["error"]["field"]) == (422, "limit")
    assert (flag.status_code, flag.json()["error"]["field"]) == (422, "awaiting_approval")
    assert (offset.status_code, offset.json()["error"]["field"]) == (422, "last-event-id")


async def test_an_agent_the_workers_do_not_know_is_422(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    settings = api_settings(settings, client)
    async with running_worker(client, settings), serving(settings) as api:
        response = await api.post("/v1/runs", {"agent": "no_such_agent"})
        context = await api.post("/v1/runs", {"agent": "contact_form", "context": {"bogus": 1}})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "agent"
    assert "definition refused" in error["message"] and "no_such_agent" in error["message"]
    assert context.status_code == 422, context.text
    assert context.json()["error"]["field"] == "context"
    assert "initial context refused" in context.json()["error"]["message"]
    assert "bogus" in context.json()["error"]["message"]


async def test_a_message_the_run_refuses_is_409_or_422(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(model_name, say("cancelled", "Stopped.", cancelled=True))
    workflow_id = f"api-{uuid.uuid4().hex[:8]}"
    settings = api_settings(settings, client, max_message_chars=10)
    async with running_worker(client, settings), serving(settings) as api:
        await api.post("/v1/runs", {"agent": "contact_form", "id": workflow_id})
        long = await api.post(f"/v1/runs/{workflow_id}/messages", {"text": "x" * 11})
        last = {"text": "stop", "message_id": "m-last"}
        stopped = await api.post(f"/v1/runs/{workflow_id}/messages", last)
        # Resent after the run ended: its reply, once more, and no new turn.
        resent = await api.post(f"/v1/runs/{workflow_id}/messages", last)
        ended = await api.post(f"/v1/runs/{workflow_id}/messages", {"text": "hello?"})
        decided = await api.post(f"/v1/runs/{workflow_id}/decision", {"decision": "approve"})
        # A message that would start a conversation is checked before it starts one.
        fresh = f"api-{uuid.uuid4().hex[:8]}"
        starting = {"text": "x" * 11, "agent": "contact_form"}
        not_started = await api.post(f"/v1/runs/{fresh}/messages", starting)
        never = await api.get(f"/v1/runs/{fresh}")
    assert (long.status_code, long.json()["error"]["field"]) == (422, "text"), long.text
    assert long.json()["error"]["message"] == (
        "message refused: the message has 11 characters; the limit is 10"
    )
    assert stopped.status_code == 200 and stopped.json()["status"] == "completed"
    assert resent.status_code == 200 and resent.json() == stopped.json()
    assert ended.status_code == 409, ended.text
    assert ended.json()["error"]["message"] == f"message refused: run '{workflow_id}' has ended"
    assert decided.status_code == 409
    assert (not_started.status_code, not_started.json()["error"]["field"]) == (422, "text")
    assert never.status_code == 404


async def test_no_approval_gate_open_is_409(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    settings = api_settings(settings, client)
    async with running_worker(client, settings), serving(settings) as api:
        run = (await api.post("/v1/runs", {"agent": "contact_form"})).json()["id"]
        response = await api.post(f"/v1/runs/{run}/decision", {"decision": "reject"})
        await client.get_workflow_handle(run).terminate("test over")
    assert response.status_code == 409, response.text
    assert response.json()["error"] == {
        "code": "no_gate",
        "message": "reject refused: no approval gate is open (state 'ask_name', active)",
    }


async def test_a_body_over_the_limit_is_413(client: Client, settings: Settings) -> None:
    settings = api_settings(settings, client, api_max_body=1024)
    big = {"agent": "contact_form", "task": "x" * 2000}

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"x" * 512

    async with serving(settings) as api:
        declared = await api.post("/v1/runs", big)
        streamed = await api.http.post("/v1/runs", content=chunks(), headers=api.headers("alice"))
        unauthenticated = await api.post("/v1/runs", big, who=None)
        small = await api.post("/v1/runs", {"agent": "contact_form", "contxt": 1})
    for response in (declared, streamed, unauthenticated):
        assert response.status_code == 413, response.text
        assert response.json()["error"] == {
            "code": "too_large",
            "message": "the request body is over 1024 bytes (FSMFLOW_API_MAX_BODY)",
        }
    assert small.status_code == 422


async def test_each_identity_has_its_rate(client: Client, settings: Settings) -> None:
    settings = api_settings(settings, client, api_rate="3/m")
    async with serving(settings) as api:
        alice = [(await api.get("/v1/runs/x", who="alice")).status_code for _ in range(4)]
        bob = (await api.get("/v1/runs/x", who="bob")).status_code
        limited = await api.get("/v1/runs/x", who="alice")
    assert alice == [404, 404, 404, 429] and bob == 404
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 20


async def test_temporal_unreachable_is_503(client: Client, settings: Settings) -> None:
    settings = api_settings(settings, client, temporal_address=f"127.0.0.1:{free_port()}")
    async with serving(settings) as api:
        shown = await api.get("/v1/runs/x")
        ready = await api.get("/readyz", who=None)
        health = await api.get("/healthz", who=None)
    assert shown.status_code == 503, shown.text
    assert shown.json()["error"]["code"] == "unavailable"
    assert shown.json()["error"]["message"].startswith(
        f"cannot reach Temporal at {settings.temporal_address}"
    )
    assert ready.status_code == 503 and health.status_code == 200


async def test_a_streamed_message_ends_with_its_reply(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(model_name, say("ask_email", "Hi Ada, your email?", name="Ada"))
    workflow_id = f"api-{uuid.uuid4().hex[:8]}"
    settings = api_settings(settings, client)
    async with running_worker(client, settings), serving(settings) as api:
        response, received = await api.events(
            "POST",
            f"/v1/runs/{workflow_id}/messages",
            {"text": "I'm Ada", "agent": "contact_form", "message_id": "m-1"},
        )
        refused, nothing = await api.events(
            "POST", f"/v1/runs/{workflow_id}/messages", {"text": "x" * 5000}
        )
        missing, _ = await api.events("POST", "/v1/runs/no-such-run/messages", {"text": "hi"})
        await client.get_workflow_handle(workflow_id).terminate("test over")
    assert response.status_code == 200
    kinds = [event.event for event in received]
    assert kinds[-1] == "reply" and set(kinds) <= {"delta", "reset", "reply"}, kinds
    reply = received[-1].json()
    assert (reply["message"], reply["state"], reply["created"]) == (
        "Hi Ada, your email?",
        "ask_email",
        True,
    )
    # Refused by the run's validator: an HTTP error, not a stream.
    assert refused.status_code == 422 and not nothing
    assert refused.json()["error"]["message"] == (
        "message refused: the message has 5000 characters; the limit is 4000"
    )
    assert missing.status_code == 404


@workflow.defn(name="Silent")
class Silent:
    """A workflow that hosts no event stream (as runs of workers before streaming)."""

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


async def test_the_events_of_a_run_without_a_stream_are_501(
    client: Client, settings: Settings
) -> None:
    settings = api_settings(settings, client)
    run = f"silent-{uuid.uuid4().hex[:8]}"
    async with (
        Worker(
            client,
            task_queue=settings.task_queue,
            workflows=[Silent],
            # Defined beside the API's imports: nothing here needs the sandbox.
            workflow_runner=UnsandboxedWorkflowRunner(),
        ),
        serving(settings) as api,
    ):
        await client.start_workflow(Silent.run, id=run, task_queue=settings.task_queue)
        response, received = await api.events("GET", f"/v1/runs/{run}/events")
        missing, _ = await api.events("GET", "/v1/runs/no-such-run/events")
        await client.get_workflow_handle(run).terminate("test over")
    assert response.status_code == 501 and not received
    assert response.json()["error"]["code"] == "not_streaming"
    assert missing.status_code == 404


async def test_an_unexpected_error_is_500_without_its_details(
    client: Client, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    class Broken(Runs):
        async def view(self, identity: Identity, workflow_id: str) -> RunView:
            raise RuntimeError("secret detail from deep inside")

    settings = api_settings(settings, client)
    async with serving(settings, runs=Broken(settings)) as api:
        response = await api.get("/v1/runs/x")
    assert response.status_code == 500
    assert response.json()["error"] == {
        "code": "internal",
        "message": "internal error (the API's log has the details)",
    }
    assert "secret detail" in capsys.readouterr().out  # logged, with its traceback
