"""The publish lock: one publisher (or rollback, delete, forget) at a time per namespace, and the
error every write to published versions raises (:class:`PublishError`)."""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any, Optional

import redis

from core.errors import RecoError
from serving import lock_owner
from serving.connection import describe, is_cluster
from serving.keys import KeySpace

log = logging.getLogger(__name__)

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
            # (thread-safe), never the one a single-connection client or a pipeline is using. A cluster
            # client already takes one from its node's pool for each command: the same client serves
            client = self.r if is_cluster(self.r) else redis.Redis(connection_pool=self.r.connection_pool)
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
