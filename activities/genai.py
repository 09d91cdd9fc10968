"""OpenTelemetry GenAI semantic conventions for model calls and tool executions.

A model call is a span ``chat <model>`` (``gen_ai.operation.name=chat``, the
requested and responding model, input and output tokens, finish reasons, time to
first chunk) and three histograms: ``gen_ai.client.token.usage`` (by token type),
``gen_ai.client.operation.duration`` and ``gen_ai.client.operation.time_to_first_chunk``
(seconds). A tool execution is a span ``execute_tool <name>``. fsmflow adds where
the run is (``fsmflow.agent``, ``fsmflow.state``, ``fsmflow.reask``,
``fsmflow.attempt``) and the move a reply asks for (``fsmflow.target_state``).
The names come from ``opentelemetry-semantic-conventions``.

Spans go wherever ``OTEL_*`` sends them (``workers/telemetry.py``); the histograms
are recorded on Temporal's metric meter, so they reach ``/metrics`` with the SDK's
own. Prometheus takes no dots in a name or a label, so there the names are
written with underscores, as OpenTelemetry's own Prometheus exporter writes them
(``gen_ai_client_token_usage{gen_ai_token_type="output"}``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as genai
from opentelemetry.semconv._incubating.attributes import server_attributes as server
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as metrics
from opentelemetry.semconv.attributes import error_attributes
from opentelemetry.trace import SpanKind, Status, StatusCode
from temporalio.common import MetricMeter

tracer = trace.get_tracer("fsmflow.activities")

PROVIDER = "openai"
"""``gen_ai.provider.name``: every endpoint speaks OpenAI's chat completions API."""


@dataclass(frozen=True)
class Where:
    """Where in a run a call is made: ``<agent>/<state>`` (the activity's label)."""

    agent: str
    state: str

    @classmethod
    def of(cls, label: str) -> Where:
        """From a label ``agent/state`` (either part may be missing)."""
        agent, _, state = label.partition("/")
        return cls(agent, state)

    def attributes(self) -> dict[str, str]:
        """The fsmflow attributes of a span or a measurement."""
        return {"fsmflow.agent": self.agent, "fsmflow.state": self.state}


def _server(base_url: str) -> dict[str, Any]:
    parts = urlsplit(base_url)
    found: dict[str, Any] = {}
    if parts.hostname:
        found[server.SERVER_ADDRESS] = parts.hostname
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    if port:
        found[server.SERVER_PORT] = port
    return found


def start_chat(
    model: str,
    *,
    base_url: str,
    where: Where,
    attempt: int,
    reask: int,
    stream: bool,
    max_tokens: int,
    temperature: float | None,
) -> trace.Span:
    """The span of one model call, started (end it with ``end_chat``)."""
    attributes: dict[str, Any] = {
        genai.GEN_AI_OPERATION_NAME: "chat",
        genai.GEN_AI_PROVIDER_NAME: PROVIDER,
        genai.GEN_AI_REQUEST_MODEL: model,
        genai.GEN_AI_REQUEST_MAX_TOKENS: max_tokens,
        genai.GEN_AI_REQUEST_STREAM: stream,
        genai.GEN_AI_OUTPUT_TYPE: "json",
        **_server(base_url),
        **where.attributes(),
        "fsmflow.attempt": attempt,
        "fsmflow.reask": reask,
    }
    if temperature is not None:
        attributes[genai.GEN_AI_REQUEST_TEMPERATURE] = temperature
    return tracer.start_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes)


@dataclass(frozen=True)
class ChatOutcome:
    """What a model call gave, for its span and its measurements."""

    response_model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    """Input tokens the endpoint served from its prefix cache."""
    finish_reasons: Sequence[str] = ()
    seconds: float = 0.0
    first_chunk_seconds: float | None = None
    valid: bool = True
    error_type: str = ""
    """Set when the call failed (``LlmUnavailable``, ``LlmRequestRejected``, ...)."""
    target_state: str = ""
    """The move the reply asks for (the engine judges it afterwards)."""


def end_chat(span: trace.Span, outcome: ChatOutcome) -> None:
    """Record a model call's outcome on its span and end it."""
    attributes: dict[str, Any] = {
        genai.GEN_AI_USAGE_INPUT_TOKENS: outcome.input_tokens,
        genai.GEN_AI_USAGE_OUTPUT_TOKENS: outcome.output_tokens,
        "fsmflow.valid": outcome.valid,
        genai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: outcome.cached_tokens,
    }
    if outcome.response_model:
        attributes[genai.GEN_AI_RESPONSE_MODEL] = outcome.response_model
    if outcome.finish_reasons:
        attributes[genai.GEN_AI_RESPONSE_FINISH_REASONS] = list(outcome.finish_reasons)
    if outcome.first_chunk_seconds is not None:
        attributes[genai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = outcome.first_chunk_seconds
    if outcome.target_state:
        attributes["fsmflow.target_state"] = outcome.target_state
    if outcome.error_type:
        attributes[error_attributes.ERROR_TYPE] = outcome.error_type
        span.set_status(Status(StatusCode.ERROR, outcome.error_type))
    span.set_attributes(attributes)
    span.end()


def prometheus_name(name: str) -> str:
    """A convention's name as Prometheus writes it (dots become underscores)."""
    return name.replace(".", "_")


TOKEN_USAGE = prometheus_name(metrics.GEN_AI_CLIENT_TOKEN_USAGE)
OPERATION_DURATION = prometheus_name(metrics.GEN_AI_CLIENT_OPERATION_DURATION)
TIME_TO_FIRST_CHUNK = prometheus_name(metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK)
SECONDS_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]
TOKEN_BUCKETS = [16, 64, 256, 1024, 4096, 16384, 65536]
BUCKETS = {
    TOKEN_USAGE: TOKEN_BUCKETS,
    OPERATION_DURATION: SECONDS_BUCKETS,
    TIME_TO_FIRST_CHUNK: SECONDS_BUCKETS,
}
"""Histogram buckets for the worker's Prometheus runtime (the SDK's default ones are
milliseconds, these are seconds and tokens as the conventions recommend)."""


def _labels(attributes: Mapping[str, Any]) -> dict[str, str]:
    return {prometheus_name(key): str(value) for key, value in attributes.items()}


class ChatMetrics:
    """The GenAI client histograms, on a Temporal metric meter."""

    def __init__(self, meter: MetricMeter) -> None:
        """Create the instruments on ``meter`` (an activity's or the runtime's)."""
        self._tokens = meter.create_histogram(
            TOKEN_USAGE, "Tokens of a model call, by type", "{token}"
        )
        self._duration = meter.create_histogram_float(
            OPERATION_DURATION, "Duration of a model call", "s"
        )
        self._first_chunk = meter.create_histogram_float(
            TIME_TO_FIRST_CHUNK,
            "Time from a streamed model call's request to its first chunk",
            "s",
        )

    def record(self, model: str, where: Where, outcome: ChatOutcome) -> None:
        """Record one model call."""
        common: Mapping[str, str] = {
            genai.GEN_AI_OPERATION_NAME: "chat",
            genai.GEN_AI_PROVIDER_NAME: PROVIDER,
            genai.GEN_AI_REQUEST_MODEL: model,
            **where.attributes(),
        }
        if outcome.response_model:
            common = {**common, genai.GEN_AI_RESPONSE_MODEL: outcome.response_model}
        timed = (
            {**common, error_attributes.ERROR_TYPE: outcome.error_type}
            if (outcome.error_type)
            else common
        )
        self._duration.with_additional_attributes(_labels(timed)).record(outcome.seconds)
        if outcome.error_type:
            return
        for kind, count in (("input", outcome.input_tokens), ("output", outcome.output_tokens)):
            self._tokens.with_additional_attributes(
                _labels({**common, genai.GEN_AI_TOKEN_TYPE: kind})
            ).record(count)
        if outcome.first_chunk_seconds is not None:
            self._first_chunk.with_additional_attributes(_labels(common)).record(
                outcome.first_chunk_seconds
            )


@contextlib.contextmanager
def tool_span(name: str, *, where: Where, attempt: int, call_id: str) -> Iterator[trace.Span]:
    """The span of one tool execution, current for the body."""
    with tracer.start_as_current_span(
        f"execute_tool {name}",
        kind=SpanKind.INTERNAL,
        attributes={
            genai.GEN_AI_OPERATION_NAME: "execute_tool",
            genai.GEN_AI_TOOL_NAME: name,
            genai.GEN_AI_TOOL_TYPE: "function",
            genai.GEN_AI_TOOL_CALL_ID: call_id,
            **where.attributes(),
            "fsmflow.attempt": attempt,
        },
    ) as span:
        yield span
