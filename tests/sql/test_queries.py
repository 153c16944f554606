"""The analyst queries in sql/, run through jobs.sql_runner on a tiny lakehouse with a known answer.

The lakehouse is built once for the module by the pipeline's own builders
(build_silver, user_features, item_features, quarantine_rows) from a few inline
contract rows, written the way the jobs write them; every expected number below
is worked out by hand from those rows.
"""
from __future__ import annotations

import re
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from features.contract import CATALOG_SCHEMA
from features.interactions import build_silver
from features.item_features import item_features
from features.row_quality import quarantine_rows
from features.user_features import user_features
from jobs.lakehouse import Lakehouse
from jobs.pipeline_runs import SCHEMA as RUNS_SCHEMA
from jobs.sql_runner import SqlError, parameters, run_sql, run_sql_file
from tests.compare import assert_rows
from tests.conftest import make_config

SQL = Path(__file__).resolve().parents[2] / "sql"
RUN = date(2024, 3, 10)
GRADES = {"view": 0.3, "cart": 0.6, "purchase": 1.0}

VALID_COLUMNS = ("source string, batch_id string, row_id long, user_id string, item_id string, event_type string, "
                 "value double, price double, event_time timestamp, country string, session_id string, raw string")

# (row_id, user, item, event_type, value, price, 'YYYY-MM-DD HH:MM' UTC, session, country)
EVENTS = [
    # history before the report windows: sets up the segments and the 30-day popularity
    (1, "u6", "A", "purchase", 1, 10.0, "2024-01-05 12:00", "o0", "DE"),   # u6's only event: dormant
    (2, "u1", "A", "view", 1, None, "2024-01-10 09:00", None, "UK"),       # u1 known for 60 days: not new
    (3, "u7", "B", "view", 1, None, "2024-01-20 09:00", None, "UK"),       # u7 known for 50 days
    (4, "u7", "B", "purchase", 2, 5.0, "2024-02-20 10:00", "o7", "UK"),    # u7 last seen 19 days ago: lapsing
    (5, "u2", "A", "view", 1, None, "2024-02-25 10:00", None, "UK"),       # in A's 30-day, not 7-day, window
    # 2024-03-08
    (6, "u1", "A", "purchase", 2, 10.0, "2024-03-08 10:00", "o1", "UK"),
    (7, "u1", "B", "purchase", 1, 5.0, "2024-03-08 10:00", "o1", "UK"),    # same order o1
    (8, "u1", "POST", "purchase", 1, 3.0, "2024-03-08 10:00", "o1", "UK"),  # postage: excluded, no revenue
    (9, "u2", "A", "purchase", 1, 10.0, "2024-03-08 11:00", "o2", "UK"),
    (10, "u2", "POST", "purchase", 1, 3.0, "2024-03-08 11:00", "o2", "UK"),  # postage again
    (11, "u3", "A", "view", 1, None, "2024-03-08 12:00", None, "FR"),       # a view makes u3 active that day
    (12, None, "A", "purchase", 3, 10.0, "2024-03-08 13:00", "o3", "UK"),   # anonymous: sales yes, customers no
    # 2024-03-09
    (13, "u2", "B", "purchase", 4, 5.0, "2024-03-09 09:00", "o4", "UK"),    # 1 unit returned below: counts 3
    (14, "u2", "B", "return", 1, 5.0, "2024-03-10 08:00", "c1", "UK"),      # netted into row 13, excluded
    (15, "u4", "C", "purchase", 1, None, "2024-03-09 15:00", "o5", "UK"),   # unknown price: units, no revenue
    (16, "u3", "C", "cart", 1, 2.0, "2024-03-09 16:00", None, "FR"),
    # 2024-03-10
    (17, "u1", "C", "purchase", 2, 2.0, "2024-03-10 09:00", "o6", "UK"),
    (18, None, "B", "view", 1, None, "2024-03-10 10:00", None, "UK"),
    (19, "u5", "D", "return", 1, 7.0, "2024-03-10 11:00", "c2", "UK"),      # return without purchase: excluded
]

# C is deliberately missing from the catalog; D is in it but has no interactions
ITEMS = [
    ("A", "RED MUG", "kitchen", 10.0, True, date(2024, 1, 1)),
    ("B", "BLUE VASE", "home decor", 5.0, True, date(2024, 1, 1)),
    ("D", "GREEN LAMP", "lighting", 7.0, False, date(2024, 3, 5)),
]

FUTURE = "event_time_in_future: after 2024-03-11 00:00 UTC"
# (source, batch, row_id, reasons): only a row's first reason counts in data_quality
BAD_ROWS = [
    ("shop", "b1", 101, [FUTURE]),
    ("shop", "b1", 102, [FUTURE, "missing_value"]),
    ("shop", "b1", 103, ["missing_item_id", "unknown_event_type: not one of view/cart/purchase/rating/return"]),
    ("shop", "b1", 104, ["unparseable_value"]),
    ("shop", "b1", 105, ["duplicate_row: same raw line seen earlier in the batch"]),
    ("web", "w1", 1, ["missing_value"]),
    ("web", "w1", 2, ["missing_value"]),
    ("web", "w1", 3, ["missing_value"]),
]

RUNS = [
    # 19 valid rows = 15 accepted + 4 excluded; 5 quarantined
    ("ingest", "shop", "b1", RUN, "succeeded", 24, 15, 4, 5, "{}", 1.0),
    # a batch stopped by the quality gate: its one good row was never written
    ("ingest", "web", "w1", date(2024, 3, 9), "failed_quality_gate", 4, 0, 0, 3, "{}", 1.0),
    # not an ingest run: not in data_quality
    ("features", "all", "as-of-2024-03-10", RUN, "succeeded", None, None, None, None, "{}", 1.0),
]


# -- the scoring run's outputs (jobs/score.py), for the recommendation_* queries
# The catalog is A (kitchen), B (home decor), D (lighting); C (in item_features, not in the
# catalog) and X (nowhere) have category 'unknown'. Popularity as of RUN: A 4.9 > B 3.6 > D 0.
EARLIER_RUN = date(2024, 3, 9)
RUN_META = {RUN: ("4", "mlrun-4", "20240310-m4-aaa"), EARLIER_RUN: ("3", "mlrun-3", "20240309-m3-bbb")}

# (run_date, user, rank, item, score, source)
RECOMMENDATIONS = [
    (RUN, "u1", 1, "A", 0.9, "personal"),     # u1: active
    (RUN, "u1", 2, "B", 0.8, "personal"),
    (RUN, "u1", 3, "C", 0.5, "buy_again"),
    (RUN, "u2", 1, "C", None, "pinned"),      # u2: new; a pinned item has no model score
    (RUN, "u2", 2, "A", 0.7, "trending"),
    (RUN, "u2", 3, "X", None, "backfill"),    # X: in no table at all
    (RUN, "u3", 1, "A", 0.6, "popular"),      # u3: new; a list of 2
    (RUN, "u3", 2, "B", 0.3, "explore"),
    (RUN, "u9", 1, "A", 0.6, "popular"),      # u9: no user_features row -> segment (unknown)
    (RUN, "u9", 2, "C", 0.4, "popular"),
    # the day before: a query that forgets its run_date filter sees u4, D and one more A
    (EARLIER_RUN, "u4", 1, "D", 0.5, "personal"),
    (EARLIER_RUN, "u4", 2, "A", 0.4, "trending"),
]

# (run_date, anchor item, rank, similar item, score, source)
SIMILAR_ITEMS = [
    (RUN, "A", 1, "B", 0.9, "embedding"),      # A: home decor, lighting, unknown
    (RUN, "A", 2, "D", 0.8, "embedding"),
    (RUN, "A", 3, "C", 0.2, "co_purchase"),
    (RUN, "B", 1, "A", 0.9, "embedding"),      # B: kitchen, unknown, unknown
    (RUN, "B", 2, "C", 0.5, "co_purchase"),
    (RUN, "B", 3, "X", None, "backfill"),
    (RUN, "D", 1, "C", 0.4, "embedding"),      # D: unknown, unknown (one category)
    (RUN, "D", 2, "X", None, "backfill"),
    (EARLIER_RUN, "A", 1, "D", 0.7, "embedding"),
]

# (run_date, list_name, rank, item, score, source)
FALLBACK_LISTS = [
    # raw inputs: not served lists, left out of recommendation_diversity
    (RUN, "popular:global", 1, "A", 4.9, "popular"),
    (RUN, "popular:global", 2, "B", 3.6, "popular"),
    (RUN, "trending:global", 1, "C", 4.3, "trending"),
    (RUN, "trending:global", 2, "X", 1.0, "trending"),
    (RUN, "popular:segment:UK", 1, "A", 4.6, "popular"),
    (RUN, "trending:segment:UK", 1, "X", 2.0, "trending"),
    # served: global (kitchen, home decor, unknown), segment:UK (unknown x2, kitchen)
    (RUN, "global", 1, "A", 4.9, "popular"),
    (RUN, "global", 2, "C", 4.3, "trending"),
    (RUN, "global", 3, "B", 3.6, "popular"),
    (RUN, "segment:UK", 1, "C", 4.3, "trending"),
    (RUN, "segment:UK", 2, "X", 1.0, "trending"),
    (RUN, "segment:UK", 3, "A", 4.6, "popular"),
    (EARLIER_RUN, "global", 1, "D", 1.0, "popular"),
]


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def lh(spark, tmp_path_factory) -> Lakehouse:
    lake = Lakehouse(spark, make_config(tmp_path_factory.mktemp("sql")))
    valid = spark.createDataFrame(
        [("shop", "b1", rid, u, i, et, float(v), p, _ts(t), c, s, f"raw{rid}")
         for rid, u, i, et, v, p, t, s, c in EVENTS], VALID_COLUMNS)
    silver, excluded = build_silver(valid, ["POST"], GRADES, 5.0)
    batch = {"source": "shop", "batch_id": "b1"}
    lake.replace(silver, "silver_interactions", batch, partition_by=["event_date"])
    lake.replace(excluded.withColumn("run_date", F.lit(RUN)), "excluded", batch)
    lake.overwrite(spark.createDataFrame(ITEMS, CATALOG_SCHEMA), "items")
    silver = lake.read("silver_interactions")
    lake.replace(user_features(silver, RUN, 7, 30), "user_features", {"as_of_date": RUN},
                 partition_by=["as_of_date"])
    # a copy under an earlier date: a query that forgets its as_of_date filter counts every user twice
    earlier = date(2024, 3, 8)
    lake.replace(lake.read("user_features").withColumn("as_of_date", F.lit(earlier)), "user_features",
                 {"as_of_date": earlier})
    lake.replace(item_features(silver, lake.read("items"), RUN, 7, 30), "item_features", {"as_of_date": RUN},
                 partition_by=["as_of_date"])
    bad = spark.createDataFrame([(s, b, r, f"bad{r}", reasons) for s, b, r, reasons in BAD_ROWS],
                                "source string, batch_id string, row_id long, raw string, reasons array<string>")
    lake.overwrite(quarantine_rows(bad, RUN), "quarantine")
    lake.merge(spark.createDataFrame(RUNS, RUNS_SCHEMA), "pipeline_runs",
               keys=["step", "source", "batch_id", "run_date"])
    _write_run_outputs(spark, lake, RECOMMENDATIONS, "recommendations",
                       "user_id string, rank int, item_id string, score float, source string")
    _write_run_outputs(spark, lake, SIMILAR_ITEMS, "similar_items",
                       "item_id string, rank int, similar_item_id string, score float, source string")
    _write_run_outputs(spark, lake, FALLBACK_LISTS, "fallback_lists",
                       "list_name string, rank int, item_id string, score float, source string")
    return lake


def _write_run_outputs(spark, lake: Lakehouse, rows, table: str, columns: str) -> None:
    """Write ``rows`` (run_date first) the way jobs/score.py does: one run_date partition per run."""
    for day, (version, run_id, score_id) in RUN_META.items():
        df = spark.createDataFrame([r[1:] + (version, run_id, score_id, day) for r in rows if r[0] == day],
                                   f"{columns}, model_version string, run_id string, score_id string, "
                                   "run_date date")
        lake.replace(df, table, {"run_date": day}, partition_by=["run_date"])


def query(lh: Lakehouse, name: str, **params):
    return run_sql_file(lh, SQL / f"{name}.sql", [f"{k}={v}" for k, v in params.items()])


def test_daily_sales(lh):
    df = query(lh, "daily_sales", start_date="2024-03-07", end_date="2024-03-10").cache()
    assert_rows(df, [
        # a day without events still has its row
        (date(2024, 3, 7), 0, 0.0, 0.0, 0),
        # orders o1, o2, o3; units 2+1+1+3; revenue 20+5+10+30 (postage left out); u1, u2, u3
        (date(2024, 3, 8), 3, 7.0, 65.0, 3),
        # o4 (4 bought - 1 returned = 3 x 5.0) and o5 (1 unit, unknown price); u2, u4, and u3's cart
        (date(2024, 3, 9), 2, 4.0, 15.0, 3),
        # o6: 2 x 2.0; the anonymous view and the excluded returns make no customer
        (date(2024, 3, 10), 1, 2.0, 4.0, 1),
    ], ["event_date", "orders", "units", "revenue", "active_customers"])
    assert [r[0] for r in df.collect()] == [date(2024, 3, d) for d in (7, 8, 9, 10)]


def test_top_items_window_and_revenue_tiebreak(lh):
    # 2024-03-08..10: A 3 purchases; B and C 2 each, B first on revenue (5+15 against 4)
    df = query(lh, "top_items", run_date="2024-03-10", days="3", n="2")
    assert_rows(df, [
        (1, "A", "RED MUG", "kitchen", 3, 6.0, 60.0, 2, date(2024, 3, 8), RUN),
        (2, "B", "BLUE VASE", "home decor", 2, 4.0, 20.0, 2, date(2024, 3, 8), RUN),
    ], ["rank", "item_id", "title", "category", "purchases", "units", "revenue", "buyers",
        "window_start", "window_end"])


def test_top_items_defaults_and_items_missing_from_catalog(lh):
    # default 30 days: u7's purchase of B on 02-20 is in, u6's of A on 01-05 is not; A and B tie
    # on 3 purchases, A wins on revenue (60 against 10+5+15); C is not in the catalog
    df = query(lh, "top_items", run_date="2024-03-10")
    assert_rows(df, [
        (1, "A", "RED MUG", "kitchen", 3, 60.0, 2),
        (2, "B", "BLUE VASE", "home decor", 3, 30.0, 3),
        (3, "C", None, "unknown", 2, 4.0, 2),
    ], ["rank", "item_id", "title", "category", "purchases", "revenue", "buyers"])


def test_customer_segments(lh):
    df = query(lh, "customer_segments", run_date="2024-03-10").cache()
    expected = [
        # new: u2 (2 purchases, baskets 10 and 15), u3 (no purchase), u4 (a basket without price)
        ("new", "(all)", 3, 2, 1.0, 12.5),
        ("new", "UK", 2, 2, 1.5, 12.5),
        ("new", "FR", 1, 0, 0.0, None),
        # active: u1, known since 01-10, baskets o1 = 20+5 and o6 = 4
        ("active", "(all)", 1, 1, 3.0, 14.5),
        ("active", "UK", 1, 1, 3.0, 14.5),
        ("lapsing", "(all)", 1, 1, 1.0, 10.0),
        ("lapsing", "UK", 1, 1, 1.0, 10.0),
        ("dormant", "(all)", 1, 1, 1.0, 10.0),
        ("dormant", "DE", 1, 1, 1.0, 10.0),
    ]
    cols = ["activity_segment", "country", "customers", "buyers", "avg_purchases", "avg_basket_value"]
    assert_rows(df, expected, cols)
    assert [tuple(r) for r in df.select(*cols[:2]).collect()] == [e[:2] for e in expected]


def test_data_quality(lh):
    df = query(lh, "data_quality")
    cols = ["source", "batch_id", "run_date", "status", "input_rows", "accepted_rows", "excluded_rows",
            "quarantined_rows", "unaccounted_rows", "bad_share", "top_quarantine_reasons", "excluded_by_rule"]
    assert_rows(df, [
        # top 3 first rules, ties by name; missing_value and unknown_event_type are never first
        ("shop", "b1", RUN, "succeeded", 24, 15, 4, 5, 0, 0.2083,
         "event_time_in_future (2); duplicate_row (1); missing_item_id (1)",
         "non_product_item (2); return_netted (1); return_without_purchase (1)"),
        ("web", "w1", date(2024, 3, 9), "failed_quality_gate", 4, 0, 0, 3, 1, 0.75, "missing_value (3)", None),
    ], cols)


def test_item_trends(lh):
    # C: all activity in the last 7 days, trend 30/7; A: 3.3 of its 3.6 in 7 days, trend 3.3*30/(7*3.6);
    # B: 2.3 of 3.3, below min_popularity 2.5
    df = query(lh, "item_trends", run_date="2024-03-10", min_popularity="2.5")
    assert_rows(df, [
        (1, "C", None, "unknown", 4.286, 2.6, 2.6, 2.6, 3),
        (2, "A", "RED MUG", "kitchen", 3.929, 3.3, 3.6, 4.9, 4),
    ], ["rank", "item_id", "title", "category", "trend", "popularity_7d", "popularity_30d", "popularity",
        "n_users"])
    # no minimum: B (2.3*30/(7*3.3)) comes in; D, in the catalog but never touched, has no trend
    no_min = query(lh, "item_trends", run_date="2024-03-10", min_popularity="0")
    assert_rows(no_min, [(1, "C", 4.286), (2, "A", 3.929), (3, "B", 2.987)], ["rank", "item_id", "trend"])


def test_recommendation_coverage(lh):
    df = query(lh, "recommendation_coverage", run_date="2024-03-10")
    cols = ["run_date", "users", "min_list_length", "max_list_length", "recommendations", "distinct_items",
            "items_outside_catalog", "catalog_items", "catalog_coverage", "tail_items", "tail_coverage",
            "tail_rec_share", "gini", "model_version", "score_id"]
    # u1, u2 (3 items each), u3, u9 (2 each): 10 rows; A x4, B x2, C x3, X x1 -> 4 distinct items,
    # C and X not in the catalog {A, B, D}; catalog items recommended: A, B -> 2/3.
    # Tail: head = ceil(0.2 * 3) = 1 item, A (popularity 4.9); tail = {B, D}, B recommended -> 1/2;
    # tail rows: B's 2 of 10 -> 0.2.
    # Gini over catalog counts sorted ascending D 0, B 2, A 4 (n = 3, sum 6):
    # 2 * (1*0 + 2*2 + 3*4) / (3 * 6) - 4/3 = 32/18 - 24/18 = 4/9
    assert_rows(df, [
        (RUN, 4, 2, 3, 10, 4, 2, 3, 0.6667, 2, 0.5, 0.2, 0.4444, "4", "20240310-m4-aaa"),
    ], cols)
    # head_share 0.5: head = ceil(1.5) = 2 items, A and B (3.6 > D's 0); tail = {D}, never recommended
    wide_head = query(lh, "recommendation_coverage", run_date="2024-03-10", head_share="0.5")
    assert_rows(wide_head, [(1, 0.0, 0.0, 0.4444)], ["tail_items", "tail_coverage", "tail_rec_share", "gini"])
    # the day before: u4 gets D and A; no item_features slice for that day, so no tail columns;
    # Gini over B 0, A 1, D 1 (ties in any order): 2 * (0 + 2 + 3) / (3 * 2) - 4/3 = 1/3
    earlier = query(lh, "recommendation_coverage", run_date="2024-03-09")
    assert_rows(earlier, [
        (EARLIER_RUN, 1, 2, 2, 2, 2, 0, 3, 0.6667, None, None, None, 0.3333, "3", "20240309-m3-bbb"),
    ], cols)
    # a day without a run: still one row
    empty = query(lh, "recommendation_coverage", run_date="2024-03-01")
    assert_rows(empty, [(0, None, 0, 0, 3, 0.0, None, None, None)],
                ["users", "max_list_length", "recommendations", "distinct_items", "catalog_items",
                 "catalog_coverage", "tail_items", "gini", "model_version"])


def test_recommendation_sources(lh):
    df = query(lh, "recommendation_sources", run_date="2024-03-10").cache()
    cols = ["activity_segment", "source", "recommendations", "recommendation_share", "users_reached",
            "user_share", "avg_rank", "rank1_share"]
    expected = [
        # (all): 10 positions, 4 users, 4 rank-1 positions (u1 personal, u2 pinned, u3 and u9 popular)
        ("(all)", "personal", 2, 0.2, 1, 0.25, 1.5, 0.25),        # u1 ranks 1, 2
        ("(all)", "buy_again", 1, 0.1, 1, 0.25, 3.0, 0.0),
        ("(all)", "trending", 1, 0.1, 1, 0.25, 2.0, 0.0),
        ("(all)", "popular", 3, 0.3, 2, 0.5, 1.33, 0.5),          # u3 rank 1, u9 ranks 1, 2: 4/3
        ("(all)", "explore", 1, 0.1, 1, 0.25, 2.0, 0.0),
        ("(all)", "pinned", 1, 0.1, 1, 0.25, 1.0, 0.25),
        ("(all)", "backfill", 1, 0.1, 1, 0.25, 3.0, 0.0),
        # new: u2 and u3, 5 positions, 2 rank-1 positions (the 03-08 copy of user_features is not read)
        ("new", "trending", 1, 0.2, 1, 0.5, 2.0, 0.0),
        ("new", "popular", 1, 0.2, 1, 0.5, 1.0, 0.5),
        ("new", "explore", 1, 0.2, 1, 0.5, 2.0, 0.0),
        ("new", "pinned", 1, 0.2, 1, 0.5, 1.0, 0.5),
        ("new", "backfill", 1, 0.2, 1, 0.5, 3.0, 0.0),
        # active: u1, 3 positions
        ("active", "personal", 2, 0.6667, 1, 1.0, 1.5, 1.0),
        ("active", "buy_again", 1, 0.3333, 1, 1.0, 3.0, 0.0),
        # u9 has no user_features row
        ("(unknown)", "popular", 2, 1.0, 1, 1.0, 1.5, 1.0),
    ]
    assert_rows(df, expected, cols)
    assert [tuple(r) for r in df.select(*cols[:2]).collect()] == [e[:2] for e in expected]


def test_recommendation_diversity(lh):
    df = query(lh, "recommendation_diversity", run_date="2024-03-10").cache()
    cols = ["list_kind", "lists", "avg_list_length", "avg_categories", "p10_categories", "median_categories",
            "p90_categories", "avg_max_category_share", "dominated_share"]
    expected = [
        # u1 A B C: 3 categories, biggest 1/3; u2 C A X: 2 (unknown twice), 2/3, dominated;
        # u3 A B: 2, 1/2 (half is not dominated); u9 A C: 2, 1/2.
        # sorted 2 2 2 3: mean 9/4; interpolated p10 at 0.3 -> 2, median at 1.5 -> 2, p90 at 2.7 -> 2.7;
        # biggest share (1/3 + 2/3 + 1/2 + 1/2) / 4 = 0.5; dominated 1 of 4; length 10/4
        ("user lists", 4, 2.5, 2.25, 2.0, 2.0, 2.7, 0.5, 0.25),
        # A -> B D C: 3 categories, 1/3; B -> A C X: 2, 2/3, dominated; D -> C X: 1, 1, dominated.
        # sorted 1 2 3: mean 2; p10 at 0.2 -> 1.2, median 2, p90 at 1.8 -> 2.8;
        # biggest share (1/3 + 2/3 + 1) / 3 = 2/3; dominated 2 of 3; length 8/3
        ("similar items", 3, 2.67, 2.0, 1.2, 2.0, 2.8, 0.6667, 0.6667),
        # served lists only: global A C B: 3, 1/3; segment:UK C X A: 2, 2/3, dominated.
        # sorted 2 3: p10 at 0.1 -> 2.1, median 2.5, p90 at 0.9 -> 2.9
        ("fallback lists", 2, 3.0, 2.5, 2.1, 2.5, 2.9, 0.5, 0.5),
    ]
    assert_rows(df, expected, cols)
    assert [r[0] for r in df.collect()] == [e[0] for e in expected]
    # a day without a run: every kind still has its row
    empty = query(lh, "recommendation_diversity", run_date="2024-03-01")
    assert_rows(empty, [(k, 0, None, None) for k in ("user lists", "similar items", "fallback lists")],
                ["list_kind", "lists", "avg_categories", "dominated_share"])


SAMPLE_PARAMS = {"start_date": "2024-03-07", "end_date": "2024-03-10", "run_date": "2024-03-10"}


# queries over the feedback loop's tables: checked the same way on their own lakehouse (test_feedback_queries.py)
OWN_LAKEHOUSE = ("feedback_rates.sql", "recommended_sales.sql")


@pytest.mark.parametrize("path", [p for p in sorted(SQL.glob("*.sql")) if p.name not in OWN_LAKEHOUSE],
                         ids=lambda p: p.name)
def test_header_documents_parameters_and_columns(lh, path):
    check_header(lh, path)


def check_header(lh, path):
    """Column meanings live beside the SQL: every parameter and output column is in the header."""
    text = path.read_text()
    header = "\n".join(line for line in text.splitlines()[:80] if line.startswith("--"))
    for name in parameters(text):
        assert f":{name}" in header, f"{path.name}: parameter :{name} is not described in the header"
    df = run_sql_file(lh, path, [f"{k}={v}" for k, v in SAMPLE_PARAMS.items() if k in parameters(text)])
    documented = set(re.findall(r"^--\s+(\w+)\s+[A-Z]+\b", header, re.M))
    missing = [c for c in df.columns if c not in documented]
    assert not missing, f"{path.name}: output column(s) {missing} have no line in the header's Columns list"


def test_missing_parameter_is_named(lh):
    with pytest.raises(SqlError) as err:
        query(lh, "daily_sales", start_date="2024-03-07")
    assert "['end_date']" in str(err.value) and "--param end_date=" in str(err.value)


def test_parameters_skip_strings_and_comments():
    text = ("SELECT ':in_string', 'it''s :escaped' AS s, x::int -- :in_line_comment\n"
            "/* :in_block\n comment */ FROM t WHERE d = :run_date AND n < :n")
    assert parameters(text) == ["n", "run_date"]


def test_parameters_skip_double_quoted_strings():
    assert parameters('SELECT ":not_a_param" AS s') == []


def test_missing_table_is_a_sql_error(spark, lh, cfg):
    empty = Lakehouse(spark, cfg)  # nothing ingested yet
    with pytest.raises(SqlError) as err:
        query(empty, "daily_sales", start_date="2024-03-07", end_date="2024-03-10")
    message = str(err.value)
    assert "silver_interactions" in message and "tables: none" in message and "daily_sales.sql" in message
    assert "\tat org.apache" not in message  # one line, not a JVM stack trace
    with pytest.raises(SqlError, match="no_such_table"):
        run_sql(empty, "SELECT * FROM no_such_table", {})


def test_tables_of_another_lakehouse_are_not_visible(spark, lh, cfg):
    query(lh, "data_quality")  # registers lh's tables as views
    with pytest.raises(SqlError, match="pipeline_runs"):
        query(Lakehouse(spark, cfg), "data_quality")


def test_malformed_parameter_value_is_a_sql_error(lh):
    with pytest.raises(SqlError, match="start_date"):
        query(lh, "daily_sales", start_date="2024-13-45", end_date="2024-03-10").collect()
