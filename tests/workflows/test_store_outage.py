"""A PostgreSQL store that goes away mid-run (the server stopped, as in a failover or
a maintenance window) is an outage the run waits out, like a model outage: the
tool call is retried, then the run waits on durable timers and says so (status
query, ``FsmStatus='waiting_for_store'``, current details); when the server is back
the same call (same idempotency key) runs, and its effect happens once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client

from tests.conftest import make_settings, running_worker
from tests.llm_server import ScriptedLlm, call, move
from tests.postgres import PostgresServer
from tests.workflows.helpers import start, wait_for_status
from tests.workflows.test_outages import listed

SPY_TOOLS = Path(__file__).parent / "spy_tools.py"

EFFECT: dict[str, Any] = {
    "name": "store_effect",
    "mode": "autonomous",
    "initial_state": "act",
    "max_steps": 10,
    "tools": {"sync_effect": {"max_attempts": 2}},
    "states": {
        "act": {
            "tools": ["sync_effect"],
            "allow_stay": False,
            "transitions": [{"target": "done", "when": {">=": [{"var": "_calls.sync_effect"}, 1]}}],
        },
        "done": {"terminal": True},
    },
}


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """A server of this module's own: the tests stop it."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_store_outage_is_waited_out_and_the_effect_happens_once(
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    task_queue: str,
    own_postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spy = tmp_path / "spy.log"
    monkeypatch.setenv("SPY_LOG", str(spy))
    url = own_postgres.create_database(f"t{uuid.uuid4().hex[:12]}")
    own_postgres.migrate(url)
    settings = make_settings(
        llm,
        model_name,
        task_queue,
        tool_modules_spec=str(SPY_TOOLS),
        store_url=url,
        backoff_max_seconds=2.0,
    )
    llm.script(model_name, call("sync_effect", text="charge ada"), move("done"))
    async with running_worker(client, settings):
        own_postgres.pause()
        try:
            handle = await start(client, settings, definition=EFFECT)
            waiting = await wait_for_status(
                handle,
                lambda s: s.fsm_status == "waiting_for_store" and s.model_failures >= 2,
                timeout=90,
            )
            found = await listed(
                client, f"WorkflowId = '{handle.id}' AND FsmStatus = 'waiting_for_store'"
            )
            metadata = await handle.query(
                "__temporal_workflow_metadata", result_type=WorkflowMetadata
            )
        finally:
            own_postgres.resume()
        result = await asyncio.wait_for(handle.result(), timeout=90)
    assert waiting.waiting_for == "tool" and waiting.status == "active"
    assert "the store at postgresql://***@127.0.0.1:" in waiting.last_error
    assert own_postgres.password not in waiting.last_error
    assert found == [handle.id]
    assert "waiting for the tools' store (effect ledger, artifacts) since" in (
        metadata.current_details
    )
    assert result.state == "done", result.end_reason
    # The tool ran on every attempt (the outage hit its first store call), but the
    # effect its ledger guards was recorded once, and its artifact is there.
    assert spy.read_text().count("sync_effect") >= 2
    with psycopg.connect(url) as conn:
        effects = conn.execute("SELECT status, attempts FROM fsmflow_effects").fetchall()
        artifacts = conn.execute("SELECT path FROM fsmflow_artifacts").fetchall()
    assert effects == [("done", 1)]
    assert artifacts == [("0/note.txt",)]
    (entry,) = [e for e in result.trace if e.kind == "tool_call"]
    assert entry.accepted and entry.tool == "sync_effect"
