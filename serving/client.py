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

What both clients share (argument checks, key lists, decoding) is in :mod:`serving.reader`, the
item cache in :mod:`serving.item_cache`; clients are opened by :mod:`serving.connection`
(``connect``, ``connect_async``). :class:`Lookup` and :class:`NoPublishedVersion` (what a lookup
returns and raises) are defined in :mod:`serving.reader` and re-exported here, so that callers
import the client and its answer from one place.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

import redis
import redis.asyncio as aredis

from serving.codec import decode_meta, maybe_decode_str
from serving.item_cache import ItemCache
from serving.keys import KeySpace, check_id
from serving.pipelined import PipelinedGets
from serving.reader import _UNKNOWN, Lookup, NoPublishedVersion, _KeysOf, _Reader, check_k

__all__ = ["AsyncLookupClient", "Lookup", "LookupClient", "NoPublishedVersion"]


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
                pipe.execute_command("MGET", *[key for _, key in members])   # see _Reader._groups
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
                pipe.execute_command("MGET", *[key for _, key in members])   # see _Reader._groups
            replies = await pipe.execute()
        return self._details(version, ids, hits, groups, replies, copy)

    async def aclose(self) -> None:
        if self._pipelined is not None:
            await self._pipelined.aclose()
        await self.r.aclose()
