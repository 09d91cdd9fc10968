"""The PostgreSQL store's life around the data: migrations (versioned, concurrent,
never edited), a worker refusing a store that is behind or unreachable (with no
secret in the message), a server restart, the `fsmflow store` commands, and the
cleanup of ended runs asked of a real Temporal server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from temporalio.client import Client

from activities.artifacts import run_scope
from activities.postgres import (
    PostgresLedger,
    StoreSchemaError,
    migrate,
    migrations,
    open_pool,
    schema_status,
)
from tests.conftest import ROOT
from tests.postgres import PostgresServer, free_port
from workers.settings import Settings
from workers.stores import StoreError, cleanup, open_stores, stores_of


def settings_for(url: str, tmp_path: Path) -> Settings:
    return Settings.load(
        environ={},
        store_url=url,
        tool_ledger=tmp_path / "ledger.sqlite3",
        artifacts_dir=tmp_path / "artifacts",
    )


def fresh(postgres: PostgresServer) -> str:
    return postgres.create_database(f"t{uuid.uuid4().hex[:12]}")


async def test_migrations_apply_once_even_from_several_pods_at_once(
    postgres: PostgresServer,
) -> None:
    url = fresh(postgres)
    pools = [await open_pool(url, max_size=1) for _ in range(3)]
    try:
        applied = await asyncio.gather(*(migrate(pool) for pool in pools))
        # One pod applied every migration; the others found nothing left to do.
        assert sorted(len(a) for a in applied) == [0, 0, len(migrations())]
        status = await schema_status(pools[0])
        assert status.version == status.latest == migrations()[-1].version
        assert not status.pending and not status.edited
        status.check()
        assert await migrate(pools[1]) == []
    finally:
        for pool in pools:
            await pool.close()


async def test_a_worker_refuses_a_store_that_is_not_migrated(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = fresh(postgres)
    with pytest.raises(StoreError) as refused:
        await open_stores(settings_for(url, tmp_path))
    message = str(refused.value)
    assert "schema version 0" in message and "pending: 0001_stores" in message
    assert "run `fsmflow store migrate` first" in message
    assert postgres.password not in message and "***" in message


async def test_a_released_migration_that_was_edited_is_refused(
    postgres: PostgresServer, store_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(store_url, autocommit=True) as conn:
        conn.execute("UPDATE fsmflow_schema_migrations SET sha256 = 'edited' WHERE version = 1")
    with pytest.raises(StoreError, match="0001_stores differ from what was applied"):
        await open_stores(settings_for(store_url, tmp_path))
    pool = await open_pool(store_url, max_size=1)
    try:
        with pytest.raises(StoreSchemaError, match="must never change"):
            await migrate(pool)
    finally:
        await pool.close()


async def test_a_store_migrated_by_a_newer_release_still_serves_this_one(
    store_url: str, tmp_path: Path
) -> None:
    # Migrations only add, so workers of the previous release keep running during a rollout.
    with psycopg.connect(store_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO fsmflow_schema_migrations (version, name, sha256) "
            "VALUES (9999, 'from_the_future', 'x')"
        )
    async with stores_of(settings_for(store_url, tmp_path)) as stores:
        status = await schema_status(stores.pool)
        assert "migrated by a newer release" in status.describe()
        assert await stores.ledger.once("k", lambda: 1, tool="t") == 1


@pytest.mark.parametrize(
    "url",
    ["postgresql://fsmflow:hunter2@127.0.0.1:{port}/fsmflow", "mysql://u:hunter2@db/x"],
    ids=["unreachable", "not postgres"],
)
async def test_a_bad_store_url_is_named_without_its_password(url: str, tmp_path: Path) -> None:
    with pytest.raises(StoreError) as refused:
        await open_stores(settings_for(url.format(port=free_port()), tmp_path), connect_timeout=2)
    message = str(refused.value)
    assert "hunter2" not in message and "***" in message
    assert "cannot reach the store at postgresql://" in message or "must be a postgresql://" in (
        message
    )


async def test_a_restarted_server_costs_a_reconnect_not_a_failed_call(
    postgres: PostgresServer, store_url: str
) -> None:
    pool = await open_pool(store_url, max_size=2)
    try:
        ledger = PostgresLedger(pool)
        assert await ledger.once("before", lambda: "a", tool="t") == "a"
        postgres.restart()
        # The pool's connection died with the server; it is checked and replaced.
        assert await ledger.once("after", lambda: "b", tool="t") == "b"
        assert [e.key for e in await ledger.entries()] == ["before", "after"]
    finally:
        await pool.close()


def fsmflow(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FSMFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "workers", *args],
        cwd=ROOT,
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_store_commands(postgres: PostgresServer, tmp_path: Path) -> None:
    url = fresh(postgres)
    status = fsmflow("store", "status", FSMFLOW_STORE_URL=url)
    assert status.returncode == 1, status.stderr
    assert "schema version 0 (this release knows 1); pending: 0001_stores" in status.stdout
    assert "fsmflow store status: " in status.stderr and "fsmflow store migrate" in status.stderr
    migrated = fsmflow("store", "migrate", FSMFLOW_STORE_URL=url)
    assert migrated.returncode == 0, migrated.stderr
    assert "applied: 0001_stores" in migrated.stdout
    again = fsmflow("store", "migrate", FSMFLOW_STORE_URL=url)
    assert again.returncode == 0 and "applied: nothing (up to date)" in again.stdout
    status = fsmflow("store", "status", FSMFLOW_STORE_URL=url)
    assert status.returncode == 0 and "schema version 1 (this release knows 1)" in status.stdout
    for result in (status, migrated, again):
        assert postgres.password not in result.stdout + result.stderr
        assert "store: postgres at postgresql://***@127.0.0.1:" in result.stdout
    local = fsmflow("store", "migrate", FSMFLOW_TOOL_LEDGER=str(tmp_path / "l.sqlite3"))
    assert local.returncode == 0 and "nothing to migrate" in local.stdout
    bad = fsmflow("store", "cleanup", "--ended-before", "soon", FSMFLOW_STORE_URL=url)
    assert bad.returncode == 2
    assert "--ended-before: 'soon' is not a duration like 7d, 12h or 30m" in bad.stderr


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_cleanup_removes_only_runs_that_ended(
    client: Client, request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    url = request.getfixturevalue("store_url") if backend == "postgres" else None
    settings = Settings.load(
        environ={},
        store_url=url,
        tool_ledger=tmp_path / "ledger.sqlite3",
        artifacts_dir=tmp_path / "artifacts",
    )
    queue = f"nobody-{uuid.uuid4().hex[:8]}"  # no worker polls it: a run stays running
    ended = await client.start_workflow(
        "AgentWorkflow", {}, id=f"e-{uuid.uuid4()}", task_queue=queue
    )
    await ended.terminate("over")
    running = await client.start_workflow(
        "AgentWorkflow", {}, id=f"r/{uuid.uuid4()}", task_queue=queue
    )
    # An id too long for a file name: its scope holds only a hash, found by run id.
    long_ended = await client.start_workflow(
        "AgentWorkflow", {}, id=f"{'x' * 300}-{uuid.uuid4()}", task_queue=queue
    )
    await long_ended.terminate("over")
    scopes = {
        "ended": run_scope(ended.id, ended.result_run_id or ""),
        "running": run_scope(running.id, running.result_run_id or ""),
        "unknown": run_scope(f"gone-{uuid.uuid4()}", str(uuid.uuid4())),
        "long": run_scope(long_ended.id, long_ended.result_run_id or ""),
    }
    assert scopes["long"].startswith("_sha256=")
    try:
        async with stores_of(settings) as stores:
            for name, scope in scopes.items():
                await stores.artifacts.put(scope, "1/a.txt", name.encode())
                await stores.ledger.once(f"{scope}/k", lambda: 1, tool="t", scope=scope)
            recent = await cleanup(stores, client, ended_before=timedelta(days=1))
            assert recent.deleted == {} and set(recent.kept.values()) == {"written too recently"}
            dry = await cleanup(stores, client, ended_before=timedelta(0), dry_run=True)
            assert set(dry.deleted) == {scopes["ended"], scopes["unknown"], scopes["long"]}
            assert set(await stores.artifacts.scopes()) == set(scopes.values())
            report = await cleanup(stores, client, ended_before=timedelta(0))
            assert report.deleted == {
                scopes["ended"]: (1, 1),
                scopes["unknown"]: (1, 1),
                scopes["long"]: (1, 1),
            }
            assert report.kept == {scopes["running"]: f"workflow {running.id!r} is running"}
            assert set(await stores.artifacts.scopes()) == {scopes["running"]}
            assert set(await stores.ledger.scopes()) == {scopes["running"]}
            assert await stores.artifacts.get(scopes["running"], "1/a.txt") == b"running"
    finally:
        await running.terminate("test over")
