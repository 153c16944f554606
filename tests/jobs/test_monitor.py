"""jobs/monitor.py: a day whose input collapsed and whose lists changed writes its ten judged rows to
`monitoring`, sends a drift alert per breached limit to a real local receiver and stops (critical); a
steady day raises none; a rerun for a date replaces that date's rows."""
from __future__ import annotations

from datetime import date

import pytest
from pyspark.sql import functions as F

from core import alerts
from core.errors import AlertRaised
from features.drift import psi
from jobs.lakehouse import Lakehouse
from jobs.monitor import monitor
from tests.compare import assert_rows
from tests.conftest import make_config
from tests.features.rows import silver_rows
from tests.webhook import Receiver

# a reference day: 3 customers, 6 events, prices 10, 10, 20, 20, 30, 30
REFERENCE_DAY = [("u1", "i1", "view", 10.0), ("u1", "i2", "view", 10.0), ("u2", "i1", "view", 20.0),
                 ("u2", "i2", "purchase", 20.0), ("u3", "i3", "view", 30.0), ("u3", "i1", "cart", 30.0)]


def lakehouse(spark, cfg) -> Lakehouse:
    lh = Lakehouse(spark, cfg)
    rows = [(u, i, et, 1, p, f"{day} 10:00", None, 1.0) for day in ("2026-10-26", "2026-10-27")
            for u, i, et, p in REFERENCE_DAY]
    rows.append(("u4", "i9", "purchase", 1, 100.0, "2026-10-28 10:00", None, 1.0))   # the 28th: one new customer
    lh.overwrite(silver_rows(spark, rows), "silver_interactions")
    lh.overwrite(spark.createDataFrame([("i1", "kitchen"), ("i2", "kitchen"), ("i3", "decor"), ("i9", "garden")],
                                       "item_id string, category string"), "items")
    # the 27th's lists half personal, half popular; the 28th's all personal
    recs = [(date(2026, 10, 27), u, i, s) for u, i, s in (("u1", "i1", "personal"), ("u1", "i3", "popular"),
                                                          ("u2", "i2", "personal"), ("u2", "i9", "popular"))]
    recs += [(date(2026, 10, 28), u, i, "personal") for u, i in (("u1", "i1"), ("u1", "i2"), ("u2", "i3"), ("u2", "i1"))]
    lh.overwrite(spark.createDataFrame(recs, "run_date date, user_id string, item_id string, source string"),
                 "recommendations")
    return lh


def test_a_drifted_day_is_recorded_alerted_and_stops_and_a_steady_day_is_not(spark, tmp_path, monkeypatch):
    # min_rows 1: the PSIs are judged on these few rows (noise, in real use: the rerun below keeps the default)
    cfg = make_config(tmp_path, monitoring={"drift": {"trailing_days": 2, "price_bins": 2, "activity_bins": 2,
                                                      "min_rows": 1}})
    lh = lakehouse(spark, cfg)
    with Receiver() as r:
        monkeypatch.setenv(alerts.WEBHOOK_ENV, r.url)
        with pytest.raises(AlertRaised, match="event_volume_ratio 0.1667 on 2026-10-28 is below its critical limit"):
            monitor(spark, cfg, "src", date(2026, 10, 28))
        drifted = list(r.received)
        steady = monitor(spark, cfg, "src", date(2026, 10, 27))     # raises nothing
        assert steady.alerts == [] and r.received == drifted
    d28, d27 = date(2026, 10, 28), date(2026, 10, 27)
    ref_mix, ref_prices, ref_activity = {"view": 8, "purchase": 2, "cart": 2}, {0: 4, 1: 8}, {1: 6}
    ref_categories = {"kitchen": 10, "decor": 2}
    assert_rows(lh.read("monitoring"), [
        # the 28th: 1 event against a median day of 6; a purchase of a new customer and item at 100
        (d28, "event_volume_ratio", 1 / 6, 0.2, "critical"),
        (d28, "event_type_psi", psi(ref_mix, {"purchase": 1}), 0.25, "critical"),
        (d28, "price_psi", psi(ref_prices, {1: 1}), 0.25, "critical"),          # one bin edge: 20
        (d28, "category_psi", psi(ref_categories, {"garden": 1}), 0.25, "critical"),
        (d28, "user_activity_psi", psi(ref_activity, {0: 1}), 0.25, "critical"),  # 2 events per customer-day vs 1
        (d28, "new_user_share", 1.0, 0.5, "warning"),
        (d28, "new_item_share", 1.0, 0.2, "warning"),
        (d28, "list_overlap", (1 / 2 + 0) / 2, 0.3, "warning"),               # u1 keeps i1 of 2, u2 none
        (d28, "list_source_psi", psi({"personal": 2, "popular": 2}, {"personal": 4}), 0.25, "warning"),
        (d28, "catalog_coverage", 3 / 4, 0.05, "ok"),
        # the 27th against the 25th (no events) and 26th: the same mix, no list the day before
        (d27, "event_volume_ratio", 2.0, 0.5, "ok"),
        (d27, "event_type_psi", 0.0, 0.1, "ok"),
        (d27, "price_psi", 0.0, 0.1, "ok"),
        (d27, "category_psi", 0.0, 0.1, "ok"),
        (d27, "user_activity_psi", 0.0, 0.1, "ok"),
        (d27, "new_user_share", 0.0, 0.5, "ok"),
        (d27, "new_item_share", 0.0, 0.2, "ok"),
        (d27, "list_overlap", None, 0.3, "no_data"),
        (d27, "list_source_psi", None, 0.25, "no_data"),             # no lists on the 26th
        (d27, "catalog_coverage", 1.0, 0.05, "ok"),
    ], ["run_date", "metric", "value", "threshold", "status"])
    assert [(b["alert"]["kind"], b["alert"]["severity"], b["alert"]["details"]["metric"]) for b in drifted] == [
        ("drift", "critical", "event_volume_ratio"), ("drift", "critical", "event_type_psi"),
        ("drift", "critical", "price_psi"), ("drift", "critical", "category_psi"),
        ("drift", "critical", "user_activity_psi"), ("drift", "warning", "new_user_share"),
        ("drift", "warning", "new_item_share"), ("drift", "warning", "list_overlap"),
        ("drift", "warning", "list_source_psi")]
    assert drifted[0]["alert"]["details"]["setting"] == "monitoring.drift.thresholds.event_volume_ratio"

    # a rerun of the 28th replaces its ten rows (the 27th's stay): with the default min_rows (1000) the PSIs
    # of 1 event are not judged, and with a looser volume limit the day only warns
    loose = make_config(tmp_path, monitoring={"drift": {"trailing_days": 2, "thresholds": {
        "event_volume_ratio": {"bound": "min", "warning": 0.5, "critical": 0.1}}}})
    again = monitor(spark, loose, "src", d28)
    assert [(a.severity, a.details["metric"]) for a in again.alerts] == [
        ("warning", "event_volume_ratio"), ("warning", "new_user_share"), ("warning", "new_item_share"),
        ("warning", "list_overlap")]
    table = lh.read("monitoring")
    assert table.count() == 20
    assert_rows(table.filter("run_date = '2026-10-28' and metric like '%psi'"), [
        (m, None, "no_data", '"min_rows": 1000') for m in ("event_type_psi", "price_psi", "category_psi",
                                                             "user_activity_psi", "list_source_psi")],
        ["metric", "value", "status", F.regexp_extract("details", '"min_rows": [0-9]+', 0)])
