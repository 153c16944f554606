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
