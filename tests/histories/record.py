"""Record the histories that the replay tests replay.

Run ``.venv/bin/python -m tests.histories.record NAME...`` to record scenarios
(all when none is named). Histories recorded by earlier versions stay committed as
they are: they are what running workflows look like, and the current code must keep
replaying them (behind ``workflow.patched`` where it changes what they did). Each
scenario runs on a fresh dev server with the scripted model, and the history is
written as JSON here.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from schemas.workflow import (
    AgentResult,
    AgentWorkflowInput,
    DecideInput,
    DecisionInput,
    MessageInput,
    Reply,
)
from tests.conftest import RESEARCH_TOOLS, make_settings, running_worker
from tests.llm_server import ScriptedLlm, call, move, say
from tests.workflows.helpers import research_publish, research_to_the_gate
from tests.workflows.test_tools import SPY_AGENT, SPY_TOOLS
from workers.binaries import temporal_cli
from workflows.agent import SEARCH_ATTRIBUTES

HERE = Path(__file__).parent
REVIEW_LOOP = yaml.safe_load((HERE.parent / "workflows" / "review_loop.yaml").read_text())
"""The tool-free research loop: the research example before it had tools (v1)."""

Scenario = Callable[[Client, str, str], Awaitable[str]]


async def _start(client: Client, queue: str, **request: Any) -> Any:
    return await client.start_workflow(
        "AgentWorkflow",
        AgentWorkflowInput.model_validate(request),
        id=f"record-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
        result_type=AgentResult,
    )


async def _send(handle: Any, text: str) -> Reply:
    return await handle.execute_update("send_message", MessageInput(text=text), result_type=Reply)


async def _awaiting(handle: Any) -> None:
    from schemas.workflow import AgentStatus

    for _ in range(200):
        try:
            status = await handle.query("status", result_type=AgentStatus)
            if status.status == "awaiting_approval":
                return
        except Exception:  # noqa: BLE001 - not started yet
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("the run never reached its gate")


SCRIPTS: dict[str, list[dict[str, Any]]] = {
    "form_conversation": [
        {"content": "not json"},
        say("ask_email", "Your email?", name="Ada"),
        say("ask_phone", "Phone?", email="ada@example.com"),
        say("confirm", "Correct?", phone_declined=True),
        say("submitted", "Done", confirmed=True),
    ],
    "research_approved": [
        move("write", notes="facts"),
        move("review", draft="d1"),
        move("write", verdict="revise", feedback="more"),
        move("review", draft="d2"),
        move("publish_gate", verdict="approve"),
    ],
    "research_rejected_then_approved": [
        move("write", notes="facts"),
        move("review", draft="d1"),
        move("publish_gate", verdict="approve"),
        move("review", draft="d2"),
        move("publish_gate", verdict="approve"),
    ],
    "research_tools_published": [*research_to_the_gate(), *research_publish()],
    "tools_errors_artifacts_failure": [
        call("complain", topic="fsm"),
        move("work"),
        call("big", megabytes=1),
        call("measure", blob="artifact:2/big.txt"),
        call("explode"),
    ],
}


async def form_conversation(client: Client, queue: str, model: str) -> str:
    handle = await _start(client, queue, agent="contact_form")
    for text in ["I'm Ada", "ada@example.com", "no phone, thanks", "yes"]:
        await _send(handle, text)
    await handle.result()
    return handle.id


async def research_approved(client: Client, queue: str, model: str) -> str:
    handle = await _start(client, queue, definition=REVIEW_LOOP, task="Write about FSMs")
    await _awaiting(handle)
    await handle.signal("approve", DecisionInput(by="alice", comment="ship it"))
    await handle.result()
    return handle.id


async def research_rejected_then_approved(client: Client, queue: str, model: str) -> str:
    handle = await _start(client, queue, definition=REVIEW_LOOP, task="Write about FSMs")
    await _awaiting(handle)
    await handle.execute_update("decide", DecideInput(decision="reject", by="bob", comment="no"))
    await asyncio.sleep(0.5)
    await _awaiting(handle)
    await handle.execute_update("decide", DecideInput(decision="approve", by="alice"))
    await handle.result()
    return handle.id


async def research_tools_published(client: Client, queue: str, model: str) -> str:
    handle = await _start(client, queue, agent="research", task="Durable execution")
    await _awaiting(handle)
    await handle.signal("approve", DecisionInput(by="alice", comment="ship it"))
    await handle.result()
    return handle.id


async def tools_errors_artifacts_failure(client: Client, queue: str, model: str) -> str:
    handle = await _start(client, queue, definition=SPY_AGENT)
    await handle.result()
    return handle.id


SCENARIOS: dict[str, Scenario] = {
    "form_conversation": form_conversation,
    "research_approved": research_approved,
    "research_rejected_then_approved": research_rejected_then_approved,
    "research_tools_published": research_tools_published,
    "tools_errors_artifacts_failure": tools_errors_artifacts_failure,
}


async def main(names: list[str]) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="fsmflow-record-"))
    os.environ.setdefault("SPY_LOG", str(scratch / "spy.log"))
    os.environ.setdefault("RESEARCH_PUBLISH_DIR", str(scratch / "published"))
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()),
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=pydantic_data_converter,
    )
    llm = ScriptedLlm().start()
    try:
        for name in names or list(SCENARIOS):
            scenario = SCENARIOS[name]
            model = f"record-{name}"
            queue = f"record-{name}"
            llm.script(model, *SCRIPTS[name])
            settings = make_settings(
                llm, model, queue, tool_modules_spec=f"{RESEARCH_TOOLS},{SPY_TOOLS}"
            )
            async with running_worker(env.client, settings):
                workflow_id = await scenario(env.client, queue, model)
            history = await env.client.get_workflow_handle(workflow_id).fetch_history()
            (HERE / f"{name}.json").write_text(history.to_json())
    finally:
        llm.stop()
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
    os._exit(0)  # see tests/run.py: temporalio may abort at interpreter exit
