"""OpenTelemetry tracing: Temporal's plugin on the client, OTLP export by env.

Tracing is on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set; the exporter reads the standard
``OTEL_*`` variables itself. Workflow spans come from Temporal's
``OpenTelemetryPlugin`` (replay-safe), activity spans too; the LLM activity adds
an ``llm.turn`` span with the model, tokens and latency.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def tracing_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether an OTLP endpoint is configured."""
    env = os.environ if environ is None else environ
    return any(env.get(name) for name in ENDPOINT_VARIABLES)


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
