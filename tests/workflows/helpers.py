"""Starting runs and talking to them the way users and the CLI do."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.service import RPCError

from schemas.run import TraceEntry
from schemas.workflow import (
    AgentResult,
    AgentStatus,
    AgentWorkflowInput,
    DecideInput,
    DecisionInput,
    DecisionResult,
    MessageInput,
    Reply,
)
from tests.llm_server import call, move
from workers.client import run_result
from workers.settings import Settings

Handle = WorkflowHandle[Any, AgentResult]


async def start(client: Client, settings: Settings, **request: Any) -> Handle:
    return await client.start_workflow(
        "AgentWorkflow",
        AgentWorkflowInput.model_validate(request),
        id=f"test-{uuid.uuid4().hex[:10]}",
        task_queue=settings.task_queue,
        result_type=AgentResult,
    )


final_result = run_result
"""The result of a run however it ended (a failed run is a Temporal failure)."""


async def failed_result(handle: Handle) -> AgentResult:
    """The result of a run that ended ``failed``, checking it closed as a Temporal failure."""
    result = await run_result(handle)
    description = await handle.describe()
    assert result.status == "failed", result
    assert description.status == WorkflowExecutionStatus.FAILED, description.status
    return result


def latest(client: Client, handle: Handle) -> Handle:
    """The handle of the newest run of the chain (after continue-as-new)."""
    return client.get_workflow_handle(handle.id, result_type=AgentResult)


async def send(handle: Handle, text: str) -> Reply:
    return await handle.execute_update("send_message", MessageInput(text=text), result_type=Reply)


async def decide(
    handle: Handle, decision: str, by: str = "alice", comment: str = ""
) -> DecisionResult:
    return await handle.execute_update(
        "decide",
        DecideInput(decision=decision, by=by, comment=comment),  # type: ignore[arg-type]
        result_type=DecisionResult,
    )


async def signal(handle: Handle, name: str, by: str = "alice", comment: str = "") -> None:
    await handle.signal(name, DecisionInput(by=by, comment=comment))


async def status(handle: Handle) -> AgentStatus:
    return await handle.query("status", result_type=AgentStatus)


async def trace(handle: Handle) -> list[TraceEntry]:
    return await handle.query("trace", result_type=list[TraceEntry])


async def wait_for_status(handle: Handle, predicate: Any, timeout: float = 20.0) -> AgentStatus:
    """Poll the status query until ``predicate(status)`` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            current = await status(handle)
        except (WorkflowQueryFailedError, RPCError):  # not started, or not resolved yet
            current = None
        if current is not None and predicate(current):
            return current
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"status never matched; last: {current}")
        await asyncio.sleep(0.1)


async def started(handle: Handle) -> AgentStatus:
    """Wait until the run has resolved its definition and taken its first state."""
    return await wait_for_status(handle, lambda s: True)


DRAFT_REF = "artifact:2/draft.md"
"""Where ``research_to_the_gate`` leaves the draft: write_draft runs at step 2."""


def research_to_the_gate(topic: str = "durable execution") -> list[dict[str, Any]]:
    """Scripted model steps taking the research example (with tools) to its gate."""
    return [
        call("search_corpus", query=topic, limit=2),
        move("write", notes=f"- the corpus explains {topic}"),
        call("write_draft", topic=topic),
        move("review"),
        call("review_draft", draft=DRAFT_REF),
        move("publish_gate"),
    ]


def research_publish() -> list[dict[str, Any]]:
    """Scripted model steps of the research example after its gate approves."""
    return [call("publish_article", draft=DRAFT_REF), move("published")]
