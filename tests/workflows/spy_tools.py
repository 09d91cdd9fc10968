"""Tools that leave a trace of every execution, for the tool workflow tests.

Every call appends ``<tool> <arguments>`` to ``$SPY_LOG``, so a test can assert
what ran and how often.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from fsm.tools import Artifact, ToolContext, ToolError, ToolRegistry

tools = ToolRegistry()


def _log(tool: str, **arguments: object) -> None:
    with Path(os.environ["SPY_LOG"]).open("a") as handle:
        handle.write(f"{tool} {json.dumps(arguments, sort_keys=True)}\n")


@tools.tool
def record(text: str, times: int = 1) -> str:
    """Record a note.

    Args:
        text: The note.
        times: How many copies.
    """
    _log("record", text=text, times=times)
    return f"recorded {text!r} x{times}"


@tools.tool
def complain(topic: str) -> str:
    """A tool whose failure the model should read.

    Args:
        topic: What to complain about.
    """
    _log("complain", topic=topic)
    raise ToolError(f"nothing is known about {topic!r}; try another topic")


@tools.tool(max_attempts=5)
def explode() -> str:
    """A tool with a bug: it always raises."""
    _log("explode")
    raise RuntimeError("the disk is on fire")


@tools.tool
def big(megabytes: int) -> str:
    """Produce a large text (a multi-megabyte result).

    Args:
        megabytes: Its size in MiB.
    """
    _log("big", megabytes=megabytes)
    line = "0123456789abcdef" * 4 + "\n"
    return line * (megabytes * 1024 * 1024 // len(line))


@tools.tool
def measure(blob: Artifact) -> dict[str, object]:
    """Measure an artifact passed by reference.

    Args:
        blob: The artifact.
    """
    _log("measure", blob=blob.ref)
    return {"bytes": len(blob.data), "sha256": hashlib.sha256(blob.data).hexdigest()}


@tools.tool
def sync_effect(text: str, ctx: ToolContext) -> dict[str, str]:
    """A plain (sync) tool using the ledger and the artifact store.

    Args:
        text: What to store.
        ctx: The call's context.
    """
    _log("sync_effect", text=text)
    ref = ctx.save_artifact("note.txt", text)
    outcome = ctx.once(lambda: f"stored {len(text)} chars", tool="sync_effect")
    return {"artifact": ref, "outcome": outcome}
