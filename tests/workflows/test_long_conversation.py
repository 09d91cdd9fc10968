"""A conversation of 1,000 turns: continue-as-new keeps each run's history small."""

from __future__ import annotations

import time

from temporalio.client import Client

from tests.conftest import make_settings, running_worker
from tests.llm_server import ScriptedLlm, say
from tests.workflows.helpers import latest, start, status
from tests.workflows.test_conversation import shop
from workers.client import send_message

TURNS = 1000


async def test_a_thousand_turns(client: Client, llm: ScriptedLlm, model_name: str) -> None:
    settings = make_settings(llm, model_name, "tq-" + model_name)  # hand over every 100 turns
    llm.script(model_name, say("greet", "hello", name="Ada"))
    llm.script(model_name, *[say("greet", f"reply {i}") for i in range(1, TURNS)])
    started = time.monotonic()
    async with running_worker(client, settings):
        handle = await start(client, settings, definition=shop(max_steps=5000))
        replies = [await send_message(client, handle.id, f"message {i}") for i in range(TURNS)]
        current = latest(client, handle)
        final = await status(current)
        context = await current.query("context")
        history = await current.fetch_history()
        runs = [w async for w in client.list_workflows(f"WorkflowId = '{handle.id}'")]
        await current.terminate("test over")
    elapsed = time.monotonic() - started
    assert [r.message for r in replies[-2:]] == [f"reply {TURNS - 2}", f"reply {TURNS - 1}"]
    assert all(r.accepted for r in replies)
    assert (final.state, final.step, final.status) == ("greet", TURNS, "active")
    assert context == {"name": "Ada"}
    # The newest run holds at most 100 turns of events, not 1,000.
    assert len(history.events) < 2000
    assert len(runs) >= TURNS // 100
    print(f"{TURNS} turns in {elapsed:.1f}s")
