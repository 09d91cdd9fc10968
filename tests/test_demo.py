"""What `make demo` does, on the embedded model: `fsmflow dev up`, `fsmflow demo`,
`fsmflow dev down`, in a fresh directory on free ports."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, ROOT, free_ports
from workers import local_llm

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not local_llm.available(), reason="embedded model not installed"),
]


def fsmflow(
    cwd: Path, env: dict[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.timeout(900)
def test_demo_from_dev_up_to_dev_down(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    temporal, ui, llm, health, metrics, api = free_ports(6)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OPENAI_", "FSMFLOW_", "TEMPORAL_"))
    }
    env.update(
        PYTHONPATH=str(ROOT),
        FSMFLOW_DEV_TEMPORAL_PORT=str(temporal),
        FSMFLOW_DEV_UI_PORT=str(ui),
        FSMFLOW_DEV_LLM_PORT=str(llm),
        FSMFLOW_DEV_HEALTH_PORT=str(health),
        FSMFLOW_DEV_METRICS_PORT=str(metrics),
        FSMFLOW_DEV_API_PORT=str(api),
        TEMPORAL_ADDRESS=f"127.0.0.1:{temporal}",
        FSMFLOW_UI_URL=f"http://127.0.0.1:{ui}",
    )
    try:
        up = fsmflow(tmp_path, env, "dev", "up", timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"Web UI at http://127.0.0.1:{ui}" in up.stdout
        # The API, with a token for the local user in a file only they can read.
        tokens = tmp_path / ".fsmflow" / "api-tokens"
        identity, token = tokens.read_text().strip().split(":")
        assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
        assert f"API at http://127.0.0.1:{api} as {identity!r}" in up.stdout
        assert f"Console at http://127.0.0.1:{api}/console" in up.stdout
        assert token not in up.stdout + up.stderr
        status = fsmflow(tmp_path, env, "dev", "status")
        assert status.returncode == 0 and status.stdout.count("healthy") == 4, status.stdout
        # A second `up` finds everything running and changes nothing.
        again = fsmflow(tmp_path, env, "dev", "up")
        assert again.stdout.count("already running") == 4, again.stdout
        assert tokens.read_text().strip() == f"{identity}:{token}"

        demo = fsmflow(tmp_path, env, "demo", timeout=900)
        output = demo.stdout
        print(output)
        assert demo.returncode == 0, output + demo.stderr
        assert "$ temporal workflow start --type AgentWorkflow" in output
        assert "0 illegal moves applied." in output
        assert "FSMFLOW_MODEL_DEFAULT=gpt-4o-mini make demo" in output
        assert f"http://127.0.0.1:{ui}/namespaces/default/workflows/demo-research-" in output
        assert "== callback agent (conversation;" in output
        assert "  agent [ask_name]> Hello! I'll take your details for a call-back." in output
        # The scripted happy path takes the call-back form to its end on the
        # embedded model (temperature 0): the machine moves as fields are known.
        assert "path: ask_name -> ask_email -> ask_phone -> confirm -> submitted; " in output
        assert "the run is completed in submitted" in output
        # The run was started and is listed through the visibility store.
        listed = fsmflow(tmp_path, env, "ls")
        assert listed.returncode == 0 and "demo-research-" in listed.stdout
        # ... and through the API, with the local user's token.
        request = urllib.request.Request(
            f"http://127.0.0.1:{api}/v1/runs?limit=100",
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            runs = json.load(response)["runs"]
        assert any(run["id"].startswith("demo-research-") for run in runs), runs
        # ... and in the console, signed in with the same token (its cookie).
        request = urllib.request.Request(
            f"http://127.0.0.1:{api}/console/?agent=research",
            headers={"Cookie": f"fsmflow_console={token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert "demo-research-" in response.read().decode()
        for name in ("temporal", "llm", "worker", "api"):
            assert (tmp_path / ".fsmflow" / f"{name}.log").exists()
        assert (tmp_path / ".fsmflow" / "temporal.db").exists()
        # Runs survive `dev down` / `dev up`: the dev server persists to SQLite.
        assert fsmflow(tmp_path, env, "dev", "down", timeout=120).returncode == 0
        assert fsmflow(tmp_path, env, "dev", "up", timeout=300).returncode == 0
        relisted = fsmflow(tmp_path, env, "ls")
        assert relisted.returncode == 0 and "demo-research-" in relisted.stdout
    finally:
        down = fsmflow(tmp_path, env, "dev", "down", timeout=120)
    assert down.returncode == 0
    assert fsmflow(tmp_path, env, "dev", "status").returncode == 1


def test_the_local_user_gets_one_api_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.dev import API_TOKENS, Ports, api_token, services

    home = tmp_path / ".fsmflow"
    monkeypatch.setenv("USER", "ada lovelace")
    monkeypatch.delenv("FSMFLOW_API_TOKENS", raising=False)
    monkeypatch.delenv("FSMFLOW_API_TOKENS_FILE", raising=False)
    assert api_token(home) == "ada-lovelace"
    first = (home / API_TOKENS).read_text()
    (home / API_TOKENS).chmod(0o644)
    assert api_token(home) == "ada-lovelace" and (home / API_TOKENS).read_text() == first
    assert stat.S_IMODE((home / API_TOKENS).stat().st_mode) == 0o600
    (api,) = [s for s in services(Ports(), home) if s.name == "api"]
    assert api.env["FSMFLOW_API_TOKENS_FILE"] == str(home / API_TOKENS)
    # Tokens of the user's own: the stack's file is not used.
    monkeypatch.setenv("FSMFLOW_API_TOKENS", "me:0123456789abcdef0123")
    (api,) = [s for s in services(Ports(), home) if s.name == "api"]
    assert "FSMFLOW_API_TOKENS_FILE" not in api.env


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        result = fsmflow(tmp_path, env, "dev", "up", "--temporal-port", str(port), timeout=60)
    assert result.returncode == 1
    assert f"port {port} for temporal is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_embedded_model_is_skipped_for_another_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from workers.dev import Ports, services

    ports = Ports()
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert [s.name for s in services(ports, Path(".fsmflow"))] == [
        "temporal",
        "llm",
        "worker",
        "api",
    ]
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.openai.com/v1")
    stack = services(ports, Path(".fsmflow"))
    assert [s.name for s in stack] == ["temporal", "worker", "api"]
    assert "OPENAI_BASE_URL" not in stack[1].env  # the worker keeps the user's endpoint
