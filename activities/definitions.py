"""Resolving the definition a run uses, so that it is recorded in the run's history."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.bundles import BundleCache
from fsm.loader import Loaded, load_file, parse_definition
from fsm.problems import DefinitionError
from schemas.activity import (
    ResolvedDefinition,
    ResolveDefinitionInput,
    ResolvedRun,
    RunLimits,
    ToolInfo,
)
from schemas.definition import AgentDefinition, parse_duration

DEFINITION_SUFFIXES = (".yaml", ".yml", ".json")


def definition_hash(definition: Mapping[str, Any]) -> str:
    """sha256 of a definition's canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def definition_files(agents_dir: Path) -> list[Path]:
    """The definition files of an agents directory, sorted."""
    if not agents_dir.is_dir():
        return []
    return sorted(p for p in agents_dir.iterdir() if p.suffix in DEFINITION_SUFFIXES)


def load_agents(
    agents_dir: Path, *, tools: list[str] | None = None, tiers: list[str] | None = None
) -> dict[str, Loaded]:
    """Load every definition of a directory, keyed by agent name and by file stem.

    Raises:
        DefinitionError: For the first invalid file (its message lists every problem).
        FileNotFoundError: If the directory does not exist.
    """
    return AgentsDirectory(agents_dir, tools=tools, tiers=tiers).load()


class AgentsDirectory:
    """An agents directory whose files are parsed again only when they change.

    Every ``load`` lists the directory and stats its files, which is cheap and keeps
    added, edited and removed files visible; parsing and checking every definition
    for every new run is not cheap. A file counts as unchanged while its inode,
    mtime and size are: an edit in place changes the mtime, a replacement by rename
    (editors, Kubernetes ConfigMap updates) the inode.
    """

    def __init__(
        self, agents_dir: Path, *, tools: list[str] | None = None, tiers: list[str] | None = None
    ) -> None:
        """Build an empty cache.

        Args:
            agents_dir: The directory of definition files.
            tools: The registered tool names every definition is checked against.
            tiers: The configured model tiers every definition is checked against.
        """
        self.agents_dir = agents_dir
        # Fixed for the cache's lifetime: a loaded definition was checked against them.
        self._tools = tools
        self._tiers = tiers
        self._files: dict[Path, tuple[tuple[int, int, int], Loaded]] = {}

    def load(self) -> dict[str, Loaded]:
        """Every definition of the directory, keyed by agent name and by file stem.

        Raises:
            DefinitionError: For the first invalid file (its message lists every problem).
            FileNotFoundError: If the directory does not exist.
        """
        if not self.agents_dir.is_dir():
            raise FileNotFoundError(f"agents directory {str(self.agents_dir)!r} does not exist")
        files = definition_files(self.agents_dir)
        agents: dict[str, Loaded] = {}
        for path in files:
            stat = path.stat()
            stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            cached = self._files.get(path)
            if cached is None or cached[0] != stamp:
                # An invalid file raises here and is not cached: it is read again,
                # and refused with the same message, until it is fixed.
                cached = (stamp, load_file(path, tools=self._tools, tiers=self._tiers))
                self._files[path] = cached
            loaded = cached[1]
            agents.setdefault(loaded.definition.name, loaded)
            agents.setdefault(path.stem, loaded)
        for gone in self._files.keys() - set(files):
            del self._files[gone]
        return agents


def run_tools(
    definition: AgentDefinition, registered: Mapping[str, ToolInfo]
) -> dict[str, ToolInfo]:
    """The tools a definition's states name, with the definition's options applied."""
    used = sorted({t for state in definition.states.values() for t in state.tools})
    tools: dict[str, ToolInfo] = {}
    for name in used:
        if name not in registered:
            continue
        info = registered[name]
        options = definition.tools.get(name)
        if options is not None:
            changes: dict[str, Any] = {}
            if options.timeout is not None:
                changes["timeout_seconds"] = float(parse_duration(options.timeout))
            if options.heartbeat is not None:
                changes["heartbeat_seconds"] = float(parse_duration(options.heartbeat))
            if options.max_attempts is not None:
                changes["max_attempts"] = options.max_attempts
            changes["writes"] = list(options.writes)
            info = info.model_copy(update=changes)
        tools[name] = info
    return tools


class DefinitionActivities:
    """Resolves agents by name from a directory, or validates inline definitions."""

    def __init__(
        self,
        agents_dir: Path,
        limits: RunLimits,
        tools: Mapping[str, ToolInfo] | None = None,
        tiers: list[str] | None = None,
        bundles: BundleCache | None = None,
    ) -> None:
        """Build the activities.

        Args:
            agents_dir: Where ``{"agent": NAME}`` is looked up (by name or file stem).
            limits: The run limits handed to every new run.
            tools: The registered tools; a state naming another is refused.
            tiers: The configured model tiers; a state naming another is refused.
            bundles: Where a resolved run's definition and tools are held for
                this worker's model turns.
        """
        self._agents_dir = agents_dir
        self._limits = limits
        self._tools = dict(tools or {})
        self._tiers = tiers
        self._bundles = bundles
        self._agents = AgentsDirectory(agents_dir, tools=list(self._tools), tiers=tiers)

    def _resolve(self, request: ResolveDefinitionInput) -> Loaded:
        tools = list(self._tools)
        if request.definition is not None:
            return parse_definition(
                request.definition, source="inline definition", tools=tools, tiers=self._tiers
            )
        agents = self._agents.load()
        if request.agent not in agents:
            known = sorted({loaded.definition.name for loaded in agents.values()})
            raise LookupError(
                f"agent {request.agent!r} is not in {str(self._agents_dir)!r} "
                f"(agents: {', '.join(known) or 'none'})"
            )
        return agents[request.agent]

    @activity.defn(name="fsmflow.resolve_definition")
    async def resolve_definition(self, request: ResolveDefinitionInput) -> ResolvedRun:
        """Load and check the run's definition; refuse it before the run starts."""
        try:
            loaded = self._resolve(request)
        except (DefinitionError, LookupError, FileNotFoundError) as exc:
            raise ApplicationError(str(exc), type="DefinitionRefused", non_retryable=True) from None
        document = loaded.definition.model_dump(mode="json")
        activity.logger.info("resolved agent %s from %s", loaded.definition.name, loaded.source)
        tools = run_tools(loaded.definition, self._tools)
        if self._bundles is not None:
            self._bundles.add_resolved(document, loaded.definition, tools)
        return ResolvedRun(
            definition=ResolvedDefinition(
                definition=document,
                definition_hash=definition_hash(document),
                source=loaded.source,
            ),
            limits=self._limits,
            tools=tools,
        )
