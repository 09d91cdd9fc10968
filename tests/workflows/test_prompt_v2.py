"""Prompt engine v2 in durable runs: the machine moves by itself, re-asks show the
rejected reply, prompts grow append-only, cached tokens are traced."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client

from tests.conftest import running_worker
from tests.llm_server import ScriptedLlm, reply
from tests.workflows.helpers import send, start
from workers.settings import Settings


def _text(request: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in request["messages"]]


async def test_the_callback_form_moves_by_itself_and_reasks_show_the_rejected_reply(
    client: Client, llm: ScriptedLlm, model_name: str, settings: Settings
) -> None:
    llm.script(
        model_name,
        reply("ask_name", "Thanks Ada! Your email?", name="Ada Lovelace"),
        # 'name' is only seen in ask_email: not in its turn schema, so a reply
        # writing it is refused before the engine even sees it, and re-asked.
        reply("ask_email", "Noted, Eve.", name="Eve"),
        reply("ask_email", "And a phone number?", email="ada@example.com"),
        reply("ask_phone", "No problem. Is this right?", phone_declined=True),
        reply("confirm", "Submitted, thank you!", confirmed=True),
    )
    async with running_worker(client, settings):
        handle = await start(client, settings, agent="callback")
        replies = [
            await send(handle, "My name is Ada Lovelace"),
            await send(handle, "ada@example.com"),
            await send(handle, "I'd rather not give my phone"),
            await send(handle, "Yes, correct"),
        ]
        result = await handle.result()
    # The model only ever stays; eventless transitions moved the run.
    assert [r.state for r in replies] == ["ask_email", "ask_phone", "confirm", "submitted"]
    assert result.status == "completed" and result.steps == 4
    assert result.context == {
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "phone_declined": True,
        "confirmed": True,
    }
    kinds = [(e.kind, e.from_state, e.to_state, e.accepted) for e in result.trace]
    assert kinds == [
        ("turn", "ask_name", "ask_name", True),
        ("always", "ask_name", "ask_email", True),
        ("turn", "ask_email", None, False),
        ("turn", "ask_email", "ask_email", True),
        ("always", "ask_email", "ask_phone", True),
        ("turn", "ask_phone", "ask_phone", True),
        ("always", "ask_phone", "confirm", True),
        ("turn", "confirm", "confirm", True),
        ("always", "confirm", "submitted", True),
    ]
    assert "('name' was unexpected)" in result.trace[2].reason
    requests = llm.requests(model_name)
    # reasoning: none, and a state that only stays: the smallest reply there is.
    schema = requests[0]["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["context_update", "target_state", "message"]
    assert schema["properties"]["target_state"]["enum"] == ["ask_name"]
    assert schema["properties"]["message"]["maxLength"] == 80
    # The re-ask: the rejected reply as the model's own message, then why.
    reask = _text(requests[2])
    assert reask[-2] == (
        "assistant",
        '{"context_update": {"name": "Eve"}, "target_state": "ask_email", '
        '"message": "Noted, Eve."}',
    )
    assert reask[-1][0] == "user" and reask[-1][1].startswith(
        "That reply was rejected: the reply does not fit the turn schema at context_update"
    )
    # The agent's greeting is the dialogue's first message, in its state's block.
    greeting = "Hello! I'll take your details for a call-back. What's your name?"
    assert _text(requests[0])[2] == ("assistant", greeting)
    # Append-only: each prompt (but its last two messages: where the run is now and
    # the newest message) is a prefix of the next turn's prompt, until the window
    # (history_window 2: 5 messages) is over its bound and cut by 2 messages.
    stable = _text(requests[0])[:-2]
    assert _text(requests[1])[: len(stable)] == stable
    cut = _text(requests[3])
    assert cut[0] == _text(requests[1])[0]
    assert greeting not in str(cut) and "My name is Ada Lovelace" not in str(cut)
    # The endpoint's cached tokens reach the trace (the scripted server counts the
    # prefix a prompt shares with the one before, as a prefix cache would).
    cached = [e.cached_tokens for e in result.trace if e.kind == "turn"]
    assert cached[0] == 0 and all(c is not None and c > 0 for c in cached[1:])
