"""Autonomous runs: a research -> write -> review loop (without tools, inline)
through its approval gate (approve, reject and timeout), its rewrite bound, and
failure on exhaustion. The research example with tools is in test_tools.py."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from tests.conftest import running_worker
from tests.llm_server import ScriptedLlm, call, move
from tests.workflows.helpers import (
    decide,
    failed_result,
    send,
    signal,
    start,
    wait_for_status,
)
from workers.settings import Settings

TASK = "Write a short article on finite state machines for LLM agents."
REVIEW_LOOP = yaml.safe_load((Path(__file__).parent / "review_loop.yaml").read_text())


def to_the_gate() -> list[dict]:
    return [
        move("write", notes="- FSMs bound what an agent may do"),
        move("review", draft="Draft one."),
        move("write", verdict="revise", feedback="Add an example."),
        move("review", draft="Draft two, with an example."),
        move("publish_gate", verdict="approve"),
    ]


async def test_research_loop_through_an_approved_gate(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(model_name, *to_the_gate())
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=REVIEW_LOOP, task=TASK)
        waiting = await wait_for_status(handle, lambda s: s.status == "awaiting_approval")
        # The Web UI's current details say where the run is and what it waits for.
        metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        with pytest.raises(WorkflowUpdateFailedError):
            await send(handle, "autonomous runs take no messages")
        await signal(handle, "approve", by="alice", comment="ship it")
        result = await handle.result()
    assert (waiting.state, waiting.waiting_for, waiting.step) == ("publish_gate", "approval", 5)
    assert "in state **publish_gate** (awaiting_approval), step 5/" in metadata.current_details
    assert "waiting for an approval decision: on approve to published, on reject to write" in (
        metadata.current_details
    )
    assert result.status == "completed" and result.state == "published"
    assert [e.to_state for e in result.trace] == [
        "write",
        "review",
        "write",
        "review",
        "publish_gate",
        "published",
    ]
    decision = result.trace[-1]
    assert (decision.kind, decision.by, decision.reason) == ("approve", "alice", "ship it")
    assert result.context["draft"] == "Draft two, with an example."
    # The task reaches the model; autonomous turns use the declaration schema.
    request = llm.requests(model_name)[0]
    assert {"role": "user", "content": f"Task: {TASK}"} in request["messages"]
    action = request["response_format"]["json_schema"]["schema"]["properties"]["action"]
    assert action["properties"]["kind"]["enum"] == ["transition"]


async def test_rejection_sends_the_draft_back(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(
        model_name,
        *to_the_gate(),
        move("review", draft="Draft three."),
        move("publish_gate", verdict="approve"),
    )
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=REVIEW_LOOP, task=TASK)
        await wait_for_status(handle, lambda s: s.status == "awaiting_approval")
        rejected = await decide(handle, "reject", by="bob", comment="too long")
        await wait_for_status(handle, lambda s: s.status == "awaiting_approval" and s.step > 6)
        approved = await decide(handle, "approve", by="alice")
        result = await handle.result()
    assert rejected.state in ("write", "review", "publish_gate")
    assert approved.state == "published"
    kinds = [(e.kind, e.to_state) for e in result.trace if e.kind != "turn"]
    assert kinds == [("reject", "write"), ("approve", "published")]
    assert result.context["draft"] == "Draft three."
    # The reviewer's comment reaches the model in the state the rejection led to.
    note = {"role": "user", "content": "The reviewer bob rejected at publish_gate: too long"}
    after = llm.requests(model_name)[5]["messages"]
    assert note in after and note not in llm.requests(model_name)[4]["messages"]


async def test_rewrites_are_bounded_by_the_table(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(
        model_name,
        move("write", notes="notes"),
        move("review", draft="d1"),
        move("write", verdict="revise"),
        move("review", draft="d2"),
        move("write", verdict="revise"),
        move("review", draft="d3"),
        # write has been entered three times: another rewrite is not offered.
        move("write", verdict="revise"),
        move("publish_gate", verdict="revise"),
    )
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=REVIEW_LOOP, task=TASK)
        await wait_for_status(handle, lambda s: s.status == "awaiting_approval")
        await signal(handle, "approve", by="alice")
        result = await handle.result()
    rejected = [e for e in result.trace if not e.accepted]
    # review forbids staying (allow_stay: false): the only move left is the gate.
    assert len(rejected) == 1 and "'write' is not one of ['publish_gate']" in rejected[0].reason
    schema = llm.requests(model_name)[-1]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["action"]["properties"]["target_state"]["enum"] == ["publish_gate"]
    assert result.state == "published"


async def test_exhausted_re_asks_fail_the_run_naming_the_cause(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(
        model_name,
        {"content": "I think we should write now."},
        call("web_search", query="fsm"),
        move("published", notes="facts"),
    )
    definition = copy.deepcopy(REVIEW_LOOP)
    definition["states"]["research"]["on_invalid"] = "fail"
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=definition, task=TASK)
        result = await failed_result(handle)
    assert result.status == "failed"
    assert result.end_reason is not None
    assert result.end_reason.startswith("in state 'research': no valid turn after 3 attempts")
    # research forbids staying and every move needs notes: notes may not be null.
    assert "'published' is not one of ['write']" in result.end_reason
    reasons = [e.reason for e in result.trace]
    assert reasons[0].startswith("the reply is not valid JSON")
    assert "the reply does not fit the turn schema at action" in reasons[1]
    assert result.trace[-1].kind == "fail"


async def test_undecided_gate_times_out(
    skipping_env: WorkflowEnvironment, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(model_name, *to_the_gate())
    client = skipping_env.client
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=REVIEW_LOOP, task=TASK)
        # Waiting for the result lets the test server skip the 24 h timer.
        result = await handle.result()
    assert result.state == "abandoned" and result.status == "completed"
    assert result.trace[-1].kind == "timeout" and result.trace[-1].to_state == "abandoned"
