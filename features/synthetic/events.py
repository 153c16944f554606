"""Synthetic users (segment, country) and the event stream: sessions, views, carts, purchases, returns."""
from __future__ import annotations

import hashlib
import math
from datetime import date, datetime
from typing import List, Optional, Sequence, Tuple

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from features.contract import EVENT_SCHEMA
from features.synthetic.params import (ANONYMOUS_SHARE, CART_DELAY_S, CATEGORIES, CHECKOUT_DELAY_S,
                                       FIRST_COUNTRY_SHARE, HOUR, MAX_VIEWS_PER_SESSION, PACE_S,
                                       PREFERRED_PER_SEGMENT, PREFERRED_SHARE, PREFERRED_WEIGHTS, P_CART, P_PURCHASE,
                                       QUANTITIES, RETURN_DELAY_DAYS, RETURN_SPAN_S, SALE_FACTOR, SALE_SHARE,
                                       SESSION_CONTINUE, SESSION_SPAN_S, SyntheticParams, TREND, USER_ACTIVITY_POWER,
                                       WEEKDAY, WEEKEND_DAYTIME, _ANON, _BUY, _CART, _CART_DELAY, _CHECKOUT, _COUNTRY,
                                       _JITTER, _LENGTH, _PACE, _PREF, _PREF_PICK, _QTY, _RANK, _RANK_LAUNCHED,
                                       _RETURN, _RETURN_DELAY, _SALE, _SECOND, _SEGMENT, _SLOT, _SLOT_ALIAS, _USER,
                                       _VIEW_CAT)
from features.synthetic.draws import (_alias_sample, _lookup, _padded, _permute, _pick, _uniform, _uniform_sql,
                                      _zipf_rank)
from features.synthetic.catalog import (_first_seen, _is_new, _item_at, _layout, _list_price, _rank_of_launched,
                                        _start_epoch)

def _segment_preferences(p: SyntheticParams) -> List[List[int]]:
    """For each segment, its preferred category indexes (most preferred first); fixed by seed."""
    n_cat = min(len(CATEGORIES), p.n_items)
    k = min(PREFERRED_PER_SEGMENT, n_cat)

    def key(segment: int, cat: int) -> bytes:
        return hashlib.blake2b(f"{p.seed}:{segment}:{cat}".encode(), digest_size=8).digest()
    return [sorted(range(n_cat), key=lambda c: key(s, c))[:k] for s in range(p.n_segments)]


def _country(u_sql: str, countries: Sequence[str]) -> Column:
    rest = [1.0 / k for k in range(1, len(countries))]
    weights = [FIRST_COUNTRY_SHARE] + [(1 - FIRST_COUNTRY_SHARE) * w / sum(rest) for w in rest]
    return _lookup(list(countries), _pick(u_sql, weights))


def _user_segment(p: SyntheticParams, user_idx: str) -> Column:
    return F.floor(_uniform(p.seed, _SEGMENT, user_idx) * p.n_segments).cast("int")


def _user_country(p: SyntheticParams, user_idx: str) -> Column:
    return _country(_uniform_sql(p.seed, _COUNTRY, user_idx), p.countries)


def user_segments(spark: SparkSession, p: SyntheticParams) -> DataFrame:
    """Ground truth per user: user_id, segment (0..n_segments-1), country."""
    idx = F.col("id")
    return spark.range(p.n_users).select(
        _padded("U", idx, p.n_users, 6).alias("user_id"),
        _user_segment(p, "id").alias("segment"),
        _user_country(p, "id").alias("country"))


# ---------------------------------------------------------------- events

def _slot_weights(p: SyntheticParams) -> List[float]:
    """Weight of each hour of the window: trend x weekday x hour of day."""
    first_weekday = date.fromisoformat(p.start_date).weekday()
    out = []
    for d in range(p.days):
        weekday = (first_weekday + d) % 7
        trend = 1.0 + TREND * d / max(p.days - 1, 1)
        for h in range(24):
            daytime = WEEKEND_DAYTIME if weekday >= 5 and 9 <= h < 17 else 1.0
            out.append(trend * WEEKDAY[weekday] * HOUR[h] * daytime)
    return out


def _n_sessions(p: SyntheticParams) -> int:
    """Sessions needed for ~n_events rows, from the expected rows per session."""
    q = SESSION_CONTINUE
    views = sum(k * (1 - q) * q ** (k - 1) for k in range(1, MAX_VIEWS_PER_SESSION)) \
        + MAX_VIEWS_PER_SESSION * q ** (MAX_VIEWS_PER_SESSION - 1)
    per_view = ANONYMOUS_SHARE + (1 - ANONYMOUS_SHARE) * (1 + P_CART * (1 + P_PURCHASE * (1 + p.return_rate)))
    return max(1, round(p.n_events / (views * per_view)))


def _sessions(spark: SparkSession, p: SyntheticParams, n_sessions: int, num_partitions: int) -> DataFrame:
    u = lambda stream: _uniform(p.seed, stream, "session_idx")  # noqa: E731
    anonymous = u(_ANON) < ANONYMOUS_SHARE
    # heavy-tailed activity: low raw indexes are drawn far more often, then permuted
    raw_user = F.floor(F.pow(u(_USER), USER_ACTIVITY_POWER) * p.n_users)
    # the session's hour of the window (0 .. 24 * days - 1), drawn by seasonal weight
    slot = _alias_sample(u(_SLOT), u(_SLOT_ALIAS), _slot_weights(p)).cast("long")
    s = (spark.range(0, n_sessions, 1, num_partitions).withColumnRenamed("id", "session_idx")
         .select("session_idx", F.when(~anonymous, _permute(raw_user, p.n_users)).alias("user_idx"),
                 slot.alias("slot")))
    slot = F.col("slot")
    known = F.col("user_idx").isNotNull()
    return s.select(
        "session_idx", "user_idx",
        F.when(known, _user_segment(p, "user_idx"))
         .otherwise(F.floor(u(_SEGMENT) * p.n_segments).cast("int")).alias("segment"),
        F.when(known, _user_country(p, "user_idx"))
         .otherwise(_country(_uniform_sql(p.seed, _COUNTRY, "session_idx"), p.countries)).alias("country"),
        (F.lit(_start_epoch(p)) + slot * 3600 + F.floor(u(_SECOND) * 3600)).alias("t0"),
        F.date_add(F.lit(p.start_date).cast("date"), F.floor(slot / 24).cast("int")).alias("day"),
        (PACE_S[0] + F.floor(u(_PACE) * PACE_S[1])).alias("pace"),    # seconds between views
        F.least(F.lit(MAX_VIEWS_PER_SESSION),
                1 + F.floor(F.log(1.0 - u(_LENGTH)) / math.log(SESSION_CONTINUE))).cast("int").alias("n_views"),
        (CHECKOUT_DELAY_S[0] + F.floor(u(_CHECKOUT) * CHECKOUT_DELAY_S[1])).alias("checkout_delay"))


def generate_events(spark: SparkSession, p: SyntheticParams, *, num_partitions: Optional[int] = None,
                    window: Optional[Tuple[datetime, datetime]] = None) -> DataFrame:
    """Interaction events in the contract's column order (``features.contract.EVENT_SCHEMA``).

    Args:
        num_partitions: partitions of the generating ``spark.range``; the rows do
            not depend on it. Default: the cluster's parallelism, or more for big
            data sets (at most 200k sessions, ~1.3M events, per partition).
        window: ``[start, end)`` (aware datetimes): only the events whose time falls in it, the very
            rows the whole data set has there. Only the sessions that can have an event in it (started
            before its end, at most :data:`SESSION_SPAN_S` before its start, or, when the data set has
            returns, :data:`RETURN_SPAN_S` more) make views, so an hour costs a fraction of the whole.
    """
    n_sessions = _n_sessions(p)
    if num_partitions is None:
        num_partitions = max(spark.sparkContext.defaultParallelism, -(-n_sessions // 200_000))
    lay = _layout(p)
    prefs = _segment_preferences(p)
    k_pref = len(prefs[0])

    sessions = _sessions(spark, p, n_sessions, num_partitions)
    if window is not None:
        lo, hi = (int(t.timestamp()) if t.microsecond == 0 else t.timestamp() for t in window)
        # a return comes 2+ days after its purchase: only a data set longer than 2 days keeps any
        back = SESSION_SPAN_S + (RETURN_SPAN_S if p.days > RETURN_DELAY_DAYS[0] and p.return_rate > 0 else 0)
        sessions = sessions.where((F.col("t0") >= F.lit(lo - back)) & (F.col("t0") < F.lit(hi)))
    views = sessions.withColumn("pos", F.explode(F.sequence(F.lit(0), F.col("n_views") - 1)))
    u_sql = lambda stream: _uniform_sql(p.seed, stream, "session_idx", "pos")  # noqa: E731
    u = lambda stream: F.expr(u_sql(stream))  # noqa: E731
    cat_idx = F.col("cat_idx")
    preferred = _lookup([c for pref in prefs for c in pref],
                        F.col("segment") * k_pref + _pick(u_sql(_PREF_PICK), PREFERRED_WEIGHTS[:k_pref]))
    background = _pick(u_sql(_VIEW_CAT), [c[1] for c in CATEGORIES[:lay.n_cat]])
    views = views.withColumn("cat_idx", F.when(u(_PREF) < PREFERRED_SHARE, preferred).otherwise(background))

    # Draw an item by popularity; if it is not launched yet on the session's day,
    # draw again among the items that were there from the start.
    rank = _zipf_rank(u(_RANK), _lookup(lay.sizes, cat_idx), p.popularity_exponent)
    old_rank = _rank_of_launched(lay, _zipf_rank(u(_RANK_LAUNCHED), _lookup(lay.launched, cat_idx),
                                                 p.popularity_exponent))
    views = (views.withColumn("rank", rank)
             .withColumn("drawn", _item_at(lay, cat_idx, F.col("rank")))
             .withColumn("item_idx", F.when(
                 _first_seen(p, "drawn", _is_new(lay, F.col("rank"))) <= F.col("day"), F.col("drawn"))
                 .otherwise(_item_at(lay, cat_idx, old_rank))))

    # Funnel: a view may be carted, a cart bought, a purchase returned. The flags nest,
    # so a view yields 1-4 events and event k of a view is view/cart/purchase/return.
    # (Exploding a count rather than an array of structs keeps the generated per-row
    # method under HotSpot's 8000-byte JIT limit; above it the stage runs interpreted, ~3x slower.)
    carted = F.col("user_idx").isNotNull() & (u(_CART) < P_CART)
    n_events = (F.when(~carted, 1).when(u(_BUY) >= P_PURCHASE, 2)
                .when(u(_RETURN) >= p.return_rate, 3).otherwise(4))
    events = views.select("session_idx", "user_idx", "country", "t0", "pace", "n_views", "checkout_delay",
                          "pos", "cat_idx", "item_idx",
                          F.explode(F.sequence(F.lit(0), n_events - 1)).alias("k"))

    k = F.col("k")
    week = f"FLOOR((t0 - {_start_epoch(p)}) / {7 * 86400})"
    on_sale = _uniform(p.seed, _SALE, "item_idx", week) < SALE_SHARE
    unit_price = F.round(_list_price(p, "item_idx", cat_idx)
                         * F.when(on_sale, SALE_FACTOR).otherwise(1.0), 2)
    quantity = _lookup([float(q) for q, _ in QUANTITIES], _pick(u_sql(_QTY), [w for _, w in QUANTITIES]))
    t_view = F.col("t0") + F.col("pos") * F.col("pace") + F.floor(u(_JITTER) * F.col("pace") * 0.8)
    # checkout after the last view: every purchase of a session shares its time, like an invoice
    t_buy = F.col("t0") + F.col("n_views") * F.col("pace") + F.col("checkout_delay")
    t = (F.when(k == 0, t_view)
         .when(k == 1, t_view + CART_DELAY_S[0] + F.floor(u(_CART_DELAY) * CART_DELAY_S[1]))
         .when(k == 2, t_buy)
         .otherwise(t_buy + RETURN_DELAY_DAYS[0] * 86400
                    + F.floor(u(_RETURN_DELAY) * RETURN_DELAY_DAYS[1] * 86400))).cast("long")
    end = _start_epoch(p) + p.days * 86400
    kept = t < end
    if window is not None:
        kept = kept & (t >= F.lit(lo)) & (t < F.lit(hi))
    out = events.where(kept).select(
        F.when(F.col("user_idx").isNotNull(), _padded("U", F.col("user_idx"), p.n_users, 6)).alias("user_id"),
        _padded("SKU", F.col("item_idx"), p.n_items, 5).alias("item_id"),
        _lookup(["view", "cart", "purchase", "return"], k).alias("event_type"),
        F.when(k == 0, F.lit(1.0)).otherwise(quantity).alias("value"),
        unit_price.alias("price"),
        F.timestamp_seconds(t).alias("event_time"),
        "country",
        _padded("S", F.col("session_idx"), n_sessions, 8).alias("session_id"))
    return out.select(*[f.name for f in EVENT_SCHEMA])
