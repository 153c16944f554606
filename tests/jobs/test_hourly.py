"""The hourly path's pure parts and its ingest: windows, the watermark, new pairs, superseding."""
from datetime import datetime, timedelta, timezone

import pytest
from pyspark.sql import functions as F

from jobs.hourly import (WATERMARKS, WindowError, batch_id, ingest_hour, new_pairs, parse_window, plan_window,
                         user_ids)
from jobs.ingest import ingest
from jobs.lakehouse import Lakehouse
from tests.conftest import make_config
from tests.jobs.test_ingest import HEADER

UTC = timezone.utc


def test_parse_window_reads_iso_and_names_what_is_wrong():
    lo, hi = parse_window("2026-10-29T01:00:00", "2026-10-29T03:00:00+01:00")
    assert lo == datetime(2026, 10, 29, 1, tzinfo=UTC) and hi == datetime(2026, 10, 29, 2, tzinfo=UTC)
    with pytest.raises(WindowError, match="--start must be an ISO timestamp"):
        parse_window("yesterday", "2026-10-29T01:00:00")
    with pytest.raises(WindowError, match="is not before"):
        parse_window("2026-10-29T01:00:00", "2026-10-29T01:00:00")
    with pytest.raises(WindowError, match="longer than 24 h"):
        parse_window("2026-10-27T00:00:00", "2026-10-29T01:00:00")


def _marks(spark, lh, rows):
    df = spark.createDataFrame([(s, b, lo.replace(tzinfo=None), hi.replace(tzinfo=None), 1, hi.replace(tzinfo=None))
                                for s, b, lo, hi in rows],
                               "source string, batch_id string, low timestamp, high timestamp, rows long, "
                               "ingested_at timestamp")
    lh.overwrite(df, WATERMARKS)


def test_plan_window_catches_up_missed_hours_and_reruns_keep_their_bounds(spark, cfg):
    lh = Lakehouse(spark, cfg)
    h = lambda n: datetime(2026, 10, 29, tzinfo=UTC) + timedelta(hours=n)  # noqa: E731
    assert plan_window(lh, "s", h(5), h(6)) == (h(5), h(6))                  # no watermark yet
    _marks(spark, lh, [("s", batch_id(h(2)), h(1), h(2)), ("other", batch_id(h(4)), h(3), h(4))])
    assert plan_window(lh, "s", h(5), h(6)) == (h(2), h(6))                  # hours 2-5 were missed
    assert plan_window(lh, "s", h(1), h(2)) == (h(1), h(2))                  # a rerun: its own bounds
    assert plan_window(lh, "s", h(30), h(31)) == (h(30), h(31))              # more than 24 h behind: start
    assert plan_window(lh, "other", h(4), h(5)) == (h(4), h(5))              # per source


def test_new_pairs_and_new_customers_get_indices_after_the_known_ones(spark):
    t = lambda m: datetime(2026, 10, 29, 1, m)  # noqa: E731
    events = spark.createDataFrame([
        ("u1", "a", "view", 0.3, t(0), False), ("u1", "a", "purchase", 1.0, t(5), False),
        ("new2", "b", "cart", 0.6, t(1), False), ("new1", "a", "view", 0.3, t(2), False),
        ("u1", "zz", "view", 0.3, t(3), False),                       # item without an index: skipped
        (None, "a", "view", 0.3, t(4), True), ("u1", "b", "return", 1.0, t(6), False)],
        "user_id string, item_id string, event_type string, strength double, event_time timestamp, "
        "is_anonymous boolean")
    user_index = spark.createDataFrame([("u0", 0), ("u1", 1)], "user_id string, idx int")
    item_index = spark.createDataFrame([("a", 0), ("b", 1)], "item_id string, idx int")
    ids = user_ids(user_index, events)
    assert sorted(map(tuple, ids.collect())) == [("new1", 2), ("new2", 3), ("u0", 0), ("u1", 1)]
    pairs = {(r["user"], r["item"]): (r["weight"], r["count"], r["first_time"], r["time"])
             for r in new_pairs(events, ids, item_index).collect()}
    ts = lambda m: t(m).replace(tzinfo=UTC).timestamp()  # noqa: E731
    assert pairs == {(1, 0): (1.0, 2.0, ts(0), ts(5)), (3, 1): (pytest.approx(0.6), 1.0, ts(1), ts(1)),
                     (2, 0): (pytest.approx(0.3), 1.0, ts(2), ts(2))}


ROWS = [  # InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country (UK time = UTC in Dec)
    "600001,A1,RED MUG,2,2011-12-08 09:10:00,2.50,17000,United Kingdom",
    "600002,A2,BLUE MUG,1,2011-12-09 10:05:00,2.50,17001,United Kingdom",
    "600003,A3,TEA SET,1,2011-12-09 10:40:00,9.95,17002,United Kingdom",
    "600004,A1,RED MUG,3,2011-12-09 11:15:00,2.50,17003,United Kingdom",
]


def test_an_hour_keeps_its_window_and_the_nightly_supersedes_its_day(spark, tmp_path):
    path = tmp_path / "live.csv"
    path.write_text(HEADER + "\n".join(ROWS) + "\n")
    cfg = make_config(tmp_path, sources={"online_retail": {"path": str(path), "hourly_path": str(path),
                                                          "timezone": "UTC"}})
    lh = Lakehouse(spark, cfg)
    start = datetime(2011, 12, 9, 10, tzinfo=UTC)
    res = ingest_hour(spark, cfg, "online_retail", start, start + timedelta(hours=1))
    assert (res.input_rows, res.accepted_rows, res.batch_id) == (2, 2, "hourly-20111209T1100")
    silver = lh.read("silver_interactions")
    assert sorted(r[0] for r in silver.select("session_id").collect()) == ["600002", "600003"]
    mark = lh.read(WATERMARKS).first()
    assert (mark["low"], mark["high"]) == (datetime(2011, 12, 9, 10), datetime(2011, 12, 9, 11))

    # the same hour again: the same rows, not twice
    ingest_hour(spark, cfg, "online_retail", start, start + timedelta(hours=1))
    assert lh.read("silver_interactions").count() == 2

    # the nightly batch of 2011-12-09 holds those events too: the hourly batch of the day goes, in one commit
    ingest(spark, cfg, "online_retail", datetime(2011, 12, 9).date(), str(path))
    silver = lh.read("silver_interactions")
    assert silver.filter(F.col("batch_id").startswith("hourly-")).count() == 0
    assert sorted(r[0] for r in silver.select("session_id").collect()) == ["600001", "600002", "600003", "600004"]
