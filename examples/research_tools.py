"""Tools of the research example: search a local corpus, draft, review, publish.

Load them in a worker with ``FSMFLOW_TOOL_MODULES=examples/research_tools.py``.
The corpus is the Markdown files of ``examples/corpus`` (``RESEARCH_CORPUS_DIR``
overrides it); articles are published as files in ``RESEARCH_PUBLISH_DIR``
(default ``.fsmflow/published``), each listed once in its ``index.jsonl``.

The drafting and review here are deterministic (extractive drafting, rule-based
review), so the example runs the same on a 135M local model as on a large one:
the model decides *what* to do next; the tools do it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from fsm import Artifact, ToolContext, ToolError, ToolRegistry

tools = ToolRegistry()

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an and are as at be by for from how in is it of on or that the this to what with".split()
)


def corpus_dir() -> Path:
    """Where the corpus lives."""
    return Path(os.environ.get("RESEARCH_CORPUS_DIR", Path(__file__).parent / "corpus"))


def publish_dir() -> Path:
    """Where articles are published."""
    return Path(os.environ.get("RESEARCH_PUBLISH_DIR", ".fsmflow/published"))


class Hit(BaseModel):
    """One search result."""

    doc: str
    title: str
    score: int
    snippet: str


def _documents() -> dict[str, str]:
    return {path.stem: path.read_text() for path in sorted(corpus_dir().glob("*.md"))}


def _terms(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1]


def _title(text: str, doc: str) -> str:
    first = text.lstrip().splitlines()[0] if text.strip() else doc
    return first.lstrip("# ").strip()


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in text.split("\n\n") if p.strip() and not p.startswith("#")]


def _rank(query: str, limit: int) -> list[Hit]:
    wanted = set(_terms(query))
    if not wanted:
        raise ToolError("the query has no searchable words; use a few keywords")
    hits = []
    for doc, text in _documents().items():
        words = _terms(text)
        score = sum(words.count(term) for term in wanted) + 5 * len(wanted & set(_terms(doc)))
        if score:
            best = max(_paragraphs(text), key=lambda p: len(wanted & set(_terms(p))), default="")
            hits.append(Hit(doc=doc, title=_title(text, doc), score=score, snippet=best[:240]))
    hits.sort(key=lambda h: (-h.score, h.doc))
    return hits[:limit]


@tools.tool(timeout_seconds=10)
def search_corpus(query: str, limit: int = 3) -> list[Hit]:
    """Search the local corpus by keywords; returns the best documents with a snippet.

    Args:
        query: A few keywords, e.g. "durable execution retries".
        limit: How many documents at most (1-10).
    """
    hits = _rank(query, max(1, min(limit, 10)))
    if not hits:
        documents = ", ".join(_documents()) or "none"
        raise ToolError(f"nothing matches {query!r}; documents: {documents}")
    return hits


@tools.tool(timeout_seconds=10)
def read_document(doc: str) -> str:
    """Read one corpus document in full (a long one is stored as an artifact).

    Args:
        doc: The document id from search_corpus, e.g. "durable-execution".
    """
    documents = _documents()
    if doc not in documents:
        raise ToolError(f"no document {doc!r}; documents: {', '.join(documents)}")
    return documents[doc]


def _draft(topic: str) -> tuple[str, list[str]]:
    hits = _rank(topic, 3)
    if not hits:
        # Name what it does cover: a small model picks one rather than guessing again.
        covered = "; ".join(_title(text, doc) for doc, text in _documents().items())
        raise ToolError(
            f"the corpus has nothing on {topic!r}; write on one of its topics: {covered}"
        )
    wanted = set(_terms(topic))
    documents = _documents()
    lines = [f"# {topic.strip().capitalize()}", ""]
    for hit in hits:
        relevant = sorted(
            _paragraphs(documents[hit.doc]),
            key=lambda p: -len(wanted & set(_terms(p))),
        )[:2]
        lines += [f"## {hit.title}", "", *(f"{p}\n" for p in relevant)]
    lines += ["## Sources", "", *(f"- {hit.title} ({hit.doc})" for hit in hits), ""]
    return "\n".join(lines), [hit.doc for hit in hits]


@tools.tool(timeout_seconds=30)
async def write_draft(topic: str, ctx: ToolContext) -> dict[str, Any]:
    """Write an article draft on a topic from the best corpus documents.

    Args:
        topic: The article's topic in a few words.
        ctx: The call's context (saves the draft as an artifact of the run).
    """
    text, sources = _draft(topic)
    ref = await ctx.save_artifact("draft.md", text)
    return {"draft": ref, "words": len(text.split()), "sources": sources}


REVIEW_RULES = {
    "min_words": 80,
    "max_words": 1500,
    "max_paragraph_words": 220,
}


@tools.tool(timeout_seconds=10)
def review_draft(draft: Artifact) -> dict[str, Any]:
    """Review a draft with editorial rules: title, length, paragraphs, sources.

    Args:
        draft: The draft to review.
    """
    text = draft.text
    words = len(text.split())
    problems = []
    if not text.startswith("# "):
        problems.append("the draft has no title line ('# Title')")
    if words < REVIEW_RULES["min_words"]:
        problems.append(f"too short: {words} words (at least {REVIEW_RULES['min_words']})")
    if words > REVIEW_RULES["max_words"]:
        problems.append(f"too long: {words} words (at most {REVIEW_RULES['max_words']})")
    for paragraph in _paragraphs(text):
        if len(paragraph.split()) > REVIEW_RULES["max_paragraph_words"]:
            problems.append(f"a paragraph is too long: {paragraph[:40]!r}...")
            break
    sources = text.split("## Sources", 1)
    if len(sources) < 2 or "- " not in sources[1]:
        problems.append("the draft cites no sources ('## Sources' with a list)")
    if re.search(r"\b(TODO|lorem ipsum)\b", text, flags=re.IGNORECASE):
        problems.append("the draft has placeholder text")
    return {
        "verdict": "approve" if not problems else "revise",
        "feedback": "; ".join(problems)[:500],
        "problems": problems,
        "words": words,
    }


def _slug(text: str) -> str:
    return "-".join(_WORD.findall(text.lower()))[:60] or "article"


def _published_entry(index: Path, key: str) -> dict[str, Any] | None:
    if not index.exists():
        return None
    for line in index.read_text().splitlines():
        entry: dict[str, Any] = json.loads(line)
        if entry.get("key") == key:
            return entry
    return None


@tools.tool(timeout_seconds=30, max_attempts=5)
async def publish_article(draft: Artifact, ctx: ToolContext) -> dict[str, Any]:
    """Publish a reviewed draft: write it to the publish directory and list it once.

    Args:
        draft: The approved draft.
        ctx: The call's context (its idempotency key makes publishing happen once).
    """
    text = draft.text
    title = _title(text, "article")
    target = publish_dir()
    index = target / "index.jsonl"

    def publish() -> dict[str, Any]:
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"{_slug(title)}-{ctx.step}.md"
        path.write_text(text)
        entry = {"key": ctx.idempotency_key, "title": title, "path": str(path)}
        # The index is the effect that must not repeat: appending is not idempotent.
        with index.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")
        return entry

    # A worker that died after appending but before the ledger recorded it leaves
    # the entry in the index: reconcile finds it there instead of appending again.
    entry: dict[str, Any] = await ctx.once(
        publish, reconcile=lambda: _published_entry(index, ctx.idempotency_key), tool="publish"
    )
    return {"published": entry["path"], "title": entry["title"]}
