"""Item catalog rows (the contract's catalog) derived from a source.

When a source has no catalog file, the catalog is derived from its event rows:
the most frequent title per item, the median unit price, and optionally a
coarse category from the title's last word ("WHITE HANGING HEART T-LIGHT
HOLDER" -> "HOLDER").
"""
from __future__ import annotations

from typing import Optional

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

CATALOG_COLUMNS = ("item_id", "title", "category", "price", "available", "first_seen")


def category_from_title(title: Column) -> Column:
    last = F.element_at(F.split(F.upper(F.trim(title)), r"\s+"), -1)
    return F.when(F.regexp_like(last, F.lit(r"^[A-Z][A-Z\-]+$")), last)


def catalog_from_events(events: DataFrame, category_from: Optional[str]) -> DataFrame:
    """One row per item seen in ``events`` (contract columns incl. ``title``/``category``)."""
    titled = events.filter(F.col("title").isNotNull())
    by_count = Window.partitionBy("item_id").orderBy(F.col("n").desc(), F.col("title"))
    titles = (titled.groupBy("item_id", "title").agg(F.count("*").alias("n"))
              .withColumn("_r", F.row_number().over(by_count)).filter("_r = 1").select("item_id", "title"))
    stats = events.groupBy("item_id").agg(
        F.percentile_approx(F.when(F.col("price") > 0, F.col("price")), 0.5, 1000).alias("price"),
        F.min(F.to_date("event_time")).alias("first_seen"),
        F.first("category", ignorenulls=True).alias("category"),
    )
    out = stats.join(titles, "item_id", "left")
    category = F.col("category")
    if category_from == "title_last_word":
        category = F.coalesce(category, category_from_title(F.col("title")))
    return out.select(
        "item_id", "title", F.coalesce(category, F.lit("unknown")).alias("category"),
        F.col("price").cast("double").alias("price"), F.lit(True).alias("available"), "first_seen")


def merge_catalog(current: DataFrame, incoming: DataFrame) -> DataFrame:
    """Combine a batch's catalog rows with the existing ones: the incoming title,
    category, price and availability win when present; ``first_seen`` keeps the
    earliest date ever seen."""
    a, b = current.alias("a"), incoming.alias("b")
    return a.join(b, "item_id", "full_outer").select(
        "item_id",
        F.coalesce("b.title", "a.title").alias("title"),
        F.coalesce(F.when(F.col("b.category") != "unknown", F.col("b.category")), "a.category", "b.category")
        .alias("category"),
        F.coalesce("b.price", "a.price").alias("price"),
        F.coalesce("b.available", "a.available").alias("available"),
        F.least("a.first_seen", "b.first_seen").alias("first_seen"),
    )


_TRUE = ("true", "t", "yes", "y", "1", "in stock", "available")
_FALSE = ("false", "f", "no", "n", "0", "out of stock", "unavailable")


def catalog_from_file(raw: DataFrame, columns: dict, category_from: Optional[str]) -> DataFrame:
    """Map a catalog file's raw string rows onto the catalog contract.

    Args:
        raw: the file's columns as strings plus ``row_id`` and ``raw`` (JSON of the line).
        columns: catalog field -> file column (``item_id`` required; ``title``,
            ``category``, ``price``, ``available`` optional).
    Returns:
        catalog columns plus ``row_id``, ``raw`` and ``reasons`` (empty for a good row):
        ``missing_item_id``, ``unparseable_price``, ``negative_price``,
        ``unparseable_available``, ``duplicate_item_id`` (a later row of an item
        already listed; the first one is kept).
    """
    def field(name):
        src = columns.get(name)
        if src is None:
            return F.lit(None).cast("string")
        v = F.trim(F.col(f"`{src}`"))
        return F.when(v == "", None).otherwise(v)

    price_text, avail_text = field("price"), F.lower(field("available"))
    price = price_text.try_cast("double")
    available = (F.when(avail_text.isNull(), F.lit(True)).when(avail_text.isin(*_TRUE), F.lit(True))
                 .when(avail_text.isin(*_FALSE), F.lit(False)))
    out = raw.select("row_id", "raw", field("item_id").alias("item_id"), field("title").alias("title"),
                     field("category").alias("category"), price.alias("price"), available.alias("available"),
                     (price_text.isNotNull() & price.isNull()).alias("_bad_price"))
    first = Window.partitionBy("item_id").orderBy("row_id")
    checks = [
        F.when(F.col("item_id").isNull(), F.lit("missing_item_id")),
        F.when(F.col("_bad_price"), F.lit("unparseable_price")),
        F.when(F.col("price") < 0, F.lit("negative_price")),
        F.when(F.col("available").isNull(), F.lit("unparseable_available: use true/false, yes/no or 1/0")),
        F.when(F.col("item_id").isNotNull() & (F.row_number().over(first) > 1),
               F.lit("duplicate_item_id: the item is listed earlier in the file")),
    ]
    category = F.col("category")
    if category_from == "title_last_word":
        category = F.coalesce(category, category_from_title(F.col("title")))
    return out.select(
        "row_id", "raw", "item_id", "title", F.coalesce(category, F.lit("unknown")).alias("category"), "price",
        "available", F.lit(None).cast("date").alias("first_seen"),
        F.filter(F.array(*checks), lambda x: x.isNotNull()).alias("reasons"))
