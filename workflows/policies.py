"""Timeouts and retry policies of every activity, in one place."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

RESOLVE_TIMEOUT = timedelta(seconds=30)
RESOLVE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=5,
    non_retryable_error_types=["DefinitionRefused"],
)

LLM_TIMEOUT = timedelta(minutes=5)
"""Upper bound of one model call (the client's own timeout is shorter)."""
LLM_HEARTBEAT_TIMEOUT = timedelta(seconds=20)
"""A worker killed mid-call is noticed this fast; the call heartbeats every 5 s."""
LLM_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=4),
    maximum_attempts=3,
    non_retryable_error_types=["LlmRequestRejected", "UnknownTier", "BundleMissing", "NoTurn"],
)
"""A blip (transport error, 408/409/429/5xx, timeout) is retried at once, a few
times; a longer outage is the workflow's to wait out: it records that it waits,
pauses on a durable timer (backoff up to ``FSMFLOW_BACKOFF_MAX``) and asks again,
with no attempt limit in autonomous runs and up to ``FSMFLOW_TURN_TIMEOUT`` in a
conversation turn."""

LEGACY_LLM_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=8,
    non_retryable_error_types=["LlmRequestRejected", "UnknownTier", "BundleMissing", "NoTurn"],
)
"""The policy of runs started before run snapshots (they fail after it, as they did)."""


TOOL_RETRY_INITIAL = timedelta(seconds=1)
TOOL_RETRY_MAX_INTERVAL = timedelta(seconds=30)


def tool_retry(max_attempts: int) -> RetryPolicy:
    """A tool call's retry policy: its own attempts, the shared backoff.

    A failure that retrying cannot fix here (bad arguments, a conflicting
    idempotency key) is not retried; a tool this worker lacks is not retried here
    either, the workflow waits for a worker that has it (a rolling deploy). After
    the last attempt the call is recorded in the trace and the run fails.
    """
    return RetryPolicy(
        initial_interval=TOOL_RETRY_INITIAL,
        backoff_coefficient=2.0,
        maximum_interval=TOOL_RETRY_MAX_INTERVAL,
        maximum_attempts=max_attempts,
        non_retryable_error_types=["UnknownTool", "ToolArgumentsInvalid", "IdempotencyConflict"],
    )
