"""Recorded histories replay against the current workflow code; a change to the
transition table a recorded run depended on is detected as non-determinism."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner
from temporalio.workflow import NondeterminismError

import workflows.agent
from schemas.definition import AgentDefinition
from workflows.agent import AgentWorkflow

HISTORIES = sorted((Path(__file__).parents[1] / "histories").glob("*.json"))


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


LEGACY = {
    "form_conversation",
    "research_approved",
    "research_rejected_then_approved",
    "research_tools_published",
    "tools_errors_artifacts_failure",
    # Recorded by the code of 641528b (tests/histories/record_legacy.py) on the
    # paths run snapshots handle differently.
    "legacy_model_failure_fallback",
    "legacy_reasks_exhausted_failed",
    "legacy_transient_retried",
    "legacy_continued_as_new_first",
    "legacy_continued_as_new_last",
    "legacy_continued_as_new_quiet_first",
    "legacy_continued_as_new_quiet_last",
    "legacy_early_signal",
    "legacy_tool_failed",
}
"""Recorded before run snapshots: replayed with their old behaviour, never re-recorded."""


def test_histories_are_recorded() -> None:
    assert {p.stem for p in HISTORIES} >= LEGACY | {
        "snapshot_form_conversation",
        "snapshot_research_continued",
        "snapshot_outage_waited_out",
        "snapshot_invalid_then_fallback",
        "snapshot_failed_run",
        "snapshot_new_worker_and_early_signal",
        "snapshot_conversation_continued",
        "stream_conversation_first",
        "stream_conversation_continued",
        "v2_callback_form",
        "v3_dead_end",
        "v3_max_steps_stopped",
    }


def events(name: str) -> list[str]:
    history = load(Path(__file__).parents[1] / "histories" / f"{name}.json")
    return [EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in history.events]


def test_snapshot_histories_walk_the_paths_they_are_named_after() -> None:
    for name in LEGACY:
        assert "MARKER_RECORDED" not in events(name)
    snapshot = [p.stem for p in HISTORIES if p.stem.startswith("snapshot_")]
    assert all("MARKER_RECORDED" in events(name)[:8] for name in snapshot)
    # A message taken in the first task of a run started from a snapshot.
    assert events("snapshot_conversation_continued")[4:6] == [
        "WORKFLOW_EXECUTION_UPDATE_ACCEPTED",
        "ACTIVITY_TASK_SCHEDULED",
    ]
    assert events("snapshot_research_continued")[-1] == "WORKFLOW_EXECUTION_CONTINUED_AS_NEW"
    assert events("snapshot_failed_run")[-1] == "WORKFLOW_EXECUTION_FAILED"
    outage = events("snapshot_outage_waited_out")
    assert outage.count("TIMER_FIRED") >= 2 and outage.count("ACTIVITY_TASK_FAILED") >= 2
    assert events("snapshot_invalid_then_fallback").count("TIMER_FIRED") == 1
    # The legacy ones end as runs before snapshots ended: a failed run completes.
    assert events("legacy_reasks_exhausted_failed")[-1] == "WORKFLOW_EXECUTION_COMPLETED"
    assert events("legacy_tool_failed")[-1] == "WORKFLOW_EXECUTION_COMPLETED"
    assert events("legacy_continued_as_new_first")[-1] == "WORKFLOW_EXECUTION_CONTINUED_AS_NEW"
    assert "ACTIVITY_TASK_FAILED" in events("legacy_model_failure_fallback")
    assert events("legacy_early_signal")[1] == "WORKFLOW_EXECUTION_SIGNALED"
    early = events("snapshot_new_worker_and_early_signal")
    assert early[1] == "WORKFLOW_EXECUTION_SIGNALED" and "ACTIVITY_TASK_FAILED" in early


def test_stream_histories_hold_the_stream() -> None:
    """Replies streamed to a subscriber across continue-as-new: the activity's
    publish signals, the subscriber's poll updates, the stream's state handed over."""
    for name in ("stream_conversation_first", "stream_conversation_continued"):
        history = load(Path(__file__).parents[1] / "histories" / f"{name}.json")
        signals = [
            e.workflow_execution_signaled_event_attributes.signal_name
            for e in history.events
            if e.HasField("workflow_execution_signaled_event_attributes")
        ]
        updates = [
            e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
            for e in history.events
            if e.HasField("workflow_execution_update_accepted_event_attributes")
        ]
        assert signals and set(signals) == {"__temporal_workflow_stream_publish"}
        assert "__temporal_workflow_stream_poll" in updates and "send_message" in updates
    first = load(Path(__file__).parents[1] / "histories" / "stream_conversation_first.json")
    handed = first.events[-1].workflow_execution_continued_as_new_event_attributes
    assert json.loads(handed.input.payloads[0].data)["stream"]["log"]
    continued = events("stream_conversation_continued")
    assert continued[-1] == "WORKFLOW_EXECUTION_COMPLETED"


@pytest.mark.parametrize(
    ("name", "calls"),
    [("research_tools_published", 4), ("tools_errors_artifacts_failure", 4)],
)
def test_tool_histories_hold_tool_calls(name: str, calls: int) -> None:
    history = load(Path(__file__).parents[1] / "histories" / f"{name}.json")
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert scheduled.count("fsmflow.run_tool") == calls


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    replayer = Replayer(workflows=[AgentWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(load(path))
    assert result.replay_failure is None


async def test_changed_transition_table_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    class WithoutAskEmail:
        """The form agent as if 'ask_name -> ask_email' had been removed from its table."""

        @staticmethod
        def model_validate(data: dict[str, Any], **options: Any) -> AgentDefinition:
            definition = AgentDefinition.model_validate(data, **options)
            ask_name = definition.states["ask_name"]
            kept = [t for t in ask_name.transitions if t.target != "ask_email"]
            states = {
                **definition.states,
                "ask_name": ask_name.model_copy(update={"transitions": kept}),
            }
            return definition.model_copy(update={"states": states})

    history = load(Path(__file__).parents[1] / "histories" / "form_conversation.json")
    # The sandbox would re-import the module; run unsandboxed so the patch applies.
    replayer = Replayer(
        workflows=[AgentWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    assert (await replayer.replay_workflow(history)).replay_failure is None  # control
    monkeypatch.setattr(workflows.agent, "AgentDefinition", WithoutAskEmail)
    with pytest.raises(NondeterminismError):
        await replayer.replay_workflow(history)


def test_honest_outcome_histories_end_as_failed_workflows() -> None:
    # A dead end fails the run after two tool calls, not at max_steps: five
    # activities (the definition, two model turns, two calls), then the failure.
    dead = events("v3_dead_end")
    assert dead.count("ACTIVITY_TASK_COMPLETED") == 5 and dead[-1] == "WORKFLOW_EXECUTION_FAILED"
    # Out of steps: the max-steps marker, then the workflow fails (AgentRunStopped).
    stopped = events("v3_max_steps_stopped")
    assert stopped[-1] == "WORKFLOW_EXECUTION_FAILED"
    assert stopped.count("MARKER_RECORDED") == 2  # the run snapshot's and max_steps'
