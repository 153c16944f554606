"""Non-personal recommendation lists: popular, trending, buy-again, co-purchase.

Pure Spark logic: every function takes DataFrames and plain parameters and
returns a DataFrame; the run date is an argument. ``events`` always has the
columns of ``silver_interactions``. Windows follow the feature tables: a
window of N days is the N days ending on ``as_of_date``, that day included,
i.e. ``as_of_date - N < event_date <= as_of_date`` (by UTC ``event_date``).
Events after ``as_of_date`` are never used, nor event types other than
view, cart, purchase and rating. Every ranking is a total order: ties on the
score are broken by the smaller id, so a rerun on the same input gives the
same rows whatever its partitioning.

Lists (``list_name, rank, item_id, score``), from ``popular_lists`` and
``trending_lists``:

* ``global``: items ranked by popularity, the sum of ``strength`` of all
  events (view, cart, purchase, rating; anonymous ones included) in the last
  ``window_days`` days. Only items that are ``available`` in ``items``; an
  item missing from ``items`` or with a null ``available`` counts as
  available.
* ``segment:<value>``: the same over the events whose ``segment_col``
  (``country`` by default) is ``<value>``. There is one such list for every
  non-null segment value seen in ``events`` up to ``as_of_date`` (any time, so
  every country a user can be assigned by ``user_features`` has a list), even
  when the segment had no event in the window. A segment with fewer than ``k``
  items of its own is **padded** with the ``global`` list (in global order,
  below its own items, no duplicates). Events with a null segment count in
  ``global`` only.
* ``trending:global`` / ``trending:segment:<value>``: items rising now:
  ``score = (short / short_days + prior) / (long / long_days + prior)`` where
  ``short`` and ``long`` are the strength sums over the last ``short_days``
  and ``long_days`` days (the long window includes the short one) and
  ``prior`` (strength per day, default 0.1) damps items with tiny counts:
  with 7- and 30-day windows, an item whose only activity is one purchase
  this week scores 1.8 instead of the ceiling 30/7 = 4.3, which it would
  share with a best-seller launched this week. 1 is steady, above 1 rising.
  Only available items (as above) with at least ``min_events`` events (rows,
  anonymous included) in the short window, counted within the list's own
  segment; no minimum on the score, so a fading item can fill a list when
  few items qualify. A trending list with fewer than ``k`` items is **padded** with the
  corresponding popular list computed over the long window (``global`` for
  ``trending:global``, ``segment:<value>`` for ``trending:segment:<value>``).

Every popular and trending list has exactly ``min(k, n)`` rows, where ``n``
is the number of available items with any event in the popular window
(``window_days``; ``long_days`` for trending). ``rank`` is 1-based and gapless
and is the order to show. ``score`` is the list's own score; on rows that
were padded from another list it is **null** (the item has no score in this
list), so a null score marks filler.

Personal and item lists:

* ``buy_again`` (``user_id, rank, item_id, score``): per non-anonymous user,
  the items they purchased, scored by ``sum(exp(-ln 2 * age_days /
  half_life_days))`` over their purchase events, ``age_days`` being whole
  days from ``event_date`` to ``as_of_date``: each purchase counts 1 today,
  1/2 after one half-life, so frequency and recency share one score. Top
  ``k`` per user. Sources with only ratings (no purchases) give no rows.
* ``co_purchase_neighbours`` (``item_id, rank, neighbour_id, score``): items
  bought together. A basket is a ``session_id`` (invoice, session) within a
  source, or, when ``session_id`` is null, one user's purchases of one
  ``event_date``; anonymous purchases without a session belong to no basket.
  Only purchase events count; items are de-duplicated within a basket, so a
  basket counts once per pair. Baskets with more than ``max_basket_items``
  distinct items are skipped entirely (they would add ``n^2`` pairs and
  carry little signal). ``score = c(a, b) / sqrt(n(a) * n(b))`` (cosine),
  ``c(a, b)`` the kept baskets holding both, ``n(a)`` the kept baskets
  holding ``a`` (single-item baskets included). Pairs seen in fewer than ``min_support`` baskets are dropped.
  Symmetric: ``b`` is a neighbour of ``a`` with the same score as ``a`` of
  ``b``; top ``k`` per item (ties: higher count, then ``neighbour_id``).
* ``segment_of_users`` (``user_id, segment``): the user's ``country`` in
  ``user_features`` on ``as_of_date``; users without one get no row (serve
  them the ``global`` lists).

Availability is applied to the popular and trending lists only; callers that
need it on ``buy_again`` or neighbours filter those against ``items``.
"""
from __future__ import annotations

import math
from datetime import date
from typing import Iterable

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from core.contract import ACTION_TYPES

LIST_COLUMNS = ("list_name", "rank", "item_id", "score")
DEFAULT_TRENDING_PRIOR = 0.1


def _require(df: DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; it has {df.columns}")


def _positive(**params: float) -> None:
    for name, value in params.items():
        if value is None or value <= 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")


def _in_window(as_of: date, days: int) -> Column:
    """``as_of - days < event_date <= as_of``."""
    d = F.lit(as_of).cast("date")
    return (F.col("event_date") <= d) & (F.datediff(d, F.col("event_date")) < days)


def _available(events: DataFrame, items: DataFrame) -> DataFrame:
    """Drop events of items marked unavailable (missing or null counts as available)."""
    gone = items.filter(F.col("available") == F.lit(False)).select("item_id")
    return events.join(F.broadcast(gone), "item_id", "left_anti")


def _top(df: DataFrame, part: str, k: int, order: list[Column]) -> DataFrame:
    """Keep the first ``k`` rows per ``part`` in ``order``, numbered in ``rank``."""
    w = Window.partitionBy(part).orderBy(*order)
    return df.withColumn("rank", F.row_number().over(w)).filter(F.col("rank") <= k)


def _ranked(scored: DataFrame, k: int) -> DataFrame:
    """(list_name, item_id, score) -> top ``k`` per list by score desc, item_id asc."""
    return _top(scored, "list_name", k, [F.col("score").desc(), F.col("item_id")]).select(*LIST_COLUMNS)


def _pad(own: DataFrame, filler: DataFrame, k: int) -> DataFrame:
    """Append ``filler``'s rows below ``own``'s, per list, skipping items already there.

    Both are (list_name, rank, item_id, score). The result has the first ``k``
    rows per list, renumbered from 1; filler rows get a null score. A list
    present in ``filler`` only is filler throughout. Done with one group-by per
    list (lists are at most 2k rows): sort (tier, rank), keep each item's first
    occurrence, cut at ``k``.
    """
    entry = F.struct(F.col("_tier"), F.col("rank"), F.col("item_id"), F.col("score")).alias("e")
    cand = (own.select("list_name", "rank", "item_id", "score", F.lit(0).alias("_tier"))
            .unionByName(filler.select("list_name", "rank", "item_id", F.lit(None).cast("double").alias("score"),
                                       F.lit(1).alias("_tier"))))
    es = F.col("es")
    ids = F.transform(es, lambda x: x["item_id"])
    first = F.filter(es, lambda x, i: F.array_position(ids, x["item_id"]) == i + 1)
    return (cand.groupBy("list_name").agg(F.array_sort(F.collect_list(entry)).alias("es"))
            .select("list_name", F.posexplode(F.slice(first, 1, k)).alias("pos", "e"))
            .select("list_name", (F.col("pos") + 1).cast("int").alias("rank"), F.col("e.item_id").alias("item_id"),
                    F.col("e.score").alias("score")))


def _by_list(ev: DataFrame, segment_col: str, aggs: list[Column]) -> DataFrame:
    """``aggs`` per (list, item): list ``global`` over all of ``ev``, ``segment:<v>`` per segment value."""
    glob = ev.groupBy("item_id").agg(*aggs).withColumn("list_name", F.lit("global"))
    seg = (ev.filter(F.col(segment_col).isNotNull())
           .groupBy(F.concat(F.lit("segment:"), F.col(segment_col).cast("string")).alias("list_name"), "item_id")
           .agg(*aggs))
    return glob.unionByName(seg)


def _with_global_filler(own: DataFrame, events: DataFrame, as_of: date, segment_col: str, k: int) -> DataFrame:
    """Ranked ``global`` and ``segment:<v>`` lists -> every segment list padded from ``global``."""
    segments = (events.filter((F.col("event_date") <= F.lit(as_of).cast("date")) & F.col(segment_col).isNotNull())
                .select(F.concat(F.lit("segment:"), F.col(segment_col).cast("string")).alias("list_name"))
                .distinct())
    glob = own.filter(F.col("list_name") == "global").drop("list_name")
    return _pad(own, segments.crossJoin(glob), k)


def _check_events(events: DataFrame, items: DataFrame, segment_col: str) -> None:
    _require(events, ["item_id", "event_type", "strength", "event_date", segment_col], "events")
    _require(items, ["item_id", "available"], "items")


def popular_lists(events: DataFrame, items: DataFrame, as_of_date: date, window_days: int, k: int,
                  segment_col: str = "country") -> DataFrame:
    """``global`` and ``segment:<value>`` popularity lists (see the module docstring).

    Returns (list_name string, rank int, item_id string, score double); score is
    the strength sum in the window, null on rows padded from ``global``.
    """
    _check_events(events, items, segment_col)
    _positive(window_days=window_days, k=k)
    ev = _available(events.filter(_in_window(as_of_date, window_days) & F.col("event_type").isin(*ACTION_TYPES)),
                    items)
    own = _ranked(_by_list(ev, segment_col, [F.sum("strength").alias("score")]), k)
    return _with_global_filler(own, events, as_of_date, segment_col, k)


def trending_lists(events: DataFrame, items: DataFrame, as_of_date: date, short_days: int, long_days: int, k: int,
                   min_events: int, segment_col: str = "country",
                   prior: float = DEFAULT_TRENDING_PRIOR) -> DataFrame:
    """``trending:global`` and ``trending:segment:<value>`` lists (see the module docstring).

    Args:
        short_days, long_days: the two windows, ``0 < short_days <= long_days``.
        min_events: events an item needs in the short window (within the segment).
        prior: additive smoothing in strength per day; larger = more volume needed to trend.

    Returns (list_name, rank, item_id, score); score null on rows padded from
    the popular list over ``long_days``.
    """
    _check_events(events, items, segment_col)
    _positive(short_days=short_days, long_days=long_days, k=k, prior=prior)
    if short_days > long_days:
        raise ValueError(f"short_days ({short_days}) must not exceed long_days ({long_days})")
    ev = _available(events.filter(_in_window(as_of_date, long_days) & F.col("event_type").isin(*ACTION_TYPES)),
                    items)
    in_short = _in_window(as_of_date, short_days)
    stats = _by_list(ev, segment_col, [F.sum(F.when(in_short, F.col("strength")).otherwise(0.0)).alias("s_short"),
                                       F.sum("strength").alias("s_long"),
                                       F.sum(in_short.cast("int")).alias("n_short")])
    # The popular lists over the long window come from the same aggregate.
    popular = _with_global_filler(_ranked(stats.select("list_name", "item_id", F.col("s_long").alias("score")), k),
                                  events, as_of_date, segment_col, k)
    score = (F.col("s_short") / short_days + prior) / (F.col("s_long") / long_days + prior)
    trending = _ranked(stats.filter(F.col("n_short") >= min_events).select("list_name", "item_id",
                                                                            score.alias("score")), k)
    prefix = F.concat(F.lit("trending:"), F.col("list_name")).alias("list_name")
    return _pad(trending.select(prefix, "rank", "item_id", "score"),
                popular.select(prefix, "rank", "item_id", "score"), k)


def buy_again(events: DataFrame, as_of_date: date, half_life_days: float, k: int,
              min_purchases: int = 1) -> DataFrame:
    """Per non-anonymous user, the items they bought, by decayed purchase count.

    An item needs at least ``min_purchases`` purchase events by the user.
    Returns (user_id string, rank int, item_id string, score double).
    """
    _require(events, ["user_id", "item_id", "event_type", "event_date", "is_anonymous"], "events")
    _positive(half_life_days=half_life_days, k=k)
    d = F.lit(as_of_date).cast("date")
    ev = events.filter((F.col("event_type") == "purchase") & (F.col("event_date") <= d)
                       & ~F.coalesce(F.col("is_anonymous"), F.lit(False)) & F.col("user_id").isNotNull())
    weight = F.exp(F.lit(-math.log(2) / half_life_days) * F.datediff(d, F.col("event_date")))
    scored = (ev.groupBy("user_id", "item_id").agg(F.sum(weight).alias("score"), F.count("*").alias("n"))
              .filter(F.col("n") >= min_purchases))
    return (_top(scored, "user_id", k, [F.col("score").desc(), F.col("item_id")])
            .select("user_id", "rank", "item_id", "score"))


def co_purchase_neighbours(events: DataFrame, as_of_date: date, k: int, min_support: int = 2,
                           max_basket_items: int = 50) -> DataFrame:
    """Items bought in the same baskets, cosine-normalised (see the module docstring).

    Returns (item_id string, rank int, neighbour_id string, score double).
    """
    _require(events, ["user_id", "item_id", "event_type", "event_date", "session_id"], "events")
    _positive(k=k, min_support=min_support, max_basket_items=max_basket_items)
    src = F.col("source") if "source" in events.columns else F.lit("")
    # Tagged so a session id can never equal a user-day key.
    basket = F.when(F.col("session_id").isNotNull(), F.concat_ws("\u0001", F.lit("s"), src, F.col("session_id"))) \
        .when(F.col("user_id").isNotNull(),
              F.concat_ws("\u0001", F.lit("u"), src, F.col("user_id"), F.col("event_date").cast("string")))
    lines = (events.filter((F.col("event_type") == "purchase")
                           & (F.col("event_date") <= F.lit(as_of_date).cast("date")))
             .select(basket.alias("basket"), "item_id").filter(F.col("basket").isNotNull()).distinct())
    size = F.count("*").over(Window.partitionBy("basket"))
    kept = lines.withColumn("_size", size).filter(F.col("_size") <= max_basket_items).drop("_size")
    n_item = kept.groupBy("item_id").agg(F.count("*").alias("n"))
    a, b = kept.alias("a"), kept.alias("b")
    pairs = (a.join(b, (F.col("a.basket") == F.col("b.basket")) & (F.col("a.item_id") < F.col("b.item_id")))
             .groupBy(F.col("a.item_id").alias("x"), F.col("b.item_id").alias("y")).agg(F.count("*").alias("c"))
             .filter(F.col("c") >= min_support))
    both = pairs.unionByName(pairs.select(F.col("y").alias("x"), F.col("x").alias("y"), "c"))
    na, nb = n_item.alias("na"), n_item.alias("nb")
    scored = (both.join(na, F.col("x") == F.col("na.item_id")).join(nb, F.col("y") == F.col("nb.item_id"))
              .select(F.col("x").alias("item_id"), F.col("y").alias("neighbour_id"), "c",
                      (F.col("c") / F.sqrt(F.col("na.n") * F.col("nb.n"))).alias("score")))
    return (_top(scored, "item_id", k, [F.col("score").desc(), F.col("c").desc(), F.col("neighbour_id")])
            .select("item_id", "rank", "neighbour_id", "score"))


def segment_of_users(user_features: DataFrame, as_of_date: date) -> DataFrame:
    """(user_id, segment): each user's ``country`` in ``user_features`` on ``as_of_date``; null -> no row."""
    _require(user_features, ["user_id", "country", "as_of_date"], "user_features")
    return (user_features.filter((F.col("as_of_date") == F.lit(as_of_date).cast("date"))
                                 & F.col("country").isNotNull())
            .select("user_id", F.col("country").alias("segment")))
