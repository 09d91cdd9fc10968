"""A tool with a side effect that holds its first attempt open after the effect,
so a test can SIGKILL the worker between the effect and the activity's completion.

The effect appends a line to ``$CRASH_EFFECTS``; once it is done the first attempt
writes ``$CRASH_EFFECTS.done`` and sleeps (heartbeating) until it is killed.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from fsm.tools import ToolContext, ToolRegistry

tools = ToolRegistry()


@tools.tool(heartbeat_seconds=2, max_attempts=3)
async def append_effect(text: str, ctx: ToolContext) -> dict[str, str]:
    """Append a line to the effects file, once per call.

    Args:
        text: The line.
        ctx: The call's context.
    """
    effects = Path(os.environ["CRASH_EFFECTS"])

    def effect() -> str:
        with effects.open("a") as handle:
            handle.write(f"{ctx.idempotency_key} {text}\n")
        return "appended"

    outcome = await ctx.once(effect, tool="append_effect")
    if ctx.attempt == 1:
        Path(f"{effects}.done").write_text(ctx.idempotency_key)
        await asyncio.sleep(120)
    return {"outcome": outcome, "attempt": str(ctx.attempt)}
