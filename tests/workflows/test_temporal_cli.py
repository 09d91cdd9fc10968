"""A run driven entirely from the Temporal CLI, as the README shows."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from tests.conftest import running_worker
from tests.llm_server import ScriptedLlm, say
from tests.workflows.helpers import research_publish, research_to_the_gate
from workers.binaries import temporal_cli
from workers.settings import Settings


async def temporal(env: WorkflowEnvironment, *args: str) -> dict | list | str:
    address = env.client.service_client.config.target_host
    command = [str(temporal_cli()), *args, "--address", address, "--output", "json"]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    text = out.decode().strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


async def test_conversation_started_and_driven_from_the_temporal_cli(
    temporal_env: WorkflowEnvironment,
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    settings: Settings,
) -> None:
    llm.script(
        model_name,
        say("ask_email", "Hi Ada! Your email?", name="Ada"),
        say("cancelled", "Alright, nothing was submitted.", cancelled=True),
    )
    workflow_id = f"cli-{uuid.uuid4().hex[:8]}"
    async with running_worker(client, settings):
        await temporal(
            temporal_env,
            "workflow",
            "start",
            "--type",
            "AgentWorkflow",
            "--task-queue",
            settings.task_queue,
            "--workflow-id",
            workflow_id,
            "--input",
            '{"agent": "contact_form", "context": {}}',
        )
        reply = await temporal(
            temporal_env,
            "workflow",
            "update",
            "execute",
            "--workflow-id",
            workflow_id,
            "--name",
            "send_message",
            "--input",
            '{"text": "I am Ada"}',
        )
        queried = await temporal(
            temporal_env,
            "workflow",
            "query",
            "--workflow-id",
            workflow_id,
            "--name",
            "status",
        )
        await temporal(
            temporal_env,
            "workflow",
            "update",
            "execute",
            "--workflow-id",
            workflow_id,
            "--name",
            "send_message",
            "--input",
            '{"text": "actually, stop"}',
        )
        result = await client.get_workflow_handle(workflow_id).result()
    assert isinstance(reply, dict) and reply["result"]["state"] == "ask_email"
    assert reply["result"]["message"] == "Hi Ada! Your email?"
    assert isinstance(queried, dict) and queried["queryResult"][0]["state"] == "ask_email"
    assert result["state"] == "cancelled" and result["status"] == "completed"


async def test_approval_by_signal_from_the_temporal_cli(
    temporal_env: WorkflowEnvironment,
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    settings: Settings,
) -> None:
    llm.script(model_name, *research_to_the_gate(), *research_publish())
    workflow_id = f"cli-{uuid.uuid4().hex[:8]}"
    async with running_worker(client, settings):
        await temporal(
            temporal_env,
            "workflow",
            "start",
            "--type",
            "AgentWorkflow",
            "--task-queue",
            settings.task_queue,
            "--workflow-id",
            workflow_id,
            "--input",
            '{"agent": "research", "task": "Write about FSMs"}',
        )
        listed: list = []
        for _ in range(100):
            found = await temporal(
                temporal_env,
                "workflow",
                "list",
                "--query",
                f"WorkflowId = '{workflow_id}' AND FsmAwaitingApproval = true",
            )
            listed = found if isinstance(found, list) else []
            if listed:
                break
            await asyncio.sleep(0.2)
        await temporal(
            temporal_env,
            "workflow",
            "signal",
            "--workflow-id",
            workflow_id,
            "--name",
            "approve",
            "--input",
            '{"by": "alice", "comment": "lgtm"}',
        )
        result = await client.get_workflow_handle(workflow_id).result()
    assert [w["execution"]["workflowId"] for w in listed] == [workflow_id]
    assert result["state"] == "published"
    (decision,) = [e for e in result["trace"] if e["kind"] == "approve"]
    assert (decision["by"], decision["reason"]) == ("alice", "lgtm")
