"""Tool calls in durable runs: the research example end to end, allowlists and
bad arguments that never execute, model-visible errors, failures that exhaust
their retries, and artifacts that keep megabytes out of the workflow history."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from tests.conftest import RESEARCH_TOOLS, make_settings, running_worker
from tests.llm_server import ScriptedLlm, call, move
from tests.workflows.helpers import (
    DRAFT_REF,
    failed_result,
    research_publish,
    research_to_the_gate,
    signal,
    start,
    trace,
    wait_for_status,
)
from workers.settings import Settings

SPY_TOOLS = Path(__file__).parent / "spy_tools.py"

SPY_AGENT: dict[str, Any] = {
    "name": "spy",
    "mode": "autonomous",
    "initial_state": "look",
    "max_steps": 12,
    "tools": {"explode": {"max_attempts": 2}},
    "states": {
        "look": {"tools": ["complain"], "transitions": [{"target": "work"}]},
        "work": {
            "tools": ["record", "explode", "big", "measure", "sync_effect"],
            "transitions": [{"target": "done"}],
        },
        "done": {"terminal": True},
    },
}


@pytest.fixture
def spy_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "spy.log"
    log.touch()
    monkeypatch.setenv("SPY_LOG", str(log))
    return log


@pytest.fixture
def spy_settings(llm: ScriptedLlm, model_name: str, task_queue: str) -> Settings:
    return make_settings(
        llm, model_name, task_queue, tool_modules_spec=f"{RESEARCH_TOOLS},{SPY_TOOLS}"
    )


def executed(log: Path) -> list[str]:
    return [line.split(" ", 1)[0] for line in log.read_text().splitlines()]


def tool_messages(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["content"].startswith("Tool result")]


async def test_research_example_end_to_end(
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    settings: Settings,
    publish_dir: Path,
) -> None:
    llm.script(model_name, *research_to_the_gate("durable execution"), *research_publish())
    async with running_worker(client, settings):
        handle = await start(client, settings, agent="research", task="Durable execution")
        gate = await wait_for_status(handle, lambda s: s.status == "awaiting_approval")
        await signal(handle, "approve", by="alice")
        result = await handle.result()
    assert gate.state == "publish_gate"
    assert result.state == "published", result.end_reason
    calls = [(e.tool, e.accepted) for e in result.trace if e.kind == "tool_call"]
    assert calls == [
        ("search_corpus", True),
        ("write_draft", True),
        ("review_draft", True),
        ("publish_article", True),
    ]
    assert DRAFT_REF in next(e.reason for e in result.trace if e.tool == "write_draft")
    # The review's verdict was written by the tool (the model never wrote it).
    assert next(e.reason for e in result.trace if e.tool == "review_draft").endswith(
        "; wrote verdict; wrote feedback"
    )
    assert result.context["verdict"] == "approve"
    # The article was written once and listed once, under the call's key.
    index = [json.loads(line) for line in (publish_dir / "index.jsonl").read_text().splitlines()]
    assert len(index) == 1 and index[0]["key"].startswith(f"{handle.id}/")
    article = Path(index[0]["path"]).read_text()
    assert article.startswith("# Durable execution") and "## Sources" in article
    requests = llm.requests(model_name)
    # The search result reached the next prompt; the tools are described.
    assert '"doc":"durable-execution"' in tool_messages(requests[1])[-1]
    system = "\n".join(m["content"] for m in requests[0]["messages"] if m["role"] == "system")
    assert "- search_corpus: Search the local corpus by keywords" in system
    # review_draft's artifact argument enumerates the run's artifacts.
    # Before its review, 'review' offers no move: the review call is the only variant.
    review = requests[4]["response_format"]["json_schema"]["schema"]["properties"]["action"]
    assert review["properties"]["kind"]["enum"] == ["call_tool"]
    assert review["properties"]["arguments"]["properties"]["draft"]["enum"] == [DRAFT_REF]
    review_result = tool_messages(requests[5])[-1]
    assert '"verdict":"approve"' in review_result, review_result


async def test_research_cannot_skip_its_tools(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(
        model_name,
        move("write", notes="- made up without searching"),
        move("write", notes="- still made up"),
        move("write", notes="- made up again"),
    )
    async with running_worker(client, settings):
        handle = await start(client, settings, agent="research", task="Durable execution")
        # Three invalid replies spend the round of re-asks; 'research' leaves it
        # to the default on_invalid (wait): the run pauses, says why, and asks again.
        waiting = await wait_for_status(handle, lambda s: s.fsm_status == "waiting_for_model")
        llm.script(model_name, call("search_corpus", query="durable execution", limit=2))
        await wait_for_status(handle, lambda s: s.step == 1)
        entries = await trace(handle)
        await handle.terminate("test over")
    # 'write' needs a successful search_corpus call, and research forbids staying:
    # calling a tool is the only declaration the schema offers.
    assert "at action: kind 'transition' is not one of ['call_tool']" in waiting.last_error
    assert waiting.last_error.startswith("no valid turn after 3 attempts")
    assert waiting.state == "research" and waiting.step == 0 and waiting.waiting_since
    assert [(e.kind, e.accepted) for e in entries][:4] == [
        ("turn", False),
        ("turn", False),
        ("turn", False),
        ("tool_call", True),
    ]


async def test_disallowed_tools_and_bad_arguments_never_execute(
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    spy_settings: Settings,
    spy_log: Path,
) -> None:
    llm.script(
        model_name,
        call("record", text="not allowed in look"),
        call("complain", topic="fsm"),
        move("work"),
        call("record", text=5, times=1),
        call("record", text="checked", times=2),
        move("done"),
    )
    async with running_worker(client, spy_settings):
        handle = await start(client, spy_settings, definition=SPY_AGENT)
        result = await handle.result()
    assert result.state == "done", result.end_reason
    assert executed(spy_log) == ["complain", "record"]
    assert '"times": 2' in spy_log.read_text()
    rejected = [e.reason for e in result.trace if not e.accepted]
    assert rejected == [
        "the reply does not fit the turn schema at action: "
        "tool 'record' cannot be called here (tools: complain)",
        "the reply does not fit the turn schema at action.arguments.text: "
        "5 is not of type 'string'",
    ]
    # A ToolError is the call's result: the model reads it and carries on.
    complained = next(e for e in result.trace if e.tool == "complain")
    assert complained.accepted and complained.reason.startswith("error: nothing is known")
    requests = llm.requests(model_name)
    assert tool_messages(requests[3]) == [
        "Tool result: complain: error: nothing is known about 'fsm'; try another topic"
    ]


async def test_the_engine_refuses_what_the_schema_did_not_constrain(
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    task_queue: str,
    spy_log: Path,
) -> None:
    # json_object endpoints do not enforce the schema; the checks still run.
    settings = make_settings(
        llm,
        model_name,
        task_queue,
        tool_modules_spec=f"{RESEARCH_TOOLS},{SPY_TOOLS}",
        response_format="json_object",
    )
    llm.script(
        model_name,
        move("work"),
        call("measure", blob="artifact:0/elsewhere.txt"),
        call("delete_everything"),
        move("done"),
    )
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=SPY_AGENT)
        result = await handle.result()
    assert result.state == "done", result.end_reason
    assert executed(spy_log) == []
    assert [e.accepted for e in result.trace] == [True, False, False, True]


async def test_a_failing_tool_is_retried_then_fails_the_run(
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    spy_settings: Settings,
    spy_log: Path,
) -> None:
    llm.script(model_name, move("work"), call("explode"))
    async with running_worker(client, spy_settings):
        handle = await start(client, spy_settings, definition=SPY_AGENT)
        result = await failed_result(handle)
    # The definition's max_attempts (2) overrides the registration's (5).
    assert executed(spy_log) == ["explode", "explode"]
    assert result.status == "failed"
    reason = "tool 'explode' failed: tool 'explode' raised RuntimeError: the disk is on fire"
    assert result.end_reason == f"in state 'work': {reason}"
    failed = result.trace[-2]
    assert (failed.kind, failed.tool, failed.accepted, failed.reason) == (
        "tool_call",
        "explode",
        False,
        reason,
    )


async def test_artifacts_carry_megabytes_between_tools_outside_the_history(
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    spy_settings: Settings,
    spy_log: Path,
) -> None:
    llm.script(
        model_name,
        move("work"),
        call("big", megabytes=3),
        call("measure", blob="artifact:1/big.txt"),
        move("done"),
    )
    async with running_worker(client, spy_settings):
        handle = await start(client, spy_settings, definition=SPY_AGENT)
        result = await handle.result()
    assert result.state == "done", result.end_reason
    assert executed(spy_log) == ["big", "measure"]
    stored = list(spy_settings.artifacts_dir.rglob("big.txt"))
    assert len(stored) == 1 and stored[0].stat().st_size >= 3 * 1024 * 1024 - 100
    requests = llm.requests(model_name)
    seen = tool_messages(requests[2])[-1]
    assert seen.startswith("Tool result: big: [3145") and "stored as artifact:1/big.txt" in seen
    assert len(seen) < spy_settings.artifact_summary_chars + 200
    measured = json.loads(tool_messages(requests[3])[-1].removeprefix("Tool result: measure: "))
    assert measured["bytes"] == stored[0].stat().st_size
    # The model saw the reference among the run's artifacts, as an enum.
    schema = requests[2]["response_format"]["json_schema"]["schema"]
    variants = schema["properties"]["action"]["anyOf"]
    measure = next(
        v for v in variants if v["properties"].get("tool", {}).get("enum") == ["measure"]
    )
    assert measure["properties"]["arguments"]["properties"]["blob"]["enum"] == [
        "artifact:1/big.txt"
    ]
    history = await handle.fetch_history()
    largest = max(event.ByteSize() for event in history.events)
    total = sum(event.ByteSize() for event in history.events)
    assert largest < 32 * 1024, largest
    assert total < 256 * 1024, total


async def test_a_plain_tool_uses_the_ledger_and_the_store_too(
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    spy_settings: Settings,
    spy_log: Path,
) -> None:
    llm.script(
        model_name,
        move("work"),
        call("sync_effect", text="hello"),
        call("measure", blob="artifact:1/note.txt"),
        move("done"),
    )
    async with running_worker(client, spy_settings):
        handle = await start(client, spy_settings, definition=SPY_AGENT)
        result = await handle.result()
    assert result.state == "done", result.end_reason
    assert executed(spy_log) == ["sync_effect", "measure"]
    stored = next(e for e in result.trace if e.tool == "sync_effect")
    assert stored.reason.endswith("artifacts: artifact:1/note.txt")
    requests = llm.requests(model_name)
    assert '"outcome":"stored 5 chars"' in tool_messages(requests[2])[-1]
    assert '"bytes":5' in tool_messages(requests[3])[-1]


async def test_failing_calls_spend_their_own_budget_then_the_dead_end_ends_the_run(
    client: Client, llm: ScriptedLlm, model_name: str, spy_settings: Settings, spy_log: Path
) -> None:
    # 'look' leaves only once 'complain' has succeeded, which it never does.
    agent = copy.deepcopy(SPY_AGENT)
    agent["states"]["look"].update(
        max_tool_calls=1,
        max_tool_errors=2,
        allow_stay=False,
        transitions=[{"target": "work", "when": {">=": [{"var": "_calls.complain"}, 1]}}],
    )
    llm.script(model_name, call("complain", topic="fsm"), call("complain", topic="llm"))
    async with running_worker(client, spy_settings):
        handle = await start(client, spy_settings, definition=agent)
        result = await failed_result(handle)
    # Two failed calls (the call budget of one is untouched by them), then the
    # run ends at once, naming the state: no turns idled until max_steps.
    assert executed(spy_log) == ["complain", "complain"]
    assert result.status == "failed" and result.steps == 2
    assert result.end_reason == (
        "dead end in state 'look': no transition out can hold and no tool can be "
        "called (2 failed calls on this visit)"
    )
    assert [e.kind for e in result.trace] == ["tool_call", "tool_call", "fail"]
    assert len(llm.requests(model_name)) == 2
