"""A throwaway PostgreSQL server for tests: a cluster in a temporary directory on a
free port, made with the machine's own ``initdb`` and ``pg_ctl`` (Debian's
``postgresql`` package; ``make install`` installs it where it is missing).

``initdb`` refuses to run as root, so as root the cluster belongs to the
``postgres`` user (created by that package) and its programs run through
``runuser``. Nothing is skipped when something is missing: the error says what.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path


class PostgresMissing(RuntimeError):
    """The server programs are not installed."""


def bindir() -> Path:
    """Where ``initdb``, ``pg_ctl`` and ``postgres`` are."""
    for candidate in ("initdb",):
        found = shutil.which(candidate)
        if found:
            return Path(os.path.realpath(found)).parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        directory = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if directory and (Path(directory) / "initdb").exists():
            return Path(directory)
    for directory in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (directory / "initdb").exists():
            return directory
    raise PostgresMissing(
        "PostgreSQL's server programs (initdb, pg_ctl, postgres) are not installed: "
        "run `make install` (it installs Debian's postgresql package) or put them on PATH"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster of a test session; ``url`` connects to its database.

    Tests run it without durability (no fsync, asynchronous commits): they check
    behaviour, not what survives a power cut. ``durable=True`` keeps PostgreSQL's
    own defaults (fsync, synchronous commits, full page writes), as a production
    server has them: for benchmarks.
    """

    def __init__(self, *, durable: bool = False) -> None:
        self.bin = bindir()
        self.root = Path(tempfile.mkdtemp(prefix="fsmflow-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.user = "fsmflow"
        self.password = uuid.uuid4().hex
        self.database = "fsmflow"
        self.durable = durable
        self._as: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise PostgresMissing("running as root needs runuser to start PostgreSQL")
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres", "postgres")
        self.root.chmod(0o700)

    def _run(self, *command: str) -> None:
        done = subprocess.run(
            [*self._as, *command], capture_output=True, text=True, check=False, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({done.returncode}): {done.stderr or done.stdout}"
            )

    def start(self) -> PostgresServer:
        """Create the cluster, start the server, make the user and database."""
        password_file = self.root / "password"
        password_file.write_text(self.password)
        if self._as:
            shutil.chown(password_file, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={password_file}",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        self.resume()
        admin = f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres"
        import psycopg

        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")
            conn.execute(f"CREATE DATABASE {self.database} OWNER {self.user}")
        return self

    @property
    def url(self) -> str:
        """The DSN of the test database (with the password: for tests only)."""
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def create_database(self, name: str) -> str:
        """A new empty database owned by the test user; its DSN."""
        import psycopg

        admin = f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" OWNER {self.user}')
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{name}"

    @staticmethod
    def migrate(url: str) -> None:
        """Apply the store's migrations (in a thread of its own: callable from any fixture)."""
        from activities.postgres import migrate, open_pool

        async def apply() -> None:
            pool = await open_pool(url, max_size=1)
            try:
                await migrate(pool)
            finally:
                await pool.close()

        with concurrent.futures.ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, apply()).result()

    def resume(self) -> None:
        """Start the server (again) on the same port and data."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            "-c max_connections=200 -c shared_buffers=32MB"
        )
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        # With its log file named: a server left holding this process's pipes would
        # keep the call waiting for their end.
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def pause(self) -> None:
        """Stop the server, keeping its data (an outage until ``resume``)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        """Restart the server (fast shutdown: every connection is cut)."""
        # With its log file named: a server left holding this process's pipes would
        # keep the call waiting for their end.
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-m",
            "fast",
            "-w",
            "restart",
        )

    def stop(self) -> None:
        """Stop the server and remove the cluster."""
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
