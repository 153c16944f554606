"""features/drift.py: known answers of the measures, the pure ones without Spark and the frame ones on a
handful of inline events and lists (one Spark test)."""
from __future__ import annotations

import math
from datetime import date

import pytest

from features import drift
from tests.features.rows import silver_rows


def test_psi_of_a_known_shift():
    # shares 0.5/0.5 -> 0.75/0.25: 0.25 ln 1.5 + 0.25 ln 2
    assert drift.psi({"a": 50, "b": 50}, {"a": 75, "b": 25}) == pytest.approx(0.2746530722)
    assert drift.psi({"view": 30, "purchase": 10}, {"view": 3, "purchase": 1}) == 0.0   # same mix, any volume


def test_psi_floors_a_bin_empty_on_one_side_and_is_none_without_data():
    # "b" is absent from the reference: its share counts as 1e-4 there
    assert drift.psi({"a": 1}, {"a": 1, "b": 1}) == pytest.approx(0.5 * math.log(2) + 0.4999 * math.log(5000))
    assert drift.psi({}, {"a": 1}) is None and drift.psi({"a": 1}, {"a": 0}) is None


def test_volume_ratio_is_against_the_median_day():
    assert drift.volume_ratio(10, [20, 10, 30]) == 0.5
    assert drift.volume_ratio(10, [0, 40, 0, 40]) == 0.5     # quiet days count: median 20
    assert drift.volume_ratio(5, []) is None and drift.volume_ratio(5, [0, 0]) is None


@pytest.mark.parametrize("value, bound, warning, critical, status", [
    (0.05, "max", 0.1, 0.25, "ok"),
    (0.1, "max", 0.1, 0.25, "ok"),          # at the limit is not beyond it
    (0.2, "max", 0.1, 0.25, "warning"),
    (0.3, "max", 0.1, 0.25, "critical"),
    (0.6, "min", 0.5, 0.2, "ok"),
    (0.4, "min", 0.5, 0.2, "warning"),
    (0.1, "min", 0.5, 0.2, "critical"),
    (0.1, "min", None, 0.2, "critical"),
    (0.3, "min", None, 0.2, "ok"),
    (None, "max", 0.1, 0.25, "no_data"),
    (float("nan"), "max", 0.1, 0.25, "no_data"),
])
def test_judge(value, bound, warning, critical, status):
    assert drift.judge(value, bound, warning, critical) == status


def test_limit_used_names_the_limit_that_decided():
    assert drift.limit_used("critical", 0.1, 0.25) == 0.25
    assert drift.limit_used("warning", 0.1, 0.25) == drift.limit_used("ok", 0.1, 0.25) == 0.1
    assert drift.limit_used("ok", None, 0.25) == 0.25


D = date(2026, 10, 28)


def test_frame_measures_on_inline_events_and_lists(spark):
    events = silver_rows(spark, [
        # reference day 26th: 4 events, prices 10, 20, 10 and one unknown
        ("u1", "i1", "view", 1, 10.0, "2026-10-26 09:00", None, 0.3),
        ("u1", "i2", "view", 1, 20.0, "2026-10-26 09:05", None, 0.3),
        ("u2", "i1", "purchase", 1, 10.0, "2026-10-26 10:00", "s1", 1.0),
        ("u2", "i3", "cart", 1, None, "2026-10-26 10:01", "s1", 0.6),
        # reference day 27th: 2 events, prices 30, 40
        ("u1", "i1", "view", 1, 30.0, "2026-10-27 11:00", None, 0.3),
        ("u3", "i2", "purchase", 1, 40.0, "2026-10-27 12:00", "s2", 1.0),
        # the day: u1 known, u4 and i4 new; the anonymous row counts in volumes, not among customers
        ("u1", "i1", "view", 1, 10.0, "2026-10-28 08:00", None, 0.3),
        ("u4", "i4", "purchase", 1, 50.0, "2026-10-28 09:00", "s3", 1.0),
        (None, "i1", "view", 1, 10.0, "2026-10-28 10:00", None, 0.3),
    ])
    ref = events.filter(f"event_date < '{D}'")
    day = events.filter(f"event_date = '{D}'")
    assert drift.daily_counts(events, [date(2026, 10, 25), date(2026, 10, 26), date(2026, 10, 27)]) == [0, 4, 2]
    assert drift.counts_by(ref, "event_type") == {"view": 3, "purchase": 2, "cart": 1}
    assert drift.new_share(day, ref, "user_id") == 0.5       # u4 of {u1, u4}
    assert drift.new_share(day, ref, "item_id") == 0.5       # i4 of {i1, i4}
    assert drift.quantile_edges(ref, "price", 2) == [20.0]   # the median of 10, 20, 10, 30, 40
    assert drift.bucket_counts(day, "price", [15.0, 35.0]) == {0: 2, 2: 1}   # 10, 10 | - | 50
    # prices of the day against the reference's median: 2 of 3 under 20 (ref: 2 of 5)
    assert drift.numeric_psi(ref, day, "price", 2) == pytest.approx(drift.psi({0: 2, 1: 3}, {0: 2, 1: 1}))
    assert sorted(tuple(r) for r in drift.per_user_day(ref).collect()) == [
        ("u1", date(2026, 10, 26), 2), ("u1", date(2026, 10, 27), 1), ("u2", date(2026, 10, 26), 2),
        ("u3", date(2026, 10, 27), 1)]

    lists = spark.createDataFrame([
        ("u1", "a"), ("u1", "b"), ("u1", "c"),   # 2 of 3 also yesterday
        ("u2", "a"), ("u2", "d"),                # none of 2
        ("u5", "x"),                             # not listed yesterday: not counted
    ], "user_id string, item_id string")
    yesterday = spark.createDataFrame([("u1", "a"), ("u1", "c"), ("u1", "e"), ("u2", "e"), ("u2", "f"),
                                       ("u9", "z")], "user_id string, item_id string")
    assert drift.list_overlap(lists, yesterday) == pytest.approx((2 / 3 + 0) / 2)
    assert drift.list_overlap(lists, yesterday.filter("user_id = 'u9'")) is None
    assert drift.coverage(lists, 10) == 0.5                  # a, b, c, d, x
    assert drift.coverage(lists, 0) is None
