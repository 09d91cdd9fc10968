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
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=8,
    non_retryable_error_types=["LlmRequestRejected", "UnknownTier"],
)
"""Transport errors, 429/5xx, timeouts and cut-off replies are retried; after the
last attempt the turn fails in the defined way (fallback reply or failed run)."""


TOOL_RETRY_INITIAL = timedelta(seconds=1)
TOOL_RETRY_MAX_INTERVAL = timedelta(seconds=30)


def tool_retry(max_attempts: int) -> RetryPolicy:
    """A tool call's retry policy: its own attempts, the shared backoff.

    A failure that retrying cannot fix (unknown tool, bad arguments) is not retried;
    after the last attempt the call is recorded in the trace and the turn fails.
    """
    return RetryPolicy(
        initial_interval=TOOL_RETRY_INITIAL,
        backoff_coefficient=2.0,
        maximum_interval=TOOL_RETRY_MAX_INTERVAL,
        maximum_attempts=max_attempts,
        non_retryable_error_types=["UnknownTool", "ToolArgumentsInvalid"],
    )
