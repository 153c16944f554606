"""reco feedback drain (jobs/feedback_drain.py): both streams into Delta, one row per id, acknowledged
only after the commit: a drain killed between its commit and its XACK, rerun, neither loses nor
doubles a row. The streams are read in the configured redis.namespace (shop2 here, not the default), and
an impression's A/B variant reaches impressions.variant."""
from __future__ import annotations

from datetime import date, datetime

import pytest

from jobs.feedback_drain import drain
from jobs.lakehouse import Lakehouse
from serving.connection import connect
from tests.conftest import make_config

NAMESPACE = "shop2"
IMPRESSIONS, EVENTS, GROUP = "shop2:stream:impressions", "shop2:stream:feedback", "reco-drain"
T0 = 1_796_644_800_000          # 2026-12-07 12:00:00 UTC, in ms


def impression(rid: str, user: str, items, ts: int = T0, variant: str = "") -> dict:
    return {"request_id": rid, "ts": str(ts), "route": "recommendations", "user_id": user, "item_id": "",
            "segment": "", "k": "10", "version": "v1", "variant": variant, "source": "personal", "fallback": "0",
            "items": "[" + ",".join(f'["{i}",{p},"model"]' for p, i in enumerate(items, start=1)) + "]"}


def event(eid: str, kind: str, user: str, item: str, rid: str = "", ts: int = T0 + 5000, price: str = "") -> dict:
    return {"event_id": eid, "type": kind, "user_id": user, "item_id": item, "request_id": rid, "ts": str(ts),
            "received_ts": str(ts + 100), "quantity": "1" if price else "", "price": price}


@pytest.fixture
def r(redis_server):
    client = connect(redis_server)
    client.flushdb()
    yield client
    client.close()


class Killed(Exception):
    pass


def rows(spark, cfg, table, *cols):
    return sorted(tuple(row) for row in Lakehouse(spark, cfg).read(table).select(*cols).collect())


def test_killed_after_the_commit_and_rerun_neither_loses_nor_doubles_a_row(spark, tmp_path, r):
    cfg = make_config(tmp_path, redis={"namespace": NAMESPACE})
    r.xadd("reco:stream:impressions", impression("x1", "u1", ["A"]))          # another namespace's: not read
    r.xadd(IMPRESSIONS, impression("r1", "u1", ["A", "B"], variant="popular-test:control"))
    r.xadd(IMPRESSIONS, impression("r2", "u2", ["C"], ts=T0 - 86_400_000))    # the day before, no experiment
    r.xadd(EVENTS, event("e1", "click", "u1", "B", rid="r1"))
    r.xadd(EVENTS, event("e2", "purchase", "u1", "B", rid="r1", price="4.25"))
    r.xadd(EVENTS, event("e2", "purchase", "u1", "B", rid="r1", price="4.25"))  # the web app retried e2

    def kill(table):                     # the drain dies between its Delta commit and its XACK
        raise Killed(table)
    with pytest.raises(Killed, match="impressions"):
        drain(spark, cfg, r, after_commit=kill)
    assert r.xpending(IMPRESSIONS, GROUP)["pending"] == 2        # committed, never acknowledged
    assert rows(spark, cfg, "impressions", "impression_id") == [("r1",), ("r2",)]

    # more traffic meanwhile, then the retry
    r.xadd(IMPRESSIONS, impression("r3", "u1", ["D"], variant="popular-test:popular"))
    done = drain(spark, cfg, r)
    assert (done["impressions"].read, done["impressions"].inserted) == (3, 1)   # r1, r2 again (pending) + r3
    assert (done["feedback"].read, done["feedback"].inserted) == (3, 2)         # e2 twice: one row

    assert rows(spark, cfg, "impressions", "impression_id", "event_date", "user_id", "variant", "items") == [
        ("r1", date(2026, 12, 7), "u1", "popular-test:control", [("A", 1, "model"), ("B", 2, "model")]),
        ("r2", date(2026, 12, 6), "u2", None, [("C", 1, "model")]),
        ("r3", date(2026, 12, 7), "u1", "popular-test:popular", [("D", 1, "model")])]
    assert rows(spark, cfg, "feedback", "event_id", "type", "request_id", "ts", "price") == [
        ("e1", "click", "r1", datetime(2026, 12, 7, 12, 0, 5), None),
        ("e2", "purchase", "r1", datetime(2026, 12, 7, 12, 0, 5), 4.25)]
    for stream in (IMPRESSIONS, EVENTS):
        assert r.xpending(stream, GROUP)["pending"] == 0
    assert r.xlen("reco:stream:impressions") == 1 and not r.xinfo_groups("reco:stream:impressions")

    # a drain with nothing new reads nothing and writes nothing
    versions = {t: Lakehouse(spark, cfg).version(t) for t in ("impressions", "feedback")}
    done = drain(spark, cfg, r)
    assert (done["impressions"].read, done["feedback"].read) == (0, 0)
    assert {t: Lakehouse(spark, cfg).version(t) for t in versions} == versions
