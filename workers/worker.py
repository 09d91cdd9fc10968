"""The worker process: registers ``AgentWorkflow`` and the activities, drains on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from datetime import timedelta

import structlog
from temporalio.client import Client
from temporalio.worker import Worker

from activities.definitions import DefinitionActivities, load_agents
from activities.llm import LlmActivities
from workers.client import connect
from workers.settings import Settings
from workflows.agent import AgentWorkflow

log = structlog.get_logger("fsmflow.worker")


class WorkerConfigError(Exception):
    """The worker cannot start; the message says what to fix."""


def check_agents(settings: Settings) -> list[str]:
    """Load every definition of the agents directory; refuse to start on any error.

    Returns:
        The agent names found.

    Raises:
        WorkerConfigError: Naming the file, state and field of every problem.
    """
    from fsm.problems import DefinitionError

    try:
        agents = load_agents(settings.agents_dir)
    except (DefinitionError, FileNotFoundError) as exc:
        raise WorkerConfigError(f"refusing to start: {exc}") from None
    return sorted({loaded.definition.name for loaded in agents.values()})


def build_worker(client: Client, settings: Settings) -> Worker:
    """A worker for the settings' task queue with every workflow and activity."""
    definitions = DefinitionActivities(settings.agents_dir, settings.limits())
    llm = LlmActivities(settings)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[AgentWorkflow],
        activities=[definitions.resolve_definition, llm.llm_turn],
        max_concurrent_activities=settings.max_concurrent_activities,
        graceful_shutdown_timeout=timedelta(seconds=settings.graceful_shutdown_seconds),
    )


async def run_worker(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or ``stop``), then drain within the graceful timeout.

    Raises:
        WorkerConfigError: If the agents directory holds an invalid definition.
        RuntimeError: If Temporal cannot be reached.
    """
    agents = check_agents(settings)
    client = await connect(settings)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    worker = build_worker(client, settings)
    log.info("worker_starting", agents=agents, **settings.safe_summary())
    async with worker:
        log.info("worker_polling", task_queue=settings.task_queue)
        if on_ready is not None:
            on_ready()
        await stop.wait()
        log.info("worker_draining", graceful_seconds=settings.graceful_shutdown_seconds)
    log.info("worker_stopped")
