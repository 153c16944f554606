"""Reading published recommendations: two round trips per lookup.

Round trip 1 reads the pointer ``{ns}:current``; round trip 2 reads, in one
pipeline, every key the answer may come from (the user's list, the segment's
and the global fallback list). Reading the pointer first is what makes a
publish atomic for readers: all keys of one lookup come from one version.

The first lookup after a switch costs one more round trip: it checks that
the version was published with this reader's ``n_shards``.

Item details are cached in-process per version (:class:`ItemCache`): a
published version never changes, so a cached answer is exactly what Redis
would say, and the item details of a recommendation list usually cost no
round trip at all. A new version starts with an empty cache.

:class:`LookupClient` is the blocking client (jobs, tests, the CLI);
:class:`AsyncLookupClient` answers the same with the same round trips on
``redis.asyncio``, for the HTTP service's event loop.

Redis errors (``redis.ConnectionError``, ``redis.TimeoutError``) propagate:
the HTTP service answers 503 for them.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff

from jobs.errors import RecoError
from serving.codec import decode_item, decode_list, decode_meta, maybe_decode_str
from serving.connection import SCHEMES, describe, redact
from serving.keys import KeySpace, check_id

MAX_K = 1000
MAX_ITEMS_PER_DETAILS = 1000
ITEM_CACHE_ITEMS = 200_000   # per version; a catalogue's details are ~100 B each once decoded (+ dict overhead)
ITEM_CACHE_VERSIONS = 2      # the current one and the one before (requests in flight across a switch)


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


_MISSING = object()   # cached "this version has no details for the item"


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


class _Reader:
    """What the blocking and the asyncio client share: argument checks, key lists and decoding."""

    def __init__(self, r: Any, ks: KeySpace, item_cache: Optional[ItemCache] = None) -> None:
        self.r, self.ks = r, ks
        self.items = item_cache if item_cache is not None else ItemCache()
        self._checked: Optional[str] = None  # last version whose n_shards matched ours

    def _no_version(self) -> NoPublishedVersion:
        return NoPublishedVersion(f"no recommendations are published on {describe(self.r)}: {self.ks.current} "
                                  "is not set. Run the publish job, then retry")

    def _shards_match(self, version: str, published: Optional[str]) -> None:
        if published is not None and int(published) != self.ks.n_shards:
            raise RuntimeError(f"version {version} on {describe(self.r)} was published with n_shards={published}, "
                               f"but this reader uses n_shards={self.ks.n_shards}: every lookup would miss. "
                               "Use the same n_shards in the publisher and the service")
        self.items.forget(version)   # the pointer moved (back) to it: nothing cached before counts
        self._checked = version

    @staticmethod
    def _list_names(user_id: str, k: int, segment: Optional[str]) -> List[str]:
        check_id(user_id, "user_id")
        check_k(k)
        names = ["personal"]
        if segment is not None:
            check_id(segment, "segment")
            names.append(f"segment:{segment}")
        names.append("global")
        return names

    def _list_keys(self, version: str, user_id: str, names: List[str]) -> List[str]:
        return [self.ks.user(version, user_id) if name == "personal" else self.ks.fallback(version, name)
                for name in names]

    @staticmethod
    def _pick(names: List[str], values: List[Optional[bytes]], k: int, version: str) -> Lookup:
        for name, raw in zip(names, values):
            if raw is not None:
                ranked = decode_list(raw)
                return Lookup(ranked.items[:k], ranked.scores[:k], ranked.tags[:k], name,
                              name != "personal", version)
        return Lookup([], [], [], "none", True, version)

    @staticmethod
    def _similar(raw: Optional[bytes], k: int, version: str) -> Optional[Lookup]:
        if raw is None:
            return None
        ranked = decode_list(raw)
        return Lookup(ranked.items[:k], ranked.scores[:k], ranked.tags[:k], "similar", False, version)

    @staticmethod
    def _item_ids(item_ids: Iterable[str]) -> List[str]:
        ids = list(dict.fromkeys(item_ids))
        if len(ids) > MAX_ITEMS_PER_DETAILS:
            raise ValueError(f"at most {MAX_ITEMS_PER_DETAILS} item ids per call, got {len(ids)}")
        for id_ in ids:
            check_id(id_, "item_id")
        return ids

    def _groups(self, version: str, ids: List[str]) -> List[List[Tuple[str, str]]]:
        return list(self.ks.group_keys(version, "i", ids).values())

    def _details(self, version: str, ids: List[str], hits: Dict[str, Any],
                 groups: List[List[Tuple[str, str]]], replies: List[List[Optional[bytes]]]) -> Dict[str, Dict[str, Any]]:
        """Merge cached and fetched details (caching the fetched ones), in input order, unknown left out."""
        fetched: Dict[str, Any] = {}
        for members, values in zip(groups, replies):
            for (id_, _), raw in zip(members, values):
                fetched[id_] = _MISSING if raw is None else decode_item(raw)
        if fetched:
            self.items.store(version, fetched)
            hits = {**hits, **fetched}
        # copies: a caller may change its answer without changing the cache
        return {id_: dict(hits[id_]) for id_ in ids if hits.get(id_, _MISSING) is not _MISSING}


class LookupClient(_Reader):
    """Answers lookups from the version the pointer names (blocking redis-py).

    Args:
        r: client (see :func:`serving.connection.connect`); share one per process.
        ks: the key space the publisher used.
        item_cache: where item details are cached (default: a new one per client).
    """

    def __init__(self, r: redis.Redis, ks: KeySpace, item_cache: Optional[ItemCache] = None) -> None:
        super().__init__(r, ks, item_cache)

    def current_version(self) -> Optional[str]:
        """The version readers use now, or None when nothing is published."""
        return maybe_decode_str(self.r.get(self.ks.current))

    def _version(self) -> str:
        version = self.current_version()
        if version is None:
            raise self._no_version()
        if version != self._checked:
            # Once per version (one extra round trip after a switch): keys are only found when the
            # reader shards ids as the publisher did.
            self._shards_match(version, maybe_decode_str(self.r.hget(self.ks.meta(version), "n_shards")))
        return version

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
        names = self._list_names(user_id, k, segment)
        version = self._version()
        values = self._get(self._list_keys(version, user_id, names))
        if all(v is None for v in values):
            # The pointer moved and pruned our version between the two round trips
            # (only possible with keep=1): read once more from the new version.
            newer = self._version()
            if newer != version:
                version, values = newer, self._get(self._list_keys(newer, user_id, names))
        return self._pick(names, values, k, version)

    def _get(self, keys: List[str]) -> List[Optional[bytes]]:
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        return pipe.execute()

    def similar(self, item_id: str, k: int) -> Optional[Lookup]:
        """Top ``k`` items similar to ``item_id``; None when the item has no list."""
        check_id(item_id, "item_id")
        check_k(k)
        version = self._version()
        return self._similar(self.r.get(self.ks.similar(version, item_id)), k, version)

    def item_details(self, item_ids: Iterable[str], version: Optional[str] = None) -> Dict[str, Dict[str, Any]]:
        """Details of the known items among ``item_ids`` (unknown ones are left out), in input order.

        Args:
            version: read this version (the one a lookup answered from: details then come from
                the same version as the list, with no pointer read); default the current one.

        Cached ids cost nothing; the others one MGET per hash slot, all in one pipeline.
        """
        ids = self._item_ids(item_ids)
        if not ids:
            return {}
        version = version or self._version()
        hits, misses = self.items.split(version, ids)
        groups = self._groups(version, misses)
        replies: List[List[Optional[bytes]]] = []
        if groups:
            pipe = self.r.pipeline(transaction=False)
            for members in groups:
                pipe.mget([key for _, key in members])
            replies = pipe.execute()
        return self._details(version, ids, hits, groups, replies)


class AsyncLookupClient(_Reader):
    """:class:`LookupClient` on ``redis.asyncio``: the same answers, round trips and errors,
    with ``await`` (``current_version``, ``metadata``, ``recommendations``, ``similar``,
    ``item_details``)."""

    def __init__(self, r: aredis.Redis, ks: KeySpace, item_cache: Optional[ItemCache] = None) -> None:
        super().__init__(r, ks, item_cache)

    async def current_version(self) -> Optional[str]:
        return maybe_decode_str(await self.r.get(self.ks.current))

    async def _version(self) -> str:
        version = await self.current_version()
        if version is None:
            raise self._no_version()
        if version != self._checked:
            self._shards_match(version, maybe_decode_str(await self.r.hget(self.ks.meta(version), "n_shards")))
        return version

    async def metadata(self) -> Dict[str, Any]:
        version = await self._version()
        meta = decode_meta(await self.r.hgetall(self.ks.meta(version)))
        meta.setdefault("version", version)
        return meta

    async def recommendations(self, user_id: str, k: int, segment: Optional[str] = None) -> Lookup:
        names = self._list_names(user_id, k, segment)
        version = await self._version()
        values = await self._get(self._list_keys(version, user_id, names))
        if all(v is None for v in values):   # see LookupClient.recommendations
            newer = await self._version()
            if newer != version:
                version, values = newer, await self._get(self._list_keys(newer, user_id, names))
        return self._pick(names, values, k, version)

    async def _get(self, keys: List[str]) -> List[Optional[bytes]]:
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        return await pipe.execute()

    async def similar(self, item_id: str, k: int) -> Optional[Lookup]:
        check_id(item_id, "item_id")
        check_k(k)
        version = await self._version()
        return self._similar(await self.r.get(self.ks.similar(version, item_id)), k, version)

    async def item_details(self, item_ids: Iterable[str],
                           version: Optional[str] = None) -> Dict[str, Dict[str, Any]]:
        ids = self._item_ids(item_ids)
        if not ids:
            return {}
        version = version or await self._version()
        hits, misses = self.items.split(version, ids)
        groups = self._groups(version, misses)
        replies: List[List[Optional[bytes]]] = []
        if groups:
            pipe = self.r.pipeline(transaction=False)
            for members in groups:
                pipe.mget([key for _, key in members])
            replies = await pipe.execute()
        return self._details(version, ids, hits, groups, replies)

    async def aclose(self) -> None:
        await self.r.aclose()


def connect_async(url: str, password: Optional[str] = None, socket_timeout: float = 2.0,
                  retries: int = 2, **kw: Any) -> aredis.Redis:
    """:func:`serving.connection.connect` for ``redis.asyncio``: the same url forms, timeouts and
    retries (jittered backoff of at most 0.5 s). Connects lazily."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in SCHEMES:
        raise ValueError(f"redis url {redact(url)!r} must start with redis:// or rediss:// (TLS)")
    if password is not None:
        kw["password"] = password
    kw.setdefault("socket_connect_timeout", socket_timeout)
    kw.setdefault("retry", AsyncRetry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries))
    kw.setdefault("health_check_interval", 30)
    return aredis.Redis.from_url(url, socket_timeout=socket_timeout, **kw)
