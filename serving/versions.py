"""Managing published versions: the publish lock, listing, rollback, deletion and pruning.

A version is *complete* when its metadata hash says ``complete=1``; only
complete versions are ever put in ``{ns}:versions`` or behind ``{ns}:current``.
``{ns}:registry`` names every version that may still have keys (complete, rolled
back, or left half-loaded by a killed publish), so cleanup never needs KEYS.

Rollback points readers at the next older complete version, takes the
rolled-back one out of ``{ns}:versions`` (so a second rollback goes one further
back) and records it at the head of ``{ns}:rolled_back``. Its keys stay until
the next successful publish prunes them; publishing the same version id again
before that brings it back without reloading.

A *patch* (an hourly overlay) is a version whose metadata names a ``base``: a
complete full (nightly) version that readers fall back to for every record the
patch lacks. A patch is worthless without its base, so pruning always keeps the
bases of the versions it keeps, deleting a base that a kept patch or the
current version sits on is refused, and rollback only lands on a patch whose
base is complete.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any, Dict, Iterable, List, Optional, Tuple

import redis

from core.errors import RecoError
from serving import lock_owner
from serving.codec import decode_meta, maybe_decode_str
from serving.connection import describe
from serving.keys import KeySpace, check_version

log = logging.getLogger(__name__)

SCAN_COUNT = 2000
UNLINK_BATCH = 500
ROLLED_BACK_KEEP = 20

_REFRESH_LUA = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
                "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end")
_RELEASE_LUA = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
                "return redis.call('del', KEYS[1]) else return 0 end")
_TAKEOVER_LUA = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
                 "return redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3]) else return false end")


class PublishError(RecoError):
    """Publishing or managing versions failed; the message says which version readers are on
    and what to do."""


class PublishLock:
    """One publisher (or rollback/delete) at a time per namespace.

    The lock key holds the owner (see :mod:`serving.lock_owner`: host, pid, pid
    namespace, boot, start time) and a token, and expires after ``ttl`` seconds
    unless refreshed. While it is held, a daemon thread (the heartbeat) refreshes
    it every ``ttl / 3`` seconds, so a publisher that computes for minutes before
    its first chunk (a Spark shuffle) keeps it; the publisher also refreshes it
    after every chunk and calls :meth:`check` before writing and before switching,
    which raise once the lock is lost. So ``ttl`` is only how long a lock outlives
    a holder that died without releasing it.

    A lock whose owner surely no longer runs (a process of this very pid
    namespace that is gone, or this very process: one publish per process at a
    time) is taken over at once, so a rerun after a killed publish does not wait
    for the expiry; any other (another host, another container, an owner that
    cannot be told apart) is waited for.
    """

    def __init__(self, r: redis.Redis, ks: KeySpace, purpose: str, ttl: float = 120.0,
                 heartbeat: bool = True) -> None:
        if not ttl > 0:
            raise ValueError(f"the publish lock's ttl must be positive, got {ttl!r}")
        self.r, self.ks, self.ttl_ms = r, ks, max(int(ttl * 1000), 1)
        self.value = json.dumps({**lock_owner.identity(), "token": uuid.uuid4().hex, "purpose": purpose,
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        self.held = False
        self.heartbeat = heartbeat
        self.lost: Optional[str] = None        # set by the heartbeat when another owner holds the key
        self._stop = threading.Event()
        self._beat: Optional[threading.Thread] = None

    def _stale(self, raw: bytes) -> bool:
        try:
            owner = json.loads(raw)
        except ValueError:
            return False
        return isinstance(owner, dict) and lock_owner.owner_gone(owner)

    def acquire(self) -> "PublishLock":
        key = self.ks.publish_lock
        for _ in range(3):
            if self.r.set(key, self.value, nx=True, px=self.ttl_ms):
                return self._held()
            raw = self.r.get(key)
            if raw is None:
                continue
            if self._stale(raw):
                if self.r.eval(_TAKEOVER_LUA, 1, key, raw, self.value, self.ttl_ms):
                    log.warning("took over the publish lock %s left by a process that is gone: %s",
                                key, raw.decode(errors="replace"))
                    return self._held()
                continue
            ttl = self.r.pttl(key)
            raise PublishError(
                f"another publish holds the lock {key} on {describe(self.r)}: {raw.decode(errors='replace')}; "
                f"it expires in {max(ttl, 0) / 1000:.0f} s unless that process renews it. Wait for it to "
                f"finish; if it is surely dead, `redis-cli DEL {key}` and rerun")
        raise PublishError(f"could not take the publish lock {key} on {describe(self.r)}; rerun")

    def _held(self) -> "PublishLock":
        self.held, self.lost = True, None
        if self.heartbeat:
            self._stop.clear()
            # its own client on the same pool: a command takes a connection of its own from the pool
            # (thread-safe), never the one a single-connection client or a pipeline is using
            client = redis.Redis(connection_pool=self.r.connection_pool)
            self._beat = threading.Thread(target=self._beat_loop, args=(client,), daemon=True,
                                          name=f"publish-lock-heartbeat {self.ks.publish_lock}")
            self._beat.start()
        return self

    def _beat_loop(self, client: redis.Redis) -> None:
        """Refresh the lock every third of its ttl until released; stop when another owner holds it."""
        key = self.ks.publish_lock
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                if client.eval(_REFRESH_LUA, 1, key, self.value, self.ttl_ms):
                    continue
                raw = client.get(key)
            except redis.RedisError as e:   # the publisher's own commands fail too, and say so
                log.warning("publish lock heartbeat: could not refresh %s (%s); trying again", key, e)
                continue
            if self._stop.is_set():          # released meanwhile: the key is gone because we deleted it
                return
            self.lost = (f"lost the publish lock {key} on {describe(self.r)}: "
                         + (f"another process holds it now ({raw.decode(errors='replace')})" if raw is not None
                            else "it expired") + "; stopped before switching. Rerun when no other publish runs")
            log.error("%s", self.lost)
            return

    def check(self) -> None:
        """Raise :class:`PublishError` if the heartbeat found the lock lost (no round trip)."""
        if self.lost:
            raise PublishError(self.lost)

    def refresh(self) -> None:
        self.check()
        if not self.r.eval(_REFRESH_LUA, 1, self.ks.publish_lock, self.value, self.ttl_ms):
            raise PublishError(f"lost the publish lock {self.ks.publish_lock} (it expired or another process "
                               "took it); stopped before switching. Rerun when no other publish runs")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5.0)   # a refresh in flight ends within the socket timeout
            self._beat = None
        try:
            self.r.eval(_RELEASE_LUA, 1, self.ks.publish_lock, self.value)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            log.warning("could not release the publish lock %s (%s); it expires on its own or is taken "
                        "over by the next publish on this host", self.ks.publish_lock, e)

    def __enter__(self) -> "PublishLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def read_meta(r: redis.Redis, ks: KeySpace, version: str) -> Dict[str, Any]:
    """A version's metadata ({} when it has none)."""
    return decode_meta(r.hgetall(ks.meta(version)))


def is_complete(meta: Dict[str, Any]) -> bool:
    return meta.get("complete") == 1


def current_version(r: redis.Redis, ks: KeySpace) -> Optional[str]:
    return maybe_decode_str(r.get(ks.current))


def base_of(meta: Dict[str, Any]) -> Optional[str]:
    """The base a patch's metadata names; None for a full version."""
    return meta.get("base") or None


def read_bases(r: redis.Redis, ks: KeySpace, versions: Iterable[str]) -> Dict[str, Optional[str]]:
    """{version: its base or None} for ``versions``, in one pipeline."""
    names = list(versions)
    pipe = r.pipeline(transaction=False)
    for v in names:
        pipe.hget(ks.meta(v), "base")
    return {v: maybe_decode_str(b) or None for v, b in zip(names, pipe.execute())}


def is_usable(r: redis.Redis, ks: KeySpace, version: str) -> bool:
    """Whether readers can be pointed at ``version``: it is complete and, for a patch, so is its base."""
    meta = read_meta(r, ks, version)
    if not is_complete(meta):
        return False
    base = base_of(meta)
    return base is None or is_complete(read_meta(r, ks, base))


def _lrange(r: redis.Redis, key: str) -> List[str]:
    return [v.decode("utf-8") for v in r.lrange(key, 0, -1)]


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


def data_position(meta: Dict[str, Any]) -> Optional[Tuple[str, str]]:
    """Where a version sits in data time: (the nightly day its lists are built on, the end of the hour a
    patch brings them up to, or ``""`` for a full version). None for metadata without ``data_day``
    (versions published before it was recorded: they are never compared)."""
    day = meta.get("data_day")
    if not day:
        return None
    return str(day), str(meta.get("hour_end") or "")


def moves_back(current_meta: Dict[str, Any], new_meta: Dict[str, Any]) -> bool:
    """Whether pointing readers from the version of ``current_meta`` to one of ``new_meta`` would move
    them backwards in data time: a nightly of an older day than the one readers' lists are built on (a
    backfill), or a patch over the same day that ends at an earlier hour (a cleared or retried old hour).

    A nightly of a later day moves readers forward even off a patch that reaches past its midnight (the
    patch sits on an older day's model and features, and the next hour patches the new one); a full
    version of the same day (a rescore) is never a step back."""
    cur, new = data_position(current_meta), data_position(new_meta)
    if cur is None or new is None:
        return False
    if new[0] != cur[0]:
        return new[0] < cur[0]
    return bool(new[1]) and new[1] < cur[1]


def rolled_back_versions(r: redis.Redis, ks: KeySpace) -> List[str]:
    """The versions rolled back and not published again since, newest first."""
    return _lrange(r, ks.rolled_back)


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


def list_versions(r: redis.Redis, ks: KeySpace) -> List[Dict[str, Any]]:
    """Every version with keys in Redis, newest listed first: version, status, is_current, kind,
    base, meta.

    status is ``live`` (current), ``complete`` (can be rolled back to),
    ``rolled_back`` or ``incomplete`` (a publish that did not finish); kind is
    ``patch`` (an overlay on ``base``) or ``full`` (base None).
    """
    current = current_version(r, ks)
    listed = _lrange(r, ks.versions)
    rolled = set(_lrange(r, ks.rolled_back))
    others = sorted({v.decode("utf-8") for v in r.smembers(ks.registry)} - set(listed), reverse=True)
    names = listed + others
    pipe = r.pipeline(transaction=False)
    for v in names:
        pipe.hgetall(ks.meta(v))
    out = []
    for v, raw in zip(names, pipe.execute()):
        meta = decode_meta(raw)
        if v == current:
            status = "live"
        elif not is_complete(meta):
            status = "incomplete"
        elif v in rolled:
            status = "rolled_back"
        else:
            status = "complete"
        base = base_of(meta)
        out.append({"version": v, "status": status, "is_current": v == current,
                    "kind": "patch" if base else "full", "base": base, "meta": meta})
    return out


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
