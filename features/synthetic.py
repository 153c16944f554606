"""Built-in synthetic retail data: a catalog and an event stream that look like retail.

Everything is generated inside Spark from ``spark.range``: events are never
materialised on the driver, and every random draw is a uniform derived from
``xxhash64(seed, draw, row keys)``, so the same parameters give the same rows
whatever the partitioning (``F.rand`` would depend on it). The only driver-side
tables are small constants (hour-of-window weights, vocabulary) that travel as
SQL array literals; items are laid out so that an event finds its item by
arithmetic, without a join.

What is modelled:
    * items: 16 categories of unequal size, titles "ADJECTIVE COLOUR NOUN",
      log-normal prices per category with charm endings (x.99), ~3% unavailable,
      20% launched during the window (``first_seen`` after ``start_date``; no
      event before it), the rest up to two years before it;
    * popularity: Zipf(``popularity_exponent``) over each item's rank in its
      category, so a few items take most of the traffic; ids are a fixed shuffle
      of ranks;
    * users: a segment each, with three preferred categories that take ~70% of
      the segment's views; a fixed country, the first of ``countries`` dominant;
      heavy-tailed activity (a few users have many sessions);
    * sessions: start times with daily (evening peak) and weekly (weekend peak)
      seasonality and a mild upward trend; geometric length (mean 5 views);
      some viewed items are carted, some carted ones bought at checkout (same
      session id, later timestamps); anonymous visitors (~4% of sessions) only view;
    * returns: ``return_rate`` of purchases come back 2-14 days later with the
      same user, item, quantity and price;
    * prices: items go on sale (-20%) in some weeks; events carry the price of
      the week the session started.

Events past ``start_date + days`` (late returns, sessions running over midnight
of the last day) are dropped, so the row count is ``n_events`` within a few %.
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from itertools import accumulate
from typing import List, Optional, Sequence, Tuple

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from features.contract import CATALOG_SCHEMA, EVENT_SCHEMA

# name, relative catalog size, median price, nouns
CATEGORIES: Tuple[Tuple[str, float, float, Tuple[str, ...]], ...] = (
    ("kitchen", 14, 4.5, ("LUNCH BOX", "CAKE TIN", "TEA TOWEL", "MUG", "JAM JAR", "CAKE STAND", "APRON")),
    ("home decor", 13, 6.5, ("PHOTO FRAME", "WALL CLOCK", "MIRROR", "DOORSTOP", "WALL SIGN", "VASE")),
    ("garden", 7, 9.0, ("WATERING CAN", "PLANT POT", "BIRD HOUSE", "GARDEN SIGN", "PARASOL")),
    ("toys", 8, 3.5, ("SPINNING TOP", "DOLL", "SKIPPING ROPE", "JIGSAW", "PLAYING CARDS", "TEDDY BEAR")),
    ("stationery", 9, 1.8, ("NOTEBOOK", "PENCIL SET", "GIFT WRAP", "STICKER SHEET", "GREETING CARD")),
    ("party", 6, 1.5, ("PAPER CUPS", "NAPKINS", "BUNTING", "PARTY BAG", "CAKE CASES")),
    ("christmas", 7, 3.0, ("BAUBLE", "STOCKING", "ADVENT CALENDAR", "TREE DECORATION", "WREATH")),
    ("bags", 6, 4.0, ("LUNCH BAG", "JUMBO BAG", "SHOPPER", "TOTE BAG", "WASHBAG")),
    ("jewellery", 5, 5.5, ("NECKLACE", "BRACELET", "EARRINGS", "RING", "BROOCH")),
    ("lighting", 5, 8.0, ("T-LIGHT HOLDER", "LANTERN", "STRING LIGHTS", "LAMP", "NIGHT LIGHT")),
    ("bathroom", 4, 5.0, ("SOAP DISH", "TOOTHBRUSH HOLDER", "HAND TOWEL", "BATH MAT")),
    ("storage", 5, 7.0, ("STORAGE BOX", "BASKET", "TRINKET BOX", "COAT HOOK", "SHELF")),
    ("textiles", 5, 6.5, ("CUSHION COVER", "THROW", "TABLE CLOTH", "OVEN GLOVE")),
    ("pets", 3, 4.0, ("DOG BOWL", "CAT TOY", "PET BED", "LEAD")),
    ("candles", 4, 2.5, ("SCENTED CANDLE", "PILLAR CANDLE", "CANDLE POT", "TEA LIGHTS")),
    ("gifts", 5, 5.0, ("GIFT SET", "KEYRING", "MONEY BOX", "MAGNET", "SNOW GLOBE")),
)
ADJECTIVES = ("VINTAGE", "RETROSPOT", "REGENCY", "RUSTIC", "FLORAL", "POLKADOT", "HEART", "STAR",
              "SCANDINAVIAN", "ANTIQUE", "SWEETHEART", "PAISLEY", "GINGHAM", "DOILY", "JUMBO", "MINI")
COLOURS = ("RED", "BLUE", "PINK", "WHITE", "IVORY", "GREEN", "BLACK", "GOLD", "SILVER",
           "WOODEN", "CERAMIC", "GLASS", "ENAMEL", "ZINC", "WICKER", "LINEN")

PRICE_SIGMA = 0.6                 # log-normal spread of prices within a category
UNAVAILABLE_SHARE = 0.03
CATALOG_AGE_DAYS = 730            # older items were launched up to this long before start_date
PREFERRED_PER_SEGMENT = 3
PREFERRED_WEIGHTS = (0.5, 0.3, 0.2)
PREFERRED_SHARE = 0.7             # share of a user's views in their segment's preferred categories
ANONYMOUS_SHARE = 0.04            # sessions of visitors who are not logged in (views only)
FIRST_COUNTRY_SHARE = 0.75
USER_ACTIVITY_POWER = 2.0         # user = floor(n * u^2): top 10% of users have ~32% of sessions
SESSION_CONTINUE = 0.8            # views per session ~ geometric, mean 1 / (1 - 0.8) = 5
MAX_VIEWS_PER_SESSION = 60
P_CART = 0.18                     # P(cart | view), logged-in users
P_PURCHASE = 0.63                 # P(purchase | cart)
QUANTITIES = ((1, 0.55), (2, 0.18), (3, 0.07), (4, 0.06), (6, 0.05), (12, 0.06), (24, 0.03))
SALE_SHARE = 0.08                 # share of (item, week) pairs on sale
SALE_FACTOR = 0.8
TREND = 0.3                       # the last day has 30% more traffic than the first
WEEKDAY = (0.9, 0.88, 0.92, 0.97, 1.08, 1.3, 1.25)          # Monday .. Sunday
HOUR = (0.3, 0.18, 0.12, 0.1, 0.1, 0.15, 0.3, 0.55, 0.8, 0.95, 1.0, 1.05,  # UTC, 00 .. 23
        1.15, 1.1, 1.0, 1.0, 1.05, 1.25, 1.55, 1.85, 2.0, 1.8, 1.25, 0.65)
WEEKEND_DAYTIME = 1.3             # weekend shopping starts earlier: 09-17h boosted
PACE_S = (20, 100)                # seconds between views: 20 + floor(u * 100)
CHECKOUT_DELAY_S = (60, 240)      # checkout this long after the last view: 60 + floor(u * 240)
CART_DELAY_S = (5, 55)            # a cart follows its view by 5 + floor(u * 55)
RETURN_DELAY_DAYS = (2, 12)       # a return follows its purchase by 2 days + floor(u * 12 days)
# The latest a session's events (returns aside) come after its start: its checkout, after the last view
# of the longest session at the slowest pace (later than any view or cart: a view's jitter is under 0.8
# pace, its cart under 60 s after it). A window's events come from sessions started at most this long before.
SESSION_SPAN_S = MAX_VIEWS_PER_SESSION * (PACE_S[0] + PACE_S[1] - 1) + CHECKOUT_DELAY_S[0] + CHECKOUT_DELAY_S[1] - 1
RETURN_SPAN_S = (RETURN_DELAY_DAYS[0] + RETURN_DELAY_DAYS[1]) * 86400   # a return's delay is under this

_MASK53 = (1 << 53) - 1
_PERM_PRIMES = (1_000_003, 998_244_353, 2_147_483_647)

# One stream id per random draw, so draws are independent of each other.
(_FIRST_SEEN, _PRICE1, _PRICE2, _AVAIL, _ADJ, _COLOUR, _NOUN,
 _SEGMENT, _COUNTRY, _ANON, _USER, _SLOT, _SLOT_ALIAS, _SECOND, _PACE, _LENGTH, _CHECKOUT,
 _PREF, _PREF_PICK, _VIEW_CAT, _RANK, _RANK_LAUNCHED, _JITTER, _CART, _BUY, _RETURN,
 _QTY, _CART_DELAY, _RETURN_DELAY, _SALE) = range(1, 31)


@dataclass(frozen=True)
class SyntheticParams:
    """Size and shape of the synthetic data set (the job builds it from ``cfg.synthetic``)."""
    seed: int
    n_users: int
    n_items: int
    n_events: int
    start_date: str               # "YYYY-MM-DD", UTC
    days: int
    countries: Sequence[str]
    n_segments: int
    popularity_exponent: float    # Zipf exponent of item popularity
    return_rate: float            # share of purchases that are returned

    def __post_init__(self) -> None:
        object.__setattr__(self, "countries", tuple(self.countries))
        for name in ("n_users", "n_items", "n_events", "days", "n_segments"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"synthetic.{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.countries:
            raise ValueError("synthetic.countries must list at least one country")
        if not self.popularity_exponent > 0:
            raise ValueError(f"synthetic.popularity_exponent must be > 0, got {self.popularity_exponent!r}")
        if not 0 <= self.return_rate < 1:
            raise ValueError(f"synthetic.return_rate must be in [0, 1), got {self.return_rate!r}")
        try:
            ok = re.fullmatch(r"\d{4}-\d{2}-\d{2}", self.start_date) and date.fromisoformat(self.start_date)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"synthetic.start_date must be a date written YYYY-MM-DD, got {self.start_date!r}")
        if not all(isinstance(c, str) and c.strip() for c in self.countries):
            raise ValueError(f"synthetic.countries must be non-empty names, got {list(self.countries)!r}")


# ---------------------------------------------------------------- random draws

def _uniform_sql(seed: int, stream: int, *keys: str) -> str:
    """SQL for a uniform double in [0, 1) from the row's keys (SQL expressions).

    Same keys, same value, on any partition. Keys are hashed as BIGINT (xxhash64 of
    an int and of the same long differ). The draws are built as SQL text: one JVM
    call per column instead of dozens of py4j round trips per Column operator.
    """
    hashed = ", ".join(f"CAST({k} AS BIGINT)" for k in keys)
    return f"((xxhash64({int(seed)}L, {int(stream)}, {hashed}) & {_MASK53}L) / {float(1 << 53)!r}D)"


def _uniform(seed: int, stream: int, *keys: str) -> Column:
    return F.expr(_uniform_sql(seed, stream, *keys))


def _pick(u_sql: str, weights: Sequence[float]) -> Column:
    """Index i with probability weights[i] / sum(weights), by inverse CDF on ``u_sql`` (short lists)."""
    total = float(sum(weights))
    cum = list(accumulate(w / total for w in weights))
    if len(weights) == 1:
        return F.lit(0)
    branches = " ".join(f"WHEN {u_sql} < {c!r}D THEN {i}" for i, c in enumerate(cum[:-1]))
    return F.expr(f"CASE {branches} ELSE {len(weights) - 1} END")


def _zipf_rank(u: Column, n: Column, s: float) -> Column:
    """Rank in 1..n with P(k) ~ k^-s: inverse CDF of the continuous power law on [1, n + 1)."""
    n1 = n.cast("double") + 1.0
    if abs(s - 1.0) < 1e-9:
        x = F.exp(u * F.log(n1))
    else:
        x = F.pow(1.0 + u * (F.pow(n1, 1.0 - s) - 1.0), 1.0 / (1.0 - s))
    return F.least(F.floor(x), n.cast("long")).cast("int")


def _permute(idx: Column, n: int) -> Column:
    """A fixed bijection of 0..n-1, idx -> (idx * prime + n // 3) mod n, so ids do not
    reveal popularity order. :func:`_unpermute` is its inverse."""
    prime = next(q for q in _PERM_PRIMES if n % q)
    return F.pmod(idx * F.lit(prime) + F.lit(n // 3), F.lit(n))


def _unpermute(pos: Column, n: int) -> Column:
    prime = next(q for q in _PERM_PRIMES if n % q)
    inverse = pow(prime, -1, n) if n > 1 else 0
    return F.pmod(F.pmod(pos.cast("long") - F.lit(n // 3), F.lit(n)) * F.lit(inverse), F.lit(n))


def _padded(prefix: str, idx: Column, n: int, min_width: int) -> Column:
    return F.concat(F.lit(prefix), F.lpad(idx.cast("string"), max(min_width, len(str(n - 1))), "0"))


def _sql_literal(v) -> str:
    if isinstance(v, str):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(v, float):
        return f"{v!r}D"
    return f"{int(v)}L" if abs(int(v)) >= 2 ** 31 else str(int(v))


def _lookup(values: Sequence, idx: Column) -> Column:
    """values[idx] (0-based) for a constant list; the list is one SQL literal (one JVM call, not one per value)."""
    return F.element_at(F.expr(f"array({', '.join(_sql_literal(v) for v in values)})"), idx + 1)


def _alias_sample(u_index: Column, u_accept: Column, weights: Sequence[float]) -> Column:
    """An index drawn with probability weights[i] / sum(weights): Walker/Vose alias method.

    O(1) per row and exact: pick i uniformly, keep it if u_accept < prob[i], else take
    alias[i]. The two tables are built here on the driver and travel as array literals.
    """
    n = len(weights)
    total = float(sum(weights))
    scaled = [w * n / total for w in weights]
    prob, alias = [1.0] * n, list(range(n))
    small = [i for i, w in enumerate(scaled) if w < 1.0]
    large = [i for i, w in enumerate(scaled) if w >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        prob[s], alias[s] = scaled[s], g
        scaled[g] -= 1.0 - scaled[s]
        (small if scaled[g] < 1.0 else large).append(g)
    i = F.least(F.floor(u_index * n), F.lit(n - 1)).cast("int")
    return F.when(u_accept < _lookup(prob, i), i).otherwise(_lookup(alias, i))


# ---------------------------------------------------------------- catalog

@dataclass(frozen=True)
class _Layout:
    """Items laid out as category blocks over a permuted index.

    Position ``pos = _permute(item_idx)``; category c holds positions
    ``starts[c] .. starts[c] + sizes[c] - 1`` and the item at ``starts[c] + r - 1``
    has popularity rank r in its category. Every 5th rank (3, 8, 13, ...) is a new
    item, launched after ``start_date``; rank 1 is always an old one. All of it is
    arithmetic, so events find their item without a join against the catalog.
    """
    n: int
    sizes: Tuple[int, ...]
    starts: Tuple[int, ...]
    launched: Tuple[int, ...]     # items per category there from the start
    has_new: bool

    @property
    def n_cat(self) -> int:
        return len(self.sizes)


def _layout(p: SyntheticParams) -> _Layout:
    n_cat = min(len(CATEGORIES), p.n_items)
    weights = [c[1] for c in CATEGORIES[:n_cat]]
    # one item per category, the rest by weight (largest remainder)
    quotas = [(p.n_items - n_cat) * w / sum(weights) for w in weights]
    sizes = [1 + int(q) for q in quotas]
    by_remainder = sorted(range(n_cat), key=lambda i: (int(quotas[i]) - quotas[i], i))
    for i in by_remainder[:p.n_items - sum(sizes)]:
        sizes[i] += 1
    has_new = p.days > 1        # a one-day window has no room for launches
    return _Layout(
        n=p.n_items, sizes=tuple(sizes), starts=tuple(accumulate([0] + sizes[:-1])),
        launched=tuple(m - (m + 2) // 5 if has_new else m for m in sizes), has_new=has_new)


def _item_at(lay: _Layout, cat_idx: Column, rank: Column) -> Column:
    """item_idx of the item with popularity ``rank`` in category ``cat_idx``."""
    return _unpermute(_lookup(lay.starts, cat_idx) + rank - 1, lay.n)


def _category_of(lay: _Layout, pos: Column) -> Column:
    expr = F
    for c, s in enumerate(lay.starts[1:]):
        expr = expr.when(pos < s, F.lit(c))
    return F.lit(0) if lay.n_cat == 1 else expr.otherwise(F.lit(lay.n_cat - 1))


def _is_new(lay: _Layout, rank: Column) -> Column:
    return (rank % 5 == 3) if lay.has_new else F.lit(False)


def _rank_of_launched(lay: _Layout, k: Column) -> Column:
    """Rank of the k-th (1-based) old item of a category: skips ranks 3, 8, 13, ..."""
    if not lay.has_new:
        return k
    return (5 * F.floor((k - 1) / 4) + _lookup((1, 2, 4, 5), F.pmod(k - 1, F.lit(4)))).cast("int")


def _first_seen(p: SyntheticParams, item_idx: str, is_new: Column) -> Column:
    u = _uniform(p.seed, _FIRST_SEEN, item_idx)
    offset = F.when(is_new, 1 + F.floor(u * (p.days - 1))).otherwise(-F.floor(u * CATALOG_AGE_DAYS))
    return F.date_add(F.lit(p.start_date).cast("date"), offset.cast("int"))


def _list_price(p: SyntheticParams, item_idx: str, cat_idx: Column) -> Column:
    """Log-normal around the category's median (Box-Muller), with a charm ending: 2.49, 13.99."""
    u = lambda stream: _uniform(p.seed, stream, item_idx)  # noqa: E731
    z = F.sqrt(-2.0 * F.log(1.0 - u(_PRICE1))) * F.cos(2.0 * math.pi * u(_PRICE2))
    raw = F.exp(_lookup([math.log(c[2]) for c in CATEGORIES], cat_idx) + PRICE_SIGMA * z)
    charm = F.when(raw < 10, F.ceil(raw * 10) / 10 - 0.01).otherwise(F.ceil(raw) - 0.01)
    return F.round(F.greatest(F.lit(0.29), charm), 2)


def _start_epoch(p: SyntheticParams) -> int:
    return int(datetime.fromisoformat(p.start_date).replace(tzinfo=timezone.utc).timestamp())


def generate_catalog(spark: SparkSession, p: SyntheticParams) -> DataFrame:
    """Item catalog: item_id, title, category, price (list price), available, first_seen."""
    lay = _layout(p)
    cats = CATEGORIES[:lay.n_cat]
    idx = F.col("item_idx")
    u = lambda stream: _uniform(p.seed, stream, "item_idx")  # noqa: E731
    items = (spark.range(p.n_items).select(F.col("id").alias("item_idx"))
             .withColumn("pos", _permute(idx, lay.n))
             .withColumn("cat_idx", _category_of(lay, F.col("pos"))))
    rank = F.col("pos") - _lookup(lay.starts, F.col("cat_idx")) + 1

    nouns = [n for c in cats for n in c[3]]
    noun_idx = (_lookup(list(accumulate([0] + [len(c[3]) for c in cats]))[:-1], F.col("cat_idx"))
                + F.floor(u(_NOUN) * _lookup([len(c[3]) for c in cats], F.col("cat_idx"))).cast("int"))
    word = lambda words, stream: _lookup(words, F.floor(u(stream) * len(words)).cast("int"))  # noqa: E731
    title = F.concat_ws(" ", word(ADJECTIVES, _ADJ), word(COLOURS, _COLOUR), _lookup(nouns, noun_idx))
    catalog = items.select(
        _padded("SKU", idx, p.n_items, 5).alias("item_id"),
        title.alias("title"),
        _lookup([c[0] for c in cats], F.col("cat_idx")).alias("category"),
        _list_price(p, "item_idx", F.col("cat_idx")).alias("price"),
        (u(_AVAIL) >= UNAVAILABLE_SHARE).alias("available"),
        _first_seen(p, "item_idx", _is_new(lay, rank)).alias("first_seen"))
    return catalog.select(*[f.name for f in CATALOG_SCHEMA])


# ---------------------------------------------------------------- users

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
