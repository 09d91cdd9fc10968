"""The research example's tools with kill points, for workers that share their stores.

Re-registers every tool of ``examples/research_tools.py`` (heartbeating every 2 s,
so a killed worker's call is retried within seconds) and kills its own worker
with SIGKILL at chosen points, each at most once across all workers (a marker
file in ``$SHARED_MARKERS`` claims it):

- ``review_draft`` kills the worker that wrote the draft, before reading it: the
  review that completes always runs on another worker than the draft's writer;
- ``publish_article`` kills the worker at ``$KILL_AT``: ``before_effect``,
  ``between_effect_and_record`` (the article is in the index, the ledger says
  "started") or ``after_record`` (the ledger says "done", the activity has not
  completed).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fsm.tools import Artifact, ToolContext, ToolRegistry

_spec = importlib.util.spec_from_file_location(
    "shared_research_tools", Path(__file__).parents[2] / "examples" / "research_tools.py"
)
assert _spec is not None and _spec.loader is not None
research = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(research)

tools = ToolRegistry()
tools.tool(timeout_seconds=10, heartbeat_seconds=2)(research.search_corpus)
tools.tool(timeout_seconds=10, heartbeat_seconds=2)(research.read_document)


def _markers() -> Path:
    return Path(os.environ["SHARED_MARKERS"])


def _claim(name: str) -> bool:
    """True for the first caller across every worker process, False afterwards."""
    try:
        os.close(os.open(_markers() / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@tools.tool(timeout_seconds=30, heartbeat_seconds=2)
async def write_draft(topic: str, ctx: ToolContext) -> dict[str, Any]:
    """Write an article draft on a topic from the best corpus documents.

    Args:
        topic: The article's topic in a few words.
        ctx: The call's context.
    """
    result: dict[str, Any] = await research.write_draft(topic, ctx)
    (_markers() / f"wrote-{os.getpid()}").touch()
    return result


@tools.tool(timeout_seconds=10, heartbeat_seconds=2)
def review_draft(draft: Artifact) -> dict[str, Any]:
    """Review a draft with editorial rules.

    Args:
        draft: The draft to review.
    """
    if (_markers() / f"wrote-{os.getpid()}").exists() and _claim("review-kill"):
        _die()
    (_markers() / f"reviewed-{os.getpid()}").write_text(draft.text[:80])
    result: dict[str, Any] = research.review_draft(draft)
    return result


class _KillingLedger:
    """The worker's ledger, with the kill points of ``$KILL_AT`` around an effect."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def once(self, key: str, effect: Callable[[], Any], **options: Any) -> Any:
        point = os.environ.get("KILL_AT", "")
        if point == "before_effect" and _claim("publish-kill"):
            _die()

        def effect_then_die() -> Any:
            result = effect()
            if point == "between_effect_and_record" and _claim("publish-kill"):
                _die()
            return result

        result = await self._inner.once(key, effect_then_die, **options)
        if point == "after_record" and _claim("publish-kill"):
            _die()
        return result


@tools.tool(timeout_seconds=30, max_attempts=5, heartbeat_seconds=2)
async def publish_article(draft: Artifact, ctx: ToolContext) -> dict[str, Any]:
    """Publish a reviewed draft once.

    Args:
        draft: The approved draft.
        ctx: The call's context.
    """
    (_markers() / f"publish-{os.getpid()}-{ctx.attempt}").touch()
    killing = dataclasses.replace(ctx, ledger=_KillingLedger(ctx.ledger))
    result: dict[str, Any] = await research.publish_article(draft, killing)
    return result
