"""Record the histories that the replay tests replay.

Run ``.venv/bin/python -m tests.histories.record`` after a deliberate change to
the workflow (and explain the change behind ``workflow.patched`` where running
histories must keep replaying). Each scenario runs the example agents on a fresh
dev server with the scripted model, and the history is written as JSON here.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

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
from tests.conftest import make_settings, running_worker
from tests.llm_server import ScriptedLlm, move, say
from workers.binaries import temporal_cli
from workflows.agent import SEARCH_ATTRIBUTES

HERE = Path(__file__).parent

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
}


async def form_conversation(client: Client, queue: str, model: str) -> str:
    handle = await _start(client, queue, agent="contact_form")
    for text in ["I'm Ada", "ada@example.com", "no phone, thanks", "yes"]:
        await _send(handle, text)
    await handle.result()
    return handle.id


async def research_approved(client: Client, queue: str, model: str) -> str:
    handle = await _start(client, queue, agent="research", task="Write about FSMs")
    await _awaiting(handle)
    await handle.signal("approve", DecisionInput(by="alice", comment="ship it"))
    await handle.result()
    return handle.id


async def research_rejected_then_approved(client: Client, queue: str, model: str) -> str:
    handle = await _start(client, queue, agent="research", task="Write about FSMs")
    await _awaiting(handle)
    await handle.execute_update("decide", DecideInput(decision="reject", by="bob", comment="no"))
    await asyncio.sleep(0.5)
    await _awaiting(handle)
    await handle.execute_update("decide", DecideInput(decision="approve", by="alice"))
    await handle.result()
    return handle.id


SCENARIOS: dict[str, Scenario] = {
    "form_conversation": form_conversation,
    "research_approved": research_approved,
    "research_rejected_then_approved": research_rejected_then_approved,
}


async def main() -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()),
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=pydantic_data_converter,
    )
    llm = ScriptedLlm().start()
    try:
        for name, scenario in SCENARIOS.items():
            model = f"record-{name}"
            queue = f"record-{name}"
            llm.script(model, *SCRIPTS[name])
            settings = make_settings(llm, model, queue)
            async with running_worker(env.client, settings):
                workflow_id = await scenario(env.client, queue, model)
            history = await env.client.get_workflow_handle(workflow_id).fetch_history()
            (HERE / f"{name}.json").write_text(history.to_json())
    finally:
        llm.stop()
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
    os._exit(0)  # see tests/run.py: temporalio may abort at interpreter exit
