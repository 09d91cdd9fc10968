"""Artifact stores: large tool results kept out of prompts and workflow history.

An artifact is addressed by the run's scope (workflow id and the chain's first
run id) and a run-relative path (``<step>/<name>``); the model and the history
see only the reference ``artifact:<step>/<name>``. ``FileArtifactStore`` keeps
them in a directory; another store (S3, GCS) implements ``fsm.tools.ArtifactStore``.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from pathlib import Path
from urllib.parse import quote

_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._%-]*$")


def run_scope(workflow_id: str, chain_id: str) -> str:
    """The store scope of a run: one directory level per id, safely encoded."""
    return f"{quote(workflow_id, safe='')}/{quote(chain_id, safe='')}"


class FileArtifactStore:
    """Artifacts as files under ``root/<scope>/<step>/<name>`` (written atomically)."""

    def __init__(self, root: Path) -> None:
        """Use (and create) the directory ``root``."""
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _file(self, scope: str, path: str) -> Path:
        parts = [*scope.split("/"), *path.split("/")]
        # Every component is a plain name: no "..", no absolute paths.
        if not all(_COMPONENT.match(part) and part not in (".", "..") for part in parts):
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
