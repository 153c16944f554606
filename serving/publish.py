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

The loader (:mod:`serving.loader`) writes MSETNX commands it packs itself (RESP
bytes, one buffer per round trip) on one connection of the client's pool, with
the client's retry policy: redis-py's pipeline spends more time building
commands than redis spends running them.

A *patch* (``base=<a complete full version>``) goes through the same steps but
holds only what changed since its base, e.g. the lists of the users active in
the last hour, all fallback lists and the details of new items. Readers pointed
at a patch read each record from the patch and, where it has none, from the
base (see :mod:`serving.client`); the patch's metadata records ``base``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import redis
from redis.exceptions import RedisClusterException

from core.redact import redact_text
from serving.cleanup import delete_version, delete_version_keys, prune  # noqa: F401  (delete_version: __all__)
from serving.codec import encode_meta
from serving.connection import describe
from serving.keys import KINDS, KeySpace, check_version
from serving.loader import BadRecords, Loader, Record, VerifyFn, is_legacy_checksum
from serving.publish_lock import PublishError, PublishLock
from serving.switch import mark_current, rollback  # noqa: F401  (rollback: __all__)
from serving.versions import (base_of, current_version, is_complete, list_versions,  # noqa: F401  (in __all__)
                              moves_back, read_meta, rolled_back_versions)

__all__ = ["BadRecords", "PublishError", "PublishResult", "Record", "delete_version", "list_versions",
           "publish_version", "rollback"]

log = logging.getLogger(__name__)


RESERVED_META = {"version", "namespace", "n_shards", "complete", "checksum", "keys", "bytes", "created_at",
                 "started_at", "count_u", "count_s", "count_i", "count_f", "base"}
LOG_EVERY_S = 5.0


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
    held: str = ""          # why readers were left where they are (nothing loaded, nothing switched)

    @property
    def keys_per_s(self) -> float:
        return self.keys_written / self.seconds if self.seconds > 0 else 0.0


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
                    lock_ttl: float = 120.0, base: Optional[str] = None, restore: bool = False) -> PublishResult:
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
        lock_ttl: seconds the publish lock outlives a publisher that died without releasing it;
            while this one runs, a heartbeat thread refreshes it every ``lock_ttl / 3`` seconds
            (however long ``records`` takes to yield a chunk), and a lock found taken by another
            owner stops the publish before anything more is written or switched.
        base: publish a *patch* over this complete full version: ``records`` are
            only what changed (any kind may have none), and readers fall back to
            ``base`` for every record the patch lacks. ``keep`` counts patches
            as versions; the base of a kept version is always kept.
        restore: publish ``version`` even though it was rolled back. Without it a
            rolled-back version is not brought back (a retried task after
            ``reco publish --rollback`` must not undo the rollback).

    Readers never move backwards in data time: when ``metadata`` carries ``data_day``
    (and ``hour_end`` for a patch) and readers are on a version that is later by
    :func:`serving.versions.moves_back` (a backfill, a retried old hour), nothing is
    loaded or switched, and the result says why in ``held``. So is a rolled-back
    version without ``restore``.

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
    loader: Optional[Loader] = None
    switched = False
    try:
        previous = current_version(r, ks)
        with PublishLock(r, ks, f"publish {version}", ttl=lock_ttl) as lock:
            if base is not None:
                _check_base(r, ks, version, base, where)
            previous = current_version(r, ks)      # under the lock: nobody moves it until we are done
            held = _hold_reason(r, ks, version, previous, metadata, restore)
            if held:
                log.warning("not publishing %s: %s", version, held)
                return PublishResult(previous or version, 0, 0, time.monotonic() - t0, True, [], previous,
                                     held=held)
            meta = read_meta(r, ks, version)
            loader = Loader(r, ks, version, batch_keys, sample, progress, lock)
            if is_complete(meta):
                if base_of(meta) != base:
                    raise PublishError(
                        f"version {version} is already published on {where} as {_kind(base_of(meta))}, not as "
                        f"{_kind(base)}; publish under a new version id, or delete_version {version} first (not "
                        "possible while readers use it)")
                stored = meta.get("checksum")
                loader.run(records, write=False, legacy_checksum=bool(stored) and is_legacy_checksum(stored))
                if loader.checksum_like(stored) != stored:
                    raise PublishError(
                        f"version {version} is already published on {where} with other content (checksum "
                        f"{stored} there, {loader.checksum_like(stored)} now); publish under a new version id, "
                        f"or delete_version {version} first (not possible while readers use it)")
                lock.refresh()       # still ours, or stop here: never switch under another publisher
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
            lock.refresh()           # still ours, or stop here: never switch under another publisher
            switched = True
            mark_current(r, ks, version)
            deleted = prune(r, ks, keep)
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, RedisClusterException) as e:
        # RedisClusterException (no RedisError): a Redis Cluster none of whose nodes answers any more
        raise PublishError(_failure_message(e, where, version, previous, loader, switched, ks)) from e
    seconds = time.monotonic() - t0
    log.info("published %s to %s: %d keys, %.1f MB in %.1f s (%.0f keys/s); readers switched from %s; "
             "deleted %s", version, where, loader.keys_written, loader.n_bytes / 1e6, seconds,
             loader.keys_written / max(seconds, 1e-9), previous, deleted or "nothing")
    return PublishResult(version, loader.keys_written, loader.n_bytes, seconds, False, deleted, previous,
                         dict(loader.counts), loader.checksum)


def _hold_reason(r: redis.Redis, ks: KeySpace, version: str, current: Optional[str], metadata: Mapping[str, Any],
                 restore: bool) -> str:
    """Why ``version`` must not become current now ("" when it may)."""
    if version != current and not restore and version in rolled_back_versions(r, ks):
        return (f"it was rolled back (`reco publish --rollback`); readers stay on {current}. Publish it with "
                "restore (`reco publish --date D --restore`) to bring it back on purpose")
    if current and version != current:
        cur_meta = read_meta(r, ks, current)
        if moves_back(cur_meta, dict(metadata)):
            return (f"readers are on {current} (data of {cur_meta.get('data_day')}"
                    f"{' up to ' + str(cur_meta.get('hour_end')) if cur_meta.get('hour_end') else ''}), later than "
                    f"{version} (data of {metadata.get('data_day')}"
                    f"{' up to ' + str(metadata.get('hour_end')) if metadata.get('hour_end') else ''}): a backfill "
                    "or a retried older run never moves readers back. `reco publish --rollback` moves them back "
                    "on purpose")
    return ""


def _discard(r: redis.Redis, ks: KeySpace, version: str) -> None:
    """Best effort: delete a version that failed verification (never the current one)."""
    if current_version(r, ks) == version:
        return
    try:
        delete_version_keys(r, ks, version)
    except (redis.ConnectionError, redis.TimeoutError, RedisClusterException) as e:
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
                     loader: Optional[Loader], switched: bool, ks: KeySpace) -> str:
    written = loader.keys_written if loader else 0
    check = "that redis is up (`reco redis start` starts the embedded one)"
    if isinstance(e, RedisClusterException):
        what = (f"the Redis Cluster at {where} could not be reached or could not route a command "
                f"({type(e).__name__}: {redact_text(str(e))})")
        check = ("that the cluster's nodes are up (`redis-cli -h HOST -p PORT cluster info` on each says "
                 "cluster_state:ok) and that redis.url names one of them")
    elif isinstance(e, redis.ResponseError):
        what = f"redis refused a command ({e})"
    else:
        what = f"the connection to redis at {where} failed ({type(e).__name__}: {e})"
    if "OOM" in str(e):
        what += "; redis is out of memory: lower keep, raise maxmemory, or delete old versions"
    if switched:
        return (f"publish of version {version}: {what} after readers were switched to it; finishing the versions "
                f"list and pruning did not complete. Readers use {version}. Rerun to finish (publishing is "
                "idempotent)")
    return (f"publish of version {version} to {where} failed after {written} of its keys were written: {what}. "
            f"Readers are still on version {previous or '(none)'}: {ks.current} was not touched. Check {check} "
            "and rerun: publishing is idempotent and deletes the partial version first")
