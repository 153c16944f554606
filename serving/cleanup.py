"""Deleting published versions' keys: one version's (SCAN MATCH, UNLINK per hash slot), pruning
beyond ``keep`` after a publish (bases of kept patches stay), and deleting one version on request
(refused for the current one and for a base a kept patch reads from)."""
from __future__ import annotations

import logging
from typing import Dict, List

import redis

from serving.connection import describe
from serving.keys import KeySpace, check_version
from serving.publish_lock import PublishError, PublishLock
from serving.versions import _lrange, current_version, read_bases

log = logging.getLogger(__name__)

SCAN_COUNT = 2000
UNLINK_BATCH = 500


def _hash_tag(key: bytes) -> bytes:
    start = key.find(b"{")
    end = key.find(b"}", start + 1)
    return key[start + 1:end] if start >= 0 and end > start + 1 else key


def delete_version_keys(r: redis.Redis, ks: KeySpace, version: str) -> int:
    """UNLINK every key of ``version`` found by SCAN MATCH (metadata last), and drop it from the
    registry. Returns the number of keys removed. Never KEYS, never one huge DEL."""
    meta_key = ks.meta(version).encode()
    groups: Dict[bytes, List[bytes]] = {}
    deleted = 0

    def flush(tag: bytes) -> int:
        keys = groups.pop(tag)
        return int(r.unlink(*keys))

    for key in r.scan_iter(match=ks.version_pattern(version), count=SCAN_COUNT):
        if key == meta_key:
            continue
        tag = _hash_tag(key)  # one slot per UNLINK, as Redis Cluster requires
        groups.setdefault(tag, []).append(key)
        if len(groups[tag]) >= UNLINK_BATCH:
            deleted += flush(tag)
    for tag in list(groups):
        deleted += flush(tag)
    deleted += int(r.unlink(meta_key))
    r.srem(ks.registry, version)
    log.info("deleted %d keys of version %s", deleted, version)
    return deleted


def prune(r: redis.Redis, ks: KeySpace, keep: int) -> List[str]:
    """Delete complete versions beyond the newest ``keep`` and every registered version that is
    neither listed nor current (rolled back, or left by a killed publish). Returns them.

    The base of a kept version (the newest ``keep`` and the current one) is kept too, however
    old: with hourly patches the nightly base soon falls beyond ``keep``, and the patches read
    every record they lack from it."""
    current = current_version(r, ks)
    versions = _lrange(r, ks.versions)
    kept = set(versions[:keep]) | ({current} if current else set())
    kept |= {base for base in read_bases(r, ks, kept).values() if base}
    registered = {v.decode("utf-8") for v in r.smembers(ks.registry)}
    doomed = [v for v in versions[keep:] if v not in kept]
    doomed += sorted(registered - set(versions) - kept)
    for v in doomed:
        r.lrem(ks.versions, 0, v)  # out of the list first: nobody rolls back onto a half-deleted version
        # a rolled-back version stays in {ns}:rolled_back (trimmed to ROLLED_BACK_KEEP) once its keys are
        # gone: a later retry of its publish must still not bring it back (only restore does)
        delete_version_keys(r, ks, v)
    if doomed:
        log.info("pruned versions %s (keeping %d)", doomed, keep)
    return doomed


def delete_version(r: redis.Redis, ks: KeySpace, version: str) -> int:
    """Delete one version's keys (and list entries). Returns keys deleted.

    Refuses the current version, and the base of the current version or of a
    patch still in ``{ns}:versions`` (a rollback target): those read every record
    they lack from it."""
    check_version(version)
    with PublishLock(r, ks, f"delete {version}", ttl=60.0):
        current = current_version(r, ks)
        if current == version:
            raise PublishError(f"version {version} is what readers use now ({ks.current} on {describe(r)}); "
                               "publish or roll back to another version first")
        kept = _lrange(r, ks.versions) + ([current] if current else [])
        patches = sorted(v for v, base in read_bases(r, ks, kept).items() if base == version)
        if patches:
            which = ", ".join(f"{p} (current)" if p == current else p for p in patches)
            raise PublishError(f"version {version} on {describe(r)} is the base of the patch(es) {which}: they "
                               "answer every record they lack from it. Publish a new full version first (the "
                               f"publish after that prunes {version} once no kept patch sits on it), or delete "
                               "those patches first")
        r.lrem(ks.versions, 0, version)
        r.lrem(ks.rolled_back, 0, version)
        return delete_version_keys(r, ks, version)
