"""The bulk loader under :func:`serving.publish.publish_version`: it checks each chunk of records, lays
them out by hash tag, writes them with MSETNX commands it packs itself (RESP bytes, one buffer per
round trip, on one connection of the client's pool, with the client's retry policy), reads a sample
back, and keeps the version's checksum (crc32 per record, combined order-free).
Why by hand: redis-py's pipeline spends more time building commands than Redis spends running them
(docs/SERVING.md and BENCHMARKS.md, "publish"), so the loader packs RESP itself, once. On a Redis Cluster
the same MSETNX commands go through redis-py's cluster pipeline instead (:mod:`serving.bulk_write`)."""
from __future__ import annotations

import hashlib
import logging
import time
from operator import itemgetter
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple
from zlib import crc32

import numpy as np
import redis

from serving.bulk_write import msetnx_per_slot, round_trip
from serving.connection import is_cluster
from serving.keys import KIND_NAMES, KINDS, MAX_ID_LENGTH, KeySpace, check_id
from serving.publish_lock import PublishError, PublishLock

log = logging.getLogger(__name__)

Record = Tuple[str, str, bytes]
VerifyFn = Callable[[redis.Redis, KeySpace, str], Optional[str]]
LOG_EVERY_S = 5.0
_MASK64 = (1 << 64) - 1
CHECKSUM_FORMAT = "crc1"  # prefix of the checksums this publisher writes (see Loader.checksum)
_CRLF = b"\r\n"
_KIND_SET = frozenset(KINDS)
_KIND_INDEX = {kind: i for i, kind in enumerate(KINDS)}
_F = _KIND_INDEX["f"]
_ID_BYTES = 4 * MAX_ID_LENGTH + 1  # an id's UTF-8 is shorter
_FIRST, _SECOND, _THIRD = itemgetter(0), itemgetter(1), itemgetter(2)


def _crc_tables() -> Tuple[np.ndarray, np.ndarray]:
    """zlib's crc32 as array arithmetic, for the checksum's per-record prefix ``kind \\0 id \\0``.

    crc32 updates its register linearly over GF(2): ``crc32(data, a) ^ crc32(data, b)`` depends only
    on ``len(data)`` and ``a ^ b``. So ``crc32(id, crc32(kind \\0)) == crc32(id) ^ K[kind, len(id)]``,
    ``K[kind, n]`` being ``crc32(n zero bytes, crc32(kind \\0)) ^ crc32(n zero bytes)``: the crc32 of
    the id, which picks its shard, gives the prefix's without another pass. ``T``: zlib's byte table
    (``T[b] = ~crc32(bytes([b]), 0xffffffff)``), to append one byte (:func:`_crc_zero_byte`)."""
    table = np.array([crc32(bytes([b]), 0xFFFFFFFF) ^ 0xFFFFFFFF for b in range(256)], np.uint32)
    zeros = bytes(_ID_BYTES)
    kind_id = np.array([[crc32(zeros[:n], crc32(f"{kind}\0".encode("utf-8"))) ^ crc32(zeros[:n])
                         for n in range(_ID_BYTES)] for kind in KINDS], np.uint32)
    return table, kind_id


_CRC_TABLE, _KIND_ID_CRC = _crc_tables()


def _crc_zero_byte(crc: np.ndarray) -> np.ndarray:
    """``crc32(b"\\0", c)`` for each ``c`` of ``crc`` (uint32): zlib's step for one byte, between its
    inversions."""
    c = ~crc
    return ~(_CRC_TABLE[c & 0xFF] ^ (c >> 8))


class BadRecords(PublishError):
    """The records are invalid (bad kind, id or value, an id twice); the message names the record."""


class _Prepared:
    """One chunk, checked and laid out for writing. ``kinds``, ``ids``, ``values``: the records in
    input order; ``order``: input positions in write order (grouped by hash tag); ``groups``: the
    ``[start, end)`` range of each tag in write order; ``resp``: each record's RESP bytes in write
    order, 4 pieces a record: ``\\r\\n$<key len>\\r\\n<key prefix>``, the id, ``\\r\\n$<value len>\\r\\n``,
    the value (the CRLF that ends a value starts the next piece; :meth:`Loader._write` ends each
    command with one)."""
    __slots__ = ("kinds", "ids", "values", "order", "groups", "resp")

    def __init__(self, kinds: Sequence[str], ids: Sequence[str], values: Sequence[bytes], order: List[int],
                 groups: List[Tuple[int, int]], resp: List[bytes]) -> None:
        self.kinds, self.ids, self.values, self.order, self.groups, self.resp = kinds, ids, values, order, groups, resp

    def part(self, start: int, end: int, key_of: Callable[[str, str], str]) -> Dict[str, bytes]:
        """Records ``[start, end)`` of the write order as key -> value (to read back a refused MSETNX)."""
        return {key_of(self.kinds[i], self.ids[i]): self.values[i] for i in self.order[start:end]}


class _Memo(dict):  # type: ignore[type-arg]
    """``fn(n)`` by ``n`` (looked up with ``map(memo.__getitem__, ...)``); starts over past 65536 entries."""

    def __init__(self, fn: Callable[[int], bytes]) -> None:
        super().__init__()
        self.fn = fn

    def __missing__(self, n: int) -> bytes:
        if len(self) >= 65536:
            self.clear()
        value = self[n] = self.fn(n)
        return value


class Loader:
    """Reads the chunks once: validates, counts, checksums, samples, and (unless dry) writes them."""

    def __init__(self, r: redis.Redis, ks: KeySpace, version: str, batch_keys: int, sample: int,
                 progress: Optional[Callable[[int], None]], lock: Optional[PublishLock]) -> None:
        self.r, self.ks, self.version = r, ks, version
        self.batch_keys, self.sample_size, self.progress, self.lock = batch_keys, sample, progress, lock
        self.counts: Dict[str, int] = {k: 0 for k in KINDS}
        self.n_bytes = 0
        self.keys_written = 0  # acknowledged by redis
        # order-independent checksum: sums of h and h*h over the records, h = crc32 of kind \0 id \0 value
        self.sum1 = self.sum2 = 0
        self.legacy_sum64: Optional[int] = None  # set by run(legacy_checksum=True)
        self.sample: List[Tuple[str, bytes]] = []
        self.rng = np.random.default_rng(list(version.encode("utf-8")))
        self.seen = 0
        # key prefixes (ns:{version:tag}:kind:, UTF-8) by kind * (n_shards + 1) + tag; tag n_shards is {version:f}
        ns, n = ks.namespace, ks.n_shards
        self.prefixes: List[bytes] = []
        for kind in KINDS:
            tags = [f"{version}:{shard}" for shard in range(n)] + [f"{version}:f"]
            self.prefixes += [f"{ns}:{{{tag}}}:{kind}:".encode("utf-8") for tag in tags]
        # RESP pieces by (prefix, id length in bytes) and by value length
        self.key_heads = _Memo(lambda i: b"\r\n$%d\r\n%b" % (len(self.prefixes[i // _ID_BYTES]) + i % _ID_BYTES,
                                                             self.prefixes[i // _ID_BYTES]))
        self.value_heads = _Memo(lambda n_: b"\r\n$%d\r\n" % n_)

    @property
    def checksum(self) -> str:
        """``crc1:<sum of h>-<sum of h*h>-<records>`` (hex sums mod 2**64): equal for the same records
        in any chunking and order. It covers kinds, ids and values, not key names."""
        return f"{CHECKSUM_FORMAT}:{self.sum1 & _MASK64:016x}-{self.sum2 & _MASK64:016x}-{self.seen}"

    @property
    def legacy_checksum(self) -> str:
        """The checksum earlier publishers stored (sum of sha256 of key \\0 value, 64 bits), for republish."""
        return f"{(self.legacy_sum64 or 0) & _MASK64:016x}-{self.seen}"

    def checksum_like(self, stored: Optional[str]) -> str:
        """Our checksum in the format of ``stored`` (a version's meta), so the two can be compared."""
        return self.legacy_checksum if stored and is_legacy_checksum(stored) else self.checksum

    def run(self, records: Iterable[Sequence[Record]], write: bool, legacy_checksum: bool = False) -> None:
        """Read every chunk; ``write``: load it; ``legacy_checksum``: also compute :attr:`legacy_checksum`."""
        t0 = last_log = time.monotonic()
        if legacy_checksum:
            self.legacy_sum64 = 0
        for chunk_no, chunk in enumerate(records):
            if not isinstance(chunk, (list, tuple)):
                chunk = list(chunk)  # read twice with legacy_checksum
            prepared = self._prepare(chunk_no, chunk, write)
            if legacy_checksum:
                self._legacy_sum(chunk)
            if prepared is not None:
                if self.lock is not None:
                    self.lock.check()   # the heartbeat found the lock lost: write nothing more
                self._write(prepared)
                if self.progress is not None:
                    self.progress(self.keys_written)
            if self.lock is not None:
                self.lock.refresh()
            now = time.monotonic()
            if now - last_log >= LOG_EVERY_S:
                last_log = now
                log.info("publish %s: %s %d keys (%.1f MB) in %.1f s", self.version,
                         "wrote" if write else "checked", self.seen, self.n_bytes / 1e6, now - t0)

    def _prepare(self, chunk_no: int, chunk: Sequence[Record], pack: bool = True) -> Optional[_Prepared]:
        """Validate one chunk, count it, add it to the checksum and the sample; ``pack``: also lay it
        out for :meth:`_write` (keys grouped by hash tag, one slot per MSETNX; their RESP bytes).

        Works a whole chunk at a time (``map`` over C functions, numpy for the arithmetic, no object
        per record that the garbage collector tracks): this runs for every key of a publish. Checks
        first in bulk; when one fails, :meth:`_check_records` goes through the records in order to name
        the first bad one. The values' bytes are read last (checksum), after everything that only
        touches their headers."""
        n = len(chunk)
        if n == 0:
            return _Prepared((), (), (), [], [], []) if pack else None
        try:
            if set(map(len, chunk)) != {3}:
                raise TypeError
            kinds = list(map(_FIRST, chunk))
            ids = list(map(_SECOND, chunk))
            values = list(map(_THIRD, chunk))
            kind_set = set(kinds)
            valid = (kind_set <= _KIND_SET and set(map(type, ids)) == {str} and set(map(type, values)) == {bytes}
                     and 0 < min(map(len, ids)) and max(map(len, ids)) <= MAX_ID_LENGTH
                     and "".join(ids).isprintable()  # each id is, then
                     and len(set(ids) if len(kind_set) == 1 else set(map(str.__add__, kinds, ids))) == n)
        except (TypeError, LookupError):  # not a 3-sequence, an unhashable kind
            valid = False
        if not valid:
            kinds, ids, values = self._check_records(chunk_no, chunk)  # raises BadRecords, or the records pass
            kind_set = set(kinds)
        n_shards = self.ks.n_shards
        kind_no: Any = (_KIND_INDEX[kinds[0]] if len(kind_set) == 1
                        else np.fromiter(map(_KIND_INDEX.__getitem__, kinds), np.intp, n))
        id_bytes = list(map(str.encode, ids))  # UTF-8 (printable: no lone surrogates)
        id_len = np.fromiter(map(len, id_bytes), np.intp, n)
        id_crc = np.fromiter(map(crc32, id_bytes), np.uint32, n)
        value_len = np.fromiter(map(len, values), np.int64, n)
        for kind in kind_set:
            self.counts[kind] += n if len(kind_set) == 1 else kinds.count(kind)
        self.n_bytes += int(value_len.sum())
        self._sample(kinds, ids, values)

        prepared = None
        if pack:
            # hash tag: KeySpace.shard (crc32 of the id's UTF-8 % n_shards), n_shards for the fallbacks' {version:f}
            tag = (id_crc % n_shards).astype(np.intp)
            if len(kind_set) > 1:
                tag[kind_no == _F] = n_shards
            elif kind_no == _F:
                tag[:] = n_shards
            prefix = kind_no * (n_shards + 1) + tag
            first = self.prefixes[int(prefix[0])] + id_bytes[0]
            if first != self.ks.key(self.version, kinds[0], ids[0]).encode("utf-8"):
                raise AssertionError(f"publish: key {first!r} is not KeySpace.key's "
                                     f"{self.ks.key(self.version, kinds[0], ids[0])!r}")
            sizes = np.bincount(tag, minlength=n_shards + 1)
            order = np.argsort(tag, kind="stable") if np.count_nonzero(sizes) > 1 else np.arange(n)
            ends = np.cumsum(sizes).tolist()
            groups = [(end - size, end) for size, end in zip(sizes.tolist(), ends) if size]
            order_list = order.tolist()
            resp: List[bytes] = [_CRLF] * (4 * n)
            resp[0::4] = map(self.key_heads.__getitem__, (prefix * _ID_BYTES + id_len)[order].tolist())
            resp[1::4] = map(id_bytes.__getitem__, order_list)
            resp[2::4] = map(self.value_heads.__getitem__, value_len[order].tolist())
            resp[3::4] = map(values.__getitem__, order_list)
            prepared = _Prepared(kinds, ids, values, order_list, groups, resp)

        # crc1: sums of h and h*h (mod 2**64), h = crc32 of kind \0 id \0 value (ids are printable: no \0).
        # crc32(kind \0 id) comes from crc32(id) (see _crc_tables); the one call per record left
        # reads the value
        heads = _crc_zero_byte(id_crc ^ _KIND_ID_CRC[kind_no, id_len])
        h = np.fromiter(map(crc32, values, heads.tolist()), np.uint64, n)
        self.sum1 = (self.sum1 + int(h.sum())) & _MASK64
        self.sum2 = (self.sum2 + int((h * h).sum())) & _MASK64  # h < 2**32: h*h fits; the sum wraps mod 2**64
        return prepared

    def _check_records(self, chunk_no: int, chunk: Sequence[Record]) -> Tuple[List[str], List[str], List[bytes]]:
        """Check the records one by one, in order; raise BadRecords naming the first bad one (an invalid
        kind, id or value, or an id that came before in the chunk), else return kinds, ids, values."""
        version = self.version
        seen: Set[Tuple[str, str]] = set()
        kinds: List[str] = []
        ids: List[str] = []
        values: List[bytes] = []
        for pos, rec in enumerate(chunk):
            try:
                kind, id_, value = rec
                if kind not in self.counts:
                    raise ValueError(f"kind {kind!r} is not one of {KINDS}")
                check_id(id_, "id")
                if value.__class__ is not bytes:
                    raise ValueError(f"value must be bytes (encode it with serving.codec), "
                                     f"got {type(value).__name__}")
            except (TypeError, ValueError) as e:
                raise BadRecords(f"publish of version {version}: record {pos} of chunk {chunk_no} is invalid "
                                 f"({e}): {rec!r:.160}. Nothing was switched and the loaded keys were deleted; "
                                 "fix the input and rerun") from None
            if (kind, id_) in seen:
                raise BadRecords(f"publish of version {version}: chunk {chunk_no} holds {KIND_NAMES[kind]} "
                                 f"id {id_!r} twice; each id must appear once. Nothing was switched and the loaded "
                                 "keys were deleted")
            seen.add((kind, id_))
            kinds.append(kind)
            ids.append(id_)
            values.append(value)
        return kinds, ids, values

    def _sample(self, kinds: List[str], ids: List[str], values: List[bytes]) -> None:
        """Reservoir sampling over all records so far: each is kept with probability size/seen."""
        sample, size, n, seen = self.sample, self.sample_size, len(kinds), self.seen
        fill = min(max(size - len(sample), 0), n)
        picks = [(len(sample) + i, i) for i in range(fill)]
        if n > fill and size:
            # record i of the chunk is the (seen + i + 1)-th: it replaces slot j = int(random * (seen + i + 1))
            # when j < size
            slots = (self.rng.random(n - fill) * np.arange(seen + fill + 1, seen + n + 1)).astype(np.int64)
            hits = np.flatnonzero(slots < size)
            picks += zip(slots[hits].tolist(), (hits + fill).tolist())
        for slot, i in picks:
            entry = (self.ks.key(self.version, kinds[i], ids[i]), values[i])
            if slot == len(sample):
                sample.append(entry)
            else:
                sample[slot] = entry
        self.seen = seen + n

    def _legacy_sum(self, chunk: Sequence[Record]) -> None:
        """Add the chunk to the checksum of earlier publishers: sha256 of the key, as they named it
        (``ns:{version:shard}:kind:id``, ``ns:{version:f}:f:name``), \\0 and the value. Records are valid
        (``_prepare`` ran first)."""
        ns, version, n_shards = self.ks.namespace, self.version, self.ks.n_shards
        total = self.legacy_sum64 or 0
        for kind, id_, value in chunk:
            tag = f"{version}:f" if kind == "f" else f"{version}:{crc32(id_.encode('utf-8')) % n_shards}"
            key = f"{ns}:{{{tag}}}:{kind}:{id_}"
            total += int.from_bytes(hashlib.sha256(key.encode("utf-8") + b"\0" + value).digest()[:8], "little")
        self.legacy_sum64 = total & _MASK64

    def _write(self, chunk: _Prepared) -> None:
        """MSETNX per hash tag, about ``batch_keys`` keys per round trip.

        MSETNX rather than MSET: a key that already exists means the same id came
        twice in different chunks (caught here instead of silently overwritten),
        or that a round trip was sent again after a dropped connection (then the
        values are ours and the part is written again)."""
        header = b"*%d\r\n$6\r\nMSETNX"  # the CRLF after it starts the first record's pieces
        step = self.batch_keys
        resp = chunk.resp
        batch: List[bytes] = []
        parts: List[Tuple[int, int]] = []
        pending = 0
        for start, end in chunk.groups:
            for i in range(start, end, step):
                j = min(i + step, end)
                parts.append((i, j))
                batch.append(header % (2 * (j - i) + 1))
                batch += resp[4 * i:4 * j]
                batch.append(_CRLF)
                pending += j - i
                if pending >= step:
                    self._flush(chunk, batch, parts)
                    batch, parts, pending = [], [], 0
        if parts:
            self._flush(chunk, batch, parts)

    def _flush(self, chunk: _Prepared, batch: List[bytes], parts: List[Tuple[int, int]]) -> None:
        """Send the packed commands in one buffer (on a Redis Cluster, each part to the node of its slot),
        read one reply per part; then recheck refused parts."""
        key_of = lambda kind, id_: self.ks.key(self.version, kind, id_)  # noqa: E731
        if is_cluster(self.r):
            results = msetnx_per_slot(self.r, (chunk.part(start, end, key_of) for start, end in parts))
        else:
            results = round_trip(self.r, b"".join(batch), len(parts))
        for (start, end), ok in zip(parts, results):
            if not ok:
                self._recheck(chunk.part(start, end, key_of))
            self.keys_written += end - start

    def _recheck(self, part: Dict[str, bytes]) -> None:
        keys = list(part)
        for key, have in zip(keys, self.r.mget(keys)):
            if have is not None and have != part[key]:
                raise BadRecords(f"publish of version {self.version}: key {key} was already written with other "
                                 "bytes: the same id appears in two chunks. Each id must appear once; fix the "
                                 "input and rerun. Nothing was switched and the loaded keys were deleted")
        self.r.mset(part)  # every existing key already held these bytes: a resent pipeline or an identical repeat

    def verify(self, expected: Optional[Mapping[str, int]], verify_fn: Optional[VerifyFn]) -> List[str]:
        """Problems found (empty when the version is fine)."""
        problems = []
        for kind, n in (expected or {}).items():
            if self.counts.get(kind, 0) != n:
                problems.append(f"{KIND_NAMES.get(kind, kind)}: wrote {self.counts.get(kind, 0)}, expected {n}")
        if self.sample:
            pipe = self.r.pipeline(transaction=False)
            for key, _ in self.sample:
                pipe.get(key)
            bad = [(key, want, got) for (key, want), got in zip(self.sample, pipe.execute()) if got != want]
            for key, want, got in bad[:5]:
                problems.append(f"key {key} reads back " + ("missing" if got is None else
                                f"{len(got)} bytes that differ from the {len(want)} bytes written"))
            if len(bad) > 5:
                problems.append(f"... and {len(bad) - 5} more of the {len(self.sample)} sampled keys differ")
        if verify_fn is not None:
            problem = verify_fn(self.r, self.ks, self.version)
            if problem:
                problems.append(str(problem))
        return problems


def is_legacy_checksum(checksum: str) -> bool:
    """Whether ``checksum`` has the format of publishers before ``crc1`` (``<16 hex>-<records>``)."""
    head, _, count = checksum.partition("-")
    return len(head) == 16 and count.isdigit() and all(c in "0123456789abcdef" for c in head)
