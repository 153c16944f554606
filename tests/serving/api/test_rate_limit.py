"""The rate limit shared by every worker process (serving.api.rate_limit, ``serving.auth.shared_limit``),
on the test redis-server: two apps (two workers, or two pods) count against one budget per key, a
request over it gets 429 with the seconds left in the window, the next window starts afresh, and
with Redis unreachable each process falls back to its own bucket (known answers throughout: the
clock is the test's)."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from config.serving import AuthSection
from serving.api.app import create_app
from serving.api.auth import Auth
from serving.api.rate_limit import SharedLimit
from serving.client import AsyncLookupClient
from serving.connection import connect_async
from tests.conftest import free_port

LOOKUP_KEY, ADMIN_KEY = "lookup-key-for-the-shared-limit", "admin-key-for-the-shared-limit"
LOOKUP, ADMIN = {"X-API-Key": LOOKUP_KEY}, {"X-API-Key": ADMIN_KEY}
USERS = "/v1/users/u1/recommendations"


class Clock:
    """Wall-clock seconds the test sets (the shared limit's and the per-process buckets')."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def shared_auth(clock: Clock, lookup_rate: float = 0.3, burst: int = 100, fallback_s: float = 5.0) -> Auth:
    """A lookup key of 0.3/s in windows of 10 s: 3 requests a window in all; its per-process burst (100)
    would let every request of the tests through, so each 429 here is the shared count's."""
    return Auth([("lookup", LOOKUP_KEY, ["lookup"], lookup_rate, burst), ("admin", ADMIN_KEY, ["admin"], 100.0, 100)],
                clock, SharedLimit(window_s=10, fallback_s=fallback_s, clock=clock))


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "fastapi"])
def test_two_apps_share_one_budget_and_the_next_window_starts_afresh(published, redis_server, ks, r, fast):
    clock = Clock(1005.5)                       # window 100 ([1000, 1010)), 4.5 s left
    reader = AsyncLookupClient(connect_async(redis_server), ks)
    # app a on the blocking client (its pipeline on the thread pool), app b on the asyncio one
    with TestClient(create_app(published, auth=shared_auth(clock), fast_lookups=fast), headers=LOOKUP) as a, \
            TestClient(create_app(reader, auth=shared_auth(clock), fast_lookups=fast), headers=LOOKUP) as b:
        assert [api.get(USERS).status_code for api in (a, b, a, b, a)] == [200, 200, 200, 429, 429]
        refused = b.get(USERS)
        assert (refused.status_code, refused.headers["retry-after"], refused.json()) == (
            429, "5", {"detail": "rate limit of this API key reached (shared by every worker); retry after the "
                                 "seconds in Retry-After", "retry": True})
        assert r.get("reco:ratelimit:lookup:100") == b"6"            # every request counted, refused ones too
        assert 10_000 < r.pttl("reco:ratelimit:lookup:100") <= 20_000  # two windows: gone soon after its own
        assert a.get("/metrics", headers=ADMIN).status_code == 200    # another key, another budget
        assert r.get("reco:ratelimit:admin:100") == b"1"

        clock.now = 1009.9                      # 0.1 s left: Retry-After is at least 1
        assert a.get(USERS).headers["retry-after"] == "1"
        clock.now = 1010.0                      # window 101: a fresh budget of 3
        assert [api.get(USERS).status_code for api in (b, a, b, a)] == [200, 200, 200, 429]
        assert r.get("reco:ratelimit:lookup:101") == b"4"
        b.portal.call(reader.aclose)


def test_redis_down_falls_back_to_each_processs_bucket_and_asks_again_later(ks):
    clock = Clock(1005.5)
    limit = SharedLimit(window_s=10, fallback_s=5.0, clock=clock)
    down = AsyncLookupClient(connect_async(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2, retries=0), ks)
    auth = Auth([("ops", ADMIN_KEY, ["admin", "lookup"], 0.5, 2)], clock, limit)   # 2 at once, then one every 2 s
    with TestClient(create_app(down, auth=auth), headers=ADMIN) as api:
        got = [api.get("/metrics") for _ in range(3)]   # /metrics needs no Redis: only the limit asks it
        assert [g.status_code for g in got] == [200, 200, 429]
        assert (got[2].headers["retry-after"], got[2].json()["detail"]) == (
            "2", "rate limit of this API key reached (per worker process); retry after the seconds in Retry-After")
        assert limit.failures == 1              # asked once; then the bucket alone for fallback_s
        clock.now += 5.0                        # fallback over: Redis asked again (still down); 2 tokens back
        assert api.get("/metrics").status_code == 200 and limit.failures == 2
        lookup = api.get(USERS)                 # the key within its bucket: the lookup's own 503, not a 429
        assert (lookup.status_code, lookup.json()["retry"]) == (503, True)
        assert api.get("/metrics").status_code == 429 and limit.failures == 2
        api.portal.call(down.aclose)


def test_the_setting_turns_it_on_and_rotated_keys_share_a_budget():
    env = {"RECO_API_KEY_LOOKUP": f"{LOOKUP_KEY},{LOOKUP_KEY}-next", "RECO_API_KEY_ADMIN": ADMIN_KEY}
    assert Auth.from_config(AuthSection(), env).shared is None             # off by default: per process
    auth = Auth.from_config(AuthSection(shared_limit={"enabled": True, "window_s": 60, "fallback_s": 2.5}), env)
    assert (auth.shared.window_s, auth.shared.fallback_s) == (60, 2.5)
    assert [(k.name, k.limit_name) for k in auth.keys] == [("lookup#1", "lookup"), ("lookup#2", "lookup"),
                                                           ("admin", "admin")]
    assert [auth.shared.budget(rate) for rate in (2000.0, 0.3, 0.001)] == [120_000, 18, 1]
    with pytest.raises(ValueError, match="window_s"):
        AuthSection(shared_limit={"enabled": True, "window_s": 0})
