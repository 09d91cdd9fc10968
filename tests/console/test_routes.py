"""The console's routes over HTTP (no browser): sign-in, CSRF, refusals, redaction, diagrams.

Real parts: the Temporal dev server, an in-process worker, the API served by uvicorn.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
from temporalio.client import Client

from tests.api_helpers import TOKENS, agents_dir, api_settings, serving
from tests.conftest import make_settings, running_worker
from tests.console.helpers import SECRET_VALUE, csrf_of, secret_gated, signed_in
from tests.llm_server import ScriptedLlm
from workers.settings import Settings


async def test_pages_need_a_sign_in_and_the_form_checks_the_token(
    client: Client, settings: Settings
) -> None:
    settings = api_settings(settings, client)
    async with serving(settings) as api:
        http = httpx.AsyncClient(base_url=api.url, timeout=60)
        root = await http.get("/")
        runs = await http.get("/console/inbox?x=1")
        page = await http.get("/console/sign-in")
        wrong = await http.post(
            "/console/sign-in",
            data={"token": "not-a-token-0123456789"},
            headers={"Origin": api.url},
        )
        elsewhere = await http.post(
            "/console/sign-in",
            data={"token": TOKENS["alice"]},
            headers={"Origin": "http://evil.example"},
        )
        # The bearer header of /v1 does not sign a page in: pages read the cookie.
        away = await http.post(
            "/console/sign-in",
            data={"token": TOKENS["alice"], "next": "https://evil.example/"},
            headers={"Origin": api.url},
        )
        http.cookies.clear()
        bearer = await http.get("/console/", headers={"Authorization": f"Bearer {TOKENS['alice']}"})
        script = await http.get("/console/runs/x/events", headers={"Accept": "text/event-stream"})
        static = await http.get("/console/static/console.js")
        await http.aclose()
        alice = await signed_in(api.url, "alice")
        home = await alice.get("/console/")
        cookie = alice.cookies.jar
        await alice.aclose()
    assert root.status_code == 307 and root.headers["location"] == "/console/"
    assert runs.status_code == 303
    assert runs.headers["location"].startswith("/console/sign-in?next=%2Fconsole%2Finbox%3Fx%3D1")
    assert page.status_code == 200 and 'name="token"' in page.text
    assert wrong.status_code == 401 and "not valid" in wrong.text
    assert "fsmflow_console" not in wrong.cookies
    assert elsewhere.status_code == 403 and "another site" in elsewhere.text
    assert away.status_code == 303 and away.headers["location"] == "/console/"
    assert bearer.status_code == 303
    assert script.status_code == 401 and script.json()["error"]["code"] == "unauthorized"
    assert static.status_code == 200 and "readSse" in static.text
    assert home.status_code == 200 and '<strong id="identity">alice</strong>' in home.text
    assert "default-src 'self'" in home.headers["content-security-policy"]
    [session] = [c for c in cookie if c.name == "fsmflow_console"]
    assert session.has_nonstandard_attr("HttpOnly")
    assert session.get_nonstandard_attr("SameSite", "").lower() == "strict"
    assert not session.secure  # plain http here; https sets Secure
    assert TOKENS["alice"] not in home.text


async def test_state_changes_need_the_csrf_token_and_the_same_origin(
    client: Client, settings: Settings
) -> None:
    settings = api_settings(settings, client)
    async with serving(settings) as api:
        alice = await signed_in(api.url, "alice")
        token = csrf_of((await alice.get("/console/")).text)
        no_token = await alice.post("/console/runs/some-run/decision", data={"decision": "approve"})
        wrong = await alice.post(
            "/console/runs/some-run/decision", data={"decision": "approve", "csrf": "0" * 40}
        )
        cross = await alice.post(
            "/console/runs/some-run/decision",
            data={"decision": "approve", "csrf": token},
            headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
        )
        chat = await alice.post(
            "/console/runs/some-run/messages",
            json={"text": "hi", "agent": "contact_form"},
            headers={"Accept": "text/event-stream"},
        )
        out_refused = await alice.post("/console/sign-out", data={})
        out = await alice.post("/console/sign-out", data={"csrf": token})
        after = await alice.get("/console/")
        await alice.aclose()
    for refused in (no_token, wrong, cross):
        assert refused.status_code == 403, refused.text
        assert "<h1>Not allowed</h1>" in refused.text
    assert "another site" in cross.text
    assert chat.status_code == 403 and chat.json()["error"]["code"] == "csrf"
    assert out_refused.status_code == 403
    assert out.status_code == 303 and out.headers["location"] == "/console/sign-in"
    assert after.status_code == 303  # the cookie is gone


async def test_a_non_approver_is_refused_with_a_page_and_secrets_stay_hidden(
    tmp_path: Path, client: Client, llm: ScriptedLlm, model_name: str, task_queue: str
) -> None:
    agent = f"secret_gate_{uuid.uuid4().hex[:6]}"
    worker = make_settings(
        llm, model_name, task_queue, agents_dir=agents_dir(tmp_path, secret_gated(agent))
    )
    settings = api_settings(worker, client)
    async with running_worker(client, settings), serving(settings) as api:
        started = await api.post(
            "/v1/runs",
            {"agent": agent, "context": {"customer": "Ada Lovelace", "api_key": SECRET_VALUE}},
        )
        run = started.json()["id"]
        bob = await signed_in(api.url, "bob")
        page = await bob.get(f"/console/runs/{run}")
        refused = await bob.post(
            f"/console/runs/{run}/decision",
            data={"decision": "approve", "csrf": csrf_of(page.text)},
        )
        bob_inbox = await bob.get("/console/inbox")
        await bob.aclose()
        alice = await signed_in(api.url, "alice")
        inbox = await alice.get("/console/inbox")
        agent_page = await alice.get(f"/console/agents/{agent}")
        await alice.aclose()
        await client.get_workflow_handle(run).terminate("test over")
    assert started.status_code == 201, started.text
    assert page.status_code == 200
    assert "Ada Lovelace" in page.text and "api_key" in page.text
    assert SECRET_VALUE not in page.text
    assert "You (bob) are not among this gate's approvers." in page.text
    # The diagram: states with their classes, the current one highlighted.
    assert 'class="node initial gate visited current" data-state="review"' in page.text
    assert 'class="node terminal" data-state="done"' in page.text
    assert 'data-from="review" data-to="done"' in page.text
    assert refused.status_code == 403
    assert "<h1>Not allowed</h1>" in refused.text
    assert "&#39;bob&#39; may not decide at &#39;review&#39; (approvers: alice)" in refused.text
    assert "Traceback" not in refused.text
    assert run not in bob_inbox.text and 'id="inbox-empty"' in bob_inbox.text
    assert run in inbox.text and "A human checks the customer" in inbox.text
    assert "Ada Lovelace" in inbox.text and SECRET_VALUE not in inbox.text
    assert agent_page.status_code == 200
    assert "ok: agent" in agent_page.text and 'id="state-review"' in agent_page.text


async def test_restricted_identities_see_only_their_agents(
    client: Client, settings: Settings
) -> None:
    settings = api_settings(settings, client)
    async with serving(settings) as api:
        carol = await signed_in(api.url, "carol")
        agents = await carol.get("/console/agents")
        form = await carol.get("/console/agents/contact_form")
        chat = await carol.get("/console/chat?agent=contact_form")
        await carol.aclose()
        alice = await signed_in(api.url, "alice")
        new_chat = await alice.get("/console/chat?agent=contact_form")
        await alice.aclose()
    # A new conversation opens with the agent's greeting (its definition's).
    assert new_chat.status_code == 200
    assert (
        '<li class="msg agent"><div class="bubble">Hello! I&#39;ll take your details for a '
        "call-back. What&#39;s your full name?</div></li>"
    ) in new_chat.text
    assert agents.status_code == 200
    assert "research" in agents.text and "contact_form" not in agents.text
    assert form.status_code == 404
    assert chat.status_code == 403 and "may not use agent" in chat.text
