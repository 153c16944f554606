"""How the bulk loader's MSETNX commands (:mod:`serving.loader`) reach Redis, one reply each.

On one server: as RESP the loader packed itself, in one buffer per round trip on one connection
(:func:`round_trip`; docs/SERVING.md says why by hand). On a Redis Cluster: through redis-py's cluster
pipeline (:func:`msetnx_per_slot`), which sends each command to the node that holds its hash slot and
follows the cluster when slots move.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List

import redis


def round_trip(r: redis.Redis, payload: bytes, n_replies: int) -> List[Any]:
    """Send ``payload`` (packed commands) on one connection of ``r`` and read ``n_replies`` replies.

    Uses ``r``'s retry policy like its pipelines do: after a connection error or
    timeout the connection is dropped and the whole payload is sent again, so the
    commands must be safe to repeat (MSETNX is, see :meth:`serving.loader.Loader._recheck`). A
    reply that is an error raises ``redis.ResponseError``; the connection, with
    replies still unread, is then dropped."""
    pool = r.connection_pool
    conn = r.connection or pool.get_connection()

    def attempt() -> List[Any]:
        conn.send_packed_command([payload])
        return [conn.read_response() for _ in range(n_replies)]

    def failed(error: Exception) -> None:
        conn.disconnect()

    try:
        return conn.retry.call_with_retry(attempt, failed)
    except BaseException:
        conn.disconnect()
        raise
    finally:
        if r.connection is None:
            pool.release(conn)


def msetnx_per_slot(r: redis.RedisCluster, parts: Iterable[Dict[str, bytes]]) -> List[Any]:
    """One MSETNX per part (key -> value, every key of a part in one hash slot) in one redis-py cluster
    pipeline; the replies in order.

    Sent with ``execute_command``, as redis-py's own ``mset_nonatomic`` sends its per-slot MSETs: the
    cluster pipeline refuses ``msetnx`` outright (it cannot know that the keys share a slot), while
    ``execute_command`` checks that they do."""
    pipe = r.pipeline(transaction=False)
    for part in parts:
        pipe.execute_command("MSETNX", *(x for pair in part.items() for x in pair))
    return pipe.execute()
