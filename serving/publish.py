"""All-or-nothing bulk publishing of one version of recommendations to Redis.

Readers follow the pointer ``{ns}:current``. A publish loads every key of the
new version beside the live one, checks it (counts per kind, a random sample
read back byte for byte, an optional hook), marks it complete, and only then
switches the pointer with one SET. Until that SET readers see the old version,
after it the new one: never a mix. Then it prunes versions beyond ``keep``.

Publishing is idempotent: a version that is already complete with the same
content is not loaded again (the pointer is just set), and the keys a killed
publish left behind are deleted before loading again. So after any failure the
answer is: rerun.

Records arrive as an iterable of chunks; each chunk is a sequence of
``(kind, id, value_bytes)`` with kind ``u`` (a user's list), ``s`` (similar
items), ``i`` (item details) or ``f`` (fallback list: ``global``,
``segment:<name>``, ...). Values come from :mod:`serving.codec`. Only one chunk
is held at a time; chunks of 5k-50k records load fastest.

The loader writes MSETNX commands it packs itself (RESP bytes, one buffer per
round trip) on one connection of the client's pool, with the client's retry
policy: redis-py's pipeline spends more time building commands than redis
spends running them.

A *patch* (``base=<a complete full version>``) goes through the same steps but
holds only what changed since its base, e.g. the lists of the users active in
the last hour, all fallback lists and the details of new items. Readers pointed
at a patch read each record from the patch and, where it has none, from the
base (see :mod:`serving.client`); the patch's metadata records ``base``.
"""
from __future__ import annotations

import hashlib
import logging
import random
import time
from zlib import crc32
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import redis

from serving.codec import encode_meta
from serving.connection import describe
from serving.keys import KIND_NAMES, KINDS, MAX_ID_LENGTH, KeySpace, check_id, check_version
from serving.versions import (PublishError, PublishLock, base_of, current_version, delete_version,  # noqa: F401
                              delete_version_keys, is_complete, list_versions, mark_current, prune,
                              read_meta, rollback)

__all__ = ["BadRecords", "PublishError", "PublishResult", "Record", "delete_version", "list_versions",
           "publish_version", "rollback"]

log = logging.getLogger(__name__)

Record = Tuple[str, str, bytes]
VerifyFn = Callable[[redis.Redis, KeySpace, str], Optional[str]]

RESERVED_META = {"version", "namespace", "n_shards", "complete", "checksum", "keys", "bytes", "created_at",
                 "started_at", "count_u", "count_s", "count_i", "count_f", "base"}
LOG_EVERY_S = 5.0
_MASK64 = (1 << 64) - 1
CHECKSUM_FORMAT = "crc1"  # prefix of the checksums this publisher writes (see _Loader.checksum)
_CRLF = b"\r\n"


@dataclass
class PublishResult:
    """What a publish did. ``skipped``: the version was already complete with the same content."""
    version: str
    keys_written: int
    bytes_written: int
    seconds: float
    skipped: bool
    deleted_versions: List[str] = field(default_factory=list)
    previous_version: Optional[str] = None
    counts: Dict[str, int] = field(default_factory=dict)
    checksum: str = ""

    @property
    def keys_per_s(self) -> float:
        return self.keys_written / self.seconds if self.seconds > 0 else 0.0


class BadRecords(PublishError):
    """The records are invalid (bad kind, id or value, an id twice); the message names the record."""


class _Group:
    """One hash tag's records of a chunk: key -> value, and their packed RESP bytes (3 pieces a key)."""
    __slots__ = ("values", "resp")

    def __init__(self) -> None:
        self.values: Dict[str, bytes] = {}
        self.resp: List[bytes] = []


def _round_trip(r: redis.Redis, payload: bytes, n_replies: int) -> List[Any]:
    """Send ``payload`` (packed commands) on one connection of ``r`` and read ``n_replies`` replies.

    Uses ``r``'s retry policy like its pipelines do: after a connection error or
    timeout the connection is dropped and the whole payload is sent again, so the
    commands must be safe to repeat (MSETNX is, see :meth:`_Loader._recheck`). A
    reply that is an error raises ``redis.ResponseError``; the connection, with
    replies still unread, is then dropped."""
    pool = r.connection_pool
    conn = r.connection or pool.get_connection()

    def attempt() -> List[Any]:
        conn.send_packed_command([payload])
        return [conn.read_response() for _ in range(n_replies)]

    def failed(error: Exception) -> None:
        conn.disconnect()

    try:
        return conn.retry.call_with_retry(attempt, failed)
    except BaseException:
        conn.disconnect()
        raise
    finally:
        if r.connection is None:
            pool.release(conn)


class _Loader:
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
        self.rng = random.Random(version)
        self.seen = 0

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
        return self.legacy_checksum if stored and _is_legacy_checksum(stored) else self.checksum

    def run(self, records: Iterable[Sequence[Record]], write: bool, legacy_checksum: bool = False) -> None:
        """Read every chunk; ``write``: load it; ``legacy_checksum``: also compute :attr:`legacy_checksum`."""
        t0 = last_log = time.monotonic()
        if legacy_checksum:
            self.legacy_sum64 = 0
        for chunk_no, chunk in enumerate(records):
            groups = self._prepare(chunk_no, chunk, write)
            if legacy_checksum:
                self._legacy_sum(chunk)
            if write:
                self._write(groups)
                if self.progress is not None:
                    self.progress(self.keys_written)
            if self.lock is not None:
                self.lock.refresh()
            now = time.monotonic()
            if now - last_log >= LOG_EVERY_S:
                last_log = now
                log.info("publish %s: %s %d keys (%.1f MB) in %.1f s", self.version,
                         "wrote" if write else "checked", self.seen, self.n_bytes / 1e6, now - t0)

    def _prepare(self, chunk_no: int, chunk: Sequence[Record], pack: bool = True) -> Dict[str, "_Group"]:
        """Validate one chunk and group its keys by hash tag (one slot per MSETNX); ``pack``: also
        build each record's RESP bytes (``$len key $len value``) for :meth:`_write`.

        The per-record work is inlined: it runs for every key of a publish."""
        version = self.version
        key_of = self.ks.key
        groups: Dict[str, _Group] = {}
        counts, sample, size, rand = self.counts, self.sample, self.sample_size, self.rng.random
        seen, n_bytes, sum1, sum2 = self.seen, self.n_bytes, self.sum1, self.sum2
        for pos, rec in enumerate(chunk):
            try:
                kind, id_, value = rec
                if kind not in counts:
                    raise ValueError(f"kind {kind!r} is not one of {KINDS}")
                if not (id_.__class__ is str and 0 < len(id_) <= MAX_ID_LENGTH and id_.isprintable()):
                    check_id(id_, "id")
                if value.__class__ is not bytes:
                    raise ValueError(f"value must be bytes (encode it with serving.codec), "
                                     f"got {type(value).__name__}")
            except (TypeError, ValueError) as e:
                raise BadRecords(f"publish of version {version}: record {pos} of chunk {chunk_no} is invalid "
                                 f"({e}): {rec!r:.160}. Nothing was switched and the loaded keys were deleted; "
                                 "fix the input and rerun") from None
            key = key_of(version, kind, id_)
            # the hash tag as Redis Cluster reads it: from the first { to the next }
            open_ = key.find("{")
            close = key.find("}", open_ + 1) if open_ >= 0 else -1
            tag = key[open_ + 1:close] if close > open_ + 1 else key
            group = groups.get(tag)
            if group is None:
                group = groups[tag] = _Group()
            elif key in group.values:
                raise BadRecords(f"publish of version {version}: chunk {chunk_no} holds {KIND_NAMES[kind]} "
                                 f"id {id_!r} twice; each id must appear once. Nothing was switched and the loaded "
                                 "keys were deleted")
            group.values[key] = value
            if pack:
                key_bytes = key.encode("utf-8")
                group.resp += (b"$%d\r\n%b\r\n$%d\r\n" % (len(key_bytes), key_bytes, len(value)), value, _CRLF)
            counts[kind] += 1
            n_bytes += len(value)
            # ids are printable (no \0), so kind \0 id \0 value is unambiguous
            h = crc32(value, crc32(f"{kind}\0{id_}\0".encode("utf-8")))
            sum1 += h
            sum2 += h * h
            seen += 1
            if len(sample) < size:
                sample.append((key, value))
            elif size:
                j = int(rand() * seen)  # reservoir sampling: keep each record with probability size/seen
                if j < size:
                    sample[j] = (key, value)
        self.seen, self.n_bytes, self.sum1, self.sum2 = seen, n_bytes, sum1 & _MASK64, sum2 & _MASK64
        return groups

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

    def _write(self, groups: Dict[str, "_Group"]) -> None:
        """MSETNX per hash tag, about ``batch_keys`` keys per round trip.

        MSETNX rather than MSET: a key that already exists means the same id came
        twice in different chunks (caught here instead of silently overwritten),
        or that a round trip was sent again after a dropped connection (then the
        values are ours and the part is written again)."""
        header = b"*%d\r\n$6\r\nMSETNX\r\n"
        step = self.batch_keys
        batch: List[bytes] = []
        parts: List[Dict[str, bytes]] = []
        pending = 0
        for group in groups.values():
            values = group.values
            if len(values) <= step:
                parts.append(values)
                batch.append(header % (2 * len(values) + 1))
                batch += group.resp
                pending += len(values)
            else:
                keys = list(values)
                for i in range(0, len(keys), step):
                    part = {k: values[k] for k in keys[i:i + step]}
                    parts.append(part)
                    batch.append(header % (2 * len(part) + 1))
                    batch += group.resp[3 * i:3 * (i + len(part))]
                    pending += len(part)
                    if pending >= step:
                        self._flush(batch, parts)
                        batch, parts, pending = [], [], 0
            if pending >= step:
                self._flush(batch, parts)
                batch, parts, pending = [], [], 0
        if parts:
            self._flush(batch, parts)

    def _flush(self, batch: List[bytes], parts: List[Dict[str, bytes]]) -> None:
        """Send the packed commands in one buffer, read one reply per part; then recheck refused parts."""
        payload = b"".join(batch)
        results = _round_trip(self.r, payload, len(parts))
        for part, ok in zip(parts, results):
            if not ok:
                self._recheck(part)
            self.keys_written += len(part)

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


def _is_legacy_checksum(checksum: str) -> bool:
    """Whether ``checksum`` has the format of publishers before ``crc1`` (``<16 hex>-<records>``)."""
    head, _, count = checksum.partition("-")
    return len(head) == 16 and count.isdigit() and all(c in "0123456789abcdef" for c in head)


def _check_args(version: str, metadata: Mapping[str, Any], expected: Optional[Mapping[str, int]],
                batch_keys: int, keep: int, sample: int, base: Optional[str]) -> None:
    check_version(version)
    if base is not None:
        check_version(base)
        if base == version:
            raise PublishError(f"patch {version} cannot be its own base; name the full version it updates")
    clash = RESERVED_META & set(metadata)
    if clash:
        raise ValueError(f"metadata may not set {sorted(clash)}: the publisher writes those")
    unknown = set(expected or {}) - set(KINDS)
    if unknown:
        raise ValueError(f"expected counts name unknown kinds {sorted(unknown)}; kinds are {KINDS}")
    if batch_keys < 1 or keep < 1 or sample < 0:
        raise ValueError(f"need batch_keys >= 1, keep >= 1 and sample >= 0; got {batch_keys}, {keep}, {sample}")


def publish_version(r: redis.Redis, ks: KeySpace, version: str, records: Iterable[Sequence[Record]],
                    metadata: Mapping[str, Any], expected: Optional[Mapping[str, int]] = None,
                    batch_keys: int = 10_000, keep: int = 3, progress: Optional[Callable[[int], None]] = None,
                    sample: int = 100, verify_fn: Optional[VerifyFn] = None,
                    lock_ttl: float = 120.0, base: Optional[str] = None) -> PublishResult:
    """Load ``records`` as ``version``, verify, switch readers to it, prune old versions.

    Args:
        r: client (see :func:`serving.connection.connect`).
        ks: key space (namespace, shards).
        version: id such as ``20261126-ab12cd34``.
        records: iterable of chunks of ``(kind, id, value_bytes)``.
        metadata: stored in the version's meta hash (model_version, run_id, run_date, ...).
        expected: records per kind that must have been written, e.g. ``{"u": 1000}``.
        batch_keys: keys per pipelined round trip.
        keep: complete versions to keep, the new one included (>= 2 lets a
            reader that read the pointer just before a switch finish its lookup,
            and leaves one to roll back to).
        progress: called with the number of keys written after every chunk.
        sample: keys kept by reservoir sampling and read back before the switch.
        verify_fn: ``fn(r, ks, version)`` returning a problem description or
            None; called after loading, before the switch.
        lock_ttl: seconds the publish lock lives without a refresh (one per chunk).
        base: publish a *patch* over this complete full version: ``records`` are
            only what changed (any kind may have none), and readers fall back to
            ``base`` for every record the patch lacks. ``keep`` counts patches
            as versions; the base of a kept version is always kept.

    Raises:
        PublishError: invalid input, verification failed, redis failed, the
            version id is taken by other content (or another base), or ``base``
            is missing, incomplete, a patch itself, or sharded otherwise.
            Unless the message says otherwise, readers stay on the previous version.
    """
    _check_args(version, metadata, expected, batch_keys, keep, sample, base)
    where = describe(r)
    t0 = time.monotonic()
    previous: Optional[str] = None
    loader: Optional[_Loader] = None
    switched = False
    try:
        previous = current_version(r, ks)
        with PublishLock(r, ks, f"publish {version}", ttl=lock_ttl) as lock:
            if base is not None:
                _check_base(r, ks, version, base, where)
            meta = read_meta(r, ks, version)
            loader = _Loader(r, ks, version, batch_keys, sample, progress, lock)
            if is_complete(meta):
                if base_of(meta) != base:
                    raise PublishError(
                        f"version {version} is already published on {where} as {_kind(base_of(meta))}, not as "
                        f"{_kind(base)}; publish under a new version id, or delete_version {version} first (not "
                        "possible while readers use it)")
                stored = meta.get("checksum")
                loader.run(records, write=False, legacy_checksum=bool(stored) and _is_legacy_checksum(stored))
                if loader.checksum_like(stored) != stored:
                    raise PublishError(
                        f"version {version} is already published on {where} with other content (checksum "
                        f"{stored} there, {loader.checksum_like(stored)} now); publish under a new version id, "
                        f"or delete_version {version} first (not possible while readers use it)")
                switched = True
                mark_current(r, ks, version)
                deleted = prune(r, ks, keep)
                log.info("version %s was already complete with the same content; readers now on it", version)
                return PublishResult(version, 0, 0, time.monotonic() - t0, True, deleted, previous,
                                     dict(loader.counts), stored)
            if version == previous:
                raise PublishError(f"version {version} is what readers use on {where}, but its metadata "
                                   f"{ks.meta(version)} does not say complete=1 (deleted by hand?); publishing "
                                   "it again would first delete the live keys. Publish under a new version id")
            if meta or r.sismember(ks.registry, version):
                log.warning("version %s has keys from an earlier publish that did not finish; deleting them", version)
                delete_version_keys(r, ks, version)
            r.sadd(ks.registry, version)  # before any data key: cleanup can always find this version
            started = datetime.now(timezone.utc).isoformat(timespec="seconds")
            r.hset(ks.meta(version), mapping=encode_meta({**metadata, "complete": 0, "started_at": started,
                                                          "base": base}))
            try:
                loader.run(records, write=True)
            except BadRecords:
                _discard(r, ks, version)
                raise
            problems = loader.verify(expected, verify_fn)
            if problems:
                _discard(r, ks, version)
                raise PublishError(
                    f"publish of version {version} to {where} failed verification: {'; '.join(problems)}. "
                    f"Readers stay on {previous or 'no version'} ({ks.current} was not touched); the loaded "
                    "keys were deleted. Fix the input and rerun")
            # one EXISTS per key: on Redis Cluster the patch's and the base's keys are in different slots
            if not any(r.exists(ks.fallback(v, "global")) for v in (version, base) if v):
                log.warning("version %s has no 'global' fallback list: users without a list get nothing", version)
            r.hset(ks.meta(version), mapping=encode_meta({  # one HSET: complete=1 comes with everything else
                "version": version, "namespace": ks.namespace, "n_shards": ks.n_shards, "base": base,
                "checksum": loader.checksum, "keys": loader.keys_written, "bytes": loader.n_bytes,
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                **{f"count_{k}": n for k, n in loader.counts.items()}, "complete": 1}))
            switched = True
            mark_current(r, ks, version)
            deleted = prune(r, ks, keep)
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as e:
        raise PublishError(_failure_message(e, where, version, previous, loader, switched, ks)) from e
    seconds = time.monotonic() - t0
    log.info("published %s to %s: %d keys, %.1f MB in %.1f s (%.0f keys/s); readers switched from %s; "
             "deleted %s", version, where, loader.keys_written, loader.n_bytes / 1e6, seconds,
             loader.keys_written / max(seconds, 1e-9), previous, deleted or "nothing")
    return PublishResult(version, loader.keys_written, loader.n_bytes, seconds, False, deleted, previous,
                         dict(loader.counts), loader.checksum)


def _discard(r: redis.Redis, ks: KeySpace, version: str) -> None:
    """Best effort: delete a version that failed verification (never the current one)."""
    if current_version(r, ks) == version:
        return
    try:
        delete_version_keys(r, ks, version)
    except (redis.ConnectionError, redis.TimeoutError) as e:
        log.warning("could not delete the failed version %s (%s); the next publish prunes it", version, e)


def _kind(base: Optional[str]) -> str:
    return f"a patch over {base}" if base else "a full version"


def _check_base(r: redis.Redis, ks: KeySpace, version: str, base: str, where: str) -> None:
    """Raise PublishError unless ``base`` can carry the patch ``version``: complete, itself a full
    version (patches do not stack: a reader falls back one level only), same ``n_shards``."""
    meta = read_meta(r, ks, base)
    if not meta:
        raise PublishError(f"patch {version}: its base version {base} does not exist on {where} (no metadata "
                           f"{ks.meta(base)}). Publish the full version {base} first, or name an existing one "
                           "(`reco publish --list` shows them)")
    if not is_complete(meta):
        raise PublishError(f"patch {version}: its base version {base} on {where} is not complete (its publish did "
                           f"not finish). Rerun the publish of {base}, then the patch")
    if base_of(meta):
        raise PublishError(f"patch {version}: its base {base} is itself a patch (over {base_of(meta)}); a patch "
                           f"must sit on a full (nightly) version. Publish it with base={base_of(meta)}, holding "
                           f"what {base} holds too, or publish a full version")
    if meta.get("n_shards") != ks.n_shards:
        raise PublishError(f"patch {version}: its base {base} on {where} was published with n_shards="
                           f"{meta.get('n_shards')}, this publisher uses n_shards={ks.n_shards}; a patch must shard "
                           "ids as its base does. Publish the patch with the base's n_shards")


def _failure_message(e: Exception, where: str, version: str, previous: Optional[str],
                     loader: Optional[_Loader], switched: bool, ks: KeySpace) -> str:
    written = loader.keys_written if loader else 0
    what = (f"redis refused a command ({e})" if isinstance(e, redis.ResponseError)
            else f"the connection to redis at {where} failed ({type(e).__name__}: {e})")
    if "OOM" in str(e):
        what += "; redis is out of memory: lower keep, raise maxmemory, or delete old versions"
    if switched:
        return (f"publish of version {version}: {what} after readers were switched to it; finishing the versions "
                f"list and pruning did not complete. Readers use {version}. Rerun to finish (publishing is "
                "idempotent)")
    return (f"publish of version {version} to {where} failed after {written} of its keys were written: {what}. "
            f"Readers are still on version {previous or '(none)'}: {ks.current} was not touched. Check that redis "
            "is up (`reco redis start` starts the embedded one) and rerun: publishing is idempotent and deletes "
            "the partial version first")
