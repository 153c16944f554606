"""A per-key rate limit shared by every worker process and pod, counted in Redis (issue 27, point 1;
``serving.auth.shared_limit``; docs/SECURITY.md, "Rate limit").

Each API key may make ``round(rate_per_s * window_s)`` requests (at least one) in each fixed window of
``window_s`` seconds of wall-clock time, however many processes answer them. A window's count is one
key, ``<namespace>:ratelimit:<key name>:<window number>`` (window number: Unix seconds //
``window_s``), sent ``INCRBY 1`` and ``PEXPIRE`` (two windows' time) in one pipeline: one round trip,
one key, so one node of a Redis Cluster; no MULTI (a cluster pipeline has none) and no script. The
expiry is set again by every request of the window, so a window key outlives its window by at
most one more and never needs deleting. A request over the budget gets 429 with ``Retry-After``: the
seconds until the window ends.

It runs on the lookup client's own Redis connection (the reader user needs INCRBY and PEXPIRE on
``<namespace>:ratelimit:*``: ``reco redis acl`` grants them, on those keys only).

When Redis cannot be reached (or refuses the commands), the caller falls back to the per-process
token bucket (:class:`serving.api.auth.TokenBucket`), and Redis is not asked again for ``fallback_s``
seconds, so an outage does not add a timeout to every request. Why fall back rather than refuse:
docs/SECURITY.md.

A fixed window lets a key make up to twice its budget across a window's edge (the end of one, the
start of the next); processes whose clocks disagree count a request near an edge in either window.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

from serving.api.redis_errors import REDIS_FAILURES
from serving.api.streams import execute, keyspace_of, redis_of

log = logging.getLogger(__name__)


class SharedLimit:
    """Fixed-window request counts per API key, in Redis.

    Args:
        window_s: the window's length in seconds.
        fallback_s: after Redis failed, how long the per-process buckets decide alone.
        clock: wall-clock seconds (every process must agree on the window number: never monotonic).
    """

    def __init__(self, window_s: int = 1, fallback_s: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        if window_s < 1 or fallback_s <= 0:
            raise ValueError(f"need window_s >= 1 and fallback_s > 0, got {window_s}, {fallback_s}")
        self.window_s, self.fallback_s, self.clock = int(window_s), float(fallback_s), clock
        self.get_client: Optional[Callable[[], Any]] = None
        self.failures = 0                  # Redis calls that failed (each starts fallback_s of local limiting)
        self._local_until = float("-inf")

    def bind(self, get_client: Callable[[], Any]) -> None:
        """Count on the Redis of the app's lookup client (``get_client()``: async or blocking)."""
        self.get_client = get_client

    def budget(self, rate_per_s: float) -> int:
        """The requests a key of ``rate_per_s`` may make in one window, all processes together."""
        return max(1, round(rate_per_s * self.window_s))

    async def take(self, name: str, rate_per_s: float) -> Optional[float]:
        """Count one request of key ``name``: 0.0 when within its budget, else the seconds until its
        window ends (a refusal); None when Redis cannot decide (the caller limits per process)."""
        now = self.clock()
        if self.get_client is None or now < self._local_until:
            return None
        window = int(now // self.window_s)
        try:
            client = self.get_client()
            r = redis_of(client)
            key = f"{keyspace_of(client).namespace}:ratelimit:{name}:{window}"
            pipe = r.pipeline(transaction=False)
            pipe.incr(key)
            pipe.pexpire(key, 2 * self.window_s * 1000)
            count = (await execute(r, pipe))[0]
        except REDIS_FAILURES as exc:      # down, slow, or refusing (an ACL without the ratelimit selector)
            self.failures += 1
            self._local_until = now + self.fallback_s
            log.warning("shared rate limit: Redis failed (%s: %s); limiting per worker process for %g s",
                        type(exc).__name__, exc, self.fallback_s)
            return None
        if count <= self.budget(rate_per_s):
            return 0.0
        return (window + 1) * self.window_s - now
