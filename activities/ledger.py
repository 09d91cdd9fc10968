"""The effect ledger: a durable record of tool side effects by idempotency key.

Temporal runs an activity at least once: a worker that dies after a tool's side
effect but before the activity completes leaves the call to be retried, and the
retry would repeat the effect. A tool that wraps its effect in
``ToolContext.once`` records the effect's result under the call's idempotency key;
the retry finds the record and returns the result without repeating the effect.
A record also names the call it was made for (its tool and ``call_identity``
hash): a key that comes back with a different call raises ``LedgerConflict``
instead of handing that call another call's result.

What this guarantees, honestly: the effect is not repeated once its result is
recorded. A crash *between* the effect and the record (a window of one SQLite
commit) leaves the record "started"; the retry then asks the tool's ``reconcile``
function whether the effect happened (looked up in the external system), and
without one it runs the effect again and logs that it may repeat. For effects
that must never repeat, pass ``ToolContext.idempotency_key`` to the external
system too (an ``Idempotency-Key`` header, a unique id column), or commit the
effect in the same transaction as the record.

``SqliteLedger`` keeps the records in one file on this machine: the embedded
default of one worker. Workers on several machines share ``PostgresLedger``
(``activities.postgres``, selected by ``FSMFLOW_STORE_URL``). Both run the same
``once`` (``LedgerBase``); they differ only in where a record lives.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import inspect
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from fsm.tools import LedgerConflict, StoreUnavailable

log = structlog.get_logger("fsmflow.ledger")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS effects (
    key TEXT PRIMARY KEY,
    tool TEXT NOT NULL,
    call TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL CHECK (status IN ('started', 'done')),
    result TEXT,
    attempts INTEGER NOT NULL DEFAULT 1,
    started_at REAL NOT NULL,
    finished_at REAL,
    scope TEXT NOT NULL DEFAULT ''
)
"""

_ADDED_COLUMNS = {
    # Ledgers from before call identities: their records keep an empty (unchecked) call.
    "call": "ALTER TABLE effects ADD COLUMN call TEXT NOT NULL DEFAULT ''",
    # Ledgers from before retention: their records have no run scope (never cleaned up).
    "scope": "ALTER TABLE effects ADD COLUMN scope TEXT NOT NULL DEFAULT ''",
}

_COLUMNS = "key, tool, call, status, result, attempts"


@dataclass(frozen=True)
class LedgerEntry:
    """One recorded effect."""

    key: str
    tool: str
    call: str
    """The ``call_identity`` hash it was recorded for; empty in records that predate it."""
    status: str
    result: Any
    attempts: int

    @classmethod
    def of(cls, row: tuple[Any, ...]) -> LedgerEntry:
        """A record from a row of (key, tool, call, status, result JSON, attempts)."""
        key, tool, call, status, result, attempts = row
        return cls(key, tool, call, status, json.loads(result) if result else None, attempts)


def _conflicts(entry: LedgerEntry, tool: str, call: str) -> bool:
    """Whether a record names another call than ``tool`` with hash ``call``."""
    return entry.tool != tool or bool(entry.call and call and entry.call != call)


async def _call(function: Callable[[], Any]) -> Any:
    # A plain function may do blocking I/O: it runs in a thread, off the event loop.
    if inspect.iscoroutinefunction(function):
        return await function()
    result = await asyncio.to_thread(function)
    if inspect.isawaitable(result):
        result = await result
    return result


class LedgerBase(abc.ABC):
    """``once``, the same on every backend; a backend stores and reads the records."""

    @abc.abstractmethod
    async def get(self, key: str) -> LedgerEntry | None:
        """The record of ``key``, if any."""

    @abc.abstractmethod
    async def entries(self) -> list[LedgerEntry]:
        """Every record, oldest first (for inspection and tests)."""

    @abc.abstractmethod
    async def _start(self, key: str, tool: str, call: str, scope: str) -> None:
        """Record that an attempt starts the effect (insert, or count one more attempt).

        A retry of a record that predates call identities stamps it with ``call``.
        """

    @abc.abstractmethod
    async def _finish(self, key: str, result_json: str) -> None:
        """Record the effect as done with its result."""

    async def once(
        self,
        key: str,
        effect: Callable[[], Any],
        *,
        tool: str,
        call: str = "",
        reconcile: Callable[[], Any] | None = None,
        scope: str = "",
    ) -> Any:
        """Run ``effect`` unless ``key`` is recorded as done; return its result.

        The record must be of the same call: the same tool, and the same call
        hash unless either is empty (a record from before call identities, or a
        caller that does not know its call, is not checked).

        Args:
            key: The call's idempotency key.
            effect: Does the effect (sync or async); its result must be JSON.
            tool: The tool's name, for the record.
            call: The call's identity (``fsm.tools.call_identity``), for the record.
            reconcile: Asked when an earlier attempt started the effect but did
                not record it: returns the result if the effect happened, else None.
            scope: The run's store scope (``activities.artifacts.run_scope``): the
                record is removed with the run's artifacts by ``fsmflow store cleanup``.

        Returns:
            The effect's result: this attempt's, or the recorded one.

        Raises:
            LedgerConflict: If ``key`` is recorded for another tool or another
                call; neither ``effect`` nor ``reconcile`` runs.
            TypeError: If the result is not JSON-serialisable (nothing is recorded;
                the effect has happened, so fix the tool before retrying).
        """
        entry = await self.get(key)
        if entry is not None and _conflicts(entry, tool, call):
            log.error(
                "effect_key_conflict",
                key=key,
                tool=tool,
                call=call,
                recorded_tool=entry.tool,
                recorded_call=entry.call,
            )
            raise LedgerConflict(
                f"idempotency key {key!r} is recorded for tool {entry.tool!r} call "
                f"{entry.call or '(none)'}, not for tool {tool!r} call {call or '(none)'}: "
                "the key was reused for a different call, whose effect was not run"
            )
        if entry is not None and entry.status == "done":
            log.info("effect_replayed", key=key, tool=tool, attempts=entry.attempts)
            return entry.result
        if entry is not None:
            # An earlier attempt died between starting the effect and recording it.
            if reconcile is not None:
                found = await _call(reconcile)
                if found is not None:
                    log.info("effect_reconciled", key=key, tool=tool)
                    await self._finish(key, json.dumps(found))
                    return found
            else:
                log.warning("effect_may_repeat", key=key, tool=tool, attempts=entry.attempts)
        await self._start(key, tool, call, scope)
        result = await _call(effect)
        await self._finish(key, json.dumps(result))
        return result


class SqliteLedger(LedgerBase):
    """``EffectLedger`` on one SQLite file (WAL, one short transaction per change)."""

    def __init__(self, path: Path) -> None:
        """Open (and create) the ledger at ``path``; its directory is created too."""
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._query("PRAGMA journal_mode=WAL")
        self._query(_SCHEMA)
        for column, statement in _ADDED_COLUMNS.items():
            self._add_column(column, statement)

    def _add_column(self, column: str, statement: str) -> None:
        if self._has_column(column):
            return
        try:
            self._query(statement)
        except sqlite3.OperationalError:
            # Another process opening the same old file may have added it first.
            if not self._has_column(column):
                raise

    def _has_column(self, column: str) -> bool:
        return any(row[1] == column for row in self._query("PRAGMA table_info(effects)"))

    def _query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        # A connection per statement: activities run on several threads and worker
        # processes may share the file; SQLite serialises the writers. Autocommit.
        with contextlib.closing(
            sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        ) as db:
            db.execute("PRAGMA busy_timeout=30000")
            return db.execute(sql, parameters).fetchall()

    async def _run(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return await asyncio.to_thread(self._query, sql, parameters)
        except sqlite3.OperationalError as exc:
            # Locked past the busy timeout, the disk full or gone: an outage to wait out.
            raise StoreUnavailable(f"the effect ledger {self.path} is unavailable: {exc}") from None

    async def get(self, key: str) -> LedgerEntry | None:
        """The record of ``key``, if any."""
        rows = await self._run(f"SELECT {_COLUMNS} FROM effects WHERE key = ?", (key,))
        return LedgerEntry.of(rows[0]) if rows else None

    async def entries(self) -> list[LedgerEntry]:
        """Every record, oldest first (for inspection and tests)."""
        rows = await self._run(f"SELECT {_COLUMNS} FROM effects ORDER BY started_at")
        return [LedgerEntry.of(row) for row in rows]

    async def _start(self, key: str, tool: str, call: str, scope: str) -> None:
        await self._run(
            "INSERT INTO effects (key, tool, call, status, started_at, scope) "
            "VALUES (?, ?, ?, 'started', ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET attempts = attempts + 1, "
            "call = CASE WHEN call = '' THEN excluded.call ELSE call END",
            (key, tool, call, time.time(), scope),
        )

    async def _finish(self, key: str, result_json: str) -> None:
        await self._run(
            "UPDATE effects SET status = 'done', result = ?, finished_at = ? WHERE key = ?",
            (result_json, time.time(), key),
        )

    async def scopes(self) -> dict[str, float]:
        """Each run scope with records, and the time (epoch seconds) of its newest write."""
        rows = await self._run(
            "SELECT scope, MAX(COALESCE(finished_at, started_at)) FROM effects "
            "WHERE scope != '' GROUP BY scope"
        )
        return {scope: float(last) for scope, last in rows}

    async def delete_scope(self, scope: str) -> int:
        """Remove the records of one run scope; returns how many there were."""
        rows = await self._run("DELETE FROM effects WHERE scope = ? RETURNING key", (scope,))
        return len(rows)
