"""reco feedback attribute (jobs/attribution.py): the days of impressions it reads around D, and a day
attributed before the drain made any table."""
from __future__ import annotations

from datetime import date, datetime

from jobs.attribution import attribute_day
from jobs.feedback_drain import FEEDBACK_SCHEMA, IMPRESSIONS_SCHEMA
from jobs.lakehouse import Lakehouse
from tests.compare import assert_rows
from tests.conftest import make_config

D = date(2026, 12, 7)


def test_reads_the_impressions_of_the_window_before_and_the_day_after(spark, tmp_path):
    cfg = make_config(tmp_path, feedback={"attribution": {"window_hours": 30}})
    lh = Lakehouse(spark, cfg)
    impressions = [  # (impression_id, ts, user, item)
        ("r1", datetime(2026, 12, 5, 23, 0), "u1", "A"),   # 25.5 h before e1: on D-2, in the 30 h window
        ("r2", datetime(2026, 12, 8, 0, 10), "u2", "B"),   # D+1, 20 min after e2, which names it
        ("r3", datetime(2026, 12, 5, 17, 0), "u3", "C"),   # 31 h before e3: out of the window
    ]
    events = [  # (event_id, ts, user, item, request_id)
        ("e1", datetime(2026, 12, 7, 0, 30), "u1", "A", None),
        ("e2", datetime(2026, 12, 7, 23, 50), "u2", "B", "r2"),   # the web app's clock behind the service's
        ("e3", datetime(2026, 12, 7, 0, 0), "u3", "C", None),
        ("e4", datetime(2026, 12, 8, 1, 0), "u1", "A", None),     # another day: not in D's partition
    ]
    lh.overwrite(spark.createDataFrame(
        [(rid, ts, ts.date(), "recommendations", u, None, None, 10, "v", None, "personal", False, [(i, 1, "model")])
         for rid, ts, u, i in impressions], IMPRESSIONS_SCHEMA), "impressions", partition_by=["event_date"])
    lh.overwrite(spark.createDataFrame(
        [(eid, ts, ts.date(), "click", u, i, rid, ts, None, None) for eid, ts, u, i, rid in events], FEEDBACK_SCHEMA),
        "feedback", partition_by=["event_date"])
    done = attribute_day(spark, cfg, D)
    assert (done.events, done.by_request_id, done.by_last_touch, done.unattributed) == (3, 1, 1, 1)
    assert_rows(lh.read("attributed_feedback"), [("e1", "r1", "last_touch"), ("e2", "r2", "request_id"),
                                                 ("e3", None, None)], ["event_id", "impression_id", "rule"])


def test_a_day_before_any_drain_writes_an_empty_partition(spark, tmp_path):
    cfg = make_config(tmp_path)
    done = attribute_day(spark, cfg, D)
    assert (done.events, done.unattributed) == (0, 0)
    table = Lakehouse(spark, cfg).read("attributed_feedback")
    assert table.count() == 0 and "list_source" in table.columns     # the queries can read it already
