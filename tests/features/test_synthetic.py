"""The synthetic generator: deterministic, partitioning-independent, and shaped like retail.

One small data set (2000 users, 300 items, ~30k events over 60 days) is generated
once per module and cached; the statistical checks use thresholds far from what
structure-free data would give (noted on each), so they fail when a feature is lost.
"""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from features.contract import CATALOG_SCHEMA, EVENT_SCHEMA
from features.synthetic import (SESSION_SPAN_S, SyntheticParams, generate_catalog, generate_events,
                                user_segments)

PARAMS = SyntheticParams(
    seed=7, n_users=2000, n_items=300, n_events=30_000, start_date="2026-07-01", days=60,
    countries=("United Kingdom", "Germany", "France", "Spain"), n_segments=4,
    popularity_exponent=1.1, return_rate=0.05)
START = date.fromisoformat(PARAMS.start_date)
KEY = ["session_id", "user_id", "item_id"]


@pytest.fixture(scope="module")
def events(spark):
    df = generate_events(spark, PARAMS).cache()
    yield df
    df.unpersist()


@pytest.fixture(scope="module")
def catalog(spark):
    df = generate_catalog(spark, PARAMS).cache()
    yield df
    df.unpersist()


def checksum(df: DataFrame):
    """Order-insensitive fingerprint of every row and column: (rows, sum of row hashes)."""
    row = df.select(F.xxhash64(*df.columns).cast("decimal(38,0)").alias("h")).agg(
        F.count("*").alias("n"), F.sum("h").alias("s")).first()
    return row["n"], row["s"]


def shares(df: DataFrame, column: str) -> dict:
    counts = {r[0]: r[1] for r in df.groupBy(column).count().collect()}
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()}


def test_schema_is_the_contracts(events, catalog):
    assert [(f.name, f.dataType) for f in events.schema] == [(f.name, f.dataType) for f in EVENT_SCHEMA]
    assert [(f.name, f.dataType) for f in catalog.schema] == [(f.name, f.dataType) for f in CATALOG_SCHEMA]


def test_row_count_near_n_events(events, catalog):
    assert abs(events.count() - PARAMS.n_events) <= 0.1 * PARAMS.n_events
    assert catalog.agg(F.count("*"), F.countDistinct("item_id")).first() == (PARAMS.n_items, PARAMS.n_items)


def test_same_rows_whatever_the_partitioning(spark, events):
    old = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "7")
    try:
        again = generate_events(spark, PARAMS, num_partitions=5)
        assert again.rdd.getNumPartitions() != events.rdd.getNumPartitions()
        assert checksum(again) == checksum(events)
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", old)


def test_other_seed_other_rows(spark, events, catalog):
    other = SyntheticParams(**{**PARAMS.__dict__, "seed": 8})
    assert checksum(generate_events(spark, other)) != checksum(events)
    assert checksum(generate_catalog(spark, other)) != checksum(catalog)


def _in(df: DataFrame, lo: datetime, hi: datetime) -> DataFrame:
    return df.filter((F.col("event_time") >= F.lit(lo).cast("timestamp"))
                     & (F.col("event_time") < F.lit(hi).cast("timestamp")))


@pytest.mark.parametrize("lo, hours", [
    (datetime(2026, 7, 1, 0, tzinfo=timezone.utc), 1),             # the first hour: nothing before it
    (datetime(2026, 7, 20, 19, tzinfo=timezone.utc), 1),           # a busy evening hour
    (datetime(2026, 7, 20, 22, 30, tzinfo=timezone.utc), 50),      # over midnights, off the hour, with returns
    (datetime(2026, 8, 29, 23, tzinfo=timezone.utc), 1),           # the last hour (late returns dropped)
])
def test_a_window_draws_the_very_rows_the_whole_set_has_there(spark, events, lo, hours):
    hi = lo + timedelta(hours=hours)
    windowed = generate_events(spark, PARAMS, window=(lo, hi))
    expected = _in(events, lo, hi)
    assert checksum(expected)[0] > 0
    assert checksum(windowed) == checksum(expected)
    if hours > 24:   # returns (2-14 days after their purchase) come from sessions long before the window
        assert expected.filter(F.col("event_type") == "return").count() > 0


def test_no_session_runs_longer_than_its_span_before_returns(events):
    """SESSION_SPAN_S bounds a session's events (returns aside): the window's look-back relies on it."""
    span = (events.filter(F.col("event_type") != "return").groupBy("session_id")
            .agg((F.max("event_time").cast("long") - F.min("event_time").cast("long")).alias("s"))
            .agg(F.max("s")).first()[0])
    assert 0 < span <= SESSION_SPAN_S


def test_a_short_data_set_has_no_returns_to_look_back_for(spark):
    """Returns come 2+ days after their purchase: a one-day set has none, so its windows look back one
    session span only (the live hourly feed draws one-day sets)."""
    day = SyntheticParams(**{**PARAMS.__dict__, "days": 1, "n_events": 3000})
    whole = generate_events(spark, day)
    assert whole.filter(F.col("event_type") == "return").count() == 0
    lo = datetime(2026, 7, 1, 18, tzinfo=timezone.utc)
    assert checksum(generate_events(spark, day, window=(lo, lo + timedelta(hours=1)))) == \
        checksum(_in(whole, lo, lo + timedelta(hours=1)))


def test_item_popularity_is_heavy_tailed(events):
    # uniform popularity would give the top 10% of items ~10% of events
    counts = sorted((r[1] for r in events.groupBy("item_id").count().collect()), reverse=True)
    top = counts[: PARAMS.n_items // 10]
    assert sum(top) / sum(counts) > 0.4


def test_funnel_shares(events):
    s = shares(events, "event_type")
    assert set(s) == {"view", "cart", "purchase", "return"}
    assert 0.70 <= s["view"] <= 0.80
    assert 0.10 <= s["cart"] <= 0.15
    assert 0.05 <= s["purchase"] <= 0.10
    ratio = s["return"] / s["purchase"]
    assert 0.5 * PARAMS.return_rate <= ratio <= 1.5 * PARAMS.return_rate


def test_carts_and_purchases_follow_a_view_in_the_same_session(events):
    views = events.where("event_type = 'view'").select(*KEY, F.col("event_time").alias("view_time"))
    later = events.where("event_type IN ('cart', 'purchase')")
    # an anonymous cart or purchase finds no view (null keys never join) and counts as unexplained
    first_view = later.join(views, KEY, "left").groupBy(*KEY, "event_type", "event_time").agg(
        F.min("view_time").alias("first_view"))
    unexplained = first_view.where(F.col("first_view").isNull() | (F.col("first_view") >= F.col("event_time")))
    assert unexplained.count() == 0, unexplained.limit(5).collect()


def test_returns_follow_a_purchase_of_the_same_user_item_and_quantity(events):
    buys = events.where("event_type = 'purchase'").select(
        "user_id", "item_id", "value", "price", F.col("event_time").alias("bought"))
    returns = events.where("event_type = 'return'")
    assert returns.count() > 0
    # a user may buy the same item twice: a return needs one purchase at least a day before it
    earliest = returns.join(buys, ["user_id", "item_id", "value", "price"], "left").groupBy(
        "user_id", "item_id", "event_time").agg(F.min("bought").alias("bought"))
    unexplained = earliest.where(
        F.col("bought").isNull() | (F.col("bought") > F.col("event_time") - F.expr("INTERVAL 1 DAY")))
    assert unexplained.count() == 0


def test_times_inside_window_and_after_first_seen(events, catalog):
    end = START + timedelta(days=PARAMS.days)
    new = F.col("first_seen") > F.lit(START)
    got = events.join(catalog.select("item_id", "first_seen"), "item_id", "left").agg(
        F.min("event_time").alias("lo"), F.max("event_time").alias("hi"),
        F.count_if(F.col("first_seen").isNull()).alias("unknown_item"),
        F.count_if(F.to_date("event_time") < F.col("first_seen")).alias("before_first_seen"),
        F.count_if(new).alias("of_new_items")).first()
    assert got["lo"].date() >= START and got["hi"].date() < end
    assert got["unknown_item"] == 0
    assert got["before_first_seen"] == 0
    # the check above is not vacuous: ~20% of items are new, and new items do sell
    assert 0.1 <= catalog.where(new).count() / PARAMS.n_items <= 0.3
    assert got["of_new_items"] > 0


def test_catalog_looks_like_retail(catalog):
    rows = catalog.collect()
    assert all(r["item_id"].startswith("SKU") and len(r["item_id"]) == 8 for r in rows)
    assert all(len(r["title"].split()) >= 3 and r["title"] == r["title"].upper() for r in rows)
    assert 10 <= len({r["category"] for r in rows}) <= 20
    assert all(r["price"] > 0 for r in rows)
    assert 0 < sum(not r["available"] for r in rows) < 0.1 * len(rows)
    medians = catalog.groupBy("category").agg(F.percentile_approx("price", 0.5).alias("m")).collect()
    assert max(r["m"] for r in medians) > 3 * min(r["m"] for r in medians)  # prices differ by category


def test_users_keep_one_country_and_the_first_country_dominates(spark, events):
    assert events.where(F.col("user_id").isNotNull()).groupBy("user_id").agg(
        F.countDistinct("country").alias("n")).where("n > 1").count() == 0
    assert shares(user_segments(spark, PARAMS), "country")["United Kingdom"] > 0.6
    anonymous_views = events.where(F.col("user_id").isNull())
    assert 0.01 < anonymous_views.count() / events.count() < 0.08
    assert anonymous_views.where("event_type != 'view'").count() == 0


def test_segments_prefer_their_categories(spark, events, catalog):
    # 3 of 16 categories would take ~30% of a segment's events without affinity
    truth = user_segments(spark, PARAMS)
    per_seg = (events.join(truth.select("user_id", "segment"), "user_id")
               .join(catalog.select("item_id", "category"), "item_id")
               .groupBy("segment", "category").count().collect())
    tops = {}
    for seg in range(PARAMS.n_segments):
        counts = sorted((r["count"] for r in per_seg if r["segment"] == seg), reverse=True)
        assert sum(counts[:3]) / sum(counts) > 0.6, f"segment {seg}"
        tops[seg] = {r["category"] for r in per_seg if r["segment"] == seg and r["count"] >= counts[2]}
    assert len({frozenset(t) for t in tops.values()}) > 1, "all segments prefer the same categories"


def test_daily_weekly_and_trend_seasonality(events):
    # flat times would give ratios of ~1 for each of the three checks
    starts = events.where("event_type = 'view'")
    hours = {r[0]: r[1] for r in starts.groupBy(F.hour("event_time")).count().collect()}
    evening = sum(hours.get(h, 0) for h in (18, 19, 20, 21)) / 4
    night = sum(hours.get(h, 0) for h in (1, 2, 3, 4)) / 4
    assert evening > 4 * night
    days = {r[0]: r[1] for r in starts.groupBy(F.to_date("event_time")).count().collect()}
    weekend = [n for d, n in days.items() if d.weekday() >= 5]
    weekday = [n for d, n in days.items() if d.weekday() < 5]
    assert sum(weekend) / len(weekend) > 1.15 * sum(weekday) / len(weekday)
    half = START + timedelta(days=PARAMS.days // 2)
    assert sum(n for d, n in days.items() if d >= half) > 1.05 * sum(n for d, n in days.items() if d < half)


def test_bad_params_fail_with_the_setting_named():
    with pytest.raises(ValueError, match="n_items"):
        SyntheticParams(**{**PARAMS.__dict__, "n_items": 0})
    with pytest.raises(ValueError, match="start_date"):
        SyntheticParams(**{**PARAMS.__dict__, "start_date": "01/07/2026"})


def test_odd_sizes_still_give_valid_rows(spark):
    # fewer items than categories, a one-day window (no launches), Zipf exponent exactly 1
    # (its own formula), one country whose name needs SQL quoting, a negative seed
    p = SyntheticParams(seed=-3, n_users=1, n_items=5, n_events=200, start_date="2024-02-29", days=1,
                        countries=("Côte d'Ivoire",), n_segments=1, popularity_exponent=1.0, return_rate=0.0)
    got = generate_events(spark, p).join(generate_catalog(spark, p), "item_id", "left").agg(
        F.count("*").alias("n"), F.count_if(F.col("title").isNull()).alias("unknown_item"),
        F.min(F.to_date("event_time")).alias("lo"), F.max(F.to_date("event_time")).alias("hi"),
        F.collect_set("country").alias("countries"),
        F.count_if(F.col("user_id").isNotNull()).alias("known")).first()
    assert 100 < got["n"] < 300
    assert got["unknown_item"] == 0
    assert got["lo"] == got["hi"] == date(2024, 2, 29)
    assert got["countries"] == ["Côte d'Ivoire"]
    assert got["known"] > 0
