"""Tool execution: the activity ``fsmflow.run_tool`` and loading tool modules.

The workflow runs a tool call only after the engine allowed it (the state lists
the tool, the arguments fit its schema); the activity validates the arguments
again, hands artifact arguments their content, injects the ``ToolContext``
(idempotency key, the call's identity, effect ledger, artifact store) and turns
the result into what the model sees: the result itself when small, else an
artifact reference and a bounded summary. History never holds more than that.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.util
import json
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pydantic_core
import structlog
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.artifacts import run_scope
from activities.genai import Where, tool_span
from activities.heartbeat import HEARTBEAT_SECONDS, heartbeating
from fsm.problems import clip, validation_problem
from fsm.tools import (
    Artifact,
    ArtifactStore,
    ArtifactTooLarge,
    EffectLedger,
    LedgerConflict,
    StoreUnavailable,
    ToolContext,
    ToolDefinitionError,
    ToolError,
    ToolRegistry,
    ToolSpec,
    artifact_path,
    call_identity,
)
from fsm.validation import first_error
from schemas.activity import RunToolInput, ToolOutput

log = structlog.get_logger("fsmflow.tools")

ERROR_CHARS = 500
"""Bound of a model-visible tool error message."""
VALUE_CHARS = 4000
"""Bound of one value a result writes to the context (as JSON)."""


class ToolModuleError(Exception):
    """A tool module cannot be loaded; the message names it and says why."""


def _import(entry: str) -> Any:
    if entry.endswith(".py") or "/" in entry:
        path = Path(entry)
        if not path.is_file():
            raise ToolModuleError(f"tool module {entry!r}: no such file")
        name = f"fsmflow_tools_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ToolModuleError(f"tool module {entry!r}: cannot be loaded as Python")
        module = importlib.util.module_from_spec(spec)
        # Registered before it runs, so type hints and pydantic models resolve.
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(entry)


def load_tool_modules(entries: Sequence[str]) -> ToolRegistry:
    """Import tool modules (dotted names or ``.py`` paths) and merge their registries.

    A tool module defines one or more module-level ``ToolRegistry`` objects.

    Raises:
        ToolModuleError: If a module is missing, fails to import, registers no
            tool, or names a tool another module registered.
    """
    merged = ToolRegistry()
    for entry in entries:
        try:
            module = _import(entry)
        except ToolModuleError:
            raise
        except ToolDefinitionError as exc:
            raise ToolModuleError(f"tool module {entry!r}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - any import failure, named
            raise ToolModuleError(
                f"tool module {entry!r} failed to import: {type(exc).__name__}: {exc}"
            ) from None
        registries = [v for v in vars(module).values() if isinstance(v, ToolRegistry)]
        if not registries or not any(len(r) for r in registries):
            raise ToolModuleError(f"tool module {entry!r} defines no ToolRegistry with tools")
        for registry in registries:
            for spec in registry.specs():
                if spec.name in merged:
                    raise ToolModuleError(
                        f"tool module {entry!r}: tool {spec.name!r} is already registered "
                        "by another module"
                    )
                merged.add(spec)
    return merged


def _render(result: Any) -> tuple[bytes, str]:
    """A result as bytes, and the artifact file suffix that fits it."""
    if isinstance(result, bytes):
        return result, "bin"
    if isinstance(result, str):
        return result.encode(), "txt"
    return pydantic_core.to_json(result, fallback=str), "json"


def _store_unavailable(exc: StoreUnavailable, bound: Any) -> ApplicationError:
    """A store outage, retried as it is; the workflow waits for the store after the attempts."""
    bound.warning("tool_store_unavailable", error=str(exc))
    return ApplicationError(str(exc), type="StoreUnavailable")


class ToolActivities:
    """Runs registered tools with their ledger and artifact store."""

    def __init__(
        self,
        registry: ToolRegistry,
        *,
        ledger: EffectLedger,
        artifacts: ArtifactStore,
        artifact_threshold: int = 2000,
        summary_chars: int = 300,
        threads: int = 8,
    ) -> None:
        """Build the activity.

        Args:
            registry: The tools.
            ledger: Where effects are recorded by idempotency key.
            artifacts: Where large results and saved artifacts go.
            artifact_threshold: Results longer than this (characters) become
                artifacts; the model sees a reference and a summary.
            summary_chars: Length of that summary.
            threads: Plain (sync) tools running at once, each in its own thread.
        """
        self._registry = registry
        self._ledger = ledger
        self._artifacts = artifacts
        self._threshold = artifact_threshold
        self._summary_chars = summary_chars
        # Plain tools get threads of their own: one that waits in ctx.once must not
        # hold a thread of the default executor, which the ledger and store need.
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fsmflow-tool")

    def close(self) -> None:
        """Let go of the tool threads (when the worker stops)."""
        self._threads.shutdown(wait=False, cancel_futures=True)

    def _spec(self, name: str) -> ToolSpec:
        if name not in self._registry:
            raise ApplicationError(
                f"tool {name!r} is not registered on this worker "
                f"(registered: {', '.join(self._registry.names()) or 'none'})",
                type="UnknownTool",
                non_retryable=True,
            )
        return self._registry[name]

    async def _arguments(
        self, spec: ToolSpec, request: RunToolInput, scope: str
    ) -> dict[str, Any] | str:
        """Keyword arguments for the function, or a problem the model should read."""
        error = first_error(spec.parameters, request.arguments)
        if error is not None:
            where = ".".join(str(p) for p in error.path) or "arguments"
            raise ApplicationError(
                f"bad arguments for tool {spec.name!r}: {where}: {error.message[:200]}",
                type="ToolArgumentsInvalid",
                non_retryable=True,
            )
        assert spec.arguments_model is not None
        try:
            parsed = spec.arguments_model.model_validate(request.arguments)
        except ValidationError as exc:
            raise ApplicationError(
                f"bad arguments for tool {spec.name!r}: {validation_problem(exc, 'arguments')}",
                type="ToolArgumentsInvalid",
                non_retryable=True,
            ) from None
        kwargs = {name: getattr(parsed, name) for name in type(parsed).model_fields}
        for name in spec.artifact_parameters:
            ref = kwargs.get(name)
            if ref is None:
                continue
            try:
                data = await self._artifacts.get(scope, artifact_path(ref))
            except (KeyError, ValueError) as exc:
                return f"error: argument {name}: {exc.args[0] if exc.args else exc}"
            kwargs[name] = Artifact(ref=ref, data=data)
        return kwargs

    async def _present(
        self, spec: ToolSpec, result: Any, context: ToolContext, writes: list[str]
    ) -> tuple[str, int, dict[str, Any]]:
        """What the model sees of a result, its full size, and the values it writes."""
        data, suffix = _render(result)
        text = data.decode("utf-8", errors="replace")
        values: dict[str, Any] = {}
        if writes and suffix == "json":
            fields = json.loads(data)
            if isinstance(fields, dict):
                # Bounded here (history), judged against the declared keys by the engine.
                values = {
                    k: fields[k]
                    for k in writes
                    if k in fields and len(json.dumps(fields[k])) <= VALUE_CHARS
                }
        if len(text) <= self._threshold and suffix != "bin":
            return text, len(text), values
        ref = await context.save_artifact(f"{spec.name}.{suffix}", data)
        preview = clip(text if suffix != "bin" else "(binary)", self._summary_chars)
        return f"[{len(data)} bytes stored as {ref}; preview:] {preview}", len(text), values

    @activity.defn(name="fsmflow.run_tool")
    async def run_tool(self, request: RunToolInput) -> ToolOutput:
        """Run one allowed tool call; a ``ToolError`` becomes the model-visible result."""
        info = activity.info()
        spec = self._spec(request.tool)
        bound = log.bind(
            workflow_id=info.workflow_id,
            run_id=info.workflow_run_id,
            tool=spec.name,
            attempt=info.attempt,
            key=request.idempotency_key,
        )
        scope = run_scope(request.workflow_id, request.chain_id)
        started = time.monotonic()
        with tool_span(
            spec.name,
            where=Where.of(request.label),
            attempt=info.attempt,
            call_id=request.idempotency_key,
        ) as span:
            try:
                arguments = await self._arguments(spec, request, scope)
            except StoreUnavailable as exc:
                raise _store_unavailable(exc, bound) from None
            context = ToolContext(
                idempotency_key=request.idempotency_key,
                workflow_id=request.workflow_id,
                step=request.step,
                call_index=request.call_index,
                # Computed here, not read from the key: the ledger checks the call
                # that actually runs against the one its key was recorded for.
                call_hash=call_identity(request.tool, request.arguments),
                attempt=info.attempt,
                ledger=self._ledger,
                artifacts=self._artifacts,
                scope=scope,
                loop=asyncio.get_running_loop(),
            )
            values: dict[str, Any] = {}
            if isinstance(arguments, str):
                ok, text, size = False, arguments, len(arguments)
            else:
                if spec.context_parameter:
                    arguments[spec.context_parameter] = context
                ok, text, size, values = await self._invoke(
                    spec, arguments, context, request.writes, bound
                )
            latency_ms = int((time.monotonic() - started) * 1000)
            span.set_attributes({"fsmflow.ok": ok, "fsmflow.result_chars": size})
        bound.info("tool_call", ok=ok, latency_ms=latency_ms, result_chars=size)
        return ToolOutput(
            tool=spec.name,
            ok=ok,
            text=text,
            artifacts=list(context.saved),
            result_chars=size,
            values=values,
            latency_ms=latency_ms,
        )

    async def _invoke(
        self,
        spec: ToolSpec,
        arguments: dict[str, Any],
        context: ToolContext,
        writes: list[str],
        bound: Any,
    ) -> tuple[bool, str, int, dict[str, Any]]:
        timeout = activity.info().heartbeat_timeout or timedelta(seconds=spec.heartbeat_seconds)
        every = min(HEARTBEAT_SECONDS, timeout.total_seconds() / 3)
        try:
            async with heartbeating(every):
                if spec.is_async:
                    result = await spec.function(**arguments)
                else:
                    call = functools.partial(spec.function, **arguments)
                    loop = asyncio.get_running_loop()
                    result = await loop.run_in_executor(self._threads, call)
        except LedgerConflict as exc:
            # Before model_errors and the catch-all: a retry would meet the same record,
            # and the model cannot fix a key it never sees.
            bound.error("tool_key_conflict", error=str(exc))
            raise ApplicationError(
                str(exc), type="IdempotencyConflict", non_retryable=True
            ) from None
        except StoreUnavailable as exc:
            raise _store_unavailable(exc, bound) from None
        except (ToolError, ArtifactTooLarge, *spec.model_errors) as exc:
            # ArtifactTooLarge: the same call would save the same bytes; the model reads why.
            message = clip(f"error: {exc}", ERROR_CHARS)
            bound.info("tool_error", error=message)
            return False, message, len(message), {}
        except ApplicationError:
            raise  # the tool chose its own retry behaviour
        except Exception as exc:  # noqa: BLE001 - retried by Temporal, then fails the turn
            bound.warning("tool_failed", error=f"{type(exc).__name__}: {exc}")
            raise ApplicationError(
                f"tool {spec.name!r} raised {type(exc).__name__}: {clip(str(exc), ERROR_CHARS)}",
                type="ToolFailed",
            ) from None
        try:
            text, size, values = await self._present(spec, result, context, writes)
        except StoreUnavailable as exc:
            raise _store_unavailable(exc, bound) from None
        except ArtifactTooLarge as exc:
            message = clip(f"error: the result could not be kept: {exc}", ERROR_CHARS)
            bound.warning("tool_result_too_large", error=message)
            return False, message, len(message), {}
        return True, text, size, values
