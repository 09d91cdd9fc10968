"""The stores a worker's tools share: chosen by settings, described for people, cleaned up.

``FSMFLOW_STORE_URL`` unset: the effect ledger in a SQLite file and artifacts in
a directory, on this machine (the embedded default of ``fsmflow dev up`` and of a
single worker). Set to ``postgresql://...``: both in PostgreSQL, shared by every
worker that uses the same URL (``activities.postgres``).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, Protocol

import structlog
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.artifacts import FileArtifactStore, scope_ids
from activities.ledger import SqliteLedger
from activities.llm import redact_url
from workers.settings import Settings

log = structlog.get_logger("fsmflow.store")

_RUN_ID = re.compile(r"[0-9a-fA-F-]{1,64}")
"""What a Temporal run id looks like (a UUID): the only thing put in a visibility query."""


class StoreError(Exception):
    """The stores cannot be opened or used; the message says what to fix."""


class _Scoped(Protocol):
    async def scopes(self) -> dict[str, float]: ...

    async def delete_scope(self, scope: str) -> int: ...


@dataclass
class Stores:
    """The effect ledger and artifact store of a worker, and what they mean."""

    ledger: Any
    """An ``EffectLedger`` with ``scopes``/``delete_scope`` (``LedgerBase``)."""
    artifacts: Any
    """An ``ArtifactStore`` with ``scopes``/``delete_scope``."""
    backend: Literal["sqlite", "postgres"]
    location: str
    """Where they are, with no secret in it."""
    pool: Any = field(default=None, repr=False)
    """The PostgreSQL connection pool (None for SQLite and files)."""
    _close: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)

    @property
    def shared(self) -> bool:
        """Whether workers on other machines see the same records and artifacts."""
        return self.backend == "postgres"

    def describe(self) -> dict[str, Any]:
        """For the start log and ``/readyz``: which stores, and what that means."""
        if self.shared:
            meaning = (
                "the effect ledger and artifacts are in PostgreSQL, shared by every worker "
                "with this URL: any number of replicas on any machines keep effects "
                "exactly-once and find each other's artifacts"
            )
        else:
            meaning = (
                "the effect ledger and artifacts are on this machine: one worker (or "
                "several sharing this directory) keeps effects exactly-once; replicas on "
                "other machines would repeat an effect retried there and miss artifacts "
                "saved here (set FSMFLOW_STORE_URL to share them)"
            )
        return {
            "backend": self.backend,
            "location": self.location,
            "shared": self.shared,
            "meaning": meaning,
        }

    async def close(self) -> None:
        """Let go of connections."""
        if self._close is not None:
            await self._close()


async def open_stores(
    settings: Settings, *, check_schema: bool = True, connect_timeout: float = 30.0
) -> Stores:
    """The stores the settings name, ready to use.

    Args:
        settings: ``FSMFLOW_STORE_URL``, else ``FSMFLOW_TOOL_LEDGER`` and
            ``FSMFLOW_ARTIFACTS_DIR``.
        check_schema: Refuse a PostgreSQL store whose schema is behind this release.
        connect_timeout: How long to try to reach PostgreSQL (seconds).

    Raises:
        StoreError: If PostgreSQL cannot be reached, or its schema is behind.
    """
    if settings.store_url is None:
        return Stores(
            ledger=SqliteLedger(settings.tool_ledger),
            artifacts=FileArtifactStore(
                settings.artifacts_dir, max_bytes=settings.artifact_max_bytes
            ),
            backend="sqlite",
            location=f"{settings.tool_ledger} and {settings.artifacts_dir}/",
        )
    from psycopg import Error as PsycopgError
    from psycopg_pool import PoolTimeout

    from activities.postgres import (
        PostgresArtifactStore,
        PostgresLedger,
        StoreSchemaError,
        open_pool,
        schema_status,
    )

    url = settings.store_url.get_secret_value()
    location = redact_url(url)
    if not url.startswith(("postgresql://", "postgres://")):
        raise StoreError(
            f"FSMFLOW_STORE_URL must be a postgresql:// URL, not {location!r} "
            "(unset it for SQLite and files on this machine)"
        )
    try:
        pool = await open_pool(url, max_size=settings.store_pool_max, timeout=connect_timeout)
    except (PoolTimeout, PsycopgError) as exc:
        raise StoreError(f"cannot reach the store at {location}: {_reason(exc, url)}") from None
    try:
        if check_schema:
            (await schema_status(pool)).check()
    except StoreSchemaError as exc:
        await pool.close()
        raise StoreError(f"{location}: {exc}") from None
    except PsycopgError as exc:
        await pool.close()
        raise StoreError(f"cannot read the store at {location}: {_reason(exc, url)}") from None
    return Stores(
        ledger=PostgresLedger(pool),
        artifacts=PostgresArtifactStore(pool, max_bytes=settings.artifact_max_bytes),
        backend="postgres",
        location=location,
        pool=pool,
        _close=pool.close,
    )


def _reason(exc: BaseException, url: str) -> str:
    """An exception's message with the URL's secret parts taken out."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.replace(url, redact_url(url))


@contextlib.asynccontextmanager
async def stores_of(settings: Settings, *, check_schema: bool = True) -> AsyncIterator[Stores]:
    """``open_stores`` for the body's duration."""
    stores = await open_stores(settings, check_schema=check_schema)
    try:
        yield stores
    finally:
        await stores.close()


@dataclass
class CleanupReport:
    """What ``cleanup`` found and did."""

    deleted: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Scope -> (artifacts, ledger records) removed."""
    kept: dict[str, str] = field(default_factory=dict)
    """Scope -> why it was kept."""


async def _run_ended(client: Client, scope: str, cutoff: float) -> tuple[bool, str]:
    """Whether the run of ``scope`` ended before ``cutoff``, and why not if it did not."""
    workflow_id, chain_id = scope_ids(scope)
    if workflow_id is None and chain_id is not None and _RUN_ID.fullmatch(chain_id):
        async for execution in client.list_workflows(f"RunId = '{chain_id}'", limit=1):
            workflow_id = execution.id
    if workflow_id is None:
        return False, "its workflow id is stored only as a hash and Temporal no longer lists it"
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return True, ""  # past Temporal's retention: long ended
        raise
    if description.status == WorkflowExecutionStatus.RUNNING:
        return False, f"workflow {workflow_id!r} is running"
    closed = description.close_time.timestamp() if description.close_time else time.time()
    if closed >= cutoff:
        return False, f"workflow {workflow_id!r} ended too recently"
    return True, ""


async def cleanup(
    stores: Stores, client: Client, *, ended_before: timedelta, dry_run: bool = False
) -> CleanupReport:
    """Remove the artifacts and ledger records of runs that ended before a cutoff.

    A scope is removed when its newest write and its workflow's end are both
    older than ``ended_before`` ago, or Temporal no longer knows the workflow (it
    is past the namespace's retention). A scope whose workflow id has any running
    execution is kept, whichever chain it belongs to.
    """
    cutoff = time.time() - ended_before.total_seconds()
    report = CleanupReport()
    stores_by_kind: list[_Scoped] = [stores.artifacts, stores.ledger]
    found: dict[str, float] = {}
    for store in stores_by_kind:
        for scope, last in (await store.scopes()).items():
            found[scope] = max(last, found.get(scope, 0.0))
    for scope, last in sorted(found.items()):
        if last >= cutoff:
            report.kept[scope] = "written too recently"
            continue
        ended, why = await _run_ended(client, scope, cutoff)
        if not ended:
            report.kept[scope] = why
            continue
        if dry_run:
            report.deleted[scope] = (0, 0)
            continue
        artifacts = await stores.artifacts.delete_scope(scope)
        records = await stores.ledger.delete_scope(scope)
        report.deleted[scope] = (artifacts, records)
        log.info("store_scope_deleted", scope=scope, artifacts=artifacts, records=records)
    return report


def parse_age(text: str) -> timedelta:
    """``7d``, ``12h``, ``30m``, ``45s`` or ``1d12h`` as a duration.

    Raises:
        ValueError: Naming the expected form.
    """
    from schemas.definition import parse_duration

    try:
        return timedelta(seconds=parse_duration(text))
    except ValueError:
        raise ValueError(f"{text!r} is not a duration like 7d, 12h or 30m") from None
