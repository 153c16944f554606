"""Forget one customer in every published version: their list's key and their id in a version's metadata.

A version's keys are written once by the publisher and never changed, except here: a customer who asked to be
forgotten loses their list (``{ns}:{<version>:<shard>}:u:<id>``) in every version Redis holds (full versions and
hourly patches, live, listed, rolled back or left half-loaded), and their id leaves ``sample_users`` in the
version's metadata. The metadata's counts and checksum are updated as the publisher would have written them
without that list (``count_u``, ``keys``, ``bytes``, the ``crc1`` checksum), so republishing the version from
tables that no longer hold the customer finds the same content and is a no-op.

Readers of other customers are not disturbed: nothing else changes, and no pointer moves. The customer's own
lookups answer the fallback list from then on (a patch falls back to its base, which has lost the list too).
It runs under the publish lock, so no publish loads a version while a customer is being forgotten in it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional
from zlib import crc32

import redis

from serving.codec import encode_meta
from serving.keys import KeySpace, check_id, glob_escape
from serving.cleanup import SCAN_COUNT
from serving.publish_lock import PublishLock
from serving.versions import _lrange, current_version, read_meta

log = logging.getLogger(__name__)

_MASK64 = (1 << 64) - 1


@dataclass
class ForgetResult:
    """What forgetting one customer changed: the keys removed and the versions whose metadata changed."""
    keys_removed: List[str] = field(default_factory=list)
    versions_updated: List[str] = field(default_factory=list)


def forget_user(r: redis.Redis, ks: KeySpace, user_id: str, lock_ttl: float = 60.0) -> ForgetResult:
    """Remove ``user_id``'s list from every version Redis holds and their id from each version's metadata.

    Idempotent: a second call finds nothing and changes nothing.

    Raises:
        ValueError: ``user_id`` cannot be an id (empty, too long, not printable).
        PublishError: another publish holds the lock (rerun when it is done).
    """
    check_id(user_id, "customer id")
    result = ForgetResult()
    with PublishLock(r, ks, "forget a customer", ttl=lock_ttl):
        current = current_version(r, ks)
        versions = ({v.decode("utf-8") for v in r.smembers(ks.registry)} | set(_lrange(r, ks.versions))
                    | set(_lrange(r, ks.rolled_back)) | ({current} if current else set()))
        for version in sorted(versions):
            meta = read_meta(r, ks, version)
            update: Dict[str, Any] = {}
            for key in _user_keys(r, ks, version, meta, user_id):
                value = r.get(key)
                if value is None:
                    continue
                r.unlink(key)
                result.keys_removed.append(key)
                update.update(_without_record(meta, user_id, value))
                meta.update(update)
            samples = str(meta.get("sample_users") or "")
            if user_id in samples.split(","):
                update["sample_users"] = ",".join(u for u in samples.split(",") if u != user_id)
            if update and meta:
                r.hset(ks.meta(version), mapping=encode_meta(update))
                result.versions_updated.append(version)
    log.info("forgot a customer in Redis: %d keys removed, metadata of %d versions updated",
             len(result.keys_removed), len(result.versions_updated))
    return result


def _user_keys(r: redis.Redis, ks: KeySpace, version: str, meta: Dict[str, Any], user_id: str) -> List[str]:
    """The key(s) the customer's list may have in ``version``. A complete version records its ``n_shards``,
    which fixes the key; one a publish left half-loaded may not, so its keys are searched (SCAN MATCH over
    that version only)."""
    n_shards: Optional[int] = meta.get("n_shards") if isinstance(meta.get("n_shards"), int) else None
    if n_shards:
        return [KeySpace(ks.namespace, n_shards).user(version, user_id)]
    pattern = ks.version_pattern(version) + glob_escape(f":u:{user_id}")
    return [k.decode("utf-8") for k in r.scan_iter(match=pattern, count=SCAN_COUNT)
            if k.decode("utf-8").endswith(f"}}:u:{user_id}")]


def _without_record(meta: Dict[str, Any], user_id: str, value: bytes) -> Dict[str, Any]:
    """The metadata fields a version would have had without the record ``("u", user_id, value)``."""
    out: Dict[str, Any] = {}
    for name, less in (("count_u", 1), ("keys", 1), ("bytes", len(value))):
        if isinstance(meta.get(name), int):
            out[name] = max(meta[name] - less, 0)
    checksum = str(meta.get("checksum") or "")
    if checksum.startswith("crc1:"):
        out["checksum"] = crc1_without(checksum, "u", user_id, value)
    elif checksum:
        # the pre-crc1 format (sha256 of key names): a republish of this old version no longer matches it
        log.warning("version %s has a checksum of the earlier format; left as it was", meta.get("version"))
    return out


def crc1_without(checksum: str, kind: str, id_: str, value: bytes) -> str:
    """A ``crc1:<sum h>-<sum h*h>-<records>`` checksum (serving.loader) less one record's share,
    ``h = crc32(kind \\0 id \\0 value)``."""
    sums = checksum[len("crc1:"):].split("-")
    if len(sums) != 3:
        raise ValueError(f"not a crc1 checksum: {checksum!r}")
    h = crc32(f"{kind}\0{id_}\0".encode("utf-8") + value)
    s1 = (int(sums[0], 16) - h) & _MASK64
    s2 = (int(sums[1], 16) - h * h) & _MASK64
    return f"crc1:{s1:016x}-{s2:016x}-{int(sums[2]) - 1}"
