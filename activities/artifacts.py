"""Artifact stores: large tool results kept out of prompts and workflow history.

An artifact is addressed by the run's scope (workflow id and the chain's first
run id) and a run-relative path (``<step>/<name>``); the model and the history
see only the reference ``artifact:<step>/<name>``. ``FileArtifactStore`` keeps
them in a directory; another store (S3, GCS) implements ``fsm.tools.ArtifactStore``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from pathlib import Path
from urllib.parse import quote

_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._~%=-]*$")
_LEGACY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._%-]*$")
NAME_MAX = 255
"""Longest file name (bytes) of common file systems (ext4, XFS, APFS, NTFS)."""


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

    def __init__(self, root: Path) -> None:
        """Use (and create) the directory ``root``."""
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _file(self, scope: str, path: str) -> Path:
        parts = [*scope.split("/"), *path.split("/")]
        # Every component is a plain name: no "..", no absolute paths, none too long.
        if not all(
            _COMPONENT.match(part) and part not in (".", "..") and len(part) <= NAME_MAX
            for part in parts
        ):
            raise KeyError(f"invalid artifact location {scope}/{path}")
        return self.root.joinpath(*parts)

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
        """Store (or overwrite) one artifact."""
        await asyncio.to_thread(self._write, self._file(scope, path), data)

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
