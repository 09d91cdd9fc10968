"""Session fixtures with real parts: the Temporal dev server from the installed
``temporal`` binary and a scripted OpenAI-compatible HTTP server."""

from __future__ import annotations

import os
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.llm_server import ScriptedLlm
from tests.postgres import PostgresServer
from workers.binaries import temporal_cli, temporal_test_server
from workers.client import register_search_attributes
from workers.settings import Settings
from workers.worker import running
from workflows.agent import SEARCH_ATTRIBUTES

ROOT = Path(__file__).parents[1]
EXAMPLES = ROOT / "examples"
RESEARCH_TOOLS = EXAMPLES / "research_tools.py"


# CI explores the same examples every run (a red CI must be reproducible);
# local runs explore new ones each time.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_configure(config: pytest.Config) -> None:
    # A workflow that ends with an update or signal handler still running is a bug.
    warnings.filterwarnings("error", message=".*[Uu]nfinished.*[Hh]andlers.*")


@pytest.fixture(autouse=True)
def publish_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the research example publishes in this test (never the repository)."""
    target = tmp_path / "published"
    monkeypatch.setenv("RESEARCH_PUBLISH_DIR", str(target))
    return target


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()),
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
async def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (a throwaway cluster)."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store_url(postgres: PostgresServer) -> str:
    """The URL of a fresh database of this test's own, migrated (``fsmflow store migrate``)."""
    url = postgres.create_database(f"t{uuid.uuid4().hex[:12]}")
    postgres.migrate(url)
    return url


@pytest.fixture(scope="session")
def llm() -> Iterator[ScriptedLlm]:
    server = ScriptedLlm().start()
    yield server
    server.stop()


@pytest.fixture
def model_name() -> str:
    """A model name of this test's own: the scripted server keys replies by it."""
    return f"scripted-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:10]}"


def make_settings(llm: ScriptedLlm, model: str, task_queue: str, **overrides: Any) -> Settings:
    """Worker settings pointing at the scripted server, with fast retries.

    Each call gets its own ledger and artifact directory (a temporary directory).
    """
    data = Path(tempfile.mkdtemp(prefix="fsmflow-test-"))
    values: dict[str, Any] = {
        "tool_modules_spec": str(RESEARCH_TOOLS),
        "tool_ledger": data / "ledger.sqlite3",
        "artifacts_dir": data / "artifacts",
        "task_queue": task_queue,
        "agents_dir": EXAMPLES,
        "openai_base_url": llm.url,
        "openai_api_key": "sk-test",
        "models": {"default": model},
        "llm_timeout_seconds": 5.0,
        "graceful_shutdown_seconds": 0.0,
    }
    values.update(overrides)
    return Settings.load(environ={}, **values)


@pytest.fixture(name="settings")
def worker_settings(llm: ScriptedLlm, model_name: str, task_queue: str) -> Settings:
    return make_settings(llm, model_name, task_queue)


@asynccontextmanager
async def running_worker(client: Client, settings: Settings) -> AsyncIterator[Worker]:
    """An in-process worker for one test's task queue."""
    async with running(client, settings) as worker:
        yield worker


@pytest.fixture(scope="session")
def test_server_path() -> Path:
    return temporal_test_server()


@pytest.fixture(scope="module")
async def skipping_env(test_server_path: Path) -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server (timers fire as soon as nothing else runs)."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(test_server_path),
        data_converter=pydantic_data_converter,
    )
    await register_search_attributes(env.client)
    try:
        yield env
    finally:
        await env.shutdown()


def free_ports(count: int = 1) -> list[int]:
    """Ports nobody listens on, below Linux's ephemeral range (32768-60999).

    A port from bind(0) is ephemeral: a server started a moment earlier may take
    it for an outgoing connection before the test's own server binds it.
    """
    import random
    import socket

    found: list[int] = []
    port = random.randrange(20000, 30000)
    while len(found) < count and port < 32768:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
                found.append(port)
            except OSError:
                pass
        port += 1
    return found


def free_port() -> int:
    """One port from ``free_ports``."""
    return free_ports(1)[0]
