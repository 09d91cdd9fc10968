"""The run's event stream, workflow side: Temporal's ``WorkflowStream``, kept small.

``AgentWorkflow`` constructs the ``WorkflowStream`` in its ``@workflow.init`` (the
library requires it there) and publishes through ``RunEvents``: an event is
appended to the stream's log in memory (no command, nothing in the history until
a subscriber polls it), so publishing changes nothing a replay compares. The
``fsmflow.llm_turn`` activity publishes a reply's text into the same log with
signals. The retained log is bounded: a week-long conversation's stream never
grows toward Temporal's payload limits (the continue-as-new input carries it, a
poll returns it).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.contrib.workflow_streams import WorkflowStream, WorkflowStreamState

with workflow.unsafe.imports_passed_through():
    # Pure functions and pydantic models (see workflows/agent.py).
    from fsm.events import wire
    from schemas.events import RUN_TOPIC, RunEvent
    from schemas.workflow import AgentWorkflowInput

STREAM_KEEP = 256
"""Events the retained log keeps: it is cut back to this many once it holds twice
as many, and to this many when the run continues as new. A subscriber further
behind than that continues from the oldest event kept (the ``reply`` event holds
a whole message, the history and the trace the whole run)."""

PUBLISHER_TTL = timedelta(minutes=1)
"""How long a publisher's dedup state is handed over after its last publish."""

OFFSET_QUERY = "__temporal_workflow_stream_offset"
"""The stream's query of its end offset (the protocol's documented name)."""


class WorkflowInput(AgentWorkflowInput):
    """What the workflow reads: a start input, or what its predecessor handed over.

    ``stream`` is the state of the run's event stream at continue-as-new (typed as
    the library's dataclass so the converter rebuilds it). Like ``snapshot``, it
    is accepted only from the run that continued as new; a start input with it
    is refused.
    """

    stream: WorkflowStreamState | None = None


class RunEvents:
    """Publishes a run's events on topic ``run`` and keeps the retained log bounded.

    Args:
        stream: The run's stream (constructed in ``@workflow.init``).
        base_offset: Where the retained log starts (the predecessor's, after a
            continue-as-new): offsets stay monotonic across the chain.
    """

    def __init__(self, stream: WorkflowStream, *, base_offset: int = 0) -> None:
        self._stream = stream
        self._topic = stream.topic(RUN_TOPIC)
        self._base = base_offset

    def publish(self, *events: RunEvent) -> None:
        """Append events to the stream (memory only: no command), then bound the log."""
        for event in events:
            self._topic.publish(wire(event))
        if events:
            self._bound(2 * STREAM_KEEP)

    def detach(self) -> None:
        """Release waiting subscribers and refuse new polls (before the run closes).

        A subscriber then follows the chain to the next run, or reads what is left
        of a closed run with the poll query.
        """
        self._stream.detach_pollers()

    def hand_over(self) -> WorkflowStreamState:
        """The stream's state for the next run, cut to ``STREAM_KEEP`` events.

        Publishers' dedup state is kept only a short while: fsmflow's publishers
        are model calls, each done before the run continues as new (it waits for
        its messages), and each targets its own run; one entry per call would
        otherwise ride along for the library's default 15 minutes.
        """
        self._bound(STREAM_KEEP)
        return self._stream.get_state(publisher_ttl=PUBLISHER_TTL)

    def _end(self) -> int:
        handler = workflow.get_query_handler(OFFSET_QUERY)
        assert handler is not None, "the WorkflowStream registers its offset query"
        end = handler()
        assert isinstance(end, int)
        return end

    def _bound(self, most: int) -> None:
        """Cut the log to its newest ``STREAM_KEEP`` events when it holds more than ``most``.

        Events the activity published since the last cut are counted too (they
        arrive as signals, with no fsmflow code running).
        """
        end = self._end()
        if end - self._base > most:
            self._base = end - STREAM_KEEP
            self._stream.truncate(self._base)
