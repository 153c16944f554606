"""What the blocking and the asyncio lookup clients (:mod:`serving.client`) share: the answer
(:class:`Lookup`), the error when nothing is published, argument checks, the keys a lookup reads, and
decoding and merging what came back (a patch's record over its base's). No round trips here: the
clients send the commands, this module says which and reads the replies.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from core.errors import RecoError
from serving.codec import StoredValueError, decode_item, decode_list
from serving.connection import describe
from serving.item_cache import ItemCache
from serving.keys import MAX_ID_LENGTH, KeySpace, check_id

MAX_K = 1000
MAX_ITEMS_PER_DETAILS = 1000
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
        then the base's (a patch's and its base's keys carry different hash tags, so never one slot).

        The clients send each MGET with ``execute_command`` (the same command as ``mget``): on a Redis
        Cluster, redis-py's pipeline refuses ``mget`` outright, not knowing that the keys share a slot,
        while ``execute_command`` checks that they do and sends it to the node of that slot (as
        redis-py's own ``mget_nonatomic`` does)."""
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
