"""attribute: each feedback event credited to the impression its request id names, else the customer's
latest impression with the item within the window (last touch), against hand-worked answers."""
from __future__ import annotations

from datetime import datetime

import pytest

from features.attribution import attribute
from jobs.feedback_drain import FEEDBACK_SCHEMA, IMPRESSIONS_SCHEMA
from tests.compare import assert_rows

V4 = "20261207-m4-abcdef0123"                      # a nightly version: model 4
PATCH = f"{V4}.h202612071100-1a2b3c4d"              # an hourly patch over it: model 4 too


def at(day: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2026, 12, day, hh, mm)


# (impression_id, ts, user, version, variant, source, [(item, position, tag)])
IMPRESSIONS = [
    ("r1", at(7, 9), "u1", V4, None, "personal", [("A", 1, "model"), ("B", 2, "buy_again")]),
    ("r2", at(7, 11), "u1", PATCH, "B", "personal", [("A", 1, "model"), ("C", 2, "trending")]),
    ("r3", at(6, 8), "u1", V4, None, "global", [("D", 1, "popular")]),
    ("r4", at(7, 9, 30), "u2", V4, None, "personal", [("E", 1, "explore")]),    # u2's, not u1's
    ("r5", at(7, 10), None, "v1", None, "similar", [("F", 1, "similar")]),      # similar items: no customer
    ("r6", at(7, 12), "u1", V4, None, "personal", [("A", 3, "popular")]),       # after e1: not its last touch
]

# (event_id, ts, type, user, item, request_id, quantity, price)
EVENTS = [
    ("e1", at(7, 11, 30), "click", "u1", "A", None, None, None),       # last touch: r2 (11:00), not r1 (09:00)
    ("e2", at(7, 11, 30), "purchase", "u1", "A", "r1", 2, 3.5),        # its request id r1 wins over the later r2
    ("e3", at(7, 10), "click", "u1", "D", None, None, None),           # r3 was 26 h before: out of the window
    ("e4", at(7, 10), "click", "u1", "E", None, None, None),           # only u2 was shown E: not attributed
    ("e5", at(7, 10), "add_to_cart", "u1", "Z", "r1", 1, None),        # Z was in no list: not attributed
    ("e6", at(7, 11, 30), "click", "u1", "C", "r1", None, None),       # C not in r1: last touch r2 instead
    ("e7", at(7, 10, 5), "click", "u3", "F", "r5", None, None),        # anonymous list, named by its request id
    ("e8", at(7, 8, 58), "purchase", "u1", "B", "r1", None, 5.0),      # the app's clock 2 min behind: still r1
    ("e9", at(8, 10), "click", "u1", "B", "r1", None, None),           # r1 was 25 h before: not attributed
    ("e10", at(6, 9), "click", "u1", "D", None, None, None),           # r3 an hour before: last touch
    ("e11", at(7, 10), "click", "u1", "A", "r2", None, None),          # r2 is an hour after the event: the
]                                                                      # request id vouches for it


@pytest.fixture(scope="module")
def inputs(spark):
    impressions = spark.createDataFrame(
        [(rid, ts, ts.date(), "recommendations", user, None, None, 10, version, variant, source, False, items)
         for rid, ts, user, version, variant, source, items in IMPRESSIONS], IMPRESSIONS_SCHEMA)
    feedback = spark.createDataFrame(
        [(eid, ts, ts.date(), kind, user, item, rid, ts, qty, price)
         for eid, ts, kind, user, item, rid, qty, price in EVENTS], FEEDBACK_SCHEMA)
    return feedback, impressions


COLUMNS = ["event_id", "rule", "impression_id", "position", "list_source", "model_version", "variant",
           "impression_source", "revenue"]


def test_request_id_first_then_last_touch_within_the_window(inputs):
    feedback, impressions = inputs
    out = attribute(feedback, impressions, 24).cache()
    assert_rows(out, [
        ("e1", "last_touch", "r2", 1, "personal", "4", "B", "personal", None),
        ("e2", "request_id", "r1", 1, "personal", "4", None, "personal", 7.0),          # 2 x 3.5
        ("e3", None, None, None, None, None, None, None, None),
        ("e4", None, None, None, None, None, None, None, None),
        ("e5", None, None, None, None, None, None, None, None),
        ("e6", "last_touch", "r2", 2, "trending", "4", "B", "personal", None),
        ("e7", "request_id", "r5", 1, "similar", None, None, "similar", None),         # "v1": no model version
        ("e8", "request_id", "r1", 2, "buy_again", "4", None, "personal", 5.0),        # no quantity: 1
        ("e9", None, None, None, None, None, None, None, None),
        ("e10", "last_touch", "r3", 1, "popular", "4", None, "global", None),
        ("e11", "request_id", "r2", 1, "personal", "4", "B", "personal", None),
    ], COLUMNS)
    # the event's own columns come through, the impression's time and day with the impression
    assert_rows(out.filter("event_id = 'e2'"), [(at(7, 11, 30), "purchase", "u1", "A", 2, 3.5, at(7, 9),
                                                  at(7, 9).date(), V4)],
                ["ts", "type", "user_id", "item_id", "quantity", "price", "impression_ts", "impression_date",
                 "version"])


def test_window_bounds_are_inclusive(inputs):
    feedback, impressions = inputs
    # half an hour: e1 is exactly 30 min after r2 (in), e10 an hour after r3 (out); e2 is 2.5 h after its
    # request id's r1 (out), so last touch: r2, 30 min before; e8's 2 min before r1 is within the window,
    # e11's hour before r2 is not (and no list showed u1 A in the half hour before e11)
    out = attribute(feedback.filter("event_id IN ('e1', 'e2', 'e8', 'e10', 'e11')"), impressions, 0.5)
    assert_rows(out, [("e1", "r2", "last_touch"), ("e2", "r2", "last_touch"), ("e8", "r1", "request_id"),
                      ("e10", None, None), ("e11", None, None)], ["event_id", "impression_id", "rule"])


def test_window_must_be_positive(inputs):
    feedback, impressions = inputs
    with pytest.raises(ValueError, match="window_hours"):
        attribute(feedback, impressions, 0)
