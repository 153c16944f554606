"""Which Redis failures mean "Redis is not there now, try again" (the service's 503 with Retry-After),
as opposed to a bug or a bad publish (500), for a plain Redis and a Redis Cluster alike.

redis-py's cluster client reports a cluster it cannot reach with :class:`RedisClusterException`,
which is no ``RedisError``: "Redis Cluster cannot be connected" when no node answers (raised from
the node's ``ConnectionError``/``TimeoutError``), and :class:`SlotNotCoveredError` when the nodes
that answer do not hold every slot. It also raises the same class for a command it cannot route (keys
in two slots, no key to route by): our bug, not an outage, so only the first two count here.
``ClusterDownError`` (a node answered CLUSTERDOWN) and ``ClusterError`` (redirects and retries ran
out) are ``RedisError``\\ s that mean the same as a refused connection.
"""
from __future__ import annotations

import redis
from redis.exceptions import ClusterDownError, ClusterError, RedisClusterException, SlotNotCoveredError

_UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, TimeoutError,
                ClusterDownError, ClusterError, SlotNotCoveredError)
_CAUSES = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

# what a Redis call may raise: every redis-py error, the cluster client's, the built-in timeout
REDIS_FAILURES = (redis.exceptions.RedisError, RedisClusterException, TimeoutError)


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says Redis (one server, or a cluster: every node, or the nodes of some slots)
    could not be reached or was too slow, so that the same request may well succeed later."""
    if isinstance(exc, _UNREACHABLE):
        return True
    return isinstance(exc, RedisClusterException) and isinstance(exc.__cause__, _CAUSES)
