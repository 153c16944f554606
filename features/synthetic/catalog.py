"""The synthetic catalog: items laid out by category and popularity rank, so an event finds its item by arithmetic."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import accumulate
from typing import Tuple

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from features.contract import CATALOG_SCHEMA
from features.synthetic.params import (ADJECTIVES, CATALOG_AGE_DAYS, CATEGORIES, COLOURS, PRICE_SIGMA,
                                       SyntheticParams, UNAVAILABLE_SHARE, _ADJ, _AVAIL, _COLOUR, _FIRST_SEEN, _NOUN,
                                       _PRICE1, _PRICE2)
from features.synthetic.draws import _lookup, _padded, _permute, _uniform, _unpermute

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
