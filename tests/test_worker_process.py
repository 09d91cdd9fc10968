"""`fsmflow worker` refuses bad configuration with one clear line and drains on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from tests.conftest import EXAMPLES, ROOT


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


def test_refuses_a_missing_agents_dir(tmp_path: Path) -> None:
    result = run_worker({"FSMFLOW_AGENTS_DIR": str(tmp_path / "nope")})
    assert result.returncode == 1
    assert "agents directory" in result.stderr and "does not exist" in result.stderr


def test_unreachable_temporal_names_the_address() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_worker(
        {"FSMFLOW_AGENTS_DIR": str(EXAMPLES), "TEMPORAL_ADDRESS": f"127.0.0.1:{port}"}
    )
    assert result.returncode == 1
    assert f"cannot reach Temporal at 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


async def test_sigterm_stops_the_worker_cleanly(temporal_env: WorkflowEnvironment) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "workers", "worker"],
        cwd=ROOT,
        env={
            **os.environ,
            "FSMFLOW_AGENTS_DIR": str(EXAMPLES),
            "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
            "FSMFLOW_TASK_QUEUE": "sigterm-test",
            "FSMFLOW_GRACEFUL_SHUTDOWN": "1",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    assert process.stderr is not None
    lines = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        lines.append(line)
        if "worker_polling" in line:
            break
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    rest = process.stderr.read()
    assert "worker_stopped" in rest, "".join(lines) + rest
