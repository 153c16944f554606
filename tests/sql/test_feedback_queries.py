"""The feedback loop's analyst queries (sql/feedback_rates.sql, sql/recommended_sales.sql) on a tiny
lakehouse with a known answer: impressions and feedback written with the drain's schemas, then
attributed day by day by the job (jobs/attribution.py, ``reco feedback attribute``)."""
from __future__ import annotations

from datetime import date, datetime

import pytest

from features.contract import CATALOG_SCHEMA
from jobs.attribution import attribute_day
from jobs.feedback_drain import FEEDBACK_SCHEMA, IMPRESSIONS_SCHEMA
from jobs.lakehouse import Lakehouse
from jobs.sql_runner import run_sql_file
from tests.compare import assert_rows
from tests.conftest import make_config
from tests.sql.test_queries import OWN_LAKEHOUSE, SQL, check_header

D6, D7, D8 = date(2026, 12, 6), date(2026, 12, 7), date(2026, 12, 8)
V4 = "20261207-m4-abcdef0123"
V5 = "20261207-m5-0123456789"


def at(day: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2026, 12, day, hh, mm)


# (impression_id, ts, user, version, variant, [(item, position, tag)])
IMPRESSIONS = [
    ("r1", at(7, 9), "u1", V4, None, [("A", 1, "model"), ("B", 2, "trending")]),
    ("r2", at(7, 10), "u2", V4, None, [("C", 1, "popular"), ("A", 2, "model")]),     # A shown, never acted on
    ("r3", at(7, 11), "u3", V5, "treatment", [("B", 1, "model")]),
    ("r4", at(6, 20), "u1", V4, None, [("C", 1, "explore")]),                       # the day before
]

# (event_id, ts, type, user, item, request_id, quantity, price)
EVENTS = [
    ("f1", at(7, 9, 5), "click", "u1", "A", "r1", None, None),
    ("f2", at(7, 9, 6), "click", "u1", "A", "r1", None, None),          # a second click on r1's A: clicked once
    ("f3", at(7, 9, 10), "add_to_cart", "u1", "A", "r1", 2, None),
    ("f4", at(7, 9, 20), "purchase", "u1", "A", "r1", 2, 10.0),         # 20.0
    ("f5", at(7, 10, 30), "click", "u2", "C", None, None, None),        # last touch: r2
    ("f6", at(7, 10, 40), "purchase", "u2", "C", None, None, 4.0),      # last touch r2; no quantity: 1 unit
    ("f7", at(7, 11, 30), "purchase", "u3", "B", "r3", 1, 6.0),         # model 5
    ("f8", at(7, 12), "purchase", "u9", "A", None, 3, 10.0),            # never shown to u9: not credited
    ("f9", at(7, 8), "click", "u1", "C", None, None, None),             # last touch r4: counts on 12-06
    ("f10", at(8, 8), "purchase", "u1", "B", "r1", None, 5.0),          # next day, r1's trending B: on 12-07
]

ITEMS = [("A", "RED MUG", "kitchen", 10.0, True, D6), ("B", "BLUE VASE", "home decor", 5.0, True, D6)]  # no C


@pytest.fixture(scope="module")
def lh(spark, tmp_path_factory) -> Lakehouse:
    lake = Lakehouse(spark, make_config(tmp_path_factory.mktemp("feedback_sql")))
    impressions = spark.createDataFrame(
        [(rid, ts, ts.date(), "recommendations", user, None, None, 10, version, variant, "personal", False, items)
         for rid, ts, user, version, variant, items in IMPRESSIONS], IMPRESSIONS_SCHEMA)
    feedback = spark.createDataFrame(
        [(eid, ts, ts.date(), kind, user, item, rid, ts, qty, price)
         for eid, ts, kind, user, item, rid, qty, price in EVENTS], FEEDBACK_SCHEMA)
    lake.overwrite(impressions, "impressions", partition_by=["event_date"])
    lake.overwrite(feedback, "feedback", partition_by=["event_date"])
    lake.overwrite(spark.createDataFrame(ITEMS, CATALOG_SCHEMA), "items")
    done = [attribute_day(spark, lake.cfg, day) for day in (D6, D7, D8)]
    # 12-07: f1-f4 and f7 by request id, f5, f6, f9 by last touch, f8 not; 12-08: f10 by its request id
    assert [(d.events, d.by_request_id, d.by_last_touch, d.unattributed) for d in done] == [
        (0, 0, 0, 0), (9, 5, 3, 1), (1, 1, 0, 0)]
    return lake


def query(lh: Lakehouse, name: str, **params):
    return run_sql_file(lh, SQL / f"{name}.sql", [f"{k}={v}" for k, v in params.items()])


RATE_COLUMNS = ["day", "model_version", "variant", "list_source", "position", "lists", "shown", "clicked", "carted",
                "purchased", "ctr", "add_to_cart_rate", "conversion_rate", "purchases", "units", "revenue"]


def test_feedback_rates(lh):
    df = query(lh, "feedback_rates", start_date="2026-12-07", end_date="2026-12-07").cache()
    expected = [
        # model 4: r1 (A clicked twice, carted, bought 2 x 10; B bought the next day, 5) and r2 (C clicked and
        # bought, 4; A shown at 2 and left): 4 shown items, 2 clicked, 1 carted, 3 bought
        (D7, "4", None, "(all)", None, 2, 4, 2, 1, 3, 0.5, 0.25, 0.75, 3, 4, 29.0),
        (D7, "4", None, "personal", None, 2, 2, 1, 1, 1, 0.5, 0.5, 0.5, 1, 2, 20.0),
        (D7, "4", None, "personal", 1, 1, 1, 1, 1, 1, 1.0, 1.0, 1.0, 1, 2, 20.0),
        (D7, "4", None, "personal", 2, 1, 1, 0, 0, 0, 0.0, 0.0, 0.0, 0, 0, None),
        (D7, "4", None, "trending", None, 1, 1, 0, 0, 1, 0.0, 0.0, 1.0, 1, 1, 5.0),
        (D7, "4", None, "trending", 2, 1, 1, 0, 0, 1, 0.0, 0.0, 1.0, 1, 1, 5.0),
        (D7, "4", None, "popular", None, 1, 1, 1, 0, 1, 1.0, 0.0, 1.0, 1, 1, 4.0),
        (D7, "4", None, "popular", 1, 1, 1, 1, 0, 1, 1.0, 0.0, 1.0, 1, 1, 4.0),
        # model 5, variant treatment: r3's B bought
        (D7, "5", "treatment", "(all)", None, 1, 1, 0, 0, 1, 0.0, 0.0, 1.0, 1, 1, 6.0),
        (D7, "5", "treatment", "personal", None, 1, 1, 0, 0, 1, 0.0, 0.0, 1.0, 1, 1, 6.0),
        (D7, "5", "treatment", "personal", 1, 1, 1, 0, 0, 1, 0.0, 0.0, 1.0, 1, 1, 6.0),
    ]
    assert_rows(df, expected, RATE_COLUMNS)
    assert [tuple(r) for r in df.select(*RATE_COLUMNS[:5]).collect()] == [e[:5] for e in expected]
    # the click of 12-07 08:00 counts with r4, its impression, on 12-06
    before = query(lh, "feedback_rates", start_date="2026-12-06", end_date="2026-12-06")
    assert_rows(before, [
        (D6, "4", None, "(all)", None, 1, 1, 1, 0, 0, 1.0, 0.0, 0.0, 0, 0, None),
        (D6, "4", None, "explore", None, 1, 1, 1, 0, 0, 1.0, 0.0, 0.0, 0, 0, None),
        (D6, "4", None, "explore", 1, 1, 1, 1, 0, 0, 1.0, 0.0, 0.0, 0, 0, None),
    ], RATE_COLUMNS)


SALES_COLUMNS = ["rank", "item_id", "title", "attributed_purchases", "units", "revenue", "buyers", "list_sources",
                 "recommended_share"]


def test_recommended_sales(lh):
    df = query(lh, "recommended_sales", start_date="2026-12-07", end_date="2026-12-08")
    assert_rows(df, [
        # A: f4's 2 units credited; u9's 3 (f8) were not: 2 of 5 units
        (1, "A", "RED MUG", 1, 2, 20.0, 1, "personal", 0.4),
        # B: f7 (r3, personal, 6.0) and f10 (r1, trending, 5.0)
        (2, "B", "BLUE VASE", 2, 2, 11.0, 2, "personal, trending", 1.0),
        # C: f6, last touch r2; not in the catalog
        (3, "C", None, 1, 1, 4.0, 1, "popular", 1.0),
    ], SALES_COLUMNS)
    # one day, the top 2: f10 (12-08) is out, so B has only f7's 6.0 and C's 4.0 is third
    top = query(lh, "recommended_sales", start_date="2026-12-07", end_date="2026-12-07", n="2")
    assert_rows(top, [(1, "A", 20.0), (2, "B", 6.0)], ["rank", "item_id", "revenue"])


def test_attributing_a_day_again_replaces_its_rows(spark, lh):
    before = sorted(tuple(r) for r in lh.read("attributed_feedback").collect())
    assert attribute_day(spark, lh.cfg, D7).events == 9
    assert sorted(tuple(r) for r in lh.read("attributed_feedback").collect()) == before


@pytest.mark.parametrize("name", OWN_LAKEHOUSE)
def test_header_documents_parameters_and_columns(lh, name):
    check_header(lh, SQL / name)
