"""The in-process cache of decoded item details, per published version (see :class:`ItemCache`).

A published version never changes, so a cached answer is exactly what Redis would say, and the item
details of a recommendation list usually cost no round trip at all. Used by both lookup clients
(:mod:`serving.client`).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Dict, List, Sequence, Tuple

ITEM_CACHE_ITEMS = 200_000   # per version; a catalogue's details are ~100 B each once decoded (+ dict overhead)
ITEM_CACHE_VERSIONS = 2      # the current one and the one before (requests in flight across a switch)


class ItemCache:
    """Decoded item details by (version, item id), unknown items included.

    Valid because a version's keys do not change while readers use it (the
    publisher refuses to publish other content under a complete version's id).
    A version's entries are dropped whenever the pointer moves to it
    (:meth:`forget`), so a version deleted and published again under the same
    id starts afresh. Holds ``max_versions`` versions, least recently used out
    first, and at most ``max_items`` ids per version (oldest first out).
    Reads take no lock; writes do (the blocking client runs on a thread pool).
    """

    def __init__(self, max_items: int = ITEM_CACHE_ITEMS, max_versions: int = ITEM_CACHE_VERSIONS) -> None:
        self.max_items, self.max_versions = max_items, max_versions
        self._versions: "OrderedDict[str, Dict[str, Any]]" = OrderedDict()
        self._lock = threading.Lock()

    def split(self, version: str, ids: Sequence[str]) -> Tuple[Dict[str, Any], List[str]]:
        """({id: details or _MISSING} of the cached ids, [ids to read from Redis])."""
        cached = self._versions.get(version)
        if cached is None:
            return {}, list(ids)
        hits: Dict[str, Any] = {}
        misses: List[str] = []
        for id_ in ids:
            value = cached.get(id_)
            if value is None:
                misses.append(id_)
            else:
                hits[id_] = value
        return hits, misses

    def store(self, version: str, found: Dict[str, Any]) -> None:
        with self._lock:
            cached = self._versions.get(version)
            if cached is None:
                cached = self._versions[version] = {}
                while len(self._versions) > self.max_versions:
                    self._versions.popitem(last=False)
            else:
                self._versions.move_to_end(version)
            for id_, value in found.items():
                if len(cached) >= self.max_items:
                    del cached[next(iter(cached))]
                cached[id_] = value

    def forget(self, version: str) -> None:
        with self._lock:
            self._versions.pop(version, None)

    def __len__(self) -> int:
        return sum(len(v) for v in self._versions.values())
