"""``user_features``: one row per known customer, as of a run date."""
from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def user_features(silver: DataFrame, as_of: date, short_days: int, long_days: int) -> DataFrame:
    """Activity of every non-anonymous user up to and including ``as_of``.

    Columns: user_id, n_interactions, n_distinct_items, n_purchases,
    purchases_{short}d, purchases_{long}d (named purchases_7d/purchases_30d for
    the default windows), first_event_date, last_event_time, recency_days,
    avg_basket_value (mean of quantity * price over a user's baskets; a basket is
    a session/invoice, or a day when the source has no session), country (most
    frequent), activity_segment (new / active / lapsing / dormant), as_of_date.
    """
    d = F.lit(as_of).cast("date")
    ev = silver.filter(~F.col("is_anonymous") & (F.col("event_date") <= d))
    is_p = F.col("event_type") == "purchase"
    age = F.datediff(d, F.col("event_date"))
    base = ev.groupBy("user_id").agg(
        F.count("*").alias("n_interactions"),
        F.countDistinct("item_id").alias("n_distinct_items"),
        F.sum(is_p.cast("int")).alias("n_purchases"),
        F.sum((is_p & (age < short_days)).cast("int")).alias(f"purchases_{short_days}d"),
        F.sum((is_p & (age < long_days)).cast("int")).alias(f"purchases_{long_days}d"),
        F.min("event_date").alias("first_event_date"),
        F.max("event_time").alias("last_event_time"),
    )
    baskets = (ev.filter(is_p)
               .groupBy("user_id", F.coalesce(F.col("session_id"), F.col("event_date").cast("string")).alias("b"))
               .agg(F.sum(F.col("value") * F.col("price")).alias("basket_value"))
               .groupBy("user_id").agg(F.avg("basket_value").alias("avg_basket_value")))
    by_freq = Window.partitionBy("user_id").orderBy(F.col("n").desc(), F.col("country"))
    country = (ev.filter(F.col("country").isNotNull()).groupBy("user_id", "country").agg(F.count("*").alias("n"))
               .withColumn("_r", F.row_number().over(by_freq)).filter("_r = 1").select("user_id", "country"))
    recency = F.datediff(d, F.to_date("last_event_time"))
    segment = (F.when(F.datediff(d, F.col("first_event_date")) < long_days, "new")
               .when(recency < short_days, "active")
               .when(recency < long_days, "lapsing")
               .otherwise("dormant"))
    return (base.join(baskets, "user_id", "left").join(country, "user_id", "left")
            .withColumn("recency_days", recency)
            .withColumn("activity_segment", segment)
            .withColumn("as_of_date", d))
