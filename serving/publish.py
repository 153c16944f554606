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
from serving.versions import (PublishError, PublishLock, current_version, delete_version,  # noqa: F401
                              delete_version_keys, is_complete, list_versions, mark_current, prune,
                              read_meta, rollback)

__all__ = ["BadRecords", "PublishError", "PublishResult", "Record", "delete_version", "list_versions",
           "publish_version", "rollback"]

log = logging.getLogger(__name__)

Record = Tuple[str, str, bytes]
VerifyFn = Callable[[redis.Redis, KeySpace, str], Optional[str]]

RESERVED_META = {"version", "namespace", "n_shards", "complete", "checksum", "keys", "bytes", "created_at",
                 "started_at", "count_u", "count_s", "count_i", "count_f"}
LOG_EVERY_S = 5.0
_MASK64 = (1 << 64) - 1


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


class _Loader:
    """Reads the chunks once: validates, counts, checksums, samples, and (unless dry) writes them."""

    def __init__(self, r: redis.Redis, ks: KeySpace, version: str, batch_keys: int, sample: int,
                 progress: Optional[Callable[[int], None]], lock: Optional[PublishLock]) -> None:
        self.r, self.ks, self.version = r, ks, version
        self.batch_keys, self.sample_size, self.progress, self.lock = batch_keys, sample, progress, lock
        self.counts: Dict[str, int] = {k: 0 for k in KINDS}
        self.n_bytes = 0
        self.keys_written = 0  # acknowledged by redis
        self.sum64 = 0  # order-independent checksum: sum of per-record hashes (sha256 of key \0 value, 64 bits)
        self.sample: List[Tuple[str, bytes]] = []
        self.rng = random.Random(version)
        self.seen = 0

    @property
    def checksum(self) -> str:
        return f"{self.sum64:016x}-{self.seen}"

    def run(self, records: Iterable[Sequence[Record]], write: bool) -> None:
        t0 = last_log = time.monotonic()
        for chunk_no, chunk in enumerate(records):
            groups = self._prepare(chunk_no, chunk)
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

    def _prepare(self, chunk_no: int, chunk: Sequence[Record]) -> Dict[str, Dict[str, bytes]]:
        """Validate one chunk and group its keys by hash tag (one slot per MSETNX).

        The per-record work is inlined: it runs for every key of a publish."""
        ns, version, n_shards = self.ks.namespace, self.version, self.ks.n_shards
        groups: Dict[str, Dict[str, bytes]] = {}
        counts, sample, size, rand = self.counts, self.sample, self.sample_size, self.rng.random
        seen, n_bytes, sum64 = self.seen, self.n_bytes, self.sum64
        sha256, from_bytes = hashlib.sha256, int.from_bytes
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
            key_bytes = id_.encode("utf-8")
            tag = f"{version}:f" if kind == "f" else f"{version}:{crc32(key_bytes) % n_shards}"
            key = f"{ns}:{{{tag}}}:{kind}:{id_}"
            group = groups.get(tag)
            if group is None:
                group = groups[tag] = {}
            elif key in group:
                raise BadRecords(f"publish of version {version}: chunk {chunk_no} holds {KIND_NAMES[kind]} "
                                 f"id {id_!r} twice; each id must appear once. Nothing was switched and the loaded "
                                 "keys were deleted")
            group[key] = value
            counts[kind] += 1
            n_bytes += len(value)
            # the key holds kind and id and has no \0 (printable); sha256 is the fastest hashlib hash here
            sum64 = (sum64 + from_bytes(sha256(key.encode("utf-8") + b"\0" + value).digest()[:8], "little")) & _MASK64
            seen += 1
            if len(sample) < size:
                sample.append((key, value))
            elif size:
                j = int(rand() * seen)  # reservoir sampling: keep each record with probability size/seen
                if j < size:
                    sample[j] = (key, value)
        self.seen, self.n_bytes, self.sum64 = seen, n_bytes, sum64
        return groups

    def _write(self, groups: Dict[str, Dict[str, bytes]]) -> None:
        """MSETNX per hash tag, ``batch_keys`` keys per pipelined round trip.

        MSETNX rather than MSET: a key that already exists means the same id came
        twice in different chunks (caught here instead of silently overwritten),
        or that redis-py resent a pipeline after a dropped connection (then the
        values are ours and the part is written again)."""
        pipe = self.r.pipeline(transaction=False)
        parts: List[Dict[str, bytes]] = []
        pending = 0
        for group in groups.values():
            items = list(group.items())
            for i in range(0, len(items), self.batch_keys):
                part = dict(items[i:i + self.batch_keys])
                pipe.msetnx(part)
                parts.append(part)
                pending += len(part)
                if pending >= self.batch_keys:
                    self._flush(pipe, parts)
                    parts, pending = [], 0
        if parts:
            self._flush(pipe, parts)

    def _flush(self, pipe: Any, parts: List[Dict[str, bytes]]) -> None:
        results = pipe.execute()
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


def _check_args(version: str, metadata: Mapping[str, Any], expected: Optional[Mapping[str, int]],
                batch_keys: int, keep: int, sample: int) -> None:
    check_version(version)
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
                    lock_ttl: float = 120.0) -> PublishResult:
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

    Raises:
        PublishError: invalid input, verification failed, redis failed, or the
            version id is taken by other content. Unless the message says
            otherwise, readers stay on the previous version.
    """
    _check_args(version, metadata, expected, batch_keys, keep, sample)
    where = describe(r)
    t0 = time.monotonic()
    previous: Optional[str] = None
    loader: Optional[_Loader] = None
    switched = False
    try:
        previous = current_version(r, ks)
        with PublishLock(r, ks, f"publish {version}", ttl=lock_ttl) as lock:
            meta = read_meta(r, ks, version)
            loader = _Loader(r, ks, version, batch_keys, sample, progress, lock)
            if is_complete(meta):
                loader.run(records, write=False)
                if loader.checksum != meta.get("checksum"):
                    raise PublishError(
                        f"version {version} is already published on {where} with other content (checksum "
                        f"{meta.get('checksum')} there, {loader.checksum} now); publish under a new version id, "
                        f"or delete_version {version} first (not possible while readers use it)")
                switched = True
                mark_current(r, ks, version)
                deleted = prune(r, ks, keep)
                log.info("version %s was already complete with the same content; readers now on it", version)
                return PublishResult(version, 0, 0, time.monotonic() - t0, True, deleted, previous,
                                     dict(loader.counts), loader.checksum)
            if version == previous:
                raise PublishError(f"version {version} is what readers use on {where}, but its metadata "
                                   f"{ks.meta(version)} does not say complete=1 (deleted by hand?); publishing "
                                   "it again would first delete the live keys. Publish under a new version id")
            if meta or r.sismember(ks.registry, version):
                log.warning("version %s has keys from an earlier publish that did not finish; deleting them", version)
                delete_version_keys(r, ks, version)
            r.sadd(ks.registry, version)  # before any data key: cleanup can always find this version
            started = datetime.now(timezone.utc).isoformat(timespec="seconds")
            r.hset(ks.meta(version), mapping=encode_meta({**metadata, "complete": 0, "started_at": started}))
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
            if not r.exists(ks.fallback(version, "global")):
                log.warning("version %s has no 'global' fallback list: users without a list get nothing", version)
            r.hset(ks.meta(version), mapping=encode_meta({  # one HSET: complete=1 comes with everything else
                "version": version, "namespace": ks.namespace, "n_shards": ks.n_shards,
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
