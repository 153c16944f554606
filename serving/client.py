"""Reading published recommendations: two round trips per lookup.

Round trip 1 reads the pointer ``{ns}:current``; round trip 2 reads, in one
pipeline, every key the answer may come from (the user's list, the segment's
and the global fallback list). Reading the pointer first is what makes a
publish atomic for readers: all keys of one lookup come from one version.

The first lookup after a switch costs one more round trip: it checks that
the version was published with this reader's ``n_shards``.

Redis errors (``redis.ConnectionError``, ``redis.TimeoutError``) propagate:
the HTTP service answers 503 for them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional

import redis

from jobs.errors import RecoError
from serving.codec import decode_item, decode_list, decode_meta, maybe_decode_str
from serving.connection import describe
from serving.keys import KeySpace, check_id

MAX_K = 1000
MAX_ITEMS_PER_DETAILS = 1000


class NoPublishedVersion(RecoError, LookupError):
    """Nothing is published yet (the pointer key is missing)."""


@dataclass
class Lookup:
    """An answer. ``source``: ``personal``, ``segment:<name>``, ``global``, ``similar``, or ``none``
    (the version holds no list for this request); ``fallback`` is True unless it is the
    user's own list (or the item's similar items)."""
    items: List[str]
    scores: List[float]
    tags: List[str]
    source: str
    fallback: bool
    version: str


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an integer in 1..{MAX_K}, got {k!r}")
    return k


class LookupClient:
    """Answers lookups from the version the pointer names.

    Args:
        r: client (see :func:`serving.connection.connect`); share one per process.
        ks: the key space the publisher used.
    """

    def __init__(self, r: redis.Redis, ks: KeySpace) -> None:
        self.r, self.ks = r, ks
        self._checked: Optional[str] = None  # last version whose n_shards matched ours

    def current_version(self) -> Optional[str]:
        """The version readers use now, or None when nothing is published."""
        return maybe_decode_str(self.r.get(self.ks.current))

    def _version(self) -> str:
        version = self.current_version()
        if version is None:
            raise NoPublishedVersion(f"no recommendations are published on {describe(self.r)}: {self.ks.current} "
                                     "is not set. Run the publish job, then retry")
        if version != self._checked:
            self._check_shards(version)
        return version

    def _check_shards(self, version: str) -> None:
        """Once per version (one extra round trip after a switch): keys are only found when the
        reader shards ids as the publisher did."""
        published = maybe_decode_str(self.r.hget(self.ks.meta(version), "n_shards"))
        if published is not None and int(published) != self.ks.n_shards:
            raise RuntimeError(f"version {version} on {describe(self.r)} was published with n_shards={published}, "
                               f"but this reader uses n_shards={self.ks.n_shards}: every lookup would miss. "
                               "Use the same n_shards in the publisher and the service")
        self._checked = version

    def metadata(self) -> Dict[str, Any]:
        """The current version's metadata (counts, model_version, run_id, created_at, ...)."""
        version = self._version()
        meta = decode_meta(self.r.hgetall(self.ks.meta(version)))
        meta.setdefault("version", version)
        return meta

    def recommendations(self, user_id: str, k: int, segment: Optional[str] = None) -> Lookup:
        """Top ``k`` for a user: the user's list, else the segment's fallback, else the global one.

        Raises:
            ValueError: bad user_id, k or segment.
            NoPublishedVersion: nothing is published.
        """
        check_id(user_id, "user_id")
        check_k(k)
        names = ["personal"]
        if segment is not None:
            check_id(segment, "segment")
            names.append(f"segment:{segment}")
        names.append("global")
        version = self._version()
        values = self._get_lists(version, user_id, names)
        if all(v is None for v in values):
            # The pointer moved and pruned our version between the two round trips
            # (only possible with keep=1): read once more from the new version.
            newer = self._version()
            if newer != version:
                version, values = newer, self._get_lists(newer, user_id, names)
        for name, raw in zip(names, values):
            if raw is not None:
                ranked = decode_list(raw)
                return Lookup(ranked.items[:k], ranked.scores[:k], ranked.tags[:k], name,
                              name != "personal", version)
        return Lookup([], [], [], "none", True, version)

    def _get_lists(self, version: str, user_id: str, names: List[str]) -> List[Optional[bytes]]:
        pipe = self.r.pipeline(transaction=False)
        for name in names:
            pipe.get(self.ks.user(version, user_id) if name == "personal" else self.ks.fallback(version, name))
        return pipe.execute()

    def similar(self, item_id: str, k: int) -> Optional[Lookup]:
        """Top ``k`` items similar to ``item_id``; None when the item has no list."""
        check_id(item_id, "item_id")
        check_k(k)
        version = self._version()
        raw = self.r.get(self.ks.similar(version, item_id))
        if raw is None:
            return None
        ranked = decode_list(raw)
        return Lookup(ranked.items[:k], ranked.scores[:k], ranked.tags[:k], "similar", False, version)

    def item_details(self, item_ids: Iterable[str]) -> Dict[str, Dict[str, Any]]:
        """Details of the known items among ``item_ids`` (unknown ones are left out).
        One MGET per hash slot, all in one pipeline."""
        ids = list(dict.fromkeys(item_ids))
        if len(ids) > MAX_ITEMS_PER_DETAILS:
            raise ValueError(f"at most {MAX_ITEMS_PER_DETAILS} item ids per call, got {len(ids)}")
        for id_ in ids:
            check_id(id_, "item_id")
        if not ids:
            return {}
        version = self._version()
        groups = self.ks.group_keys(version, "i", ids)
        pipe = self.r.pipeline(transaction=False)
        for members in groups.values():
            pipe.mget([key for _, key in members])
        out: Dict[str, Dict[str, Any]] = {}
        for members, values in zip(groups.values(), pipe.execute()):
            for (id_, _), raw in zip(members, values):
                if raw is not None:
                    out[id_] = decode_item(raw)
        return {id_: out[id_] for id_ in ids if id_ in out}
