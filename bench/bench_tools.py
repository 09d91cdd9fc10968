"""Tools for ``bench.tools``: one that does nothing, one that waits, one with a
recorded effect, and one whose result is a large artifact."""

from __future__ import annotations

import asyncio
import os

from fsm.tools import ToolContext, ToolRegistry

tools = ToolRegistry()


@tools.tool
def noop() -> str:
    """Do nothing."""
    return "ok"


@tools.tool
async def wait(milliseconds: int) -> str:
    """Wait without working (what a tool step costs when its tool takes a while).

    Args:
        milliseconds: How long.
    """
    await asyncio.sleep(milliseconds / 1000)
    return "ok"


@tools.tool
async def effect(ctx: ToolContext) -> str:
    """A side effect recorded in the ledger.

    Args:
        ctx: The call's context.
    """
    return str(await ctx.once(lambda: "done", tool="effect"))


@tools.tool
def noise(megabytes: int) -> bytes:
    """Random bytes, which no store can compress (always stored as an artifact).

    Args:
        megabytes: How many MiB.
    """
    return os.urandom(megabytes * 1024 * 1024)
