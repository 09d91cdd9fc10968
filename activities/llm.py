"""The LLM turn activity: one constrained model call through ``openai.AsyncOpenAI``.

The activity only talks to the model and checks the reply against the turn schema;
whether the move is allowed is the engine's call, made in the workflow. Failures
that a retry can fix (transport errors, 429, 5xx, timeouts, a reply cut off at
``max_tokens``) raise retryable errors; the rest are non-retryable with a message
that says what to fix.
"""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import structlog
from opentelemetry import trace
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from fsm.turn_schema import allows_null
from fsm.validation import first_error
from schemas.activity import LlmTurnInput, LlmTurnOutput
from workers.settings import ModelTier, Settings

log = structlog.get_logger("fsmflow.llm")
tracer = trace.get_tracer("fsmflow.activities")


def _tags(variant: dict[str, Any]) -> dict[str, list[Any]]:
    """What tells a declaration's variant apart: its kind (and, for calls, its tool)."""
    return {
        name: sub["enum"]
        for name, sub in variant.get("properties", {}).items()
        if name in ("kind", "tool") and isinstance(sub, dict) and "enum" in sub
    }


def _chosen(schema: dict[str, Any], value: dict[str, Any]) -> dict[str, Any] | None:
    for variant in schema.get("anyOf", []):
        tags = _tags(variant)
        if tags and all(value.get(name) in enum for name, enum in tags.items()):
            return variant
    return None


def fill_nulls(schema: dict[str, Any], value: Any) -> Any:
    """Treat an omitted nullable property as null (the turn schema's meaning).

    Endpoints that enforce the schema always send every key; a ``json_object``
    endpoint or a lenient one may leave out keys it has nothing for.
    """
    if not isinstance(value, dict):
        return value
    variant = _chosen(schema, value)
    if variant is not None:
        return fill_nulls(variant, value)
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return value
    filled = dict(value)
    for name, sub in properties.items():
        if name not in filled:
            if allows_null(sub):
                filled[name] = None
        else:
            filled[name] = fill_nulls(sub, filled[name])
    return filled


def _first_error(schema: dict[str, Any], value: Any, where: list[Any]) -> tuple[str, str] | None:
    error = first_error(schema, value)
    if error is None:
        return None
    path = [*where, *error.absolute_path]
    instance = error.instance
    if error.validator == "anyOf" and isinstance(instance, dict):
        # A declaration is one of several variants: judge it against the one it
        # chose (its kind and tool), or say which kinds and tools exist here.
        variant = _chosen(error.schema, instance)
        if variant is not None:
            return _first_error(variant, instance, path)
        tools = [t for v in error.schema["anyOf"] for t in _tags(v).get("tool", [])]
        if instance.get("kind") == "call_tool":
            listing = ", ".join(tools) or "none"
            message = f"tool {instance.get('tool')!r} cannot be called here (tools: {listing})"
        else:
            kinds = sorted({k for v in error.schema["anyOf"] for k in _tags(v).get("kind", [])})
            message = f"kind {instance.get('kind')!r} is not one of {kinds}"
        return ".".join(str(p) for p in path) or "reply", message
    return ".".join(str(p) for p in path) or "reply", error.message


def schema_problem(schema: dict[str, Any], value: Any) -> str | None:
    """Say where a reply breaks the turn schema, or None when it fits."""
    found = _first_error(schema, value, [])
    if found is None:
        return None
    where, message = found
    return f"the reply does not fit the turn schema at {where}: {message[:300]}"


class LlmActivities:
    """Model calls, with one ``AsyncOpenAI`` client per endpoint."""

    def __init__(self, settings: Settings) -> None:
        """Build the activities from the worker's settings."""
        self._settings = settings
        self._clients: dict[tuple[str, str], openai.AsyncOpenAI] = {}

    async def close(self) -> None:
        """Close the HTTP clients (when the worker stops)."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    def _client(self, tier: ModelTier) -> openai.AsyncOpenAI:
        key = (tier.base_url, tier.api_key.get_secret_value())
        if key not in self._clients:
            # Temporal retries the activity; the client must not retry on its own.
            self._clients[key] = openai.AsyncOpenAI(
                base_url=tier.base_url,
                api_key=tier.api_key.get_secret_value(),
                max_retries=0,
                timeout=self._settings.llm_timeout_seconds,
            )
        return self._clients[key]

    def _pick(self, tier_name: str, attempt: int) -> tuple[ModelTier, bool]:
        try:
            tier = self._settings.tier(tier_name)
        except KeyError as exc:
            raise ApplicationError(
                str(exc.args[0]), type="UnknownTier", non_retryable=True
            ) from None
        fallback = self._settings.fallback()
        if fallback is not None and attempt > self._settings.fallback_after:
            return fallback, True
        return tier, False

    def _response_format(self, request: LlmTurnInput) -> dict[str, Any]:
        if self._settings.response_format == "json_object":
            return {"type": "json_object"}
        return {
            "type": "json_schema",
            "json_schema": {
                "name": request.schema_name,
                "strict": True,
                "schema": request.turn_schema,
            },
        }

    def _messages(self, request: LlmTurnInput) -> list[dict[str, str]]:
        messages = list(request.messages)
        if self._settings.response_format == "json_object":
            # Without schema-constrained decoding the model must read the schema.
            schema = json.dumps(request.turn_schema, separators=(",", ":"))
            messages.insert(1, {"role": "system", "content": f"Reply JSON schema: {schema}"})
        return messages

    @activity.defn(name="fsmflow.llm_turn")
    async def llm_turn(self, request: LlmTurnInput) -> LlmTurnOutput:
        """Ask the state's model tier for one turn and check it against the turn schema."""
        info = activity.info()
        tier, used_fallback = self._pick(request.tier, info.attempt)
        bound = log.bind(
            workflow_id=info.workflow_id,
            run_id=info.workflow_run_id,
            activity=info.activity_type,
            attempt=info.attempt,
            where=request.label,
            model=tier.model,
        )
        started = time.monotonic()
        span = tracer.start_span(
            "llm.turn",
            attributes={
                "fsmflow.where": request.label,
                "fsmflow.tier": request.tier,
                "gen_ai.request.model": tier.model,
                "fsmflow.attempt": info.attempt,
            },
        )
        with trace.use_span(span, end_on_exit=True):
            return await self._call(request, tier, used_fallback, bound, started, span)

    async def _call(
        self,
        request: LlmTurnInput,
        tier: ModelTier,
        used_fallback: bool,
        bound: Any,
        started: float,
        span: trace.Span,
    ) -> LlmTurnOutput:
        info = activity.info()
        try:
            async with heartbeating():
                response = await self._client(tier).chat.completions.create(
                    model=tier.model,
                    messages=self._messages(request),
                    response_format=self._response_format(request),
                    temperature=self._settings.temperature,
                    max_tokens=self._settings.max_tokens,
                )
        except openai.APIStatusError as exc:
            retryable = exc.status_code == 429 or exc.status_code >= 500
            bound.warning("llm_http_error", status=exc.status_code, retryable=retryable)
            raise ApplicationError(
                f"model endpoint {tier.base_url} answered {exc.status_code}: {_short(exc.message)}",
                type="LlmUnavailable" if retryable else "LlmRequestRejected",
                non_retryable=not retryable,
            ) from None
        except openai.APITimeoutError:
            bound.warning("llm_timeout")
            raise ApplicationError(
                f"model endpoint {tier.base_url} did not answer within "
                f"{self._settings.llm_timeout_seconds:g}s",
                type="LlmUnavailable",
            ) from None
        except openai.APIConnectionError as exc:
            bound.warning("llm_unreachable", error=str(exc))
            raise ApplicationError(
                f"model endpoint {tier.base_url} is unreachable: {exc}", type="LlmUnavailable"
            ) from None
        latency_ms = int((time.monotonic() - started) * 1000)
        if not response.choices:
            raise ApplicationError("the model returned no choices", type="LlmUnavailable")
        choice = response.choices[0]
        content = choice.message.content or ""
        usage = response.usage
        if choice.finish_reason == "length":
            bound.warning("llm_truncated", max_tokens=self._settings.max_tokens)
            raise ApplicationError(
                f"the reply was cut off at max_tokens={self._settings.max_tokens}",
                type="LlmTruncated",
            )
        problem = None
        parsed = None
        try:
            parsed = json.loads(content)
        except json.JSONDecodeError as exc:
            problem = f"the reply is not valid JSON: {exc.msg} at column {exc.colno}"
        if parsed is not None:
            parsed = fill_nulls(request.turn_schema, parsed)
            problem = schema_problem(request.turn_schema, parsed)
        span.set_attributes(
            {
                "gen_ai.usage.input_tokens": usage.prompt_tokens if usage else 0,
                "gen_ai.usage.output_tokens": usage.completion_tokens if usage else 0,
                "fsmflow.latency_ms": latency_ms,
                "fsmflow.valid": problem is None,
            }
        )
        bound.info(
            "llm_turn",
            latency_ms=latency_ms,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            valid=problem is None,
        )
        return LlmTurnOutput(
            content=content,
            parsed=parsed if problem is None and isinstance(parsed, dict) else None,
            problem=problem,
            model=tier.model,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            latency_ms=latency_ms,
            attempt=info.attempt,
            used_fallback=used_fallback,
            settings_echo={
                "base_url": tier.base_url,
                "response_format": self._settings.response_format,
            },
        )


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
