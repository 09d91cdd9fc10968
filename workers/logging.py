"""structlog configuration, done once by the worker and the CLI.

Standard-library records (Temporal's ``workflow.logger`` and ``activity.logger``,
which carry the workflow and activity ids in their ``extra``) go through the same
processors, so every line of a worker is one JSON object in production.
"""

from __future__ import annotations

import logging
import sys

import structlog

_SHARED: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def _temporal_extras(
    _: structlog.typing.WrappedLogger, __: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    # Temporal puts the run's ids in `temporal_workflow` / `temporal_activity`
    # extras of its records; lift them to top-level keys for filtering.
    record = event.get("_record")
    if record is not None:
        for name in ("temporal_workflow", "temporal_activity"):
            details = getattr(record, name, None)
            if isinstance(details, dict):
                for key in ("workflow_id", "run_id", "workflow_type", "activity_type", "attempt"):
                    if key in details:
                        event.setdefault(key, details[key])
    return event


def configure_logging(*, fmt: str = "json", level: str = "INFO") -> None:
    """Route structlog and standard logging to stderr as JSON (or console lines)."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED, _temporal_extras],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request line at INFO; the LLM activity logs its own summary.
    logging.getLogger("httpx").setLevel(logging.WARNING)
