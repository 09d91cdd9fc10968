"""What the console's pages show, derived from what the API already reads.

Pure functions of a run's trace, definition and context, and of the agents
directory: the pages' handlers fetch (``workers.api.runs``), these shape.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsm.loader import load_file
from fsm.problems import DefinitionError
from schemas.definition import AgentDefinition
from schemas.run import TraceEntry

DEFINITION_SUFFIXES = (".yaml", ".yml", ".json")
MAX_AGENT_FILES = 200
"""Files of the agents directory the console reads at most."""


def path_counts(entries: Iterable[TraceEntry]) -> Counter[tuple[str, str]]:
    """How often the run took each move: applied turns and decisions that changed state."""
    counts: Counter[tuple[str, str]] = Counter()
    for entry in entries:
        if entry.accepted and entry.to_state and entry.to_state != entry.from_state:
            counts[(entry.from_state, entry.to_state)] += 1
    return counts


def visited(initial: str | None, entries: Iterable[TraceEntry]) -> set[str]:
    """The states the run has been in."""
    seen = {initial} if initial else set()
    for entry in entries:
        if entry.accepted and entry.to_state:
            seen.add(entry.to_state)
    return seen


@dataclass(frozen=True)
class TimelineItem:
    """One trace entry as the timeline shows it."""

    step: int
    kind: str
    title: str
    detail: str
    accepted: bool
    meta: str


def timeline(entries: Sequence[TraceEntry]) -> list[TimelineItem]:
    """The trace, newest last, each entry in words."""
    items = []
    for entry in entries:
        target = entry.to_state or entry.from_state
        if entry.kind == "turn":
            if not entry.accepted:
                title = f"turn rejected in {entry.from_state}"
            elif entry.to_state and entry.to_state != entry.from_state:
                title = f"moved {entry.from_state} → {entry.to_state}"
            else:
                title = f"turn in {entry.from_state} (stayed)"
        elif entry.kind in ("approve", "reject"):
            verb = "approved" if entry.kind == "approve" else "rejected"
            title = f"{verb} at {entry.from_state} by {entry.by or 'unknown'} → {target}"
        elif entry.kind == "timeout":
            title = f"gate {entry.from_state} timed out → {target}"
        elif entry.kind == "tool_call":
            outcome = "ran" if entry.accepted else "refused or failed"
            title = f"tool {entry.tool or '?'} {outcome} in {entry.from_state}"
        elif entry.kind == "fail":
            title = f"run failed in {entry.from_state}"
        elif entry.kind == "unanswered":
            title = f"message unanswered in {entry.from_state}"
        elif entry.kind == "always":
            title = f"moved by itself {entry.from_state} → {target}"
        elif entry.kind == "dead_end":
            title = f"dead end in {entry.from_state} → {target}"
        else:
            title = f"{entry.kind} in {entry.from_state} → {target}"
        meta = []
        if entry.model:
            meta.append(entry.model)
        if entry.tokens is not None:
            meta.append(f"{entry.tokens} tokens")
        if entry.latency_ms is not None:
            meta.append(f"{entry.latency_ms} ms")
        items.append(
            TimelineItem(
                step=entry.step,
                kind=entry.kind,
                title=title,
                detail=entry.reason,
                accepted=entry.accepted,
                meta=", ".join(meta),
            )
        )
    return items


def shown_value(value: Any) -> str:
    """A context value as text (strings as they are, the rest as JSON would)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def gate_keys(definition: AgentDefinition | None, state: str | None) -> list[str] | None:
    """The context keys a gate's state shows (``sees`` and ``collects``); None: all."""
    if definition is None or state is None or state not in definition.states:
        return None
    found = definition.states[state]
    if found.sees is None and not found.collects:
        return None
    return [*(found.sees or []), *(k for k in found.collects if k not in (found.sees or []))]


@dataclass
class AgentFile:
    """One file of the agents directory and what ``fsmflow check`` says of it."""

    path: Path
    definition: AgentDefinition | None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The agent's name (the file's stem while it does not load)."""
        return self.definition.name if self.definition is not None else self.path.stem

    @property
    def summary(self) -> str:
        """The ``fsmflow check`` line of an agent that loads."""
        definition = self.definition
        if definition is None:
            return f"{len(self.errors)} problem(s)"
        states = definition.states.values()
        transitions = sum(len(s.transitions) for s in states)
        gates = sum(1 for s in states if s.approval is not None)
        return (
            f"ok: agent {definition.name!r} v{definition.version}, {definition.mode}, "
            f"{len(definition.states)} states, {transitions} transitions, {gates} approval gates"
        )


def agent_files(directory: Path, *, tiers: Sequence[str] | None = None) -> list[AgentFile]:
    """Every definition file of the agents directory, loaded and checked.

    Tools are not checked (the API does not import the workers' tool modules);
    ``fsmflow check --tools`` does.
    """
    try:
        paths = sorted(
            path
            for path in directory.iterdir()
            if path.suffix in DEFINITION_SUFFIXES and path.is_file()
        )[:MAX_AGENT_FILES]
    except OSError:
        return []
    found = []
    for path in paths:
        try:
            loaded = load_file(path, tiers=tiers)
        except DefinitionError as exc:
            found.append(
                AgentFile(path, None, errors=[problem.render() for problem in exc.problems])
            )
            continue
        found.append(
            AgentFile(
                path,
                loaded.definition,
                warnings=[warning.render() for warning in loaded.warnings],
            )
        )
    return found
