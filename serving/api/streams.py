"""Writing to the feedback loop's Redis Streams (impressions, events) on the lookup client's own
Redis connection, whichever kind of client the app was given.

The app is given an :class:`serving.client.AsyncLookupClient` (``redis.asyncio``: awaited on the
event loop) or a blocking :class:`serving.client.LookupClient` (wrapped in
:class:`serving.api.clients.InThreads`: its pipeline then runs on the thread pool, so a slow Redis
never stalls the loop). Every entry is an ``XADD key MAXLEN ~ n * field value ...``: approximate
trimming keeps the stream near ``n`` entries at almost no cost (Redis drops whole nodes).

A stream's key is ``<namespace>:stream:<name>`` (:meth:`serving.keys.KeySpace.stream`), in the
namespace of the lookup client it is written through (:func:`stream_key`): the namespace the
service reads its lists from, so the streams follow ``redis.namespace`` as every other key does.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import redis.asyncio as aredis
from starlette.concurrency import run_in_threadpool

from serving.keys import KeySpace

Fields = Dict[str, str]


def _inner(client: Any) -> Any:
    return getattr(client, "client", client)       # InThreads wraps the blocking client


def redis_of(client: Any) -> Any:
    """The Redis connection behind the app's lookup client (async or blocking)."""
    return _inner(client).r


def stream_key(client: Any, name: str) -> str:
    """The key of stream ``name`` in the namespace of the app's lookup client (its KeySpace)."""
    ks: KeySpace = _inner(client).ks
    return ks.stream(name)


async def xadd_many(r: Any, key: str, entries: Sequence[Fields], maxlen: int) -> List[bytes]:
    """XADD every entry to ``key`` in one pipeline (one round trip); the entries' stream ids.

    Raises:
        redis.RedisError: Redis refused or did not answer (nothing is retried here)."""
    pipe = r.pipeline(transaction=False)
    for fields in entries:
        pipe.xadd(key, fields, maxlen=maxlen, approximate=True)
    if isinstance(r, aredis.Redis):
        return await pipe.execute()
    return await run_in_threadpool(pipe.execute)
