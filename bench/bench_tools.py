"""Tools for ``bench.tools``: one that does nothing, one with a recorded effect."""

from __future__ import annotations

from fsm.tools import ToolContext, ToolRegistry

tools = ToolRegistry()


@tools.tool
def noop() -> str:
    """Do nothing."""
    return "ok"


@tools.tool
async def effect(ctx: ToolContext) -> str:
    """A side effect recorded in the ledger.

    Args:
        ctx: The call's context.
    """
    return str(await ctx.once(lambda: "done", tool="effect"))
