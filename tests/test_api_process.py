"""`fsmflow api` as a user starts it: a subprocess on a free port, its tokens from a
file, its log free of tokens, a clear line when it cannot start."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
from temporalio.testing import WorkflowEnvironment

from tests.conftest import ROOT, free_port

TOKEN = "process-token-0123456789abcdef"


def environment(temporal_env: WorkflowEnvironment, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FSMFLOW_", "TEMPORAL_"))}
    env.update(
        TEMPORAL_ADDRESS=temporal_env.client.service_client.config.target_host,
        FSMFLOW_LOG_FORMAT="json",
        **extra,
    )
    return env


async def fsmflow_api(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers",
        "api",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_the_api_serves_until_sigterm_and_never_logs_a_token(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# identities\nalice:{TOKEN}\n")
    port = free_port()
    env = environment(temporal_env, FSMFLOW_API_TOKENS_FILE=str(tokens))
    process = await fsmflow_api(env, "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            for _ in range(200):
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            listed = await http.get("/v1/runs", headers={"Authorization": f"Bearer {TOKEN}"})
            wrong = await http.get("/v1/runs", headers={"Authorization": f"Bearer {TOKEN}x"})
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert listed.status_code == 200, listed.text
    assert wrong.status_code == 401
    assert process.returncode == 0, err.decode()
    log = out.decode() + err.decode()
    assert '"event": "api.starting"' in log and '"identities": ["alice"]' in log
    assert '"path": "/v1/runs", "status": 401' in log or '"status": 401' in log
    assert TOKEN not in log


async def test_no_tokens_or_a_busy_port_is_one_clear_line(
    temporal_env: WorkflowEnvironment,
) -> None:
    process = await fsmflow_api(environment(temporal_env))
    _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 2
    assert err.decode().strip() == (
        "fsmflow api: no API tokens: set FSMFLOW_API_TOKENS (identity:token,...) or "
        "FSMFLOW_API_TOKENS_FILE (a file of identity:token lines)"
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = environment(temporal_env, FSMFLOW_API_TOKENS=f"alice:{TOKEN}")
        process = await fsmflow_api(env, "--port", str(port))
        _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 1
    assert err.decode().strip().splitlines()[-1] == (
        f"fsmflow api: cannot listen on 127.0.0.1:{port} (see the log above)"
    )
    assert TOKEN not in err.decode()
