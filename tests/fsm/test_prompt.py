"""Prompts: static first, an append-only transcript cut in blocks, what changes last."""

from __future__ import annotations

import json

from fsm.loader import parse_definition
from fsm.prompt import build_messages, dialogue_window
from schemas.definition import AgentDefinition
from schemas.run import DialogueTurn, RunState
from tests.fsm.conftest import build


def dialogue(n: int, state: str = "") -> list[DialogueTurn]:
    turns = []
    for i in range(n):
        turns.append(DialogueTurn(role="user", text=f"user says {i}", state=state))
        turns.append(DialogueTurn(role="agent", text=f"agent says {i}", state=state))
    return turns


def test_the_agent_comes_first_and_the_moves_last(shop: AgentDefinition) -> None:
    run = RunState(state="collect", context={"name": "Ada"}, visits={"collect": 1})
    messages = build_messages(shop, run, dialogue(1, "collect"))
    greeting = build_messages(shop, RunState(state="greeting", visits={"greeting": 1}))
    # The first message depends on the definition only: the same in every state.
    assert messages[0] == greeting[0] and messages[0]["role"] == "system"
    assert "Purpose" not in messages[0]["content"]
    assert messages[1]["content"].startswith("## State: collect\nPurpose: Collect the email")
    now = messages[-1]
    assert now["role"] == "system"
    assert now["content"].startswith("## Now: state collect (Collect the email and age.)")
    lines = now["content"].splitlines()
    moves = lines[lines.index("Moves (target_state):") + 1 :]
    # By priority, staying last and named plainly; 'adult' needs age (>= 18) and email.
    assert moves == [
        '- "bye": go there',
        '- "adult": go there [needs email, age set; only when age >= 18]',
        '- "collect": stay here',
    ]
    aged = run.model_copy(update={"context": {"name": "Ada", "age": 30}})
    assert "needs email set; only when age >= 18" in build_messages(shop, aged)[-1]["content"]


def test_consecutive_turns_share_everything_but_the_newest_messages(
    shop: AgentDefinition,
) -> None:
    # A conversation moving greeting -> collect: each prompt, but for its last two
    # messages (where the run is now, then the newest message), is a prefix of the
    # next one's, except when the window is cut (every few turns, not every turn).
    history: list[DialogueTurn] = []
    run = RunState(state="greeting", visits={"greeting": 1})
    previous: list[dict[str, str]] | None = None
    cuts = 0
    for turn in range(12):
        if turn == 3:
            run = RunState(state="collect", context={"name": "Ada"}, visits={"collect": 1})
        history.append(DialogueTurn(role="user", text=f"message {turn}", state=run.state))
        window = dialogue_window(shop, run, history)
        messages = build_messages(shop, run, window)
        if previous is not None:
            assert previous[-2]["content"].startswith("## Now: ")
            stable = previous[:-2]
            if messages[: len(stable)] != stable:
                cuts += 1
                assert messages[0] == previous[0]  # the agent part always stays
        previous = messages
        history.append(DialogueTurn(role="agent", text=f"reply {turn}", state=run.state))
    # history_window 4: at most 9 messages, cut by 4 when over: a cut every other
    # turn once the window is full (messages 10, 14, 18, 22), never on the others.
    assert cuts == 4


def test_each_state_shows_its_block_where_the_dialogue_entered_it(shop: AgentDefinition) -> None:
    run = RunState(state="collect", context={"name": "Ada"}, visits={"collect": 1})
    history = [
        DialogueTurn(role="user", text="I am Ada", state="greeting"),
        DialogueTurn(role="agent", text="Hi Ada! Your email?", state="collect"),
        DialogueTurn(role="user", text="ada@example.com", state="collect"),
    ]
    contents = [m["content"] for m in build_messages(shop, run, history)]
    # The newest message last; where the run is now right before it.
    assert [c.split("\n")[0] for c in contents[1:]] == [
        "## State: greeting",
        "I am Ada",
        "## State: collect",
        "Hi Ada! Your email?",
        "## Now: state collect (Collect the email and age.)",
        "ada@example.com",
    ]
    collect = contents[3]
    # What the state collects may be written; what it only sees is read-only.
    assert "Keys you may fill in (context_update):\n- email (string, email)\n- age (integer)" in (
        collect
    )
    # What it only sees is read-only: not among the keys to fill in, shown as known.
    assert "name" not in collect.split("Keys you may fill in")[1]
    assert 'Known: {"name": "Ada"}' in contents[-2]
    # The run entered a state after the last message: its block closes the transcript.
    moved = run.model_copy(update={"state": "adult"})
    contents = [m["content"] for m in build_messages(shop, moved, history)]
    assert contents[-2].startswith("## State: adult")


def test_only_visible_keys_are_shown_and_secrets_are_redacted() -> None:
    definition = parse_definition(build()).definition
    context = {"name": "Ada", "email": "ada@example.com", "password": "hunter2", "plan": "pro"}
    run = RunState(state="adult", context=context, visits={"adult": 1})
    messages = build_messages(definition, run)
    text = json.dumps(messages)
    assert "hunter2" not in text
    assert "ada@example.com" not in text and "Ada" not in text
    known = next(line for line in messages[-1]["content"].splitlines() if line.startswith("Known"))
    # Unset keys are not shown (a small model copies a null it has just read).
    assert json.loads(known.removeprefix("Known: ")) == {"plan": "pro", "password": "[redacted]"}


def test_the_window_is_cut_in_blocks(shop: AgentDefinition) -> None:
    run = RunState(state="greeting", visits={"greeting": 1})
    history = [*dialogue(10), DialogueTurn(role="user", text="latest")]
    # history_window 4: at most 9 messages; over that, the start moves by 4 at a time.
    sizes = [len(dialogue_window(shop, run, history[:n])) for n in range(1, 22)]
    assert sizes == [1, 2, 3, 4, 5, 6, 7, 8, 9, 6, 7, 8, 9, 6, 7, 8, 9, 6, 7, 8, 9]
    window = dialogue_window(shop, run, history)
    assert window[-1].text == "latest" and window[0].text == "user says 6"
    # Positions count from the start of the conversation, also when the snapshot
    # dropped its oldest messages: the cut stays where it was.
    assert dialogue_window(shop, run, history[6:], dropped=6) == window


def test_window_zero_shows_only_the_latest_message() -> None:
    data = build()
    data["states"]["greeting"]["history_window"] = 0
    definition = parse_definition(data).definition
    run = RunState(state="greeting", visits={"greeting": 1})
    history = [*dialogue(5), DialogueTurn(role="user", text="hi")]
    window = dialogue_window(definition, run, history)
    messages = build_messages(definition, run, window)
    assert [m["content"] for m in messages if m["role"] == "user"] == ["hi"]


def test_a_reask_shows_the_rejected_reply_and_why() -> None:
    definition = parse_definition(build({"mode": "autonomous"})).definition
    run = RunState(state="greeting", visits={"greeting": 1})
    rejected = '{"action":{"kind":"transition","target_state":"x"}}'
    messages = build_messages(
        definition,
        run,
        task="Write about FSMs",
        feedback="'x' is not a state",
        rejected_reply=rejected,
    )
    assert messages[1] == {"role": "user", "content": "Task: Write about FSMs"}
    assert messages[-2] == {"role": "assistant", "content": rejected}
    assert messages[-1] == {
        "role": "user",
        "content": "That reply was rejected: 'x' is not a state. "
        "Reply again with one valid JSON object.",
    }
    assert "either a transition (target_state" in messages[0]["content"]
    # A reply cut off (or one that cannot be shown) is left out; the feedback
    # alone says what to change.
    cut = build_messages(
        definition, run, feedback="your reply was cut off at 256 tokens; reply again, shorter"
    )
    assert cut[-2]["role"] == "system"
    assert cut[-1]["content"] == (
        "That reply was rejected: your reply was cut off at 256 tokens; reply again, "
        "shorter. Reply again with one valid JSON object."
    )
