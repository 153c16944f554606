"""Pointing readers at a version: the switch at the end of a publish (:func:`mark_current`) and
rollback to the complete version before the current one (:func:`rollback`)."""
from __future__ import annotations

import logging
from typing import Tuple

import redis

from serving.connection import describe
from serving.keys import KeySpace
from serving.publish_lock import PublishError, PublishLock
from serving.versions import _lrange, current_version, is_usable

log = logging.getLogger(__name__)

ROLLED_BACK_KEEP = 20


def mark_current(r: redis.Redis, ks: KeySpace, version: str) -> None:
    """Switch readers to ``version`` (one SET) and put it at the head of the versions list, all or nothing.

    One MULTI/EXEC transaction: a crash or a lost connection leaves the old state or the new one,
    never readers on a version missing from ``{ns}:versions`` (the next publish's prune would delete
    it, and with it the version to roll back to). The commands are also ordered so that each prefix
    is safe on its own (listed at the head first, its older entries removed after, then the pointer):
    on Redis Cluster the control keys lie in different slots, no transaction can span them, and the
    commands go one by one. Call it holding the publish lock (it reads the list first)."""
    listed = _lrange(r, ks.versions).count(version)
    cluster = isinstance(r, redis.RedisCluster)
    pipe = r if cluster else r.pipeline(transaction=True)
    pipe.lpush(ks.versions, version)
    if listed:
        pipe.lrem(ks.versions, -listed, version)   # the older entries: nearer the tail than the new head
    pipe.set(ks.current, version)
    pipe.lrem(ks.rolled_back, 0, version)
    if not cluster:
        pipe.execute()


def rollback(r: redis.Redis, ks: KeySpace) -> Tuple[str, str]:
    """Point readers at the complete version before the current one. Returns (from, to).

    The rolled-back version leaves ``{ns}:versions`` (a second rollback goes one
    further back) and is recorded in ``{ns}:rolled_back``; its keys stay until
    the next publish prunes them.

    Raises:
        PublishError: nothing is published, or there is no older complete version.
    """
    with PublishLock(r, ks, "rollback", ttl=30.0):
        current = current_version(r, ks)
        if current is None:
            raise PublishError(f"nothing to roll back on {describe(r)}: {ks.current} is not set (no version "
                               f"was ever published in namespace {ks.namespace!r})")
        versions = _lrange(r, ks.versions)
        older = versions[versions.index(current) + 1:] if current in versions else versions
        # a patch is a target only with its base (prune keeps bases, so this is a guard against hand edits)
        target = next((v for v in older if v != current and is_usable(r, ks, v)), None)
        if target is None:
            raise PublishError(f"cannot roll back from {current} on {describe(r)}: no older complete version "
                               f"(with a complete base, for a patch) is kept (versions list: {versions}); publish "
                               "a fixed version instead, or raise keep so that more versions stay")
        r.set(ks.current, target)
        r.lrem(ks.versions, 0, current)
        r.lpush(ks.rolled_back, current)
        r.ltrim(ks.rolled_back, 0, ROLLED_BACK_KEEP - 1)
    log.warning("rolled back %s: readers now on %s (was %s)", describe(r), target, current)
    return current, target
