"""The run_tool activity on its own (Temporal's ActivityEnvironment): checks it
repeats, a key reused for another call, and plain tools that wait on the ledger
all at once do not starve it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.artifacts import FileArtifactStore
from activities.ledger import SqliteLedger
from activities.tools import ToolActivities, load_tool_modules
from fsm.tools import call_identity
from schemas.activity import RunToolInput

SPY_TOOLS = Path(__file__).parents[1] / "workflows" / "spy_tools.py"


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ToolActivities:
    monkeypatch.setenv("SPY_LOG", str(tmp_path / "spy.log"))
    return ToolActivities(
        load_tool_modules([str(SPY_TOOLS)]),
        ledger=SqliteLedger(tmp_path / "ledger.sqlite3"),
        artifacts=FileArtifactStore(tmp_path / "artifacts"),
        threads=12,
    )


def request(tool: str, step: int = 1, **arguments: object) -> RunToolInput:
    return RunToolInput(
        tool=tool,
        arguments=arguments,
        idempotency_key=f"wf/run/{step}/0",
        workflow_id="wf",
        chain_id="run",
        step=step,
        call_index=0,
    )


async def test_unknown_tools_and_bad_arguments_are_not_retried(runner: ToolActivities) -> None:
    env = ActivityEnvironment()
    with pytest.raises(ApplicationError) as unknown:
        await env.run(runner.run_tool, request("delete_everything"))
    assert unknown.value.non_retryable and unknown.value.type == "UnknownTool"
    with pytest.raises(ApplicationError) as bad:
        await env.run(runner.run_tool, request("record", text=5, times=1))
    assert bad.value.non_retryable and bad.value.type == "ToolArgumentsInvalid"
    assert "bad arguments for tool 'record': text: 5 is not of type 'string'" in str(bad.value)


async def test_a_key_reused_for_other_arguments_is_refused_for_good(
    runner: ToolActivities, tmp_path: Path
) -> None:
    env = ActivityEnvironment()
    first = await env.run(runner.run_tool, request("sync_effect", text="to ada"))
    # A retry of the same call replays the recorded effect.
    again = await env.run(runner.run_tool, request("sync_effect", text="to ada"))
    assert first.ok and again.text == first.text and "stored 6 chars" in first.text
    # The same key for another call: not its result, not its effect, and no retry.
    with pytest.raises(ApplicationError) as conflict:
        await env.run(runner.run_tool, request("sync_effect", text="to bob"))
    assert conflict.value.non_retryable and conflict.value.type == "IdempotencyConflict"
    recorded = call_identity("sync_effect", {"text": "to ada"})
    assert f"idempotency key 'wf/run/1/0' is recorded for tool 'sync_effect' call {recorded}" in (
        str(conflict.value)
    )
    assert call_identity("sync_effect", {"text": "to bob"}) in str(conflict.value)
    entries = await SqliteLedger(tmp_path / "ledger.sqlite3").entries()
    assert [(e.key, e.call, e.result, e.attempts) for e in entries] == [
        ("wf/run/1/0", recorded, "stored 6 chars", 1)
    ]
    runner.close()


async def test_many_plain_tools_waiting_on_the_ledger_at_once(runner: ToolActivities) -> None:
    # More than the default executor's threads (min(32, cores + 4)) on this machine.
    calls = [
        ActivityEnvironment().run(runner.run_tool, request("sync_effect", step, text=f"n{step}"))
        for step in range(12)
    ]
    outputs = await asyncio.wait_for(asyncio.gather(*calls), timeout=60)
    assert all(o.ok and o.artifacts == [f"artifact:{i}/note.txt"] for i, o in enumerate(outputs))
    runner.close()


async def test_a_result_over_the_artifact_limit_tells_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPY_LOG", str(tmp_path / "spy.log"))
    runner = ToolActivities(
        load_tool_modules([str(SPY_TOOLS)]),
        ledger=SqliteLedger(tmp_path / "ledger.sqlite3"),
        artifacts=FileArtifactStore(tmp_path / "artifacts", max_bytes=512 * 1024),
    )
    # Retrying would produce the same megabyte: the call ends with a result the model reads.
    output = await ActivityEnvironment().run(runner.run_tool, request("big", megabytes=1))
    runner.close()
    assert not output.ok and output.artifacts == []
    assert output.text.startswith("error: the result could not be kept: artifact 1/big.txt is ")
    assert "over the store's limit of 524,288 (FSMFLOW_ARTIFACT_MAX_BYTES)" in output.text
    assert not list((tmp_path / "artifacts").rglob("*.txt"))
