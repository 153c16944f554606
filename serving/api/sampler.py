"""A few customer ids of a published version, for the demo page (``GET /v1/demo/users``).

Found by SCAN over the version's user keys, with a bounded number of calls, so the cost stays the
same however large the database is.
"""
from __future__ import annotations

from typing import List, Tuple, Union

import redis
import redis.asyncio as aredis
from starlette.concurrency import run_in_threadpool

from serving.api.clients import InThreads
from serving.client import AsyncLookupClient
from serving.codec import maybe_decode_str
from serving.keys import KeySpace, glob_escape


def _user_pattern(ks: KeySpace, version: str) -> Tuple[str, str]:
    prefix = f"{ks.namespace}:{{{version}:"
    # reco:{<version>:<shard>}:u:<user_id>; the shard is digits, so the first "}:" ends the tag.
    return prefix, glob_escape(prefix) + "*" + glob_escape("}:u:") + "*"


def _add_user_ids(found: List[str], keys: List, prefix: str, n: int) -> None:
    for raw in keys:
        key = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        rest = key[len(prefix):]
        tag_end = rest.find("}:")
        if tag_end >= 0 and rest[tag_end + 2:tag_end + 4] == "u:" and len(found) < n:
            found.append(rest[tag_end + 4:])


def sample_user_ids(r: redis.Redis, ks: KeySpace, version: str, n: int,
                    scan_count: int = 1000, max_calls: int = 10) -> List[str]:
    """Up to ``n`` user ids of ``version``, found by SCAN over its user keys.

    At most ``max_calls`` SCAN calls of ``scan_count`` keys each, so the cost is
    bounded however large the database is; user keys are most keys of a
    version, so a few calls usually find ``n``. Fewer than ``n`` may come back.
    """
    prefix, pattern = _user_pattern(ks, version)
    found: List[str] = []
    cursor = 0
    for _ in range(max_calls):
        cursor, keys = r.scan(cursor=cursor, match=pattern, count=scan_count)
        _add_user_ids(found, keys, prefix, n)
        if cursor == 0 or len(found) >= n:
            break
    return found


async def sample_user_ids_async(r: aredis.Redis, ks: KeySpace, version: str, n: int,
                                scan_count: int = 1000, max_calls: int = 10) -> List[str]:
    """:func:`sample_user_ids` on ``redis.asyncio``."""
    prefix, pattern = _user_pattern(ks, version)
    found: List[str] = []
    cursor = 0
    for _ in range(max_calls):
        cursor, keys = await r.scan(cursor=cursor, match=pattern, count=scan_count)
        _add_user_ids(found, keys, prefix, n)
        if cursor == 0 or len(found) >= n:
            break
    return found


async def demo_user_ids(client: Union[AsyncLookupClient, InThreads], version: str, n: int) -> List[str]:
    """Up to ``n`` user ids that ``version`` answers for. A patch (an hourly run's version) holds only
    the users it refreshed: then the rest come from the version it patches (its meta's ``base``)."""
    if isinstance(client, InThreads):
        r, ks = client.client.r, client.client.ks

        async def sample(v: str) -> List[str]:
            return await run_in_threadpool(sample_user_ids, r, ks, v, n)

        async def base_of(v: str):
            return await run_in_threadpool(r.hget, ks.meta(v), "base")
    else:
        ar, ks = client.r, client.ks

        async def sample(v: str) -> List[str]:
            return await sample_user_ids_async(ar, ks, v, n)

        async def base_of(v: str):
            return await ar.hget(ks.meta(v), "base")

    ids = await sample(version)
    base = await base_of(version) if len(ids) < n else None
    if base:
        more = await sample(maybe_decode_str(base))
        ids += [u for u in more if u not in ids][:n - len(ids)]
    return ids
