"""The console in a real browser (Chromium through Playwright) against real parts:
the Temporal dev server, a worker, the scripted LLM server and the API on a port.

Screenshots of every page are saved in the test's temporary directory.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from playwright.async_api import Page, expect
from temporalio.client import Client

from tests.api_helpers import agents_dir, api_settings, serving
from tests.conftest import make_settings, running_worker
from tests.console.browser import chromium, new_page, reload_until_visible, sign_in
from tests.console.helpers import SECRET_VALUE, secret_gated
from tests.llm_server import ScriptedLlm, say
from tests.workflows.test_streaming import slow

FIRST = "Hello Ada! Nice to meet you. What is your email address, please?"
SECOND = "Thank you. And a phone number where we can call you back?"
CURRENT = re.compile(r"\bcurrent\b")
VISITED = re.compile(r"\bvisited\b")


async def shot(page: Page, directory: Path, name: str) -> None:
    directory.mkdir(exist_ok=True)
    await page.screenshot(path=str(directory / f"{name}.png"), full_page=True)


async def test_chat_streams_and_the_run_page_follows_live(
    client: Client, llm: ScriptedLlm, model_name: str, task_queue: str, tmp_path: Path
) -> None:
    llm.script(
        model_name,
        # Slow enough that the text is seen growing before the reply is decided.
        slow(say("ask_email", FIRST, name="Ada"), chunk=4, delay=0.06),
        slow(say("ask_phone", SECOND, email="ada@example.com"), chunk=8, delay=0.02),
    )
    shots = tmp_path / "screenshots"
    # A streamed turn takes seconds here: the model's bound is generous (a loaded machine).
    worker = make_settings(llm, model_name, task_queue, llm_timeout_seconds=60.0)
    settings = api_settings(worker, client)
    async with running_worker(client, settings), serving(settings) as api, chromium() as browser:
        chat = await new_page(browser)
        await sign_in(chat, api.url, "alice", then="/console/chat")
        await chat.get_by_label("Agent").select_option("contact_form")
        await chat.get_by_role("button", name="New conversation").click()
        run = await chat.locator("#chat").get_attribute("data-run")
        assert run and run.startswith("contact_form-")

        await chat.get_by_label("Your message").fill("Hi, I'm Ada")
        await chat.get_by_label("Your message").press("Enter")
        reply = chat.locator("li.msg.agent").last
        # Streamed text shows before the reply (and its state) has come.
        await chat.wait_for_function(
            """() => {
                const last = [...document.querySelectorAll('li.msg.agent')].pop();
                return last && !last.dataset.state && last.textContent.length > 5;
            }""",
            polling=20,
        )
        await expect(reply.locator(".state-after")).to_have_text("→ ask_email")
        await expect(reply.locator(".bubble")).to_have_text(FIRST)
        await expect(chat.locator("#chat-state")).to_have_text("ask_email")
        await shot(chat, shots, "chat")

        # The run's page, open in another tab, follows the next turn without a reload.
        watch = await chat.context.new_page()
        await watch.goto(f"{api.url}/console/runs/{run}")
        diagram = watch.locator("svg.diagram")
        await expect(diagram.locator('.node[data-state="ask_email"]')).to_have_class(CURRENT)
        await expect(watch.locator("#live-status")).to_have_text("Following the run's events.")
        await chat.get_by_label("Your message").fill("ada@example.com")
        await chat.get_by_role("button", name="Send").click()
        await expect(diagram.locator('.node[data-state="ask_phone"]')).to_have_class(CURRENT)
        await expect(diagram.locator('.node[data-state="ask_email"]')).not_to_have_class(CURRENT)
        await expect(diagram.locator('.node[data-state="ask_email"]')).to_have_class(VISITED)
        edge = diagram.locator('.edge[data-from="ask_email"][data-to="ask_phone"]')
        await expect(edge.locator(".count")).to_have_text("×1")
        await expect(watch.locator("#run-state")).to_have_text("ask_phone")
        await expect(watch.locator("#live")).to_contain_text("moved ask_email → ask_phone")
        await expect(chat.locator("li.msg.agent").last.locator(".state-after")).to_have_text(
            "→ ask_phone"
        )
        await shot(watch, shots, "run-live")

        # After a reload, the page draws the path from the trace.
        await watch.reload()
        await expect(edge).to_have_attribute("data-count", "1")
        await expect(watch.locator("ol.timeline")).to_contain_text("moved ask_name → ask_email")
        await expect(watch.locator('tr[data-key="email"]')).to_contain_text("ada@example.com")

        runs = await new_page(browser)
        await sign_in(runs, api.url, "bob")
        await reload_until_visible(
            runs, runs.locator(f'tr[data-run="{run}"]:has-text("ask_phone")')
        )
        await shot(runs, shots, "runs")
        agent = await runs.context.new_page()
        await agent.goto(f"{api.url}/console/agents/contact_form")
        await expect(agent.locator("#check-result")).to_contain_text("ok: agent 'contact_form'")
        await shot(agent, shots, "agent")
        await client.get_workflow_handle(run).terminate("test over")
    saved = {path.name for path in shots.iterdir()}
    assert saved >= {"chat.png", "run-live.png", "runs.png", "agent.png"}


async def test_approve_from_the_inbox_be_refused_as_another_and_see_the_run_end(
    tmp_path: Path, client: Client, llm: ScriptedLlm, model_name: str, task_queue: str
) -> None:
    agent = f"secret_gate_{uuid.uuid4().hex[:6]}"
    worker = make_settings(
        llm, model_name, task_queue, agents_dir=agents_dir(tmp_path, secret_gated(agent))
    )
    settings = api_settings(worker, client)
    shots = tmp_path / "screenshots"
    async with running_worker(client, settings), serving(settings) as api, chromium() as browser:
        started = await api.post(
            "/v1/runs",
            {"agent": agent, "context": {"customer": "Ada Lovelace", "api_key": SECRET_VALUE}},
        )
        assert started.status_code == 201, started.text
        run = started.json()["id"]

        # bob may see the run, not decide there: the API refuses, the page says why.
        bob = await new_page(browser)
        await sign_in(bob, api.url, "bob", then=f"/console/runs/{run}")
        await expect(bob.locator("#gate")).to_contain_text("not among this gate's approvers")
        await bob.get_by_text("Decide anyway").click()
        await bob.get_by_role("button", name="Approve").click()
        await expect(bob.get_by_role("heading", name="Not allowed")).to_be_visible()
        await expect(bob.locator("#error-message")).to_contain_text(
            "'bob' may not decide at 'review' (approvers: alice)"
        )
        await shot(bob, shots, "refused")
        await bob.goto(f"{api.url}/console/inbox")
        await expect(bob.locator("#inbox-empty")).to_be_visible()

        # alice follows the run in one tab and approves from her inbox in another.
        alice = await new_page(browser)
        await sign_in(alice, api.url, "alice", then=f"/console/runs/{run}")
        await expect(alice.locator("#run-status")).to_have_text("awaiting_approval")
        await expect(alice.locator("#live-status")).to_have_text("Following the run's events.")
        assert SECRET_VALUE not in await alice.content()
        inbox = await alice.context.new_page()
        await inbox.goto(f"{api.url}/console/inbox")
        card = inbox.locator(f'article[data-run="{run}"]')
        await reload_until_visible(inbox, card)
        await expect(card).to_contain_text("A human checks the customer")
        await expect(card).to_contain_text("Ada Lovelace")
        await expect(card).not_to_contain_text(SECRET_VALUE)
        await shot(inbox, shots, "inbox")
        await card.get_by_label("Comment").fill("Checked the customer.")
        await card.get_by_role("button", name="Approve").click()
        await expect(inbox.get_by_role("status")).to_contain_text("Decision sent: approve")

        # The run's page, live: the decision with who made it, the end, the highlight.
        await expect(alice.locator("#live")).to_contain_text(
            "approve at review by alice: Checked the customer."
        )
        await expect(alice.locator("#run-status")).to_have_text("completed")
        await expect(alice.locator("#run-ended")).to_be_visible()
        diagram = alice.locator("svg.diagram")
        await expect(diagram.locator('.node[data-state="done"]')).to_have_class(CURRENT)
        await expect(diagram.locator('.node[data-state="review"]')).not_to_have_class(CURRENT)
        await expect(alice.locator("#live-status")).to_contain_text("The run has ended")
        await alice.reload()
        await expect(alice.locator("ol.timeline")).to_contain_text(
            "approved at review by alice → done"
        )
        await expect(alice.locator("ol.timeline")).to_contain_text("Checked the customer.")
        await shot(alice, shots, "run-ended")
        await inbox.goto(f"{api.url}/console/inbox")
        await expect(inbox.locator("#inbox-empty")).to_be_visible()
    assert (shots / "refused.png").exists() and (shots / "run-ended.png").exists()
