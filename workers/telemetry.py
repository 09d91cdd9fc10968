"""OpenTelemetry tracing: Temporal's plugin on the client, OTLP export by env.

Tracing is on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set; the exporter reads the standard
``OTEL_*`` variables itself. Workflow spans come from Temporal's
``OpenTelemetryPlugin`` (replay-safe), activity spans too; the activities add a
GenAI ``chat <model>`` span per model call and ``execute_tool <name>`` per tool
execution (``activities/genai.py``).

The exporter logs its failures with the request URL (``Max retries exceeded with
url: /v1/traces?key=...``); what an endpoint holds in its user info or query
string is taken out of those lines.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from activities.llm import redact_url

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def tracing_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether an OTLP endpoint is configured."""
    env = os.environ if environ is None else environ
    return any(env.get(name) for name in ENDPOINT_VARIABLES)


class RedactEndpoints(logging.Filter):
    """Takes the credentials of the OTLP endpoints out of log records.

    The endpoints are the ones of ``ENDPOINT_VARIABLES``: each is replaced by its
    ``redact_url`` form, and its user info and query string, which the exporter's
    messages also quote on their own (a connection error names the path and
    query), are taken out as ``redact_url`` does.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        """Read the endpoints from ``environ`` (default: the process environment)."""
        super().__init__()
        env = os.environ if environ is None else environ
        replacements: dict[str, str] = {}
        for name in ENDPOINT_VARIABLES:
            url = env.get(name)
            if not url:
                continue
            replacements[url] = redact_url(url)
            try:
                parts = urlsplit(url)
            except ValueError:
                continue
            user_info, at, _ = parts.netloc.rpartition("@")
            if at:
                replacements[user_info + "@"] = "***@"
            if parts.query:
                replacements["?" + parts.query] = ""
        # Longest first: a whole URL before the pieces it contains.
        self._replacements = sorted(replacements.items(), key=lambda r: -len(r[0]))

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message if it quotes an endpoint's credentials."""
        if not self._replacements:
            return True
        message = record.getMessage()
        scrubbed = message
        for secret, shown in self._replacements:
            scrubbed = scrubbed.replace(secret, shown)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


def configure_tracing(*, processor: SpanProcessor | None = None) -> list[Any]:
    """Install a replay-safe tracer provider; return the client plugins to use.

    Args:
        processor: Where spans go (default: OTLP over HTTP, from ``OTEL_*``).

    Returns:
        ``[OpenTelemetryPlugin()]``, for ``Client.connect(plugins=...)``.
    """
    from temporalio.contrib.opentelemetry import OpenTelemetryPlugin, create_tracer_provider

    if processor is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # The exporter logs through its module's logger (a filter on a parent
        # logger would not see those records).
        logging.getLogger(OTLPSpanExporter.__module__).addFilter(RedactEndpoints())
        processor = BatchSpanProcessor(OTLPSpanExporter())
    service = os.environ.get("OTEL_SERVICE_NAME", "fsmflow-worker")
    provider = create_tracer_provider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    # When the worker evicts a cached workflow, the plugin's span context is
    # closed from another asyncio context and OpenTelemetry logs a traceback
    # ("Failed to detach context") for a span that is already ended: noise.
    logging.getLogger("opentelemetry.context").setLevel(logging.CRITICAL)
    return [OpenTelemetryPlugin(add_temporal_spans=True)]
