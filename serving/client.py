"""Reading published recommendations: one round trip per lookup.

A lookup reads, in one pipeline, the pointer ``{ns}:current`` and then every
key the answer may come from in the version this reader last saw the pointer
name (the user's list, the segment's and the global fallback list). Redis runs
a pipeline's commands in order, so the lists are read after the pointer, as
with two round trips. When the pointer still names that version (every lookup
but the first after a switch), that is the answer: all its keys come from the
version the pointer named, which is what makes a publish atomic for readers.
When the pointer has moved, the lists just read are dropped and read again
from the version it names now (a second round trip), so readers move to a new
version on their first lookup after the switch, never mixing two.

The first lookup after a switch also checks, once per version, that the
version was published with this reader's ``n_shards``, and reads whether it is
a *patch* (its metadata names a ``base``): one more round trip.

A patch holds only what changed since its base (the lists of recently active
users, all fallback lists, new items' details). A lookup on a patch reads
every key it may need from the patch *and* the base in the same round trip and
takes, record by record, the patch's value, else the base's: the user's list,
then the segment's and the global fallback list; similar items; item details.
So a patch costs no extra round trip, only keys in other hash slots.

Item details are cached in-process per version (:class:`ItemCache`): a
published version never changes, so a cached answer is exactly what Redis
would say, and the item details of a recommendation list usually cost no
round trip at all. A new version starts with an empty cache. A patch's cache
holds the merged (patch over base) details, under the patch's id.

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
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff

from core.errors import RecoError
from serving.codec import StoredValueError, decode_item, decode_list, decode_meta, maybe_decode_str
from serving.connection import SCHEMES, describe, redact
from serving.keys import MAX_ID_LENGTH, KeySpace, check_id
from serving.pipelined import PipelinedGets

MAX_K = 1000
MAX_ITEMS_PER_DETAILS = 1000
ITEM_CACHE_ITEMS = 200_000   # per version; a catalogue's details are ~100 B each once decoded (+ dict overhead)
ITEM_CACHE_VERSIONS = 2      # the current one and the one before (requests in flight across a switch)
BASES_KNOWN = 8              # versions whose base (or lack of one) a reader remembers


class NoPublishedVersion(RecoError, LookupError):
    """Nothing is published yet (the pointer key is missing)."""


@dataclass
class Lookup:
    """An answer. ``source``: ``personal``, ``segment:<name>``, ``global``, ``similar``, or ``none``
    (the version holds no list for this request); ``fallback`` is True unless it is the
    user's own list (or the item's similar items). ``version`` is the version the pointer
    named (a patch's id when it names a patch); ``layer`` says, for a patch, whether the list
    came from the ``patch`` itself or from its ``base`` (None for a full version, or no list)."""
    items: List[str]
    scores: List[float]
    tags: List[str]
    source: str
    fallback: bool
    version: str
    layer: Optional[str] = None


def _layers(base: Optional[str]) -> Tuple[Optional[str], ...]:
    """Layer names in reading order: ("patch", "base") over a base, else just the version."""
    return ("patch", "base") if base else (None,)


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an integer in 1..{MAX_K}, got {k!r}")
    return k


def _all_valid_ids(ids: List[str]) -> bool:
    """True when every id passes :func:`serving.keys.check_id` (a few C calls for the whole list;
    False says only that one may not: check them one by one)."""
    try:
        return (all(ids) and "".join(ids).isprintable()   # join: TypeError unless all are str
                and max(map(len, ids), default=0) <= MAX_ID_LENGTH)
    except TypeError:
        return False


_MISSING = object()   # cached "this version has no details for the item"
_Group = Tuple[bool, List[Tuple[str, str]]]   # (from the base, [(item id, key), ...]): one MGET
_KeysOf = Callable[[str, Optional[str]], List[str]]   # (version, base) -> the keys a lookup reads
_UNKNOWN = object()   # "this reader does not know the version's base yet"


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
        # (version, its base or None) of the last version whose n_shards matched ours; one tuple,
        # replaced whole, so a thread never sees one version's id with another's base
        self._checked: Optional[Tuple[str, Optional[str]]] = None
        self._bases: "OrderedDict[str, Optional[str]]" = OrderedDict()  # for item_details(version=...)
        self._bases_lock = threading.Lock()

    def _no_version(self) -> NoPublishedVersion:
        return NoPublishedVersion(f"no recommendations are published on {describe(self.r)}: {self.ks.current} "
                                  "is not set. Run the publish job, then retry")

    def _shards_match(self, version: str, published: Optional[str],
                      base: Optional[str] = None) -> Tuple[str, Optional[str]]:
        if published is not None and int(published) != self.ks.n_shards:
            raise RuntimeError(f"version {version} on {describe(self.r)} was published with n_shards={published}, "
                               f"but this reader uses n_shards={self.ks.n_shards}: every lookup would miss. "
                               "Use the same n_shards in the publisher and the service")
        self.items.forget(version)   # the pointer moved (back) to it: nothing cached before counts
        self._remember_base(version, base)
        self._checked = checked = (version, base or None)
        return checked

    def _remember_base(self, version: str, base: Optional[str]) -> None:
        with self._bases_lock:
            self._bases[version] = base or None
            self._bases.move_to_end(version)
            while len(self._bases) > BASES_KNOWN:
                self._bases.popitem(last=False)

    def _known_base(self, version: str) -> Any:
        """The base of ``version`` as last read (None: a full version), or _UNKNOWN."""
        checked = self._checked
        if checked is not None and checked[0] == version:
            return checked[1]
        return self._bases.get(version, _UNKNOWN)

    @staticmethod
    def _list_names(user_id: Optional[str], k: int, segment: Optional[str]) -> List[str]:
        check_k(k)
        names = []
        if user_id is not None:   # None: a customer who cannot have a list of their own (the fallbacks only)
            check_id(user_id, "user_id")
            names.append("personal")
        if segment is not None:
            check_id(segment, "segment")
            names.append(f"segment:{segment}")
        names.append("global")
        return names

    def _list_keys(self, version: str, user_id: str, names: List[str], base: Optional[str] = None) -> List[str]:
        """Keys in reading order: per list name, the patch's key and then the base's (over a base)."""
        layers = (version, base) if base else (version,)
        return [self.ks.user(v, user_id) if name == "personal" else self.ks.fallback(v, name)
                for name in names for v in layers]

    def _pick(self, user_id: str, names: List[str], values: List[Optional[bytes]], k: int, version: str,
              base: Optional[str] = None) -> Lookup:
        """The first list found, in the order of :meth:`_list_keys`.

        Raises:
            StoredValueError: that list cannot be decoded; the message names its key and version."""
        layers = _layers(base)
        for pos, raw in enumerate(values):
            if raw is not None:
                name = names[pos // len(layers)]
                try:
                    ranked = decode_list(raw, k)
                except StoredValueError as e:
                    read = base if pos % len(layers) else version   # the patch's key, then the base's
                    raise e.at(self._list_keys(read, user_id, [name])[0], read) from None
                return Lookup(ranked.items, ranked.scores, ranked.tags, name,
                              name != "personal", version, layers[pos % len(layers)])
        return Lookup([], [], [], "none", True, version)

    def _similar_keys(self, version: str, item_id: str, base: Optional[str] = None) -> List[str]:
        return [self.ks.similar(v, item_id) for v in ((version, base) if base else (version,))]

    def _similar(self, item_id: str, values: List[Optional[bytes]], k: int, version: str,
                 base: Optional[str] = None) -> Optional[Lookup]:
        for pos, (layer, raw) in enumerate(zip(_layers(base), values)):
            if raw is not None:
                try:
                    ranked = decode_list(raw, k)
                except StoredValueError as e:
                    read = base if pos else version
                    raise e.at(self.ks.similar(read, item_id), read) from None
                return Lookup(ranked.items, ranked.scores, ranked.tags, "similar", False, version,
                              layer)
        return None

    @staticmethod
    def _item_ids(item_ids: Iterable[str]) -> List[str]:
        ids = list(dict.fromkeys(item_ids))
        if len(ids) > MAX_ITEMS_PER_DETAILS:
            raise ValueError(f"at most {MAX_ITEMS_PER_DETAILS} item ids per call, got {len(ids)}")
        if not _all_valid_ids(ids):
            for id_ in ids:   # the first bad id raises, saying why
                check_id(id_, "item_id")
        return ids

    def _groups(self, version: str, ids: List[str], base: Optional[str] = None) -> List[_Group]:
        """One (from_base, [(id, key), ...]) group per hash slot, for one MGET each: the version's,
        then the base's (a patch's and its base's keys carry different hash tags, so never one slot)."""
        groups = [(False, members) for members in self.ks.group_keys(version, "i", ids).values()]
        if base:
            groups += [(True, members) for members in self.ks.group_keys(base, "i", ids).values()]
        return groups

    def _details(self, version: str, ids: List[str], hits: Dict[str, Any],
                 groups: List[_Group], replies: List[List[Optional[bytes]]],
                 copy: bool = True) -> Dict[str, Dict[str, Any]]:
        """Merge cached and fetched details (caching the fetched ones), in input order, unknown left out.
        Over a base, the patch's details of an id win over the base's; the merged answer is cached
        under the patch's id."""
        own: Dict[str, Optional[bytes]] = {}
        under: Dict[str, Optional[bytes]] = {}
        for (from_base, members), values in zip(groups, replies):
            found = under if from_base else own
            for (id_, _), raw in zip(members, values):
                found[id_] = raw
        fetched: Dict[str, Any] = {}
        for id_, raw in own.items():
            from_base = raw is None
            if from_base:
                raw = under.get(id_)
            try:
                fetched[id_] = _MISSING if raw is None else decode_item(raw)
            except StoredValueError as e:
                key = next(key for in_base, members in groups if in_base == from_base
                           for i, key in members if i == id_)
                base = self._known_base(version)   # known: the caller read it to build the groups
                read = (base if isinstance(base, str) else f"the base of {version}") if from_base else version
                raise e.at(key, read) from None
        if fetched:
            self.items.store(version, fetched)
            hits = {**hits, **fetched}
        if not copy:   # the cached dicts themselves: the caller promised not to change them
            return {id_: hits[id_] for id_ in ids if hits.get(id_, _MISSING) is not _MISSING}
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

    def _version(self) -> Tuple[str, Optional[str]]:
        """(current version, its base or None), reading the pointer."""
        return self._named(self.current_version())

    def _named(self, version: Optional[str]) -> Tuple[str, Optional[str]]:
        """(version, its base or None) for the version the pointer named (None: nothing published)."""
        if version is None:
            raise self._no_version()
        checked = self._checked
        if checked is None or checked[0] != version:
            # Once per version (one extra round trip after a switch): keys are only found when the
            # reader shards ids as the publisher did; and a patch's base is where its missing keys are.
            n_shards, base = self.r.hmget(self.ks.meta(version), ["n_shards", "base"])
            checked = self._shards_match(version, maybe_decode_str(n_shards), maybe_decode_str(base))
        return checked

    def _read(self, keys_of: _KeysOf) -> Tuple[str, Optional[str], List[Optional[bytes]]]:
        """(version, its base, the values of ``keys_of(version, base)``) for the version the pointer
        names: one pipeline (the pointer, then the keys of the version last seen) while the pointer
        has not moved; after a switch, a second read from the version it names now."""
        checked = self._checked
        if checked is None:
            version, base = self._version()
        else:
            pipe = self.r.pipeline(transaction=False)
            pipe.get(self.ks.current)
            for key in keys_of(*checked):
                pipe.get(key)
            current, *values = pipe.execute()
            version = maybe_decode_str(current)
            if version == checked[0]:
                return checked[0], checked[1], values
            version, base = self._named(version)   # the pointer moved: drop what was read
        return version, base, self._get(keys_of(version, base))

    def _base_of(self, version: str) -> Optional[str]:
        """The base of a version named by the caller (usually known: a lookup of this reader named it)."""
        base = self._known_base(version)
        if base is _UNKNOWN:
            base = maybe_decode_str(self.r.hget(self.ks.meta(version), "base"))
            self._remember_base(version, base)
        return base or None

    def metadata(self) -> Dict[str, Any]:
        """The current version's metadata (counts, model_version, run_id, created_at, base, ...)."""
        version, _ = self._version()
        meta = decode_meta(self.r.hgetall(self.ks.meta(version)))
        meta.setdefault("version", version)
        return meta

    def recommendations(self, user_id: Optional[str], k: int, segment: Optional[str] = None) -> Lookup:
        """Top ``k`` for a user: the user's list, else the segment's fallback, else the global one
        (on a patch, each from the patch, else from its base). ``user_id`` None: the fallbacks only.

        Raises:
            ValueError: bad user_id, k or segment.
            NoPublishedVersion: nothing is published.
        """
        names = self._list_names(user_id, k, segment)
        version, base, values = self._read(lambda v, b: self._list_keys(v, user_id, names, b))
        if all(v is None for v in values):
            # The pointer moved and pruned our version between reading the pointer and the lists
            # (only possible with keep=1): read once more from the new version.
            newer, newer_base = self._version()
            if newer != version:
                version, base = newer, newer_base
                values = self._get(self._list_keys(version, user_id, names, base))
        return self._pick(user_id, names, values, k, version, base)

    def _get(self, keys: List[str]) -> List[Optional[bytes]]:
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        return pipe.execute()

    def similar(self, item_id: str, k: int) -> Optional[Lookup]:
        """Top ``k`` items similar to ``item_id``; None when the item has no list."""
        check_id(item_id, "item_id")
        check_k(k)
        version, base, values = self._read(lambda v, b: self._similar_keys(v, item_id, b))
        return self._similar(item_id, values, k, version, base)

    def item_details(self, item_ids: Iterable[str], version: Optional[str] = None,
                     copy: bool = True) -> Dict[str, Dict[str, Any]]:
        """Details of the known items among ``item_ids`` (unknown ones are left out), in input order.

        Args:
            version: read this version (the one a lookup answered from: details then come from
                the same version as the list, with no pointer read); default the current one.
            copy: False to get the cached dicts themselves, which the caller must not change
                (what the HTTP service does: it only reads them).

        Cached ids cost nothing; the others one MGET per hash slot (of the patch and of its base,
        for a patch), all in one pipeline.
        """
        ids = self._item_ids(item_ids)
        if not ids:
            return {}
        version, base = (version, self._base_of(version)) if version else self._version()
        hits, misses = self.items.split(version, ids)
        groups = self._groups(version, misses, base)
        replies: List[List[Optional[bytes]]] = []
        if groups:
            pipe = self.r.pipeline(transaction=False)
            for _, members in groups:
                pipe.mget([key for _, key in members])
            replies = pipe.execute()
        return self._details(version, ids, hits, groups, replies, copy)


class AsyncLookupClient(_Reader):
    """:class:`LookupClient` on ``redis.asyncio``: the same answers, round trips and errors,
    with ``await`` (``current_version``, ``metadata``, ``recommendations``, ``similar``,
    ``item_details``)."""

    def __init__(self, r: aredis.Redis, ks: KeySpace, item_cache: Optional[ItemCache] = None) -> None:
        super().__init__(r, ks, item_cache)
        # lookups' GETs share one pipelined connection (see _get); other clients (TLS, a cluster, a
        # stand-in) read through redis-py's pipeline
        self._pipelined = PipelinedGets.for_client(r)

    async def current_version(self) -> Optional[str]:
        return maybe_decode_str(await self.r.get(self.ks.current))

    async def _version(self) -> Tuple[str, Optional[str]]:
        return await self._named(await self.current_version())

    async def _named(self, version: Optional[str]) -> Tuple[str, Optional[str]]:
        if version is None:
            raise self._no_version()
        checked = self._checked
        if checked is None or checked[0] != version:
            n_shards, base = await self.r.hmget(self.ks.meta(version), ["n_shards", "base"])
            checked = self._shards_match(version, maybe_decode_str(n_shards), maybe_decode_str(base))
        return checked

    async def _read(self, keys_of: _KeysOf) -> Tuple[str, Optional[str], List[Optional[bytes]]]:
        """See :meth:`LookupClient._read`."""
        checked = self._checked
        if checked is None:
            version, base = await self._version()
        else:
            current, *values = await self._get([self.ks.current] + keys_of(*checked))
            version = maybe_decode_str(current)
            if version == checked[0]:
                return checked[0], checked[1], values
            version, base = await self._named(version)
        return version, base, await self._get(keys_of(version, base))

    async def _base_of(self, version: str) -> Optional[str]:
        base = self._known_base(version)
        if base is _UNKNOWN:
            base = maybe_decode_str(await self.r.hget(self.ks.meta(version), "base"))
            self._remember_base(version, base)
        return base or None

    async def metadata(self) -> Dict[str, Any]:
        version, _ = await self._version()
        meta = decode_meta(await self.r.hgetall(self.ks.meta(version)))
        meta.setdefault("version", version)
        return meta

    async def recommendations(self, user_id: Optional[str], k: int, segment: Optional[str] = None) -> Lookup:
        names = self._list_names(user_id, k, segment)
        version, base, values = await self._read(lambda v, b: self._list_keys(v, user_id, names, b))
        if all(v is None for v in values):   # see LookupClient.recommendations
            newer, newer_base = await self._version()
            if newer != version:
                version, base = newer, newer_base
                values = await self._get(self._list_keys(version, user_id, names, base))
        return self._pick(user_id, names, values, k, version, base)

    async def _get(self, keys: List[str]) -> List[Optional[bytes]]:
        """GET of each key, in one round trip: on the pipelined reader's shared connection
        (:mod:`serving.pipelined`) where there is one, else in a redis-py pipeline. An error reply
        (a key of another type) is left to the pipeline to raise as it does."""
        if self._pipelined is not None:
            values = await self._pipelined.get_many(keys)
            if values is not None:
                return values
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        return await pipe.execute()

    async def similar(self, item_id: str, k: int) -> Optional[Lookup]:
        check_id(item_id, "item_id")
        check_k(k)
        version, base, values = await self._read(lambda v, b: self._similar_keys(v, item_id, b))
        return self._similar(item_id, values, k, version, base)

    async def item_details(self, item_ids: Iterable[str], version: Optional[str] = None,
                           copy: bool = True) -> Dict[str, Dict[str, Any]]:
        ids = self._item_ids(item_ids)
        if not ids:
            return {}
        version, base = (version, await self._base_of(version)) if version else await self._version()
        hits, misses = self.items.split(version, ids)
        groups = self._groups(version, misses, base)
        replies: List[List[Optional[bytes]]] = []
        if groups:
            pipe = self.r.pipeline(transaction=False)
            for _, members in groups:
                pipe.mget([key for _, key in members])
            replies = await pipe.execute()
        return self._details(version, ids, hits, groups, replies, copy)

    async def aclose(self) -> None:
        if self._pipelined is not None:
            await self._pipelined.aclose()
        await self.r.aclose()


def connect_async(url: str, password: Optional[str] = None, socket_timeout: float = 2.0,
                  retries: int = 2, max_connections: int = 256, **kw: Any) -> aredis.Redis:
    """:func:`serving.connection.connect` for ``redis.asyncio``: the same url forms, timeouts and
    retries (jittered backoff of at most 0.5 s). Connects lazily.

    At most ``max_connections`` connections; a request that finds them all busy waits for one (up to
    ``socket_timeout``, then a ``ConnectionError``: the service's 503). redis-py's default pool
    instead fails at once beyond 100 connections ("Too many connections"), which a burst of lookups
    after a scheduling hiccup reached: 503s at 2,000 req/s with Redis itself idle (BENCHMARKS.md).
    """
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in SCHEMES:
        raise ValueError(f"redis url {redact(url)!r} must start with redis:// or rediss:// (TLS)")
    if max_connections < 1:
        raise ValueError(f"max_connections must be at least 1, got {max_connections}")
    if password is not None:
        kw["password"] = password
    kw.setdefault("socket_connect_timeout", socket_timeout)
    kw.setdefault("retry", AsyncRetry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries))
    kw.setdefault("health_check_interval", 30)
    pool = aredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=socket_timeout,
                                                  socket_timeout=socket_timeout, **kw)
    client = aredis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True     # aclose() closes the pool too, as from_url's client does
    return client
