"""Writing to the feedback loop's Redis Streams (impressions, events) on the lookup client's own
Redis connection, whichever kind of client the app was given.

The app is given an :class:`serving.client.AsyncLookupClient` (``redis.asyncio``: awaited on the
event loop) or a blocking :class:`serving.client.LookupClient` (wrapped in
:class:`serving.api.clients.InThreads`: its pipeline then runs on the thread pool, so a slow Redis
never stalls the loop). Every entry is an ``XADD key MAXLEN ~ n * field value ...``: approximate
trimming keeps the stream near ``n`` entries at almost no cost (Redis drops whole nodes).

Either kind of client may talk to a Redis Cluster (``redis.asyncio.cluster.RedisCluster`` or the
blocking ``redis.RedisCluster``): a stream is one key, so its XADDs go to the one node of its slot
(redis-py's cluster pipeline sends them there, without MULTI: it has no transactions, and none is
needed for appends to one key). A cluster that cannot be reached is reported as redis-py's
``RedisClusterException``, which is no ``RedisError``; :func:`xadd_many` raises it as one, so its
callers (the impressions writer, the events route) handle a cluster as they handle one server.

A stream's key is ``<namespace>:stream:<name>`` (:meth:`serving.keys.KeySpace.stream`), in the
namespace of the lookup client it is written through (:func:`stream_key`): the namespace the
service reads its lists from, so the streams follow ``redis.namespace`` as every other key does.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import redis
import redis.asyncio as aredis
from redis.exceptions import RedisClusterException
from starlette.concurrency import run_in_threadpool

from serving.api.redis_errors import unavailable
from serving.keys import KeySpace

Fields = Dict[str, str]
ASYNC_CLIENTS = (aredis.Redis, aredis.RedisCluster)   # their pipelines' execute() is a coroutine


def _inner(client: Any) -> Any:
    return getattr(client, "client", client)       # InThreads wraps the blocking client


def redis_of(client: Any) -> Any:
    """The Redis connection behind the app's lookup client (async or blocking)."""
    return _inner(client).r


def keyspace_of(client: Any) -> KeySpace:
    """The KeySpace (namespace) of the app's lookup client (async or blocking)."""
    return _inner(client).ks


def stream_key(client: Any, name: str) -> str:
    """The key of stream ``name`` in the namespace of the app's lookup client (its KeySpace)."""
    return keyspace_of(client).stream(name)


async def execute(r: Any, pipe: Any) -> List[Any]:
    """Run the pipeline ``pipe`` of client ``r``: awaited on the event loop for a ``redis.asyncio``
    client (one server or a cluster), on the thread pool for a blocking one (never stalls the loop).

    Raises:
        redis.RedisError: Redis refused or did not answer; a cluster that cannot be reached as a
            ``redis.ConnectionError`` (see :mod:`serving.api.redis_errors`), any other complaint of
            the cluster client as a ``redis.RedisError``."""
    try:
        if isinstance(r, ASYNC_CLIENTS):
            return await pipe.execute()
        return await run_in_threadpool(pipe.execute)
    except RedisClusterException as exc:
        kind = redis.exceptions.ConnectionError if unavailable(exc) else redis.exceptions.RedisError
        raise kind(f"Redis Cluster: {exc}") from exc


async def xadd_many(r: Any, key: str, entries: Sequence[Fields], maxlen: int) -> List[bytes]:
    """XADD every entry to ``key`` in one pipeline (one round trip; on a cluster, to the node of the
    key's slot); the entries' stream ids.

    Raises:
        redis.RedisError: Redis refused or did not answer (nothing is retried here), a cluster that
            cannot be reached included (:func:`execute`)."""
    pipe = r.pipeline(transaction=False)
    for fields in entries:
        pipe.xadd(key, fields, maxlen=maxlen, approximate=True)
    return await execute(r, pipe)
