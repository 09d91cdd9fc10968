"""Prompts: a stable prefix, only the visible keys, a bounded window of dialogue."""

from __future__ import annotations

import json

from fsm.loader import parse_definition
from fsm.prompt import build_messages
from schemas.definition import AgentDefinition
from schemas.run import DialogueTurn, RunState
from tests.fsm.conftest import build


def dialogue(n: int) -> list[DialogueTurn]:
    turns = []
    for i in range(n):
        turns.append(DialogueTurn(role="user", text=f"user says {i}"))
        turns.append(DialogueTurn(role="agent", text=f"agent says {i}"))
    return turns


def test_prefix_is_stable_across_turns(shop: AgentDefinition) -> None:
    run = RunState(state="collect", context={"name": "Ada"}, visits={"collect": 1})
    first = build_messages(shop, run, dialogue(1))
    later = build_messages(shop, run, dialogue(3))
    assert first[0] == later[0]
    system = first[0]["content"]
    assert system.index("Purpose: Collect the email and age.") < system.index("## Allowed moves")
    assert '- "bye"' in system and '- "adult"' in system and '- "collect" (stay)' in system
    # 'adult' is only allowed when age >= 18: the turn must set age (and email) for it.
    assert "needs email, age set; only when age >= 18" in system
    aged = run.model_copy(update={"context": {"name": "Ada", "age": 30}})
    assert "needs email set; only when age >= 18" in build_messages(shop, aged)[0]["content"]


def test_only_visible_keys_are_shown_and_secrets_are_redacted() -> None:
    data = build()
    definition = parse_definition(data).definition
    context = {"name": "Ada", "email": "ada@example.com", "password": "hunter2", "plan": "pro"}
    run = RunState(state="adult", context=context, visits={"adult": 1})
    messages = build_messages(definition, run)
    text = json.dumps(messages)
    assert "hunter2" not in text
    assert "ada@example.com" not in text and "Ada" not in text
    known = next(m for m in messages if m["content"].startswith("Known context: "))
    assert json.loads(known["content"].removeprefix("Known context: ")) == {
        "plan": "pro",
        "agreed": None,
        "password": "[redacted]",
    }


def test_history_window_bounds_the_dialogue(shop: AgentDefinition) -> None:
    run = RunState(state="greeting", visits={"greeting": 1})
    history = [*dialogue(10), DialogueTurn(role="user", text="latest")]
    messages = build_messages(shop, run, history)
    shown = [m["content"] for m in messages if m["role"] in ("user", "assistant")]
    # history_window 4: the latest message and the 4 exchanges before it.
    assert shown == [
        "user says 6",
        "agent says 6",
        "user says 7",
        "agent says 7",
        "user says 8",
        "agent says 8",
        "user says 9",
        "agent says 9",
        "latest",
    ]
    assert messages[-1]["role"] == "user" and messages[-1]["content"] == "latest"


def test_window_zero_shows_only_the_latest_message() -> None:
    data = build()
    data["states"]["greeting"]["history_window"] = 0
    definition = parse_definition(data).definition
    run = RunState(state="greeting", visits={"greeting": 1})
    messages = build_messages(definition, run, [*dialogue(5), DialogueTurn(role="user", text="hi")])
    assert [m["content"] for m in messages if m["role"] == "user"] == ["hi"]


def test_feedback_and_task() -> None:
    definition = parse_definition(build({"mode": "autonomous"})).definition
    run = RunState(state="greeting", visits={"greeting": 1})
    messages = build_messages(
        definition, run, task="Write about FSMs", feedback="'x' is not a state"
    )
    assert messages[1] == {"role": "user", "content": "Task: Write about FSMs"}
    assert messages[-1]["content"].startswith(
        "Your previous reply was rejected: 'x' is not a state"
    )
    assert '"kind": "transition"' in messages[0]["content"]
