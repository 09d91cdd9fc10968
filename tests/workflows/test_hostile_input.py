"""Inputs built to hurt: oversized or malformed decisions, floods of signals, and
secret values in the reasons a run records. Each gets a clear refusal naming the
field, and the run stays valid and small."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from temporalio.client import Client, WorkflowUpdateFailedError

from schemas.workflow import MAX_COMMENT_CHARS, DecideInput
from tests.conftest import running_worker
from tests.llm_server import ScriptedLlm, say
from tests.workflows.helpers import start, started, status, trace
from workers.history_trace import trace_from_history
from workers.settings import Settings

GATED: dict[str, Any] = {
    "name": "gated",
    "initial_state": "talk",
    "context": {"pin": {"type": "string", "secret": True, "pattern": "^[0-9]{4}$"}},
    "states": {
        "talk": {"collects": ["pin"], "transitions": [{"target": "gate", "requires": ["pin"]}]},
        "gate": {"approval": {"on_approve": "done", "on_reject": "talk"}},
        "done": {"terminal": True},
    },
}


async def test_oversized_and_malformed_decisions_are_refused_naming_the_field(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(model_name, say("gate", "Thanks", pin="1234"))
    huge = "x" * 1_500_000
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=GATED)
        await started(handle)
        await handle.signal("approve", {"by": "mallory", "comment": huge})
        await handle.signal("approve", {"by": 5})
        await handle.signal("reject", ["not", "an", "object"])
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update("decide", {"decision": "approve", "comment": huge})
        await handle.execute_update("send_message", {"text": "my pin is 1234"})
        await handle.signal("approve", {"by": "alice", "comment": "ok"})
        result = await asyncio.wait_for(handle.result(), timeout=30)
    refused = [e.reason for e in result.trace if not e.accepted]
    assert refused == [
        f"approve signal refused: comment: String should have at most {MAX_COMMENT_CHARS} "
        "characters",
        "approve signal refused: by: Input should be a valid string",
        "reject signal refused: input: Input should be a valid dictionary or instance of "
        "DecisionInput",
    ]
    assert result.state == "done" and result.trace[-1].by == "alice"
    assert DecideInput.model_fields["comment"].metadata  # bounded in the model, too


async def test_a_flood_of_signals_keeps_the_run_small(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=GATED)
        await started(handle)
        for i in range(450):
            await handle.signal("approve", {"by": f"spammer-{i}"})
        await asyncio.sleep(0.5)
        held = await trace(handle)
        current = await status(handle)
        history = await handle.fetch_history()
        await handle.terminate("test over")
    # Every signal was judged (no gate is open: refused); the run holds a tail,
    # the history all of them.
    assert 200 <= len(held) <= 400 and held[-1].by == "spammer-449"
    assert current.status == "active"
    rebuilt = await trace_from_history(history)
    assert [e.by for e in rebuilt] == [f"spammer-{i}" for i in range(450)]


async def test_a_secret_value_never_appears_in_a_reason(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    # The schema check (in the activity) and the engine (json_object: the endpoint
    # does not constrain) both refuse a bad pin without quoting it.
    llm.script(model_name, say("gate", "ok", pin="12345-SECRET"), say("talk", "ok"))
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=GATED)
        await handle.execute_update("send_message", {"text": "my pin"})
        entries = await trace(handle)
        await handle.terminate("test over")
    assert entries[0].reason == (
        "the reply does not fit the turn schema at context_update.pin: "
        "the value does not fit the declaration of secret key 'pin'"
    )
    assert all("SECRET" not in e.reason for e in entries)
