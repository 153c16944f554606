"""A few customer ids for the demo page (``GET /v1/demo/users``, demo mode only), never a real one.

The ids are not read from the store: they are drawn from the synthetic generator's id space
(``features/synthetic/events.py`` names its customers ``U`` + a zero-padded index below
``synthetic.n_users``), and only those the published version has a list for are offered. So the
route can only ever name an id that the synthetic source makes up; on a store published from real
data it finds none (the page then says so), and it never lists a real customer, whatever matches
a pattern. One pipeline of EXISTS per call, whatever the size of the store.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import List, Optional, Union

from starlette.concurrency import run_in_threadpool

from serving.api.clients import InThreads
from serving.client import AsyncLookupClient
from serving.codec import maybe_decode_str


@dataclass(frozen=True)
class DemoIds:
    """The synthetic customers' ids: ``prefix`` + the index (0 .. count - 1), zero-padded to
    ``max(min_width, digits of count - 1)`` as ``features/synthetic/events.py`` writes them."""
    count: int
    prefix: str = "U"
    min_width: int = 6

    def at(self, index: int) -> str:
        width = max(self.min_width, len(str(self.count - 1)))
        return f"{self.prefix}{index:0{width}d}"

    def draw(self, m: int, rng: random.Random) -> List[str]:
        """Up to ``m`` distinct ids of the space, in random order."""
        return [self.at(i) for i in rng.sample(range(self.count), min(m, self.count))]


async def demo_user_ids(client: Union[AsyncLookupClient, InThreads], version: str, n: int, ids: DemoIds,
                        rng: Optional[random.Random] = None) -> List[str]:
    """Up to ``n`` ids of ``ids`` that ``version`` has a personal list for (in the version, or in the
    version a patch is over). Draws ``max(64, 20 n)`` candidates: a synthetic store has a list for
    most of its customers, so that finds ``n`` unless the store holds other data."""
    candidates = ids.draw(max(64, 20 * n), rng or random.Random())
    if isinstance(client, InThreads):
        r, ks = client.client.r, client.client.ks

        def exists(keys: List[str]) -> List[int]:
            pipe = r.pipeline(transaction=False)
            for key in keys:
                pipe.exists(key)
            return pipe.execute()

        base = await run_in_threadpool(r.hget, ks.meta(version), "base")
    else:
        ar, ks = client.r, client.ks

        async def exists_async(keys: List[str]) -> List[int]:
            pipe = ar.pipeline(transaction=False)
            for key in keys:
                pipe.exists(key)
            return await pipe.execute()

        base = await ar.hget(ks.meta(version), "base")
    layers = [version] + ([maybe_decode_str(base)] if base else [])
    keys = [ks.user(v, c) for c in candidates for v in layers]
    found = await (run_in_threadpool(exists, keys) if isinstance(client, InThreads) else exists_async(keys))
    per = len(layers)
    return [c for i, c in enumerate(candidates) if any(found[i * per:(i + 1) * per])][:n]
