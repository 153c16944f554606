"""lists: popular, trending, buy-again and co-purchase lists with hand-computed answers."""
from datetime import date, datetime

import pytest
from pyspark.sql import functions as F

from features.lists import buy_again, co_purchase_neighbours, popular_lists, segment_of_users, trending_lists
from tests.compare import assert_rows

AS_OF = date(2024, 3, 31)
LIST = ["list_name", "rank", "item_id", "score"]
STRENGTH = {"view": 0.3, "cart": 0.6, "purchase": 1.0}


def events(spark, rows):
    """rows: (user, item, event_type, 'YYYY-MM-DD', country, session); strength from the event type
    (a rating row gives its strength as a 7th field)."""
    data = []
    for n, (u, i, et, day, country, session, *st) in enumerate(rows):
        strength = st[0] if st else STRENGTH[et]
        data.append(("src", "b1", n, u, i, et, 1.0, None, datetime.fromisoformat(f"{day} 12:00"), country, session,
                     u is None, float(strength)))
    df = spark.createDataFrame(data, "source string, batch_id string, row_id long, user_id string, item_id string, "
                                     "event_type string, value double, price double, event_time timestamp, "
                                     "country string, session_id string, is_anonymous boolean, strength double")
    return df.withColumn("event_date", F.to_date("event_time"))


def catalog(spark, rows):
    """rows: (item_id, available)."""
    return spark.createDataFrame(rows, "item_id string, available boolean")


POPULAR_ROWS = [
    # 7-day window ending 2024-03-31 = 03-25 .. 03-31.
    ("u1", "A", "purchase", "2024-03-31", "UK", None),  # A: 1.0 (last day of the window)
    ("u2", "A", "purchase", "2024-03-25", "UK", None),  # A: +1.0 (first day of the window) -> A = 2.0
    ("u2", "A", "purchase", "2024-03-24", "UK", None),  # exactly at the cutoff: outside, else A = 3.0
    ("u1", "B", "cart", "2024-03-30", "UK", None),      # B: 0.6
    (None, "B", "view", "2024-03-29", "UK", None),      # anonymous counts -> B = 0.9
    ("u1", "B", "purchase", "2024-04-01", "UK", None),  # after as_of: ignored, else B = 1.9
    ("u3", "C", "purchase", "2024-03-28", "UK", None),  # C: 1.0 in UK
    ("u5", "C", "cart", "2024-03-28", None, None),      # no country: global only -> C = 1.6 global
    ("u1", "X", "purchase", "2024-03-30", "UK", None),  # X unavailable: excluded (would be 3.0, first)
    ("u2", "X", "purchase", "2024-03-30", "UK", None),
    ("u3", "X", "purchase", "2024-03-30", "UK", None),
    ("u4", "D", "purchase", "2024-03-27", "FR", None),  # D: 1.0, FR
    ("u4", "F", "rating", "2024-03-27", "FR", None, 0.8),  # F: 0.8, FR; not in the catalog -> available
    ("u5", "E", "purchase", "2024-03-26", None, None),  # E: 1.0, ties D; D wins on item_id
    ("u6", "D", "purchase", "2024-01-10", "DE", None),  # DE: only an old event -> list is all global filler
]
ITEMS = [("A", True), ("B", True), ("C", True), ("D", True), ("E", None), ("X", False)]


def test_popular_lists_window_availability_padding_and_ties(spark):
    # global in the window: A 2.0, C 1.6, D 1.0, E 1.0, B 0.9, F 0.8 (X unavailable)
    expected = [
        ("global", 1, "A", 2.0), ("global", 2, "C", 1.6), ("global", 3, "D", 1.0),  # D before E: tie on 1.0
        ("segment:UK", 1, "A", 2.0), ("segment:UK", 2, "C", 1.0), ("segment:UK", 3, "B", 0.9),
        # FR has 2 items of its own; the third is global's best one not already there, with no score
        ("segment:FR", 1, "D", 1.0), ("segment:FR", 2, "F", 0.8), ("segment:FR", 3, "A", None),
        # DE: nothing in the window, so the global list without scores; null country gets no list
        ("segment:DE", 1, "A", None), ("segment:DE", 2, "C", None), ("segment:DE", 3, "D", None),
    ]
    items = catalog(spark, ITEMS)
    assert_rows(popular_lists(events(spark, POPULAR_ROWS), items, AS_OF, 7, 3), expected, LIST)


TRENDING_ROWS = (
    # short window 7 days = 03-25 .. 03-31, long window 28 days = 03-04 .. 03-31
    # P steady: 4 purchases in the short window, 16 in the long -> (4/7 + .1) / (16/28 + .1) = 1.0
    [(f"p{n}", "P", "purchase", f"2024-03-{25 + n}", "UK", None) for n in range(4)]
    + [(f"q{n}", "P", "purchase", f"2024-03-{5 + n:02d}", "UK", None) for n in range(12)]
    # R rising: 3 in short, 4 in long -> (3/7 + .1) / (4/28 + .1) = 2.176471
    + [(f"r{n}", "R", "purchase", f"2024-03-{28 + n}", "UK", None) for n in range(3)]
    + [("r9", "R", "purchase", "2024-03-10", "UK", None)]
    # T tiny: 2 views (0.6) only in short -> (0.6/7 + .1) / (0.6/28 + .1) = 1.529412; without
    # the prior it would be 4.0 and lead the list
    + [("t1", "T", "view", "2024-03-30", "UK", None), (None, "T", "view", "2024-03-31", "UK", None)]
    # M: 1 event in the short window < min_events 2 -> not trending (would score 1.789)
    + [("m1", "M", "purchase", "2024-03-31", "FR", None)]
    # Q: old activity only (2.0 in the long window), no short-window event
    + [("w1", "Q", "purchase", "2024-03-10", "UK", None), ("w2", "Q", "purchase", "2024-03-11", "UK", None)]
)


def test_trending_prior_min_events_and_padding(spark):
    ev = events(spark, TRENDING_ROWS)
    items = catalog(spark, [("P", True), ("R", True), ("T", True), ("M", True), ("Q", True)])
    # k = 6 but only 5 available items have an event in the long window: every list has 5 rows.
    out = trending_lists(ev, items, AS_OF, 7, 28, 6, min_events=2)
    # popular over 28 days: P 16, R 4, Q 2, M 1, T 0.6 (UK: the same without M; FR: M only)
    r_score, t_score = (3 / 7 + .1) / (4 / 28 + .1), (0.6 / 7 + .1) / (0.6 / 28 + .1)
    assert_rows(out, [
        ("trending:global", 1, "R", r_score), ("trending:global", 2, "T", t_score),
        ("trending:global", 3, "P", 1.0),
        ("trending:global", 4, "Q", None), ("trending:global", 5, "M", None),  # filler: popular global
        ("trending:segment:UK", 1, "R", r_score), ("trending:segment:UK", 2, "T", t_score),
        ("trending:segment:UK", 3, "P", 1.0),
        # filler: popular segment:UK (P, R, Q, T), itself padded with global's M
        ("trending:segment:UK", 4, "Q", None), ("trending:segment:UK", 5, "M", None),
        # FR: M fails min_events, so the list is popular segment:FR: M, then global's P, R, Q, T
        ("trending:segment:FR", 1, "M", None), ("trending:segment:FR", 2, "P", None),
        ("trending:segment:FR", 3, "R", None), ("trending:segment:FR", 4, "Q", None),
        ("trending:segment:FR", 5, "T", None),
    ], LIST)
    # Almost no prior: T (all its activity this week) scores long / short = 4.0 and overtakes R
    # ((3/7) / (4/28) = 3.0): the prior is what keeps tiny counts down.
    no_prior = trending_lists(ev, items, AS_OF, 7, 28, 2, min_events=2, prior=1e-12)
    assert_rows(no_prior.filter(F.col("list_name") == "trending:global"),
                [("trending:global", 1, "T", 4.0), ("trending:global", 2, "R", 3.0)], LIST)


def test_trending_rejects_short_window_longer_than_long(spark):
    ev = events(spark, TRENDING_ROWS[:1])
    with pytest.raises(ValueError, match="short_days"):
        trending_lists(ev, catalog(spark, [("P", True)]), AS_OF, 30, 7, 3, min_events=1)


def test_buy_again_decay_cutoff_anonymous_and_min_purchases(spark):
    rows = [
        # half-life 10 days, as_of 03-31
        ("u1", "W", "purchase", "2024-03-26", "UK", "s1"),  # W: 3 purchases aged 5 -> 3 * 2^-0.5 = 2.121320
        ("u1", "W", "purchase", "2024-03-26", "UK", "s1"),
        ("u1", "W", "purchase", "2024-03-26", "UK", "s1"),
        ("u1", "Y", "purchase", "2024-03-31", "UK", "s2"),  # Y: one purchase today -> 1.0
        ("u1", "X", "purchase", "2024-03-11", "UK", "s3"),  # X: 3 purchases aged 20 -> 3 * 0.25 = 0.75 < Y
        ("u1", "X", "purchase", "2024-03-11", "UK", "s3"),
        ("u1", "X", "purchase", "2024-03-11", "UK", "s3"),
        ("u1", "Z", "purchase", "2024-03-21", "UK", "s4"),  # Z: aged 10 -> 0.5, fourth: cut by k = 3
        ("u1", "Z", "purchase", "2024-04-01", "UK", "s5"),  # after as_of: ignored (else Z = 1.5 + ...)
        ("u1", "Z", "purchase", "2024-04-01", "UK", "s5"),
        ("u1", "V", "view", "2024-03-31", "UK", "s2"),      # not a purchase
        (None, "V", "purchase", "2024-03-31", "UK", "s6"),  # anonymous: no user
        ("u2", "B", "purchase", "2024-03-31", "UK", "s7"),  # u2: B and A tie on 1.0 -> A first
        ("u2", "A", "purchase", "2024-03-31", "UK", "s7"),
    ]
    ev = events(spark, rows)
    cols = ["user_id", "rank", "item_id", "score"]
    expected = [
        ("u1", 1, "W", 3 * 2 ** -0.5), ("u1", 2, "Y", 1.0), ("u1", 3, "X", 0.75),
        ("u2", 1, "A", 1.0), ("u2", 2, "B", 1.0),
    ]
    assert_rows(buy_again(ev, AS_OF, 10.0, 3), expected, cols)
    # Deterministic: the same rows (the A/B tie included) whatever the input order and partitioning.
    assert_rows(buy_again(events(spark, rows[::-1]).repartition(3), AS_OF, 10.0, 3), expected, cols)
    # min_purchases 2: only W and X (3 purchases each); Z's 2 future purchases do not count
    assert_rows(buy_again(ev, AS_OF, 10.0, 3, min_purchases=2),
                [("u1", 1, "W", 3 * 2 ** -0.5), ("u1", 2, "X", 0.75)], cols)


def test_co_purchase_neighbours(spark):
    rows = [
        ("u1", "A", "purchase", "2024-03-10", "UK", "s1"),  # s1: {A, B, C}
        ("u1", "B", "purchase", "2024-03-10", "UK", "s1"),
        ("u1", "C", "purchase", "2024-03-10", "UK", "s1"),
        ("u2", "A", "purchase", "2024-03-11", "UK", "s2"),  # s2: {A, B}
        ("u2", "B", "purchase", "2024-03-11", "UK", "s2"),
        ("u1", "A", "purchase", "2024-03-20", "UK", None),  # no session: u1's 03-20 basket {A, B}
        ("u1", "A", "purchase", "2024-03-20", "UK", None),  # same item twice: the basket counts once
        ("u1", "B", "purchase", "2024-03-20", "UK", None),
        ("u1", "A", "purchase", "2024-03-21", "UK", None),  # another day, another basket: {A, C}
        ("u1", "C", "purchase", "2024-03-21", "UK", None),
        ("u3", "A", "purchase", "2024-03-12", "UK", "s3"),  # s3: 4 items > max 3: skipped (else B-C = 2)
        ("u3", "B", "purchase", "2024-03-12", "UK", "s3"),
        ("u3", "C", "purchase", "2024-03-12", "UK", "s3"),
        ("u3", "D", "purchase", "2024-03-12", "UK", "s3"),
        ("u4", "D", "purchase", "2024-03-13", "UK", "s4"),  # s4: {D, E}: 1 basket < min_support 2
        ("u4", "E", "purchase", "2024-03-13", "UK", "s4"),
        (None, "A", "purchase", "2024-03-20", "UK", None),  # anonymous, no session: no basket
        (None, "B", "purchase", "2024-03-20", "UK", None),
        ("u5", "B", "view", "2024-03-14", "UK", "s5"),      # views are not purchases
        ("u5", "C", "view", "2024-03-14", "UK", "s5"),
        ("u6", "B", "purchase", "2024-04-01", "UK", "s6"),  # after as_of: ignored
        ("u6", "C", "purchase", "2024-04-01", "UK", "s6"),
    ]
    # kept baskets: s1, s2, u1@03-20, u1@03-21, s4 -> n(A) = 4, n(B) = 3, n(C) = 2
    # c(A,B) = 3 -> 3 / sqrt(12) = 0.866025; c(A,C) = 2 -> 2 / sqrt(8) = 0.707107; c(B,C) = 1 dropped
    out = co_purchase_neighbours(events(spark, rows), AS_OF, k=2, min_support=2, max_basket_items=3)
    assert_rows(out, [
        ("A", 1, "B", 3 / 12 ** 0.5), ("A", 2, "C", 2 / 8 ** 0.5),
        ("B", 1, "A", 3 / 12 ** 0.5),
        ("C", 1, "A", 2 / 8 ** 0.5),
    ], ["item_id", "rank", "neighbour_id", "score"])


def test_segment_of_users(spark):
    uf = spark.createDataFrame([
        ("u1", "UK", AS_OF),             # -> UK
        ("u2", None, AS_OF),             # no country: no row
        ("u1", "FR", date(2024, 3, 30)),  # another run date: ignored
    ], "user_id string, country string, as_of_date date")
    assert_rows(segment_of_users(uf, AS_OF), [("u1", "UK")], ["user_id", "segment"])
