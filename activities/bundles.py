"""The worker's cache of what model turns are rendered from, by hash.

A run's definition and tools do not change while it runs, so a turn's activity
input carries only their hash (``bundle_hash``); a worker that does not hold the
bundle yet (it restarted, or another worker resolved the run) asks the workflow
for it once with a ``BundleMissing`` error, and the workflow sends it along.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fsm.judge import bundle_hash
from schemas.activity import AgentBundle
from schemas.definition import RECORDED, AgentDefinition
from schemas.tools import ToolInfo

BUNDLES_KEPT = 256
"""Bundles a worker keeps (the least recently used go first)."""


@dataclass(frozen=True)
class Bundle:
    """A parsed definition and the run's tools."""

    definition: AgentDefinition
    tools: Mapping[str, ToolInfo]


class BundleCache:
    """A bounded LRU map from bundle hash to ``Bundle``, shared by a worker's activities."""

    def __init__(self, size: int = BUNDLES_KEPT) -> None:
        """Keep up to ``size`` bundles."""
        self._size = size
        self._bundles: OrderedDict[str, Bundle] = OrderedDict()
        # Activities run on the event loop and in threads; the map is tiny.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._bundles)

    def get(self, key: str) -> Bundle | None:
        """The bundle of ``key``, if this worker holds it."""
        with self._lock:
            bundle = self._bundles.get(key)
            if bundle is not None:
                self._bundles.move_to_end(key)
            return bundle

    def put(self, key: str, bundle: Bundle) -> None:
        """Hold ``bundle`` under ``key``."""
        with self._lock:
            self._bundles[key] = bundle
            self._bundles.move_to_end(key)
            while len(self._bundles) > self._size:
                self._bundles.popitem(last=False)

    def add(self, key: str, sent: AgentBundle) -> Bundle:
        """Parse and hold a bundle the workflow sent under the hash it named."""
        definition = AgentDefinition.model_validate(sent.definition, context=RECORDED)
        bundle = Bundle(definition, dict(sent.tools))
        self.put(key, bundle)
        return bundle

    def add_resolved(
        self,
        document: Mapping[str, Any],
        definition: AgentDefinition,
        tools: Mapping[str, ToolInfo],
    ) -> str:
        """Hold a bundle a run was just resolved to (``document`` is its recorded JSON)."""
        key = bundle_hash(document, tools)
        self.put(key, Bundle(definition, dict(tools)))
        return key
