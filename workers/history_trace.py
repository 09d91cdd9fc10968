"""A run's trace rebuilt from its event history, with no worker running.

The workflow code itself is replayed (unsandboxed), through a subclass that
records every run state it sets, so the trace is exactly what the run computed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from schemas.run import RunState, TraceEntry
from schemas.workflow import AgentResult
from workflows.agent import AgentWorkflow

# One replay at a time: the capturing subclass records into one module-level list.
_lock = asyncio.Lock()
_captured: list[RunState] = []


@workflow.defn(name="AgentWorkflow", sandboxed=False)
class _CapturingAgentWorkflow(AgentWorkflow):
    """``AgentWorkflow`` that records each run state, for replay only."""

    @workflow.run
    async def run(self, raw: Any) -> AgentResult:
        """Run the real workflow code."""
        return await super().run(raw)

    def _publish(self) -> None:
        # Called at start and after every change of the run (see AgentWorkflow._set_run).
        _captured.append(self._state())
        super()._publish()


class ReplayError(Exception):
    """The history cannot be replayed with the current workflow code."""


def _merged(traces: list[tuple[TraceEntry, ...]]) -> list[TraceEntry]:
    """The whole trace from the traces a run held one after the other.

    A run's trace only grows at its end, and past a bound loses its oldest
    entries (``fsm.judge.bounded``): each held trace is the one before, cut at
    the front, plus new entries.
    """
    merged: list[TraceEntry] = []
    last: tuple[TraceEntry, ...] = ()
    for current in traces:
        # The shortest cut of the previous trace that the current one starts with.
        cut = next(
            (i for i in range(len(last) + 1) if current[: len(last) - i] == last[i:]),
            len(last),
        )
        merged.extend(current[len(last) - cut :])
        last = current
    return merged


async def trace_from_history(
    history: WorkflowHistory, *, data_converter: DataConverter = pydantic_data_converter
) -> list[TraceEntry]:
    """Replay ``history`` and return every trace entry of the run.

    ``data_converter`` must be the one the run was written with (the client's:
    with a payload key, the history's payloads are encrypted).

    Raises:
        ReplayError: If the replay fails before any state was recorded.
    """
    replayer = Replayer(
        workflows=[_CapturingAgentWorkflow],
        data_converter=data_converter,
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    async with _lock:
        _captured.clear()
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        states = list(_captured)
        _captured.clear()
    if result.replay_failure is not None and not states:
        raise ReplayError(str(result.replay_failure))
    return _merged([state.trace for state in states])
