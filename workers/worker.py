"""The worker process: registers ``AgentWorkflow`` and the activities, drains on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import structlog
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from activities.bundles import BundleCache
from activities.definitions import DefinitionActivities, load_agents
from activities.genai import BUCKETS as GENAI_BUCKETS
from activities.llm import LlmActivities
from activities.tools import ToolActivities, ToolModuleError, load_tool_modules
from fsm.problems import DefinitionError
from fsm.tools import ToolRegistry
from workers.client import connect
from workers.health import HealthServer, Readiness
from workers.settings import Settings
from workers.stores import StoreError, Stores, open_stores
from workers.telemetry import configure_tracing, tracing_enabled
from workflows.agent import AgentWorkflow

log = structlog.get_logger("fsmflow.worker")

STICKY_TIMEOUT = timedelta(seconds=3)


class WorkerConfigError(Exception):
    """The worker cannot start; the message says what to fix."""


def load_tools(settings: Settings) -> ToolRegistry:
    """The tools of ``FSMFLOW_TOOL_MODULES``.

    Raises:
        WorkerConfigError: If a module cannot be loaded or registers no tool.
    """
    try:
        return load_tool_modules(settings.tool_modules)
    except ToolModuleError as exc:
        raise WorkerConfigError(f"refusing to start: {exc}") from None


def check_agents(settings: Settings, tools: ToolRegistry | None = None) -> list[str]:
    """Load every definition of the agents directory; refuse to start on any error.

    Returns:
        The agent names found.

    Raises:
        WorkerConfigError: Naming the file, state and field of every problem.
    """
    registry = tools if tools is not None else load_tools(settings)
    try:
        agents = load_agents(
            settings.agents_dir, tools=registry.names(), tiers=sorted(settings.models)
        )
    except (DefinitionError, FileNotFoundError) as exc:
        raise WorkerConfigError(f"refusing to start: {exc}") from None
    return sorted({loaded.definition.name for loaded in agents.values()})


def _build(
    client: Client, settings: Settings, tools: ToolRegistry, stores: Stores
) -> tuple[Worker, LlmActivities, ToolActivities]:
    """A worker for the settings' task queue with every workflow and activity."""
    bundles = BundleCache()
    definitions = DefinitionActivities(
        settings.agents_dir,
        settings.limits(),
        tools={spec.name: spec.info() for spec in tools.specs()},
        tiers=sorted(settings.models),
        bundles=bundles,
    )
    llm = LlmActivities(settings.llm_config(), bundles)
    runner = ToolActivities(
        tools,
        ledger=stores.ledger,
        artifacts=stores.artifacts,
        artifact_threshold=settings.artifact_threshold,
        summary_chars=settings.artifact_summary_chars,
        threads=settings.max_concurrent_activities,
    )
    worker = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[AgentWorkflow],
        activities=[definitions.resolve_definition, llm.llm_turn, runner.run_tool],
        max_concurrent_activities=settings.max_concurrent_activities,
        graceful_shutdown_timeout=timedelta(seconds=settings.graceful_shutdown_seconds),
        # A run's next task waits this long for the worker that cached it before
        # another worker takes it: after a crash, a conversation turn's reply comes
        # this much later than its FSMFLOW_TURN_TIMEOUT (the SDK's default is 10 s).
        sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
    )
    return worker, llm, runner


@contextlib.asynccontextmanager
async def running(
    client: Client,
    settings: Settings,
    tools: ToolRegistry | None = None,
    stores: Stores | None = None,
) -> AsyncIterator[Worker]:
    """Run a worker for the body's duration; close its clients and threads afterwards.

    Args:
        client: The Temporal client.
        settings: The worker's settings.
        tools: The tools (default: ``FSMFLOW_TOOL_MODULES``).
        stores: The ledger and artifact store (default: opened from the settings
            and closed afterwards).

    Raises:
        WorkerConfigError: If the tool modules or the stores cannot be loaded.
    """
    registry = tools if tools is not None else load_tools(settings)
    owned = stores is None
    used = stores if stores is not None else await _open_stores(settings)
    worker, llm, runner = _build(client, settings, registry, used)
    try:
        async with worker:
            yield worker
    finally:
        await llm.close()
        runner.close()
        if owned:
            await used.close()


async def _open_stores(settings: Settings) -> Stores:
    try:
        return await open_stores(settings)
    except StoreError as exc:
        raise WorkerConfigError(f"refusing to start: {exc}") from None


def _metrics_runtime(settings: Settings) -> Runtime | None:
    """A Temporal runtime serving Prometheus text, or None if its port is taken."""
    host, _, port = settings.metrics_bind.rpartition(":")
    with socket.socket() as sock:
        # The runtime's exporter binds with SO_REUSEADDR, so a connection of the
        # previous worker still in TIME_WAIT does not stop it; the probe must bind
        # the same way, or it turns metrics off where the runtime would serve them.
        # Only a socket listening on the port makes this bind fail then.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host or "127.0.0.1", int(port)))
        except (OSError, ValueError) as exc:
            log.warning("metrics_disabled", bind=settings.metrics_bind, error=str(exc))
            return None
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=settings.metrics_bind, histogram_bucket_overrides=GENAI_BUCKETS
            )
        )
    )


async def run_worker(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or ``stop``), then drain within the graceful timeout.

    While running, ``/healthz``, ``/readyz`` and ``/metrics`` are served on
    ``FSMFLOW_HEALTH_PORT`` (unless it is 0); ``/readyz`` fails from the moment
    draining starts, so a pod leaves its Service before it stops polling.

    Raises:
        WorkerConfigError: If the agents directory holds an invalid definition, or
            the stores cannot be opened (PostgreSQL unreachable or not migrated).
        RuntimeError: If Temporal cannot be reached.
    """
    tools = load_tools(settings)
    agents = check_agents(settings, tools)
    stores = await _open_stores(settings)
    try:
        await _serve(settings, agents, tools, stores, stop, on_ready)
    finally:
        await stores.close()


async def _serve(
    settings: Settings,
    agents: list[str],
    tools: ToolRegistry,
    stores: Stores,
    stop: asyncio.Event | None,
    on_ready: Callable[[], None] | None,
) -> None:
    runtime = _metrics_runtime(settings) if settings.health_port else None
    plugins = configure_tracing() if tracing_enabled() else []
    client = await connect(settings, runtime=runtime, plugins=plugins)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    readiness = Readiness(details={"task_queue": settings.task_queue, "stores": stores.describe()})
    health = None
    if settings.health_port:
        health = HealthServer(
            readiness,
            host=settings.health_host,
            port=settings.health_port,
            metrics_url=f"http://{settings.metrics_bind}/metrics" if runtime else None,
        )
        try:
            await health.start()
        except OSError as exc:
            raise WorkerConfigError(
                f"cannot serve /healthz on {settings.health_host}:{settings.health_port}: {exc}"
                " (set FSMFLOW_HEALTH_PORT to a free port, or 0 to turn it off)"
            ) from None
    log.info(
        "worker_starting",
        agents=agents,
        tools=tools.names(),
        stores=stores.describe(),
        **settings.safe_summary(),
    )
    if not stores.shared:
        log.info("worker_stores_local", meaning=stores.describe()["meaning"])
    try:
        async with running(client, settings, tools, stores):
            readiness.ready = True
            log.info("worker_polling", task_queue=settings.task_queue)
            if on_ready is not None:
                on_ready()
            await stop.wait()
            readiness.ready = False
            log.info("worker_draining", graceful_seconds=settings.graceful_shutdown_seconds)
    finally:
        if health is not None:
            await health.stop()
    log.info("worker_stopped")
