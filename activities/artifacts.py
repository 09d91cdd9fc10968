"""Artifact stores: large tool results kept out of prompts and workflow history.

An artifact is addressed by the run's scope (workflow id and the chain's first
run id) and a run-relative path (``<step>/<name>``); the model and the history
see only the reference ``artifact:<step>/<name>``. ``FileArtifactStore`` keeps
them in a directory on this machine (the embedded default of one worker);
``activities.postgres.PostgresArtifactStore`` in PostgreSQL, shared by every
worker; another store (S3, GCS) implements ``fsm.tools.ArtifactStore``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from urllib.parse import quote, unquote

from fsm.tools import ArtifactTooLarge

_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._~%=-]*$")
_LEGACY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._%-]*$")
NAME_MAX = 255
"""Longest file name (bytes) of common file systems (ext4, XFS, APFS, NTFS)."""
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""The largest artifact a store takes unless told otherwise (``FSMFLOW_ARTIFACT_MAX_BYTES``)."""


def _scope_part(run_id: str) -> str:
    quoted = quote(run_id.encode("utf-8", "surrogatepass"), safe="")
    if _LEGACY.match(quoted) and len(quoted) <= NAME_MAX:
        # What every id that could store artifacts was encoded as before:
        # unchanged, so runs in flight across an upgrade find theirs.
        return quoted
    if len(quoted) < NAME_MAX:
        # No old encoding starts with "_", so these never meet one.
        return "_" + quoted
    # quote() encodes "=", so a quoted id never starts with "sha256=".
    digest = hashlib.sha256(run_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"_sha256={digest}"


def _decode_part(part: str) -> str | None:
    if part.startswith("_sha256="):
        return None
    return unquote(part[1:] if part.startswith("_") else part, errors="surrogatepass")


def scope_ids(scope: str) -> tuple[str | None, str | None]:
    """The workflow id and chain id a scope was made of (``run_scope`` reversed).

    Either is None where the scope holds only its hash (an id too long for a name).
    """
    workflow, _, chain = scope.partition("/")
    return _decode_part(workflow), _decode_part(chain)


def check_size(path: str, size: int, max_bytes: int) -> None:
    """Refuse an artifact over ``max_bytes`` before any of it is stored.

    Raises:
        ArtifactTooLarge: Naming the artifact, its size and the limit.
    """
    if size > max_bytes:
        raise ArtifactTooLarge(
            f"artifact {path} is {size:,} bytes, over the store's limit of {max_bytes:,} "
            "(FSMFLOW_ARTIFACT_MAX_BYTES)"
        )


def check_location(scope: str, path: str) -> list[str]:
    """The components of an artifact's location, each a plain name; every store checks it.

    Raises:
        KeyError: If a component is empty, ``.``/``..``, too long or not a plain name.
    """
    parts = [*scope.split("/"), *path.split("/")]
    # Every component is a plain name: no "..", no absolute paths, none too long.
    if not all(
        _COMPONENT.match(part) and part not in (".", "..") and len(part) <= NAME_MAX
        for part in parts
    ):
        raise KeyError(f"invalid artifact location {scope}/{path}")
    return parts


def run_scope(workflow_id: str, chain_id: str) -> str:
    """The store scope of a run: one directory level per id, safely encoded.

    Any id Temporal accepts maps to a plain file name, and different ids to
    different names: an id is percent-encoded (``quote``); when the result
    does not start with a letter or digit (``_x``, ``.hidden``, ``~a``, ``é``)
    or holds a ``~``, it gets a ``_`` prefix; when it would be too long for a
    file name (Temporal allows 1,000 characters, a file system 255 bytes), it
    is ``_sha256=`` and the id's SHA-256. Ids that were stored before these
    rules keep their encoding.
    """
    return f"{_scope_part(workflow_id)}/{_scope_part(chain_id)}"


class FileArtifactStore:
    """Artifacts as files under ``root/<scope>/<step>/<name>`` (written atomically)."""

    def __init__(self, root: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        """Use (and create) the directory ``root``; refuse artifacts over ``max_bytes``."""
        self.root = root
        self.max_bytes = max_bytes
        root.mkdir(parents=True, exist_ok=True)

    def _file(self, scope: str, path: str) -> Path:
        return self.root.joinpath(*check_location(scope, path))

    def _write(self, file: Path, data: bytes) -> None:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=file.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temporary, file)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    async def put(self, scope: str, path: str, data: bytes) -> None:
        """Store (or overwrite) one artifact.

        Raises:
            ArtifactTooLarge: If it is over ``max_bytes`` (nothing is written).
        """
        file = self._file(scope, path)
        check_size(path, len(data), self.max_bytes)
        await asyncio.to_thread(self._write, file, data)

    async def get(self, scope: str, path: str) -> bytes:
        """Read one artifact.

        Raises:
            KeyError: If there is no such artifact.
        """
        file = self._file(scope, path)
        try:
            return await asyncio.to_thread(file.read_bytes)
        except FileNotFoundError:
            raise KeyError(f"no artifact {path}") from None

    def _scopes(self) -> dict[str, float]:
        found: dict[str, float] = {}
        for workflow in self.root.iterdir():
            if not workflow.is_dir():
                continue
            for chain in workflow.iterdir():
                files = [f for f in chain.rglob("*") if f.is_file()] if chain.is_dir() else []
                times = [f.stat().st_mtime for f in files] or [chain.stat().st_mtime]
                found[f"{workflow.name}/{chain.name}"] = max(times)
        return found

    async def scopes(self) -> dict[str, float]:
        """Each run scope with artifacts, and the time (epoch seconds) of its newest write."""
        return await asyncio.to_thread(self._scopes)

    def _delete(self, scope: str) -> int:
        directory = self._file(scope, "x").parent
        if not directory.is_dir():
            return 0
        count = sum(1 for f in directory.rglob("*") if f.is_file())
        shutil.rmtree(directory)
        with contextlib.suppress(OSError):
            directory.parent.rmdir()  # the workflow's directory, once it has no other run
        return count

    async def delete_scope(self, scope: str) -> int:
        """Remove every artifact of one run scope; returns how many there were."""
        return await asyncio.to_thread(self._delete, scope)
