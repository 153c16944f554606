"""``item_features``: one row per catalog item, as of a run date."""
from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def item_features(silver: DataFrame, items: DataFrame, as_of: date, short_days: int, long_days: int) -> DataFrame:
    """Popularity, recent popularity and trend of every item up to ``as_of``.

    Popularity is the sum of graded interaction strengths (anonymous rows
    count here). ``trend`` compares the short window's velocity (strength per
    day over the last ``short_days``) with the long window's
    (``long_days``): 1.0 is steady, above 1 rising, below 1 fading; null when
    the item had no interaction in the long window. Items in the catalog with
    no interactions yet get zeros (so brand-new items are scored later).
    """
    d = F.lit(as_of).cast("date")
    ev = silver.filter(F.col("event_date") <= d)
    age = F.datediff(d, F.col("event_date"))
    s = F.col("strength")
    stats = ev.groupBy("item_id").agg(
        F.count("*").alias("n_events"),
        F.countDistinct("user_id").alias("n_users"),
        F.sum(s).alias("popularity"),
        F.sum(F.when(age < short_days, s).otherwise(0.0)).alias(f"popularity_{short_days}d"),
        F.sum(F.when(age < long_days, s).otherwise(0.0)).alias(f"popularity_{long_days}d"),
        F.min("event_date").alias("first_event_date"),
    )
    cat = items.filter(F.col("first_seen").isNull() | (F.col("first_seen") <= d))
    out = cat.join(stats, "item_id", "full_outer")
    short_v = F.coalesce(F.col(f"popularity_{short_days}d"), F.lit(0.0)) / short_days
    long_v = F.coalesce(F.col(f"popularity_{long_days}d"), F.lit(0.0)) / long_days
    return out.select(
        "item_id", "title", F.coalesce("category", F.lit("unknown")).alias("category"), "price",
        F.coalesce("available", F.lit(True)).alias("available"),
        F.coalesce(F.least("first_seen", "first_event_date"), F.col("first_event_date"), F.col("first_seen"))
        .alias("first_seen"),
        F.coalesce("n_events", F.lit(0)).alias("n_events"),
        F.coalesce("n_users", F.lit(0)).alias("n_users"),
        F.coalesce("popularity", F.lit(0.0)).alias("popularity"),
        F.coalesce(f"popularity_{short_days}d", F.lit(0.0)).alias(f"popularity_{short_days}d"),
        F.coalesce(f"popularity_{long_days}d", F.lit(0.0)).alias(f"popularity_{long_days}d"),
        F.when(long_v > 0, short_v / long_v).alias("trend"),
        d.alias("as_of_date"),
    )
