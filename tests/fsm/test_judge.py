"""fsm.judge: judging replies, escalating failures and keeping the snapshot, with
no server: every function is a value in, a value out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fsm.engine import record_tool_call, start_run
from fsm.judge import (
    Usage,
    after_autonomous_turn,
    after_tool_call,
    answered_reply,
    backoff_seconds,
    bounded,
    carry,
    details,
    fsm_status,
    give_up_invalid,
    handed_over,
    judge_reply,
    model_failed,
    note_failure,
    note_invalid,
    push_dialogue,
    reasks_spent,
    rejected_text,
    remember_reply,
    reply_rejected,
    tool_call_key,
    unanswered,
    use_fallback,
)
from fsm.loader import parse_definition
from fsm.tools import call_identity
from schemas.definition import AgentDefinition
from schemas.run import DialogueTurn, Reply
from schemas.snapshot import (
    PendingDecision,
    ResolvedDefinition,
    RunLimits,
    RunSnapshot,
    TurnProgress,
)
from schemas.tools import ToolInfo
from schemas.turn import ModelReply, ToolCallAction
from tests.fsm.conftest import build

NOW = datetime(2026, 11, 22, 12, 3, tzinfo=UTC)
SEARCH = ToolInfo(
    description="search",
    parameters={
        "type": "object",
        "properties": {"query": {"type": "string", "maxLength": 50}},
        "required": ["query"],
        "additionalProperties": False,
    },
)
AUTONOMOUS = {
    "name": "auto",
    "mode": "autonomous",
    "initial_state": "work",
    "states": {
        "work": {
            "tools": ["search"],
            "transitions": [{"target": "done", "when": {">=": [{"var": "_calls.search"}, 1]}}],
        },
        "done": {"terminal": True},
    },
}


def snapshot_of(definition: AgentDefinition, **changes: object) -> RunSnapshot:
    snapshot = RunSnapshot(
        agent=ResolvedDefinition(
            definition=definition.model_dump(mode="json"), definition_hash="h", source="test"
        ),
        chain_id="chain",
        run=start_run(definition),
    )
    return snapshot.model_copy(update=changes)


def reply(**fields: object) -> ModelReply:
    return ModelReply.model_validate({"model": "m", "prompt_tokens": 3, **fields})


def say(target: str, **update: object) -> dict[str, object]:
    return {"target_state": target, "context_update": update, "message": "hi", "reasoning": ""}


def test_a_turn_the_engine_accepts_is_applied(shop: AgentDefinition) -> None:
    judged = judge_reply(shop, start_run(shop), reply(parsed=say("collect", name="Ada")), {})
    assert judged.accepted and judged.turn is not None and judged.call is None
    assert judged.run.state == "collect" and judged.run.context == {"name": "Ada"}
    assert judged.usage == Usage("m", 3, 0, 0) and judged.rejection is None


@pytest.mark.parametrize(
    ("fields", "rejection", "reason"),
    [
        (
            {"problem": "the reply is not valid JSON: x", "content": "{"},
            "invalid_json",
            "not valid",
        ),
        ({"problem": "cut off", "problem_kind": "truncated"}, "truncated", "cut off"),
        ({"problem": "the reply does not fit the turn schema"}, "schema", "does not fit"),
        ({"parsed": {"target": "collect"}}, "shape", "not a valid turn"),
        ({"parsed": say("collect")}, "engine", "needs 'name' set first"),
    ],
)
def test_rejected_replies_change_only_the_trace(
    shop: AgentDefinition, fields: dict[str, object], rejection: str, reason: str
) -> None:
    run = start_run(shop)
    judged = judge_reply(shop, run, reply(**fields), {})
    assert not judged.accepted and judged.rejection == rejection and reason in judged.problem
    assert judged.run.state == run.state and judged.run.context == run.context
    assert [(e.accepted, e.model) for e in judged.run.trace] == [(False, "m")]


def test_tool_calls_are_allowed_or_refused_but_never_run_here() -> None:
    definition = parse_definition(AUTONOMOUS, source="auto").definition
    run = start_run(definition)
    call = {"reasoning": "", "action": {"kind": "call_tool", "tool": "search", "arguments": {}}}
    refused = judge_reply(definition, run, reply(parsed=call), {"search": SEARCH})
    assert refused.rejection == "tool" and "'query' is a required property" in refused.problem
    call["action"]["arguments"] = {"query": "fsm"}  # type: ignore[index]
    allowed = judge_reply(definition, run, reply(parsed=call), {"search": SEARCH})
    assert allowed.call is not None and allowed.run == run


def test_backoff_doubles_up_to_its_bound() -> None:
    limits = RunLimits(model_backoff_max_seconds=30)
    assert [backoff_seconds(limits, n) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]
    assert backoff_seconds(limits, 10_000) == 30


def test_a_wait_remembers_since_when_and_how_often() -> None:
    limits = RunLimits()
    first = note_failure(None, "unavailable", "refused", NOW, limits)
    later = note_failure(first, "unavailable", "x" * 1000, NOW + timedelta(minutes=7), limits)
    assert first.wait is not None and later.wait is not None
    assert first.wait.retry_at == NOW + timedelta(seconds=2)
    assert later.wait.since == NOW and later.wait.failures == 2 and later.failures == 2
    assert len(later.wait.last_error) == 300
    assert not use_fallback(limits, first) and use_fallback(limits, later)


def test_spent_re_asks_follow_on_invalid(shop: AgentDefinition) -> None:
    limits = RunLimits(max_reasks=1)
    progress = note_invalid(note_invalid(None, "bad one"), "bad two")
    assert reasks_spent(limits, progress) and progress.feedback == "bad two"
    base = snapshot_of(shop, limits=limits, progress=progress)
    waited = give_up_invalid(shop, base, NOW, can_wait=True)
    assert waited.progress is not None and waited.progress.wait is not None
    assert waited.progress.invalid == 0 and waited.progress.wait.kind == "invalid"
    assert waited.progress.feedback == "bad two" and waited.run == base.run
    assert give_up_invalid(shop, base, NOW, can_wait=False) == base
    failing = parse_definition(
        build(
            {
                "states": {
                    **build()["states"],
                    "greeting": {**build()["states"]["greeting"], "on_invalid": "fail"},
                }
            }
        ),
        source="shop",
    ).definition
    failed = give_up_invalid(failing, snapshot_of(failing, progress=progress), NOW, can_wait=False)
    assert failed.run.status == "failed" and "no valid turn after 2 attempts" in str(
        failed.run.end_reason
    )
    moving = parse_definition(
        build(
            {
                "states": {
                    **build()["states"],
                    "greeting": {**build()["states"]["greeting"], "on_invalid": {"goto": "bye"}},
                }
            }
        ),
        source="shop",
    ).definition
    moved = give_up_invalid(moving, snapshot_of(moving, progress=progress), NOW, can_wait=False)
    assert moved.run.state == "bye" and moved.run.status == "completed"
    assert moved.run.trace[-1].kind == "on_invalid" and moved.progress is None


def test_dialogue_and_answered_messages_stay_within_their_bounds(shop: AgentDefinition) -> None:
    snapshot = snapshot_of(shop, limits=RunLimits(history_keep=3, answered_keep=2))
    for i in range(5):
        snapshot = push_dialogue(snapshot, DialogueTurn(role="user", text=f"m{i}"))
        answer = Reply(message=f"r{i}", state="greeting", status="active", accepted=True, step=i)
        snapshot = remember_reply(snapshot, f"id-{i}", answer)
    assert [t.text for t in snapshot.dialogue] == ["m2", "m3", "m4"]
    assert answered_reply(snapshot, "id-4") is not None and answered_reply(snapshot, "id-2") is None
    assert answered_reply(snapshot, None) is None
    assert remember_reply(snapshot, None, answer) == snapshot


def test_continue_as_new_carries_everything_within_bounds(shop: AgentDefinition) -> None:
    run = start_run(shop)
    for _ in range(5):
        run = judge_reply(shop, run, reply(parsed=say("collect")), {}).run
    snapshot = snapshot_of(
        shop,
        limits=RunLimits(trace_keep=2, history_keep=1),
        run=run,
        task="write about FSMs",
        dialogue=(DialogueTurn(role="user", text="a"), DialogueTurn(role="user", text="b")),
        pending=PendingDecision(decision="approve", by="alice"),
        last_call="work/abc",
        progress=note_failure(None, "unavailable", "down", NOW, RunLimits()),
        turns=99,
        tokens=1234,
    )
    carried = carry(snapshot, "run-1")
    assert len(carried.run.trace) == 2 and [t.text for t in carried.dialogue] == ["b"]
    assert carried.turns == 0 and carried.continued_from == "run-1"
    assert handed_over(carried, "run-1") and not handed_over(carried, "run-2")
    assert not handed_over(carried, None) and not handed_over(snapshot, "")
    unchanged = ("task", "pending", "last_call", "progress", "tokens", "agent", "chain_id")
    assert all(getattr(carried, name) == getattr(snapshot, name) for name in unchanged)
    # What continue-as-new passes is JSON: the snapshot survives the round trip.
    assert RunSnapshot.model_validate_json(carried.model_dump_json()) == carried


def test_status_and_details_say_why_a_run_waits(shop: AgentDefinition) -> None:
    snapshot = snapshot_of(shop)
    assert fsm_status(snapshot) == "active"
    waiting = snapshot.model_copy(
        update={"progress": note_failure(None, "unavailable", "refused", NOW, RunLimits())}
    )
    assert fsm_status(waiting) == "waiting_for_model"
    text = details(shop, waiting)
    assert "waiting for the model since 2026-11-22 12:03:00 UTC, 1 failed attempt," in text
    assert text.endswith("last error: refused")
    gone = unanswered(waiting, "no valid reply within 60 s")
    assert fsm_status(gone) == "active" and gone.run.trace[-1].kind == "unanswered"


def test_a_repeated_tool_call_is_pointed_out() -> None:
    definition = parse_definition(AUTONOMOUS, source="auto").definition
    snapshot = snapshot_of(definition, progress=TurnProgress(failures=1))
    call = ToolCallAction(kind="call_tool", tool="search", arguments={"query": "fsm"})
    once = after_tool_call(
        definition,
        snapshot,
        call,
        Usage(),
        ok=True,
        text="[]",
        outcome="ok",
        artifacts=[],
        values={},
    )
    twice = after_tool_call(
        definition, once, call, Usage(), ok=True, text="[]", outcome="ok", artifacts=[], values={}
    )
    assert once.progress is None and once.run.step == 1 and once.run.calls["search"] == 1
    assert [t.role for t in once.dialogue] == ["tool"]
    assert [t.role for t in twice.dialogue] == ["tool", "tool", "user"]
    assert "same arguments as before" in twice.dialogue[-1].text
    key = tool_call_key("wf", "chain", once.run, call)
    assert key == f"wf/chain/1/1/{call_identity('search', {'query': 'fsm'})}"


def test_a_stay_that_changed_nothing_is_pointed_out() -> None:
    definition = parse_definition(AUTONOMOUS, source="auto").definition
    snapshot = snapshot_of(definition)
    before = snapshot.run
    stayed = after_autonomous_turn(definition, before, snapshot)
    assert "changed nothing" in stayed.dialogue[-1].text
    searched = record_tool_call(definition, before, "search", ok=True, outcome="ok")
    moved = snapshot.model_copy(update={"run": searched.model_copy(update={"state": "done"})})
    assert after_autonomous_turn(definition, before, moved) == moved


def test_a_failed_call_waits_and_is_traced_once_per_error(shop: AgentDefinition) -> None:
    snapshot = snapshot_of(shop)
    first = model_failed(shop, snapshot, "LlmUnavailable", "refused", NOW, conversation=False)
    again = model_failed(
        shop,
        first.snapshot,
        "LlmUnavailable",
        "refused",
        NOW + timedelta(seconds=2),
        conversation=False,
    )
    other = model_failed(shop, again.snapshot, "LlmUnavailable", "reset", NOW, conversation=False)
    assert first.ends_turn is None and again.ends_turn is None
    assert [e.reason for e in other.snapshot.run.trace] == [
        "model call failed: refused",
        "model call failed: reset",
    ]
    assert other.snapshot.progress is not None and other.snapshot.progress.wait is not None
    assert other.snapshot.progress.wait.failures == 3


@pytest.mark.parametrize(
    ("failure", "conversation", "past", "ends"),
    [
        ("LlmRequestRejected", True, False, True),
        ("LlmRequestRejected", False, False, False),
        ("LlmUnavailable", True, True, True),
        ("LlmUnavailable", True, False, False),
        ("NoTurn", False, False, True),
    ],
)
def test_when_a_failed_call_ends_the_turn(
    shop: AgentDefinition, failure: str, conversation: bool, past: bool, ends: bool
) -> None:
    escalation = model_failed(
        shop,
        snapshot_of(shop),
        failure,
        "boom",
        NOW,
        conversation=conversation,
        past_deadline=past,
    )
    assert (escalation.ends_turn is not None) is ends


def test_a_fleet_without_the_tier_fails_the_run_after_the_grace(shop: AgentDefinition) -> None:
    snapshot = snapshot_of(shop, limits=RunLimits(deploy_grace_seconds=60))
    waiting = model_failed(shop, snapshot, "UnknownTier", "no tier", NOW, conversation=False)
    assert waiting.ends_turn is None and not waiting.snapshot.run.ended
    later = NOW + timedelta(seconds=61)
    over = model_failed(shop, waiting.snapshot, "UnknownTier", "no tier", later, conversation=False)
    assert over.snapshot.run.status == "failed"
    assert "no worker has model tier 'default' after 60 s: no tier" in str(
        over.snapshot.run.end_reason
    )


def test_rejected_replies_re_ask_then_pause(shop: AgentDefinition) -> None:
    snapshot = snapshot_of(shop, limits=RunLimits(max_reasks=1))
    first = reply_rejected(shop, snapshot, "bad", NOW, can_wait=True)
    spent = reply_rejected(shop, first.snapshot, "bad again", NOW, can_wait=True)
    told = reply_rejected(shop, first.snapshot, "bad again", NOW, can_wait=False)
    assert first.ends_turn is None and first.snapshot.progress is not None
    assert first.snapshot.progress.feedback == "bad"
    assert spent.ends_turn is None and spent.snapshot.progress is not None
    assert spent.snapshot.progress.wait is not None and spent.snapshot.progress.invalid == 0
    assert told.ends_turn == "no valid turn after 2 attempts: bad again"


def test_the_deploy_grace_counts_from_the_first_missing_tier(shop: AgentDefinition) -> None:
    snapshot = snapshot_of(shop, limits=RunLimits(deploy_grace_seconds=60))
    outage = model_failed(shop, snapshot, "LlmUnavailable", "down", NOW, conversation=False)
    later = NOW + timedelta(hours=1)
    deploy = model_failed(
        shop, outage.snapshot, "UnknownTier", "no tier", later, conversation=False
    )
    assert not deploy.snapshot.run.ended and deploy.ends_turn is None
    assert deploy.snapshot.progress is not None and deploy.snapshot.progress.wait is not None
    assert deploy.snapshot.progress.wait.since == later


def test_a_long_error_is_traced_once_too(shop: AgentDefinition) -> None:
    error = "answered 503: " + "the upstream is overloaded " * 20
    snapshot = snapshot_of(shop)
    for _ in range(3):
        snapshot = model_failed(
            shop, snapshot, "LlmUnavailable", error, NOW, conversation=False
        ).snapshot
    assert len(snapshot.run.trace) == 1


def test_a_spent_round_counts_its_replies_once(shop: AgentDefinition) -> None:
    snapshot = snapshot_of(shop, limits=RunLimits(max_reasks=2))
    for problem in ("a", "b", "c"):
        snapshot = reply_rejected(shop, snapshot, problem, NOW, can_wait=True).snapshot
    assert snapshot.progress is not None and snapshot.progress.failures == 3


def test_a_secret_value_is_not_quoted_when_refused(shop: AgentDefinition) -> None:
    run = start_run(shop).model_copy(update={"state": "adult"})
    judged = judge_reply(shop, run, reply(parsed=say("adult", password=123)), {})
    assert judged.problem.startswith("value [redacted] for key 'password' does not fit")
    assert "123" not in judged.problem


def test_a_rejected_reply_shown_again_redacts_secret_values(shop: AgentDefinition) -> None:
    parsed = reply(parsed=say("adult", password="hunter2", name="Ada"))
    text = rejected_text(shop, parsed)
    assert "hunter2" not in text and '"password":"[redacted]"' in text and "Ada" in text
    # A schema violation is still JSON: redacted the same way.
    raw = reply(content='{"context_update": {"password": "hunter2"}}', problem="schema")
    assert "hunter2" not in rejected_text(shop, raw) and "[redacted]" in rejected_text(shop, raw)
    # Not JSON: it cannot be redacted, so an agent with secrets does not show it.
    assert rejected_text(shop, reply(content="password hunter2 {", problem="bad")) == ""
    context = {name: key.model_copy(update={"secret": False}) for name, key in shop.context.items()}
    plain = shop.model_copy(update={"context": context})
    assert rejected_text(plain, reply(content="not json", problem="bad")) == "not json"
    cut = reply(content='{"message": "I', problem="cut", problem_kind="truncated")
    assert rejected_text(plain, cut) == ""


def test_the_trace_a_run_holds_is_bounded(shop: AgentDefinition) -> None:
    run = start_run(shop)
    for _ in range(9):
        run = judge_reply(shop, run, reply(parsed=say("collect")), {}).run
    snapshot = snapshot_of(shop, limits=RunLimits(trace_keep=4), run=run)
    kept = bounded(snapshot)
    assert len(kept.run.trace) == 4 and kept.run.trace == run.trace[-4:]
    short = snapshot.model_copy(update={"run": run.model_copy(update={"trace": run.trace[:8]})})
    assert bounded(short) == short
