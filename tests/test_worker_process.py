"""`fsmflow worker` refuses bad configuration with one clear line and drains on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from schemas.workflow import AgentWorkflowInput, MessageInput, Reply
from tests.conftest import EXAMPLES, RESEARCH_TOOLS, ROOT, free_port
from tests.llm_server import ScriptedLlm, say
from tests.workflows.helpers import research_to_the_gate, wait_for_status
from workers.settings import Settings
from workers.worker import _metrics_runtime


def run_worker(env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers", "worker"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_refuses_an_invalid_definition(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text((EXAMPLES / "form.yaml").read_text())
    (tmp_path / "bad.yaml").write_text(
        (EXAMPLES / "form.yaml").read_text().replace("target: confirm", "target: confrim", 1)
    )
    result = run_worker({"FSMFLOW_AGENTS_DIR": str(tmp_path)})
    assert result.returncode == 1
    assert result.stderr.startswith("fsmflow worker: refusing to start: ")
    assert "bad.yaml: state 'ask_phone': transition 1: target 'confrim' is not a state" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_refuses_definitions_naming_tools_it_does_not_have(tmp_path: Path) -> None:
    (tmp_path / "research.yaml").write_text((EXAMPLES / "research.yaml").read_text())
    result = run_worker({"FSMFLOW_AGENTS_DIR": str(tmp_path), "FSMFLOW_TOOL_MODULES": ""})
    assert result.returncode == 1
    assert (
        "state 'research': tools: tool 'search_corpus' is not registered "
        "(tool modules come from FSMFLOW_TOOL_MODULES)"
    ) in result.stderr
    broken = tmp_path / "broken_tools.py"
    broken.write_text("import no_such_package\n")
    result = run_worker({"FSMFLOW_AGENTS_DIR": str(tmp_path), "FSMFLOW_TOOL_MODULES": str(broken)})
    assert result.returncode == 1
    assert f"tool module {str(broken)!r} failed to import: ModuleNotFoundError" in result.stderr
    assert "Traceback" not in result.stderr


def test_refuses_a_missing_agents_dir(tmp_path: Path) -> None:
    result = run_worker({"FSMFLOW_AGENTS_DIR": str(tmp_path / "nope")})
    assert result.returncode == 1
    assert "agents directory" in result.stderr and "does not exist" in result.stderr


def test_unreachable_temporal_names_the_address() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_worker(
        {
            "FSMFLOW_AGENTS_DIR": str(EXAMPLES),
            "FSMFLOW_TOOL_MODULES": str(RESEARCH_TOOLS),
            "TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        }
    )
    assert result.returncode == 1
    assert f"cannot reach Temporal at 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_probes_metrics_and_sigterm_drain(
    temporal_env: WorkflowEnvironment,
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    tmp_path: Path,
) -> None:
    health, metrics = free_port(), free_port()
    queue = f"probe-{model_name}"
    process = subprocess.Popen(
        [sys.executable, "-m", "workers", "worker"],
        cwd=ROOT,
        env={
            **os.environ,
            "FSMFLOW_AGENTS_DIR": str(EXAMPLES),
            "FSMFLOW_TOOL_MODULES": str(RESEARCH_TOOLS),
            "FSMFLOW_TOOL_LEDGER": str(tmp_path / "ledger.sqlite3"),
            "FSMFLOW_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
            "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
            "FSMFLOW_TASK_QUEUE": queue,
            "OPENAI_BASE_URL": llm.url,
            "FSMFLOW_MODEL_DEFAULT": model_name,
            "FSMFLOW_GRACEFUL_SHUTDOWN": "1",
            "FSMFLOW_HEALTH_HOST": "127.0.0.1",
            "FSMFLOW_HEALTH_PORT": str(health),
            "FSMFLOW_METRICS_BIND": f"127.0.0.1:{metrics}",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{health}"
    try:
        deadline = time.monotonic() + 30
        while get_safe(f"{base}/readyz") != 200:
            assert time.monotonic() < deadline and process.poll() is None, "never ready"
            await asyncio.sleep(0.2)
        assert get(f"{base}/healthz") == (200, "ok\n")
        ready = json.loads(get(f"{base}/readyz")[1])
        assert ready["status"] == "ready" and ready["task_queue"] == queue
        # Says plainly which stores are in use and what that means for replicas.
        assert ready["stores"]["backend"] == "sqlite" and ready["stores"]["shared"] is False
        assert "FSMFLOW_STORE_URL" in ready["stores"]["meaning"]
        llm.script(model_name, say("ask_email", "Hi Ada", name="Ada"))
        handle = await client.start_workflow(
            "AgentWorkflow",
            AgentWorkflowInput(agent="contact_form"),
            id=f"probe-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
        )
        await handle.execute_update("send_message", MessageInput(text="I'm Ada"), result_type=Reply)
        # An autonomous run to its gate: its tool calls are counted too.
        llm.script(model_name, *research_to_the_gate())
        research = await client.start_workflow(
            "AgentWorkflow",
            AgentWorkflowInput(agent="research", task="Durable execution"),
            id=f"probe-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
        )
        await wait_for_status(research, lambda s: s.status == "awaiting_approval")
        status, text = get(f"{base}/metrics")
        await handle.terminate("test over")
        await research.terminate("test over")
        assert "fsmflow_tool_calls" in text and 'tool="search_corpus"' in text
        assert 'outcome="ok"' in text
        assert status == 200
        assert "fsmflow_turns" in text and 'agent="contact_form"' in text
        assert "fsmflow_tokens" in text and "fsmflow_transitions" in text
        assert "temporal_" in text  # the SDK's own metrics
        # The GenAI client histograms (OpenTelemetry's names, Prometheus' underscores).
        assert "gen_ai_client_token_usage" in text and 'gen_ai_token_type="output"' in text
        assert "gen_ai_client_operation_duration" in text
        assert any(  # buckets in seconds, not the SDK's milliseconds
            line.startswith("gen_ai_client_operation_duration_bucket") and 'le="0.05"' in line
            for line in text.splitlines()
        )
        assert "gen_ai_client_operation_time_to_first_chunk" in text
        assert get(f"{base}/nope")[0] == 404
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code == 0
    assert process.stderr is not None and "worker_stopped" in process.stderr.read()
    assert get_safe(f"{base}/healthz") is None  # the endpoint is gone with the process


def get_safe(url: str) -> int | None:
    try:
        return get(url)[0]
    except OSError:
        return None


def leave_time_wait(port: int) -> None:
    """Leave a connection of a closed server in TIME_WAIT on ``port``.

    The server binds with SO_REUSEADDR, as the runtime's exporter does: Linux
    lets a new bind past a TIME_WAIT only if both sockets set it. The server
    side closes first, so the TIME_WAIT is on the port's end, as after a worker
    that stopped while Prometheus was scraping it.
    """
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        with socket.create_connection(("127.0.0.1", port)) as scraper:
            served, _ = listener.accept()
            served.close()
            assert scraper.recv(1) == b""  # the server's FIN arrived before the client closes


def test_metrics_survive_a_connection_in_time_wait() -> None:
    port = free_port()
    leave_time_wait(port)
    with socket.socket() as plain, socket.socket() as reusing:
        # The reproduction holds: a bind without SO_REUSEADDR is refused, one with it is not.
        with pytest.raises(OSError, match="in use"):
            plain.bind(("127.0.0.1", port))
        reusing.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reusing.bind(("127.0.0.1", port))
    settings = Settings.load(environ={}, metrics_bind=f"127.0.0.1:{port}")
    with capture_logs() as logs:
        runtime = _metrics_runtime(settings)
    assert runtime is not None, logs
    assert not logs
    assert get(f"http://127.0.0.1:{port}/metrics")[0] == 200


def test_metrics_are_off_when_another_process_listens_on_the_port() -> None:
    port = free_port()
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        settings = Settings.load(environ={}, metrics_bind=f"127.0.0.1:{port}")
        with capture_logs() as logs:
            assert _metrics_runtime(settings) is None
    (warning,) = logs
    assert warning["event"] == "metrics_disabled" and warning["log_level"] == "warning"
    assert warning["bind"] == f"127.0.0.1:{port}" and "in use" in warning["error"]
