"""The effect ledger and the artifact store in PostgreSQL, shared by every worker.

Selected by ``FSMFLOW_STORE_URL=postgresql://...``. Workers on several machines
(pods) then see the same records: a tool call retried on another pod after a
crash finds its ledger record instead of repeating its effect, and a tool on one
pod reads the artifact another pod saved. Both stores share one connection pool
(psycopg 3, async); a connection is checked before it is handed out, so a
restarted server costs a reconnect, not a failed call.

The tables come from versioned SQL files in ``activities/migrations``, applied by
``fsmflow store migrate`` (``migrate``) under an advisory lock, so pods starting
together apply each once. A worker checks the schema at start (``schema_status``)
and refuses to run against a store that is behind it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from psycopg import AsyncConnection, OperationalError
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from activities.artifacts import DEFAULT_MAX_BYTES, check_location, check_size
from activities.ledger import LedgerBase, LedgerEntry
from activities.llm import redact_url
from fsm.tools import StoreUnavailable

log = structlog.get_logger("fsmflow.store")

CHUNK_BYTES = 1024 * 1024
"""Bytes of an artifact per row: large enough to stream at disk speed, small enough
that no single value holds a whole large artifact in memory on either side."""
CHECKOUT_SECONDS = 5.0
"""How long a store call waits for a connection before it reports the store
unavailable: well inside a tool's timeout, so an outage is told apart from a slow
tool and the run waits for the store (``StoreUnavailable``)."""
MIGRATION_LOCK = 0x66736D666C6F77
"""The advisory lock ``migrate`` holds ("fsmflow" in ASCII)."""
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One versioned SQL file of ``activities/migrations``."""

    version: int
    name: str
    sql: str
    sha256: str = field(repr=False)


def migrations() -> list[Migration]:
    """Every migration this release knows, in version order."""
    found = []
    for entry in importlib.resources.files("activities").joinpath("migrations").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match is None:
            continue
        sql = entry.read_text(encoding="utf-8")
        digest = hashlib.sha256(sql.encode()).hexdigest()
        found.append(Migration(int(match.group(1)), match.group(2), sql, digest))
    return sorted(found, key=lambda m: m.version)


class StoreSchemaError(Exception):
    """The store's schema cannot be used by this release; the message says why."""


@dataclass(frozen=True)
class SchemaStatus:
    """What the store has applied against what this release knows."""

    applied: dict[int, str]
    """Applied version -> the SHA-256 of its SQL when it was applied."""
    known: list[Migration]

    @property
    def version(self) -> int:
        """The highest applied version (0: none)."""
        return max(self.applied, default=0)

    @property
    def latest(self) -> int:
        """The highest version this release knows."""
        return max((m.version for m in self.known), default=0)

    @property
    def pending(self) -> list[Migration]:
        """Known migrations not applied yet."""
        return [m for m in self.known if m.version not in self.applied]

    @property
    def edited(self) -> list[Migration]:
        """Applied migrations whose file has changed since (a release bug)."""
        return [
            m
            for m in self.known
            if m.version in self.applied and self.applied[m.version] != m.sha256
        ]

    def describe(self) -> str:
        """One line: the version, and what is pending or newer."""
        text = f"schema version {self.version} (this release knows {self.latest})"
        if self.pending:
            text += f"; pending: {', '.join(f'{m.version:04d}_{m.name}' for m in self.pending)}"
        elif self.version > self.latest:
            text += "; migrated by a newer release (its migrations only add, so this one runs)"
        return text

    def check(self) -> None:
        """Raise unless a worker of this release can use the store.

        Raises:
            StoreSchemaError: If migrations are pending or an applied one was edited.
        """
        if self.edited:
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in self.edited)
            raise StoreSchemaError(
                f"the store's migration(s) {names} differ from what was applied: a released "
                "migration must never change (add a new one)"
            )
        if self.pending:
            raise StoreSchemaError(
                f"the store is at {self.describe()}: run `fsmflow store migrate` first"
            )


_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS fsmflow_schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    sha256 text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def _applied(conn: AsyncConnection[Any]) -> dict[int, str]:
    exists = await (
        await conn.execute("SELECT to_regclass('fsmflow_schema_migrations') IS NOT NULL")
    ).fetchone()
    if not exists or not exists[0]:
        return {}
    rows = await (
        await conn.execute("SELECT version, sha256 FROM fsmflow_schema_migrations")
    ).fetchall()
    return {int(version): str(digest) for version, digest in rows}


async def schema_status(pool: AsyncConnectionPool[Any]) -> SchemaStatus:
    """The store's schema against this release's migrations."""
    async with pool.connection() as conn:
        return SchemaStatus(await _applied(conn), migrations())


async def migrate(pool: AsyncConnectionPool[Any]) -> list[Migration]:
    """Apply the pending migrations, all in one transaction; returns those applied.

    Several processes may run this at once: a transaction-level advisory lock
    lets one apply and the others find nothing left to do (it holds through a
    pooler in transaction mode too, unlike a session lock). PostgreSQL's DDL is
    transactional, so a failed migration leaves the schema as it was.

    Raises:
        StoreSchemaError: If an applied migration was edited since.
    """
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute(_MIGRATIONS_TABLE)
        status = SchemaStatus(await _applied(conn), migrations())
        if status.edited:
            status.check()
        for migration in status.pending:
            await conn.execute(migration.sql.encode())
            await conn.execute(
                "INSERT INTO fsmflow_schema_migrations (version, name, sha256) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.sha256),
            )
    for migration in status.pending:
        log.info("store_migrated", version=migration.version, name=migration.name)
    return status.pending


async def open_pool(
    url: str, *, max_size: int = 10, timeout: float = 30.0
) -> AsyncConnectionPool[Any]:
    """A connection pool on ``url``, open and with one connection made.

    Args:
        url: The ``postgresql://`` DSN.
        max_size: Connections at most.
        timeout: How long opening waits for its first connection (seconds).

    Raises:
        psycopg_pool.PoolTimeout: If no connection could be made within ``timeout``.
    """
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        open=False,
        # No server-side prepared statements: they do not survive a pooler
        # (PgBouncer in transaction mode) handing each statement another connection.
        kwargs={"autocommit": True, "prepare_threshold": None},
        check=AsyncConnectionPool.check_connection,
        timeout=CHECKOUT_SECONDS,
        name="fsmflow-store",
    )
    try:
        await pool.open(wait=True, timeout=timeout)
    except BaseException:
        await pool.close()
        raise
    return pool


_COLUMNS = "key, tool, call, status, result, attempts"


@contextlib.asynccontextmanager
async def _connection(pool: AsyncConnectionPool[Any]) -> AsyncIterator[AsyncConnection[Any]]:
    """A pooled connection; the server being down or restarting is ``StoreUnavailable``.

    Covers the body too: a connection lost mid-statement is an outage, not a bug.
    """
    try:
        async with pool.connection() as conn:
            yield conn
    except (OperationalError, PoolTimeout) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreUnavailable(
            f"the store at {redact_url(pool.conninfo)} is unavailable: {reason}"
        ) from None


class PostgresLedger(LedgerBase):
    """``EffectLedger`` in the ``fsmflow_effects`` table."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        """Use ``pool`` (opened and migrated by the caller)."""
        self._pool = pool

    async def _rows(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        async with _connection(self._pool) as conn:
            cursor = await conn.execute(sql, parameters)
            return await cursor.fetchall() if cursor.description else []

    async def get(self, key: str) -> LedgerEntry | None:
        """The record of ``key``, if any."""
        rows = await self._rows(f"SELECT {_COLUMNS} FROM fsmflow_effects WHERE key = %s", (key,))
        return LedgerEntry.of(rows[0]) if rows else None

    async def entries(self) -> list[LedgerEntry]:
        """Every record, oldest first (for inspection and tests)."""
        rows = await self._rows(f"SELECT {_COLUMNS} FROM fsmflow_effects ORDER BY started_at")
        return [LedgerEntry.of(row) for row in rows]

    async def _start(self, key: str, tool: str, call: str, scope: str) -> None:
        await self._rows(
            "INSERT INTO fsmflow_effects (key, tool, call, scope, status) "
            "VALUES (%s, %s, %s, %s, 'started') "
            "ON CONFLICT (key) DO UPDATE SET attempts = fsmflow_effects.attempts + 1, "
            "call = CASE WHEN fsmflow_effects.call = '' THEN EXCLUDED.call "
            "ELSE fsmflow_effects.call END",
            (key, tool, call, scope),
        )

    async def _finish(self, key: str, result_json: str) -> None:
        await self._rows(
            "UPDATE fsmflow_effects SET status = 'done', result = %s, finished_at = now() "
            "WHERE key = %s",
            (result_json, key),
        )

    async def scopes(self) -> dict[str, float]:
        """Each run scope with records, and the time (epoch seconds) of its newest write."""
        rows = await self._rows(
            "SELECT scope, extract(epoch FROM max(coalesce(finished_at, started_at))) "
            "FROM fsmflow_effects WHERE scope <> '' GROUP BY scope"
        )
        return {scope: float(last) for scope, last in rows}

    async def delete_scope(self, scope: str) -> int:
        """Remove the records of one run scope; returns how many there were."""
        rows = await self._rows(
            "DELETE FROM fsmflow_effects WHERE scope = %s RETURNING key", (scope,)
        )
        return len(rows)


class PostgresArtifactStore:
    """``ArtifactStore`` in ``fsmflow_artifacts`` (a header) and ``fsmflow_artifact_chunks``."""

    def __init__(
        self, pool: AsyncConnectionPool[Any], *, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        """Use ``pool`` (opened and migrated by the caller); refuse artifacts over ``max_bytes``."""
        self._pool = pool
        self.max_bytes = max_bytes

    async def put(self, scope: str, path: str, data: bytes) -> None:
        """Store (or overwrite) one artifact, in one transaction.

        The header row is written first: a concurrent writer of the same artifact
        waits for its lock, so the chunks never mix two versions.

        Raises:
            KeyError: If the location is not a plain run-relative name.
            ArtifactTooLarge: If it is over ``max_bytes`` (nothing is written).
        """
        check_location(scope, path)
        check_size(path, len(data), self.max_bytes)
        view = memoryview(data)
        chunks = [view[i : i + CHUNK_BYTES] for i in range(0, len(view), CHUNK_BYTES)]
        async with _connection(self._pool) as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO fsmflow_artifacts (scope, path, size, sha256, chunks) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (scope, path) DO UPDATE SET "
                "size = EXCLUDED.size, sha256 = EXCLUDED.sha256, chunks = EXCLUDED.chunks, "
                "written_at = now()",
                (scope, path, len(data), hashlib.sha256(data).hexdigest(), len(chunks)),
            )
            await conn.execute(
                "DELETE FROM fsmflow_artifact_chunks WHERE scope = %s AND path = %s",
                (scope, path),
            )
            cursor = conn.cursor()
            async with cursor.copy(
                "COPY fsmflow_artifact_chunks (scope, path, seq, data) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["text", "text", "int4", "bytea"])
                for seq, chunk in enumerate(chunks):
                    await copy.write_row((scope, path, seq, bytes(chunk)))

    async def stream(self, scope: str, path: str) -> AsyncIterator[bytes]:
        """One artifact's bytes, a chunk at a time, from one consistent snapshot.

        Raises:
            KeyError: If there is no such artifact.
            RuntimeError: If its chunks do not add up to its header (a damaged store).
        """
        check_location(scope, path)
        async with _connection(self._pool) as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            header = await (
                await conn.execute(
                    "SELECT size, sha256, chunks FROM fsmflow_artifacts "
                    "WHERE scope = %s AND path = %s",
                    (scope, path),
                )
            ).fetchone()
            if header is None:
                raise KeyError(f"no artifact {path}")
            size, sha256, count = header
            digest, seen, chunks = hashlib.sha256(), 0, 0
            cursor = conn.cursor(binary=True)
            async for (chunk,) in cursor.stream(
                "SELECT data FROM fsmflow_artifact_chunks WHERE scope = %s AND path = %s "
                "ORDER BY seq",
                (scope, path),
            ):
                digest.update(chunk)
                seen += len(chunk)
                chunks += 1
                yield bytes(chunk)
            if (seen, chunks, digest.hexdigest()) != (size, count, sha256):
                raise RuntimeError(
                    f"artifact {path} of {scope} is damaged: {seen} bytes in {chunks} chunks, "
                    f"its header says {size} in {count}"
                )

    async def get(self, scope: str, path: str) -> bytes:
        """Read one artifact (checked against its size and SHA-256).

        Raises:
            KeyError: If there is no such artifact.
        """
        return b"".join([chunk async for chunk in self.stream(scope, path)])

    async def scopes(self) -> dict[str, float]:
        """Each run scope with artifacts, and the time (epoch seconds) of its newest write."""
        async with _connection(self._pool) as conn:
            rows = await (
                await conn.execute(
                    "SELECT scope, extract(epoch FROM max(written_at)) FROM fsmflow_artifacts "
                    "GROUP BY scope"
                )
            ).fetchall()
        return {scope: float(last) for scope, last in rows}

    async def delete_scope(self, scope: str) -> int:
        """Remove every artifact of one run scope (their chunks with them)."""
        async with _connection(self._pool) as conn:
            rows = await (
                await conn.execute(
                    "DELETE FROM fsmflow_artifacts WHERE scope = %s RETURNING path", (scope,)
                )
            ).fetchall()
        return len(rows)
