"""The console's screenshots for the README: ``python -m tests.console.screenshots docs/img``.

Runs the real parts the browser tests run (the Temporal dev server, a worker, the
scripted model server, ``fsmflow api`` on a port, Debian's chromium): a contact
form conversation of two turns, and a refund request waiting at an approval
gate; then photographs the run's page and the approval inbox.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tests.api_helpers import agents_dir, api_settings, serving
from tests.conftest import make_settings, running_worker
from tests.console.browser import chromium, new_page, reload_until_visible, sign_in
from tests.llm_server import ScriptedLlm, say
from workers.binaries import temporal_cli
from workflows.agent import SEARCH_ATTRIBUTES

REFUND: dict[str, Any] = {
    "name": "refund",
    "description": "Takes a refund request; a person approves it.",
    "initial_state": "ask_order",
    "context": {
        "order": {"type": "string", "description": "The order number"},
        "amount": {"type": "number", "description": "The amount to refund, in euros"},
        "card": {"type": "string", "description": "Card to refund to", "secret": True},
    },
    "states": {
        "ask_order": {
            "purpose": "Ask which order to refund and how much.",
            "collects": ["order", "amount"],
            "transitions": [
                {
                    "target": "review",
                    "description": "order and amount known",
                    "requires": ["order", "amount"],
                }
            ],
        },
        "review": {
            "purpose": "A person checks the order before money goes back.",
            "sees": ["order", "amount", "card"],
            "approval": {"on_approve": "refunded", "on_reject": "declined", "approvers": ["alice"]},
        },
        "refunded": {"terminal": True},
        "declined": {"terminal": True},
    },
}


async def take(target: Path) -> list[Path]:
    """Run the scenario and write the PNGs into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    model = f"shots-{uuid.uuid4().hex[:6]}"
    llm = ScriptedLlm().start()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()),
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    written = []
    try:
        llm.script(
            model,
            say("ask_email", "Hello Ada! What is your email address?", name="Ada Lovelace"),
            say(
                "ask_phone", "Thanks. And a phone number to call you back?", email="ada@example.com"
            ),
            say(
                "review",
                "Thank you: a colleague checks the refund now.",
                order="A-1042",
                amount=42.5,
            ),
        )
        directory = agents_dir(Path(tempfile.mkdtemp(prefix="fsmflow-shots-")), REFUND)
        worker = make_settings(
            llm, model, f"tq-{uuid.uuid4().hex[:8]}", agents_dir=directory, llm_timeout_seconds=60.0
        )
        settings = api_settings(worker, env.client)
        async with running_worker(env.client, settings), serving(settings) as api:
            form, refund = "contact_form-7f3a21c4", "refund-9b04d2e1"
            for number, text in enumerate(["I'm Ada Lovelace", "ada@example.com"]):
                body = {"text": text, "agent": "contact_form", "message_id": f"m{number}"}
                assert (await api.post(f"/v1/runs/{form}/messages", body)).status_code == 200
            body = {
                "text": "Please refund order A-1042, 42.50 EUR",
                "agent": "refund",
                "context": {"card": "4111 1111 1111 1111"},
            }
            assert (await api.post(f"/v1/runs/{refund}/messages", body)).status_code == 200
            async with chromium() as browser:
                page = await new_page(browser)
                await sign_in(page, api.url, "alice", then=f"/console/runs/{form}")
                await page.wait_for_selector("#live-status:has-text('Following')")
                written.append(target / "console-run.png")
                await page.screenshot(path=str(written[-1]))
                await page.goto(f"{api.url}/console/inbox")
                await reload_until_visible(page, page.locator(f'article[data-run="{refund}"]'))
                await page.get_by_label("Comment").fill("Order checked: refund approved.")
                written.append(target / "console-inbox.png")
                await page.screenshot(path=str(written[-1]))
            for run in (form, refund):
                await env.client.get_workflow_handle(run).terminate("screenshots taken")
    finally:
        await env.shutdown()
        llm.stop()
    return written


def main(argv: list[str]) -> int:
    """``python -m tests.console.screenshots DIRECTORY``."""
    if len(argv) != 1:
        sys.stderr.write("usage: python -m tests.console.screenshots DIRECTORY (e.g. docs/img)\n")
        return 2
    for path in asyncio.run(take(Path(argv[0]))):
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
