"""The LLM turn activity: one constrained model call through ``openai.AsyncOpenAI``.

The activity renders the state's prompt and turn schema (from the run's bundle,
held by hash), talks to the model and checks the reply against the schema;
whether the move is allowed is the engine's call, made in the workflow.

Failures are classified for the workflow's escalation: transport errors,
timeouts, 408, 409, 429 and 5xx are retryable (``LlmUnavailable``); 401, 403,
404 and other 4xx are not (``LlmRequestRejected``, naming the endpoint with its
credentials redacted); a model tier this worker lacks is ``UnknownTier`` (a
rolling deploy: the workflow waits for a worker that has it). A reply cut off at
the token bound is not an error: it comes back as a problem, and the re-ask
tells the model to be shorter.

Replies are streamed (``stream=True``, usage in the last chunk): in a
conversation, the message is published to the run's stream as it is generated,
once the move before it is decided (``activities.streaming``). What the activity
returns is the same either way: the whole reply, checked against the schema.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import openai
import structlog
from openai import AsyncStream
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from opentelemetry import trace
from pydantic import SecretStr
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.bundles import BundleCache
from activities.genai import ChatMetrics, ChatOutcome, Where, end_chat, start_chat
from activities.heartbeat import heartbeating
from activities.streaming import MessageTap, ReplyStream, stream_client
from fsm.judge import move_decided
from fsm.problems import clip
from fsm.prompt import build_messages
from fsm.turn_schema import allows_null, turn_schema
from fsm.validation import first_error
from schemas.activity import LlmTurnInput, LlmTurnOutput
from schemas.definition import AgentDefinition
from schemas.run import RunState
from schemas.tools import ToolInfo

log = structlog.get_logger("fsmflow.llm")

RETRYABLE_STATUS = frozenset({408, 409, 429})
"""4xx statuses that a later attempt can succeed on (and every 5xx)."""
CONTENT_KEPT = 2000
"""Characters of an unusable reply kept for the trace (the rest is dropped)."""


@dataclass(frozen=True)
class ModelEndpoint:
    """Where one tier's (or its fallback's) requests go, and how they are made.

    Attributes:
        model: The model name sent to the endpoint.
        base_url: The OpenAI-compatible endpoint.
        api_key: Its key (never logged).
        reasoning_effort: Set for reasoning models: the request then sends
            ``reasoning_effort`` and ``max_completion_tokens`` and no temperature.
    """

    model: str
    base_url: str
    api_key: SecretStr = field(repr=False)
    reasoning_effort: str | None = None


@dataclass(frozen=True)
class LlmConfig:
    """What the LLM activity needs from the worker's settings.

    Attributes:
        tiers: The endpoint of each model tier.
        fallbacks: The fallback endpoint of each tier that has one.
        fallback_after: Failed attempts of one call before its fallback is used.
        response_format: ``json_schema`` (constrained decoding) or ``json_object``.
        temperature: Sampling temperature (not sent to reasoning models).
        max_tokens: Bound of a reply's tokens.
        timeout_seconds: The bound of one call (the whole reply, streamed or not).
        stream: Ask for replies as server-sent events (``stream=True``); off for
            endpoints that cannot stream.
        stream_interval: Least seconds between two publishes of a reply's text.
    """

    tiers: Mapping[str, ModelEndpoint]
    fallbacks: Mapping[str, ModelEndpoint] = field(default_factory=dict)
    fallback_after: int = 2
    response_format: Literal["json_schema", "json_object"] = "json_schema"
    temperature: float = 0.0
    max_tokens: int = 1024
    timeout_seconds: float = 120.0
    stream: bool = True
    stream_interval: float = 0.15


def redact_url(url: str) -> str:
    """An endpoint URL fit for messages and logs: no user info, no query string."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    if parts.username or parts.password:
        host = "***@" + host
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


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


_OPTIONAL_EXTRAS = frozenset({"reasoning", "context_update"})


def fill_nulls(schema: dict[str, Any], value: Any) -> Any:
    """Treat an omitted nullable property as null (the turn schema's meaning).

    Endpoints that enforce the schema always send every key; a ``json_object``
    endpoint or a lenient one may leave out keys it has nothing for, and may
    write a reasoning or an empty ``context_update`` the state's schema leaves
    out: those are dropped (a ``context_update`` that sets a key is not, and is
    refused by the schema).
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
    for name in _OPTIONAL_EXTRAS & (filled.keys() - properties.keys()):
        # Fields a state leaves out of its schema (``reasoning: none``, no keys to
        # collect) that a lenient endpoint may write anyway: harmless when empty.
        extra = filled[name]
        if (
            name == "reasoning"
            or not extra
            or (isinstance(extra, dict) and all(v is None for v in extra.values()))
        ):
            del filled[name]
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
    if error.validator == "anyOf" and instance is not None:
        options = [o for o in error.schema["anyOf"] if not (isinstance(o, dict) and allows_null(o))]
        if len(options) == 1:
            # A nullable value that is not null: say what is wrong with the value.
            return _first_error(options[0], instance, path)
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


def schema_problem(schema: dict[str, Any], value: Any, secrets: Collection[str] = ()) -> str | None:
    """Say where a reply breaks the turn schema, or None when it fits.

    A value written to a key in ``secrets`` is not quoted (the schema validator's
    messages quote the value): reasons go to traces, logs and the model.
    """
    found = _first_error(schema, value, [])
    if found is None:
        return None
    where, message = found
    parts = where.split(".")
    if "context_update" in parts[:-1] and parts[parts.index("context_update") + 1] in secrets:
        key = parts[parts.index("context_update") + 1]
        message = f"the value does not fit the declaration of secret key {key!r}"
    return f"the reply does not fit the turn schema at {where}: {message[:300]}"


@dataclass(frozen=True)
class _Turn:
    """What one model call asks, rendered from the run's bundle."""

    messages: list[dict[str, str]]
    name: str
    schema: dict[str, Any]
    label: str
    tier: str
    secrets: frozenset[str]
    """Context keys declared ``secret``: their values are never quoted in a problem."""
    decided: Callable[[dict[str, Any]], bool] | None = None
    """Whether a reply's keys and move (its message aside) fit the schema and the
    engine applies them; set when the call's message is published as it streams."""
    reask: int = 0
    """Invalid replies the turn had before this call (telemetry)."""


class LlmActivities:
    """Model calls, with one ``AsyncOpenAI`` client per endpoint."""

    def __init__(self, config: LlmConfig, bundles: BundleCache) -> None:
        """Build the activities.

        Args:
            config: Endpoints, fallbacks and request options.
            bundles: The worker's bundles (definitions and tools by hash).
        """
        self._config = config
        self._bundles = bundles
        self._clients: dict[tuple[str, str], openai.AsyncOpenAI] = {}
        self._metrics: ChatMetrics | None = None
        """Made on the first call, from the worker's metric meter."""

    async def close(self) -> None:
        """Close the HTTP clients (when the worker stops)."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    def _client(self, endpoint: ModelEndpoint) -> openai.AsyncOpenAI:
        key = (endpoint.base_url, endpoint.api_key.get_secret_value())
        if key not in self._clients:
            # Temporal retries the activity; the client must not retry on its own.
            self._clients[key] = openai.AsyncOpenAI(
                base_url=endpoint.base_url,
                api_key=endpoint.api_key.get_secret_value(),
                max_retries=0,
                timeout=self._config.timeout_seconds,
            )
        return self._clients[key]

    def _pick(self, tier_name: str, attempt: int, fallback: bool) -> tuple[ModelEndpoint, bool]:
        tier = self._config.tiers.get(tier_name)
        if tier is None:
            known = ", ".join(sorted(self._config.tiers))
            raise ApplicationError(
                f"model tier {tier_name!r} is not configured on this worker "
                f"(set FSMFLOW_MODEL_{tier_name.upper()}; configured: {known})",
                type="UnknownTier",
                non_retryable=True,
            )
        backup = self._config.fallbacks.get(tier_name)
        if backup is not None and (fallback or attempt > self._config.fallback_after):
            return backup, True
        return tier, False

    def _options(
        self,
        endpoint: ModelEndpoint,
        messages: list[dict[str, str]],
        schema_name: str,
        schema: dict[str, Any],
    ) -> dict[str, Any]:
        """The request body of one chat completion."""
        options: dict[str, Any] = {"model": endpoint.model}
        if self._config.response_format == "json_object":
            # Without schema-constrained decoding the model must read the schema.
            text = json.dumps(schema, separators=(",", ":"))
            described = {"role": "system", "content": f"Reply JSON schema: {text}"}
            options["messages"] = [messages[0], described, *messages[1:]]
            options["response_format"] = {"type": "json_object"}
        else:
            options["messages"] = messages
            options["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema_name, "strict": True, "schema": schema},
            }
        if endpoint.reasoning_effort is not None:
            # Reasoning models take no temperature and bound completion tokens.
            options["reasoning_effort"] = endpoint.reasoning_effort
            options["max_completion_tokens"] = self._config.max_tokens
        else:
            options["temperature"] = self._config.temperature
            options["max_tokens"] = self._config.max_tokens
        return options

    @activity.defn(name="fsmflow.llm_turn")
    async def llm_turn(self, request: LlmTurnInput) -> LlmTurnOutput:
        """Ask the state's model tier for one turn and check it against the turn schema."""
        info = activity.info()
        # Only a conversation turn has a turn id: its message streams.
        stream = self._reply_stream(request)
        try:
            if stream is not None and info.attempt > 1:
                # What an earlier attempt published is void (it failed, or its
                # worker died mid-stream): this attempt streams anew. Said before
                # anything else, also when this worker then asks for the bundle.
                await stream.reset(f"the model call is retried (attempt {info.attempt})")
            return await self._turn(request, stream)
        finally:
            if stream is not None:
                await stream.aclose()

    async def _turn(self, request: LlmTurnInput, stream: ReplyStream | None) -> LlmTurnOutput:
        info = activity.info()
        bundle = self._bundles.get(request.bundle_hash)
        if bundle is None and request.bundle is not None:
            bundle = self._bundles.add(request.bundle_hash, request.bundle)
        if bundle is None:
            raise ApplicationError(
                "this worker does not hold the run's definition yet; send it along",
                type="BundleMissing",
                non_retryable=True,
            )
        definition, run = bundle.definition, request.run
        state = definition.states[run.state]
        endpoint, used_fallback = self._pick(state.model, info.attempt, request.fallback)
        try:
            schema = turn_schema(definition, run, bundle.tools)
        except ValueError as exc:
            raise ApplicationError(str(exc), type="NoTurn", non_retryable=True) from None
        messages = build_messages(
            definition,
            run,
            request.dialogue,
            task=request.task,
            feedback=request.feedback,
            rejected_reply=request.rejected_reply,
            tools=bundle.tools,
        )
        if definition.mode != "conversation":
            stream = None
        turn = _Turn(
            messages=messages,
            name=f"{definition.name}_{run.state}_turn",
            schema=schema,
            label=request.label,
            tier=state.model,
            secrets=frozenset(k for k, key in definition.context.items() if key.secret),
            decided=_move_check(schema, definition, run, bundle.tools) if stream else None,
            reask=request.reask,
        )
        try:
            reply = await self._traced(endpoint, turn, stream)
        except ApplicationError as exc:
            backup = self._config.fallbacks.get(state.model)
            if exc.type != "LlmRequestRejected" or used_fallback or backup is None:
                raise
            # The tier's endpoint refuses the request (a key, a model name): a
            # retry cannot fix that, its fallback (another endpoint, key) may.
            endpoint, used_fallback = backup, True
            reply = await self._traced(endpoint, turn, stream)
        return reply.model_copy(
            update={
                "attempt": info.attempt,
                "used_fallback": used_fallback,
                "streamed": stream is not None and stream.streamed,
            }
        )

    def _reply_stream(self, request: LlmTurnInput) -> ReplyStream | None:
        """Where this call publishes its message, or None (no turn id, streaming off)."""
        if not request.turn or not self._config.stream:
            return None
        info = activity.info()
        bound = log.bind(workflow_id=info.workflow_id, run_id=info.workflow_run_id)
        return ReplyStream(
            turn=request.turn,
            message_id=request.message_id,
            step=request.run.step,
            interval=self._config.stream_interval,
            # Made on the first publish (from the activity's own context).
            connect=lambda: stream_client(
                activity.client(), info.workflow_id or "", info.workflow_run_id or ""
            ),
            warn=lambda error: bound.warning("stream_publish_failed", error=error),
        )

    async def _traced(
        self, endpoint: ModelEndpoint, turn: _Turn, stream: ReplyStream | None = None
    ) -> LlmTurnOutput:
        """One model call in a GenAI ``chat <model>`` span with its histograms, logged."""
        info = activity.info()
        bound = log.bind(
            workflow_id=info.workflow_id,
            run_id=info.workflow_run_id,
            attempt=info.attempt,
            where=turn.label,
            model=endpoint.model,
        )
        where = Where.of(turn.label)
        span = start_chat(
            endpoint.model,
            base_url=endpoint.base_url,
            where=where,
            attempt=info.attempt,
            reask=turn.reask,
            stream=self._config.stream,
            max_tokens=self._config.max_tokens,
            temperature=None if endpoint.reasoning_effort else self._config.temperature,
        )
        span.set_attribute("fsmflow.tier", turn.tier)
        facts: dict[str, Any] = {}
        started = time.monotonic()
        outcome = ChatOutcome()
        try:
            with trace.use_span(span, end_on_exit=False):
                reply = await self._call(endpoint, turn, bound, span, stream, facts)
            outcome = ChatOutcome(
                response_model=str(facts.get("model") or ""),
                input_tokens=reply.prompt_tokens,
                cached_tokens=reply.cached_tokens,
                output_tokens=reply.completion_tokens,
                finish_reasons=[facts["finish_reason"]] if facts.get("finish_reason") else [],
                seconds=time.monotonic() - started,
                first_chunk_seconds=facts.get("first_chunk"),
                valid=reply.problem is None,
                target_state=_target_state(reply.parsed),
            )
            return reply
        except ApplicationError as exc:
            outcome = ChatOutcome(
                seconds=time.monotonic() - started, error_type=exc.type or "LlmFailed"
            )
            raise
        finally:
            end_chat(span, outcome)
            if self._metrics is None:
                self._metrics = ChatMetrics(activity.metric_meter())
            self._metrics.record(endpoint.model, where, outcome)

    async def _call(
        self,
        endpoint: ModelEndpoint,
        turn: _Turn,
        bound: Any,
        span: trace.Span,
        stream: ReplyStream | None,
        facts: dict[str, Any],
    ) -> LlmTurnOutput:
        options = self._options(endpoint, turn.messages, turn.name, turn.schema)
        where = redact_url(endpoint.base_url)
        started = time.monotonic()
        tap = (
            MessageTap([k for k in turn.schema["required"] if k != "message"], turn.decided)
            if stream is not None and turn.decided is not None
            else None
        )
        try:
            async with heartbeating(), asyncio.timeout(self._config.timeout_seconds):
                if self._config.stream:
                    received = await self._streamed(endpoint, options, tap, stream, facts)
                else:
                    received = await self._whole(endpoint, options, facts)
        except openai.APIStatusError as exc:
            status = exc.status_code
            retryable = status in RETRYABLE_STATUS or status >= 500
            bound.warning("llm_http_error", status=status, retryable=retryable)
            raise ApplicationError(
                f"model endpoint {where} answered {status}: {clip(exc.message, 300)}",
                type="LlmUnavailable" if retryable else "LlmRequestRejected",
                non_retryable=not retryable,
            ) from None
        except (openai.APITimeoutError, TimeoutError):
            bound.warning("llm_timeout")
            raise ApplicationError(
                f"model endpoint {where} did not answer within {self._config.timeout_seconds:g}s",
                type="LlmUnavailable",
            ) from None
        except openai.APIConnectionError as exc:
            bound.warning("llm_unreachable", error=str(exc))
            cause = exc.__cause__ or exc
            raise ApplicationError(
                f"model endpoint {where} is unreachable: {clip(str(cause) or str(exc), 300)}",
                type="LlmUnavailable",
            ) from None
        except openai.APIError as exc:
            # An error event in the middle of a stream.
            bound.warning("llm_stream_error", error=clip(exc.message, 300))
            raise ApplicationError(
                f"model endpoint {where} failed mid-reply: {clip(exc.message, 300)}",
                type="LlmUnavailable",
            ) from None
        if received is None:
            raise ApplicationError(
                f"model endpoint {where} returned no choices", type="LlmUnavailable"
            )
        content, finish_reason, usage = received
        if finish_reason is None and self._config.stream and not _is_json(content):
            # The stream stopped before the model did (a connection closed early,
            # cleanly): a transport failure to retry, not a reply to re-ask.
            bound.warning("llm_stream_cut", chars=len(content))
            raise ApplicationError(
                f"model endpoint {where} ended the reply stream before the reply "
                f"({len(content)} characters, no finish reason)",
                type="LlmUnavailable",
            )
        latency_ms = int((time.monotonic() - started) * 1000)
        prompt_tokens = usage.prompt_tokens if usage else 0
        completion_tokens = usage.completion_tokens if usage else 0
        cached_tokens = _cached_tokens(usage)
        problem, kind, parsed = _judge_content(
            content, turn.schema, finish_reason, self._config.max_tokens, turn.secrets
        )
        if stream is not None and stream.streamed:
            if problem is not None:
                await stream.reset(f"the reply was rejected ({kind}); the model is asked again")
            elif turn.decided is not None and parsed is not None and not turn.decided(parsed):
                # Keys written again after the message (duplicates): the whole reply
                # makes another move than the one its beginning showed.
                await stream.reset("the reply was rejected (engine); the model is asked again")
        span.set_attribute("fsmflow.latency_ms", latency_ms)
        bound.info(
            "llm_turn",
            latency_ms=latency_ms,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached_tokens,
            valid=problem is None,
        )
        return LlmTurnOutput(
            content="" if problem is None else clip(content, CONTENT_KEPT),
            parsed=parsed if problem is None else None,
            problem=problem,
            problem_kind=kind,
            model=endpoint.model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached_tokens,
            latency_ms=latency_ms,
        )

    async def _whole(
        self, endpoint: ModelEndpoint, options: dict[str, Any], facts: dict[str, Any]
    ) -> tuple[str, str | None, Any] | None:
        """One reply in one response: (content, finish reason, usage), or None without choices."""
        # The documented low-level request with the body as built: the typed
        # create() walks the whole turn schema through its TypedDict transform
        # on every call (~1.4 ms of a ~5 ms call to a local server).
        response = await self._client(endpoint).post(
            "/chat/completions", body=options, cast_to=ChatCompletion
        )
        facts["model"] = response.model
        if not response.choices:
            return None
        choice = response.choices[0]
        facts["finish_reason"] = choice.finish_reason
        return choice.message.content or "", choice.finish_reason, response.usage

    async def _streamed(
        self,
        endpoint: ModelEndpoint,
        options: dict[str, Any],
        tap: MessageTap | None,
        stream: ReplyStream | None,
        facts: dict[str, Any],
    ) -> tuple[str, str | None, Any] | None:
        """One reply as server-sent events, its message published as it comes.

        ``facts`` gets the responding model, the finish reason and the seconds to
        the first chunk (telemetry).

        Returns (content, finish reason, usage), or None when no chunk held a choice.
        """
        body = {**options, "stream": True, "stream_options": {"include_usage": True}}
        requested = time.monotonic()
        chunks = await self._client(endpoint).post(
            "/chat/completions",
            body=body,
            cast_to=ChatCompletionChunk,
            stream=True,
            stream_cls=AsyncStream[ChatCompletionChunk],
        )
        parts: list[str] = []
        finish_reason: str | None = None
        usage = None
        chosen = False
        async with chunks:
            async for chunk in chunks:
                if "first_chunk" not in facts:
                    facts["first_chunk"] = time.monotonic() - requested
                    facts["model"] = chunk.model
                if chunk.usage is not None:
                    usage = chunk.usage
                if not chunk.choices:
                    continue
                chosen = True
                choice = chunk.choices[0]
                piece = choice.delta.content if choice.delta is not None else None
                if piece:
                    parts.append(piece)
                    if tap is not None and stream is not None:
                        await stream.delta(tap.feed(piece))
                if choice.finish_reason is not None:
                    finish_reason = facts["finish_reason"] = choice.finish_reason
        return ("".join(parts), finish_reason, usage) if chosen else None


def _target_state(parsed: dict[str, Any] | None) -> str:
    """The state a reply moves to (a conversation turn's, or an autonomous transition's)."""
    if not parsed:
        return ""
    action = parsed.get("action")
    target = action.get("target_state") if isinstance(action, dict) else parsed.get("target_state")
    return target if isinstance(target, str) else ""


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _move_check(
    schema: dict[str, Any],
    definition: AgentDefinition,
    run: RunState,
    tools: Mapping[str, ToolInfo],
) -> Callable[[dict[str, Any]], bool]:
    """Whether a conversation reply's keys and move fit the schema and the engine applies them.

    Asked when its message begins to stream (and of the whole reply): its message
    is left out, the rest must be complete.
    """

    def decided(partial: dict[str, Any]) -> bool:
        candidate = fill_nulls(schema, {**partial, "message": ""})
        if schema_problem(schema, candidate) is not None:
            return False
        return move_decided(definition, run, candidate, tools)

    return decided


def _cached_tokens(usage: Any) -> int:
    """Prompt tokens the endpoint served from its prefix cache (0 when it does not say).

    OpenAI and llama.cpp report ``usage.prompt_tokens_details.cached_tokens``.
    """
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    return cached if isinstance(cached, int) and cached >= 0 else 0


ProblemKind = Literal["invalid_json", "schema", "truncated"]


def _judge_content(
    content: str,
    schema: dict[str, Any],
    finish_reason: str | None,
    max_tokens: int,
    secrets: Collection[str] = (),
) -> tuple[str | None, ProblemKind | None, dict[str, Any] | None]:
    """Parse a reply and check it against the turn schema: (problem, kind, parsed)."""
    if finish_reason == "length":
        # At temperature 0 the same request is cut the same way: ask for less.
        return (
            f"your reply was cut off at {max_tokens} tokens; reply again, shorter "
            "(keep reasoning brief)",
            "truncated",
            None,
        )
    try:
        parsed = json.loads(content)
    except json.JSONDecodeError as exc:
        return (
            f"the reply is not valid JSON: {exc.msg.removesuffix(' at')} at column {exc.colno}",
            "invalid_json",
            None,
        )
    parsed = fill_nulls(schema, parsed)
    problem = schema_problem(schema, parsed, secrets)
    if problem is not None:
        return problem, "schema", None
    if not isinstance(parsed, dict):
        return "the reply is not a JSON object", "schema", None
    return None, None, parsed
