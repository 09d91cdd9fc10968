"""A reply's message on the run's stream, from the activity's side: the partial
JSON tap, the coalescing publisher, and the llm_turn activity streaming from the
scripted server (its publishes recorded by a stand-in for the Temporal client)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter
from temporalio.testing import ActivityEnvironment

from activities.streaming import MessageTap, ReplyStream
from fsm.engine import start_run
from fsm.judge import bundle_hash
from schemas.activity import AgentBundle, LlmTurnInput
from schemas.definition import AgentDefinition
from schemas.events import RunEvent
from schemas.run import DialogueTurn
from tests.activities.test_llm_turn import DOCUMENT, FORM, KEY, activities
from tests.llm_server import ScriptedLlm, move, say

BEFORE = ["reasoning", "context_update", "target_state"]
TURN = {
    "reasoning": 'the user said "hi"',
    "context_update": {"name": "Ada", "email": None},
    "target_state": "ask_email",
    "message": 'Hi Ada \u00e9\U0001f600 "quoted"\r\nsecond line\\ end',
}


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_the_tap_gives_out_the_message_once_the_move_is_decided(size: int) -> None:
    judged: list[dict[str, Any]] = []

    def decided(partial: dict[str, Any]) -> bool:
        judged.append(partial)
        return True

    tap = MessageTap(BEFORE, decided)
    text = json.dumps(TURN, ensure_ascii=size % 2 == 1)  # escaped and raw unicode
    out = [tap.feed(piece) for piece in pieces(text, size)]
    assert "".join(out) == TURN["message"] == tap.text
    # Judged once, with every key before the message complete.
    assert len(judged) == 1
    assert {k: judged[0][k] for k in BEFORE} == {k: TURN[k] for k in BEFORE}
    # Nothing is given out before the message begins.
    first = next(i for i, piece in enumerate(out) if piece)
    assert '"message"' in "".join(pieces(text, size)[: first + 1])


def test_a_move_the_engine_refuses_is_never_shown() -> None:
    tap = MessageTap(BEFORE, lambda partial: False)
    assert "".join(tap.feed(p) for p in pieces(json.dumps(TURN), 3)) == ""


def test_a_message_written_before_its_move_is_not_shown() -> None:
    reordered = {"message": "early", **{k: TURN[k] for k in BEFORE}}
    calls: list[Any] = []
    tap = MessageTap(BEFORE, lambda partial: calls.append(partial) or True)
    assert "".join(tap.feed(p) for p in pieces(json.dumps(reordered), 2)) == ""
    assert calls == []


class Recorder:
    """A stand-in for the Temporal client: records what publish signals carry."""

    def __init__(self, *, fail: bool = False) -> None:
        self.data_converter = DataConverter.default
        self.signals: list[list[RunEvent]] = []
        self.fail = fail
        self.id = "wf"

    def get_workflow_handle(self, workflow_id: str, run_id: str | None = None) -> Recorder:
        return self

    async def signal(self, name: str, batch: Any) -> None:
        if self.fail:
            raise RuntimeError("the workflow is gone")
        assert name == "__temporal_workflow_stream_publish"
        converter = self.data_converter.payload_converter
        self.signals.append(
            [
                RunEvent.model_validate(
                    converter.from_payload(Payload.FromString(base64.b64decode(item.data)))
                )
                for item in batch.items
            ]
        )

    @property
    def events(self) -> list[RunEvent]:
        return [event for batch in self.signals for event in batch]


def publisher(recorder: Recorder, interval: float, warned: list[str]) -> ReplyStream:
    from activities.streaming import stream_client

    return ReplyStream(
        turn="3.7",
        message_id="m-1",
        step=3,
        interval=interval,
        connect=lambda: stream_client(recorder, "wf", "run"),  # type: ignore[arg-type]
        warn=warned.append,
    )


async def test_pieces_are_coalesced_and_a_reset_withdraws_them() -> None:
    recorder, warned = Recorder(), []
    stream = publisher(recorder, 3600.0, warned)
    for piece in ["Hel", "lo", ", ", "Ada"]:
        await stream.delta(piece)
        await asyncio.sleep(0.01)  # the first piece is sent in the background
    assert stream.streamed
    # The first piece at once, the others held for the interval...
    assert [e.text for e in recorder.events] == ["Hel"]
    await stream.aclose()
    # ...and sent when the call ends, so all is in before the call's result.
    assert [e.text for e in recorder.events] == ["Hel", "lo, Ada"]
    await stream.reset("the reply was rejected (schema); the model is asked again")
    assert not stream.streamed
    await stream.delta("Again")
    await stream.aclose()
    events = recorder.events
    assert [e.kind for e in events] == ["delta", "delta", "reset", "delta"]
    assert {(e.turn, e.message_id, e.step) for e in events} == {("3.7", "m-1", 3)}
    assert warned == []


async def test_a_failure_to_publish_never_fails_the_call() -> None:
    recorder, warned = Recorder(fail=True), []
    stream = publisher(recorder, 0.0, warned)
    await stream.delta("one")
    await stream.delta("two")
    await stream.reset("why")
    await stream.aclose()
    assert len(warned) == 1 and "the workflow is gone" in warned[0]


def streamed_turn(**changes: Any) -> LlmTurnInput:
    values: dict[str, Any] = {
        "bundle_hash": KEY,
        "run": start_run(FORM),
        "dialogue": [DialogueTurn(role="user", text="Hi, I'm Ada")],
        "turn": "0.1",
        "message_id": "m-1",
    }
    values.update(changes)
    return LlmTurnInput(**values)


def environment(recorder: Recorder, attempt: int = 1) -> ActivityEnvironment:
    env = ActivityEnvironment(client=recorder)  # type: ignore[arg-type]
    env.info = dataclasses.replace(env.info, attempt=attempt)
    return env


async def test_the_activity_streams_a_conversation_reply(llm: ScriptedLlm, model_name: str) -> None:
    recorder = Recorder()
    llm.script(model_name, {**say("ask_email", "Hello Ada, your email?", name="Ada"), "chunk": 3})
    reply = await environment(recorder).run(activities(llm, model_name).llm_turn, streamed_turn())
    assert reply.parsed is not None and reply.streamed
    assert "".join(e.text for e in recorder.events) == "Hello Ada, your email?"
    # Usage came in the last chunk (asked with stream_options).
    assert reply.completion_tokens > 0 and reply.prompt_tokens > 0


async def test_a_retried_attempt_resets_first(llm: ScriptedLlm, model_name: str) -> None:
    recorder = Recorder()
    llm.script(model_name, say("ask_email", "Hello", name="Ada"))
    await environment(recorder, attempt=2).run(
        activities(llm, model_name).llm_turn, streamed_turn()
    )
    kinds = [e.kind for e in recorder.events]
    assert kinds[0] == "reset" and "attempt 2" in recorder.events[0].text
    assert kinds[1:] and set(kinds[1:]) == {"delta"}


async def test_a_reply_invalid_after_streaming_began_is_reset(
    llm: ScriptedLlm, model_name: str
) -> None:
    recorder = Recorder()
    llm.script(model_name, {**say("ask_email", "x" * 700, name="Ada"), "chunk": 50})
    reply = await environment(recorder).run(activities(llm, model_name).llm_turn, streamed_turn())
    assert reply.problem_kind == "schema" and not reply.streamed
    assert [e.kind for e in recorder.events][-1] == "reset"
    assert "rejected (schema)" in recorder.events[-1].text


async def test_keys_written_again_after_the_message_reset_it(
    llm: ScriptedLlm, model_name: str
) -> None:
    recorder = Recorder()
    turn = say("ask_email", "Hello Ada", name="Ada", cancelled=None)["turn"]
    # The keys again after the message (JSON keeps the last): the whole reply
    # leaves out the name the move to ask_email needs, which the engine refuses.
    again = json.dumps({"context_update": {"name": None, "cancelled": None}})[1:-1]
    content = json.dumps(turn)[:-1] + ", " + again + "}"
    llm.script(model_name, {"content": content, "chunk": 5})
    reply = await environment(recorder).run(activities(llm, model_name).llm_turn, streamed_turn())
    assert reply.parsed is not None and reply.parsed["context_update"]["name"] is None
    assert [e.kind for e in recorder.events][0] == "delta"
    assert not reply.streamed and recorder.events[-1].kind == "reset"
    assert "rejected (engine)" in recorder.events[-1].text


async def test_a_move_the_engine_refuses_streams_nothing(llm: ScriptedLlm, model_name: str) -> None:
    recorder = Recorder()
    # ask_email needs the name: the schema lets the turn through, the engine not.
    llm.script(model_name, say("ask_email", "Your email?", name=None, cancelled=None))
    reply = await environment(recorder).run(activities(llm, model_name).llm_turn, streamed_turn())
    assert reply.parsed is not None and not reply.streamed and recorder.signals == []


async def test_an_autonomous_turn_publishes_nothing(llm: ScriptedLlm, model_name: str) -> None:
    steps = AgentDefinition.model_validate(
        {
            "name": "steps",
            "mode": "autonomous",
            "initial_state": "one",
            "states": {"one": {"transitions": [{"target": "done"}]}, "done": {"terminal": True}},
        }
    )
    document = steps.model_dump(mode="json")
    runner = activities(llm, model_name)
    key = bundle_hash(document, {})
    runner._bundles.add(key, AgentBundle(definition=document))
    recorder = Recorder()
    # The workflow gives an autonomous call no turn id; even with one the
    # activity publishes nothing: there is no message.
    for turn_id in ("", "0.1"):
        llm.script(model_name, move("done"))
        reply = await environment(recorder).run(
            runner.llm_turn, streamed_turn(bundle_hash=key, run=start_run(steps), turn=turn_id)
        )
        assert reply.parsed is not None and not reply.streamed
    assert recorder.signals == []


async def test_a_connection_dropped_mid_stream_is_retryable(
    llm: ScriptedLlm, model_name: str
) -> None:
    from temporalio.exceptions import ApplicationError

    llm.script(model_name, {**say("ask_email", "Hello Ada", name="Ada"), "drop_after": 3})
    with pytest.raises(ApplicationError) as info:
        await environment(Recorder()).run(activities(llm, model_name).llm_turn, streamed_turn())
    assert info.value.type == "LlmUnavailable" and not info.value.non_retryable
    assert "ended the reply stream before the reply" in info.value.message
    assert "sk-secret-key" not in info.value.message


async def test_streaming_off_asks_for_one_response(llm: ScriptedLlm, model_name: str) -> None:
    recorder = Recorder()
    llm.script(model_name, say("ask_email", "Hello", name="Ada"))
    reply = await environment(recorder).run(
        activities(llm, model_name, stream=False).llm_turn, streamed_turn()
    )
    assert reply.parsed is not None and not reply.streamed and recorder.signals == []
    assert "stream" not in llm.requests(model_name)[0]
    assert DOCUMENT  # the same bundle as the other tests
