"""The effect ledger's contract (including the crash window it cannot close on its
own, and the refusal of a key reused for another call) and the artifact stores'
addressing, bounds and retention, on both backends: real SQLite files and
directories, and a real PostgreSQL server (tests/postgres.py). The worker-crash
versions are in tests/workflows/test_crash.py and test_shared_stores.py."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from activities.artifacts import FileArtifactStore, run_scope
from activities.ledger import SqliteLedger
from activities.postgres import PostgresArtifactStore, PostgresLedger, open_pool
from fsm.tools import (
    ArtifactTooLarge,
    LedgerConflict,
    ToolContext,
    artifact_path,
    artifact_ref,
    call_identity,
)

CHARGE_ADA = call_identity("charge", {"customer": "ada", "cents": 500})
CHARGE_BOB = call_identity("charge", {"customer": "bob", "cents": 500})


class Backend:
    """Ledgers and artifact stores of one backend, all on the same storage."""

    def __init__(self, name: str, tmp_path: Path, url: str = "") -> None:
        self.name, self.tmp_path, self.url = name, tmp_path, url
        self.pools: list[Any] = []

    async def ledger(self) -> Any:
        if self.name == "sqlite":
            return SqliteLedger(self.tmp_path / "ledger.sqlite3")
        self.pools.append(await open_pool(self.url, max_size=4))
        return PostgresLedger(self.pools[-1])

    async def artifacts(self, **options: Any) -> Any:
        if self.name == "sqlite":
            return FileArtifactStore(self.tmp_path / "artifacts", **options)
        self.pools.append(await open_pool(self.url, max_size=4))
        return PostgresArtifactStore(self.pools[-1], **options)

    async def close(self) -> None:
        for pool in self.pools:
            await pool.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    url = request.getfixturevalue("store_url") if request.param == "postgres" else ""
    opened = Backend(request.param, tmp_path, url)
    try:
        yield opened
    finally:
        await opened.close()


class Effects:
    """A side effect that counts how often it happened."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> dict[str, int]:
        self.count += 1
        return {"charged": self.count}


async def test_a_recorded_effect_is_not_repeated(backend: Backend) -> None:
    ledger = await backend.ledger()
    effect = Effects()
    first = await ledger.once("wf/run/3/0", effect, tool="charge")
    again = await (await backend.ledger()).once("wf/run/3/0", effect, tool="charge")
    other = await ledger.once("wf/run/4/1", effect, tool="charge")
    assert (first, again, other) == ({"charged": 1}, {"charged": 1}, {"charged": 2})
    assert effect.count == 2
    entries = await ledger.entries()
    assert [(e.key, e.status, e.attempts) for e in entries] == [
        ("wf/run/3/0", "done", 1),
        ("wf/run/4/1", "done", 1),
    ]


async def test_a_crash_between_effect_and_record_is_reconciled(backend: Backend) -> None:
    ledger = await backend.ledger()
    effect = Effects()

    def dies_after_the_effect() -> None:
        effect()
        raise SystemExit("killed before the ledger recorded the effect")

    with pytest.raises(SystemExit):
        await ledger.once("k", dies_after_the_effect, tool="charge")
    assert (await ledger.get("k")).status == "started"  # type: ignore[union-attr]
    # The retry asks the external system (reconcile) instead of repeating the effect.
    found = await ledger.once("k", effect, tool="charge", reconcile=lambda: {"charged": 1})
    assert found == {"charged": 1} and effect.count == 1
    assert (await ledger.get("k")).status == "done"  # type: ignore[union-attr]


async def test_without_reconcile_the_crash_window_repeats_the_effect(backend: Backend) -> None:
    # The honest part of the contract: a crash between the effect and its record,
    # with no way to look the effect up, is at-least-once.
    ledger = await backend.ledger()
    effect = Effects()

    def dies_after_the_effect() -> None:
        effect()
        raise SystemExit("killed")

    with pytest.raises(SystemExit):
        await ledger.once("k", dies_after_the_effect, tool="charge")
    assert await ledger.once("k", effect, tool="charge", reconcile=lambda: None) == {"charged": 2}
    entry = await ledger.get("k")
    assert entry is not None and (entry.status, entry.attempts) == ("done", 2)


async def test_the_same_call_replays_its_recorded_result(backend: Backend) -> None:
    ledger = await backend.ledger()
    effect = Effects()
    first = await ledger.once("k", effect, tool="charge", call=CHARGE_ADA)
    again = await ledger.once("k", effect, tool="charge", call=CHARGE_ADA)
    assert first == again == {"charged": 1} and effect.count == 1
    entry = await ledger.get("k")
    assert entry is not None and (entry.tool, entry.call) == ("charge", CHARGE_ADA)


@pytest.mark.parametrize(
    ("tool", "call"),
    [("charge", CHARGE_BOB), ("refund", CHARGE_ADA), ("refund", "")],
    ids=["other arguments", "other tool", "other tool, no hash"],
)
@pytest.mark.parametrize("crashed", [False, True], ids=["done", "started"])
async def test_a_key_reused_for_another_call_is_refused(
    backend: Backend, tool: str, call: str, crashed: bool
) -> None:
    ledger = await backend.ledger()
    effect = Effects()

    def dies_after_the_effect() -> None:
        effect()
        raise SystemExit("killed")

    if crashed:
        with pytest.raises(SystemExit):
            await ledger.once("k", dies_after_the_effect, tool="charge", call=CHARGE_ADA)
    else:
        await ledger.once("k", effect, tool="charge", call=CHARGE_ADA)
    asked: list[str] = []
    with pytest.raises(LedgerConflict) as conflict:
        await ledger.once(
            "k", effect, tool=tool, call=call, reconcile=lambda: asked.append("reconcile")
        )
    # Neither the new call's effect nor its reconcile ran; the record is untouched.
    assert effect.count == 1 and asked == []
    message = str(conflict.value)
    assert "'k'" in message and f"tool 'charge' call {CHARGE_ADA}" in message
    assert f"not for tool {tool!r} call {call or '(none)'}" in message
    entry = await ledger.get("k")
    assert entry is not None and (entry.tool, entry.call, entry.attempts) == (
        "charge",
        CHARGE_ADA,
        1,
    )


async def test_the_tool_context_passes_its_call_to_the_ledger(backend: Backend) -> None:
    ledger = await backend.ledger()
    effect = Effects()
    ada = ToolContext(idempotency_key="k", call_hash=CHARGE_ADA, ledger=ledger)
    assert await ada.once(effect, tool="charge") == {"charged": 1}
    assert await ada.once(effect, tool="charge") == {"charged": 1}
    bob = ToolContext(idempotency_key="k", call_hash=CHARGE_BOB, ledger=ledger)
    with pytest.raises(LedgerConflict):
        await bob.once(effect, tool="charge")
    assert effect.count == 1


_OLD_SCHEMA = """
CREATE TABLE effects (
    key TEXT PRIMARY KEY,
    tool TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('started', 'done')),
    result TEXT,
    attempts INTEGER NOT NULL DEFAULT 1,
    started_at REAL NOT NULL,
    finished_at REAL
)
"""


async def test_a_ledger_from_before_call_identities_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    db = sqlite3.connect(path)
    db.execute(_OLD_SCHEMA)
    db.execute(
        "INSERT INTO effects (key, tool, status, result, started_at, finished_at) "
        "VALUES ('done', 'charge', 'done', '{\"charged\": 1}', 1.0, 2.0), "
        "('crashed', 'charge', 'started', NULL, 1.0, NULL)"
    )
    db.commit()
    db.close()
    ledger = SqliteLedger(path)
    effect = Effects()
    # A record that predates identities has none: it replays for the call that comes.
    assert await ledger.once("done", effect, tool="charge", call=CHARGE_ADA) == {"charged": 1}
    assert effect.count == 0
    # An unfinished one is retried, and from then on names its call.
    assert await ledger.once("crashed", effect, tool="charge", call=CHARGE_BOB) == {"charged": 1}
    entries = {e.key: e for e in await ledger.entries()}
    assert (entries["done"].call, entries["crashed"].call) == ("", CHARGE_BOB)
    assert entries["crashed"].attempts == 2
    with pytest.raises(LedgerConflict):
        await ledger.once("crashed", effect, tool="charge", call=CHARGE_ADA)
    # Opening it again (the column is there now) changes nothing.
    assert (await SqliteLedger(path).get("done")) == entries["done"]


def _claim(path: str, key: str) -> None:
    counter = Path(path).with_suffix(".count")

    def effect() -> str:
        with counter.open("a") as handle:
            handle.write("x")
        return "done"

    asyncio.run(SqliteLedger(Path(path)).once(key, effect, tool="t"))


def test_processes_sharing_the_file_see_each_others_records(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    SqliteLedger(path)
    for _ in range(3):
        process = multiprocessing.get_context("spawn").Process(target=_claim, args=(str(path), "k"))
        process.start()
        process.join(timeout=60)
        assert process.exitcode == 0
    assert path.with_suffix(".count").read_text() == "x"


async def test_tool_context_needs_a_worker_for_effects_and_artifacts() -> None:
    context = ToolContext(idempotency_key="k")
    with pytest.raises(RuntimeError, match="inside a worker"):
        await context.once(lambda: None)
    with pytest.raises(RuntimeError, match="in a worker"):
        await context.save_artifact("a.txt", "x")


async def test_artifacts_are_scoped_to_their_run(backend: Backend) -> None:
    store = await backend.artifacts()
    scope = run_scope("support/ada@example.com", "0193-run")
    context = ToolContext(idempotency_key="k", step=7, artifacts=store, scope=scope)
    ref = await context.save_artifact("draft.md", "# Title")
    assert ref == "artifact:7/draft.md" and context.saved == [ref]
    assert await store.get(scope, artifact_path(ref)) == b"# Title"
    # Saving again (a retried call) overwrites: idempotent.
    assert await context.save_artifact("draft.md", "# Title") == ref and context.saved == [ref]
    with pytest.raises(KeyError):
        await store.get(run_scope("another-run", "0193-run"), artifact_path(ref))
    assert await store.scopes() == {scope: pytest.approx(time.time(), abs=300)}
    if backend.name == "sqlite":
        stored = list((backend.tmp_path / "artifacts").rglob("draft.md"))
        assert len(stored) == 1 and "support%2Fada%40example.com" in str(stored[0])


HOSTILE_IDS = [
    "_x",
    ".hidden",
    "~a",
    "a/b",
    "..",
    ".",
    "é-ü",
    "x" * 1000,
    "é" * 1000,
    "x" * 255,
    "x" * 256,
    "_" + "x" * 253,
    "sha256=" + "0" * 64,
    "/etc/passwd",
    "a\x00b\nc",
    "%41",
    "A",
]


@pytest.mark.parametrize("workflow_id", HOSTILE_IDS)
async def test_any_workflow_id_stores_artifacts(backend: Backend, workflow_id: str) -> None:
    store = await backend.artifacts()
    scope = run_scope(workflow_id, "0193-run")
    await store.put(scope, "1/result.txt", workflow_id.encode())
    assert await store.get(scope, "1/result.txt") == workflow_id.encode()
    if backend.name != "sqlite":
        return
    root = backend.tmp_path / "artifacts"
    (stored,) = [p for p in root.rglob("*") if p.is_file()]
    # Inside the root, two levels for the scope, each a plain file name.
    relative = stored.relative_to(root).parts
    assert len(relative) == 4 and all(len(part.encode()) <= 255 for part in relative)


def test_scopes_of_different_ids_differ() -> None:
    ids = [*HOSTILE_IDS, "x", "_" + "x" * 254, "y" * 300, "y" * 301, "a%2Fb", "~", "_~"]
    scopes = {run_scope(workflow_id, "r") for workflow_id in ids}
    assert len(scopes) == len(set(ids))


def test_ids_that_worked_before_keep_their_scope() -> None:
    # The encoding of earlier releases: runs in flight at an upgrade find their artifacts.
    for workflow_id in ["support/ada@example.com", "research-1a2b", "A.b-c", "x" * 255]:
        assert run_scope(workflow_id, "0193-run") == f"{quote(workflow_id, safe='')}/0193-run"
    assert run_scope("_x", "r") == "__x/r" and run_scope("é", "r") == "_%C3%A9/r"
    assert run_scope("x" * 256, "r").startswith("_sha256=")


@pytest.mark.parametrize(
    "location",
    [
        ("../x", "1/a"),
        ("a/..", "1/a"),
        ("/abs", "1/a"),
        ("a/b", "../../a"),
        ("a/b", "1/.."),
        ("a/b", "1/" + "x" * 256),
        ("a/b", "1/.hidden"),
        ("a/./b", "1/a"),
    ],
)
async def test_locations_outside_the_store_are_refused(
    backend: Backend, location: tuple[str, str]
) -> None:
    store = await backend.artifacts()
    with pytest.raises(KeyError, match="invalid artifact location"):
        await store.put(*location, b"x")


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "", "x" * 65])
def test_artifact_names_are_plain_file_names(name: str) -> None:
    with pytest.raises(ValueError, match="artifact name"):
        artifact_ref(1, name)


@pytest.mark.parametrize("text", ["draft.md", "artifact:x/draft.md", "artifact:1/../etc"])
def test_references_are_checked(text: str) -> None:
    with pytest.raises(ValueError):
        artifact_path(text)


async def test_a_large_artifact_streams_through_in_chunks(backend: Backend) -> None:
    store = await backend.artifacts()
    scope = run_scope("big", "r")
    data = bytes(range(256)) * (3 * 4096 + 17)  # ~3 MiB: several 1 MiB chunks, one partial
    await store.put(scope, "1/big.bin", data)
    assert await store.get(scope, "1/big.bin") == data
    # Overwritten by a shorter one (a retried call): nothing of the longer one is left.
    await store.put(scope, "1/big.bin", b"short")
    assert await store.get(scope, "1/big.bin") == b"short"
    await store.put(scope, "1/empty.txt", b"")
    assert await store.get(scope, "1/empty.txt") == b""
    if backend.name == "postgres":
        chunks = [chunk async for chunk in store.stream(scope, "1/big.bin")]
        assert chunks == [b"short"]


async def test_an_artifact_over_the_limit_is_refused_before_anything_is_stored(
    backend: Backend,
) -> None:
    store = await backend.artifacts(max_bytes=4096)
    scope = run_scope("bounded", "r")
    await store.put(scope, "1/fits.txt", b"x" * 4096)
    with pytest.raises(ArtifactTooLarge, match=r"1/big.txt is 4,097 bytes.*limit of 4,096"):
        await store.put(scope, "1/big.txt", b"x" * 4097)
    with pytest.raises(KeyError):
        await store.get(scope, "1/big.txt")


async def test_a_run_scope_is_listed_and_deleted_whole(backend: Backend) -> None:
    ledger, store = await backend.ledger(), await backend.artifacts()
    ended, running = run_scope("wf/a", "r1"), run_scope("wf/a", "r2")
    for scope in (ended, running):
        await store.put(scope, "1/a.txt", b"a")
        await store.put(scope, "2/b.txt", b"b")
        await ledger.once(f"{scope}-key", lambda: "done", tool="t", scope=scope)
    await ledger.once("legacy-key", lambda: "done", tool="t")  # no scope: never listed
    assert set(await store.scopes()) == set(await ledger.scopes()) == {ended, running}
    assert await store.delete_scope(ended) == 2 and await ledger.delete_scope(ended) == 1
    assert set(await store.scopes()) == set(await ledger.scopes()) == {running}
    with pytest.raises(KeyError):
        await store.get(ended, "1/a.txt")
    assert await store.get(running, "2/b.txt") == b"b"
    assert await ledger.get("legacy-key") is not None
    assert await store.delete_scope(ended) == 0


async def test_two_workers_claiming_one_key_at_once_run_the_effect_once(
    backend: Backend,
) -> None:
    # Two ledgers on the same storage (two workers); the second asks while the
    # first is recording: it replays the recorded result.
    first, second = await backend.ledger(), await backend.ledger()
    effect = Effects()
    await first.once("k", effect, tool="charge", call=CHARGE_ADA, scope="w/r")
    again = await second.once("k", effect, tool="charge", call=CHARGE_ADA, scope="w/r")
    assert again == {"charged": 1} and effect.count == 1
    with pytest.raises(LedgerConflict):
        await second.once("k", effect, tool="charge", call=CHARGE_BOB)
