"""``training_examples``: (user, item) pairs labelled with a split, as of a run date.

Two protocols live in the same table (column ``protocol``):

* ``time``: by event date, the last ``test_days`` days up to the run date are
  test, the ``valid_days`` before them validation, everything earlier train;
  a pair can appear in several splits (a repeat purchase counts again);
* ``random``: for benchmark protocols, each user's pairs (all time) are split
  by a seeded hash: ``floor(n * fraction)`` of them go to test, the rest to
  train; users with a single pair keep it in train.

Anonymous rows and returns are not training examples.
"""
from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

EXAMPLE_COLUMNS = ("protocol", "split", "user_id", "item_id", "user_idx", "item_idx", "strength", "n_events",
                   "quantity", "first_event_time", "last_event_time", "as_of_date")


def _pairs(ev: DataFrame, keys) -> DataFrame:
    return ev.groupBy(*keys).agg(
        F.max("strength").alias("strength"),
        F.count("*").alias("n_events"),
        F.sum(F.when(F.col("event_type") == "purchase", F.col("value")).otherwise(0.0)).alias("quantity"),
        F.min("event_time").alias("first_event_time"),
        F.max("event_time").alias("last_event_time"),
    )


def _eligible(silver: DataFrame, as_of: date) -> DataFrame:
    return silver.filter(~F.col("is_anonymous") & (F.col("event_type") != "return")
                         & (F.col("event_date") <= F.lit(as_of).cast("date")))


def time_split(silver: DataFrame, as_of: date, valid_days: int, test_days: int) -> DataFrame:
    age = F.datediff(F.lit(as_of).cast("date"), F.col("event_date"))
    split = (F.when(age < test_days, "test").when(age < test_days + valid_days, "valid").otherwise("train"))
    ev = _eligible(silver, as_of).withColumn("split", split)
    return _pairs(ev, ["split", "user_id", "item_id"]).withColumn("protocol", F.lit("time"))


def random_split(silver: DataFrame, as_of: date, fraction: float, seed: int) -> DataFrame:
    pairs = _pairs(_eligible(silver, as_of), ["user_id", "item_id"])
    w = Window.partitionBy("user_id")
    ranked = (pairs.withColumn("_h", F.xxhash64(F.lit(seed), "user_id", "item_id"))
              .withColumn("_r", F.row_number().over(w.orderBy("_h", "item_id")))
              .withColumn("_n", F.count("*").over(w)))
    split = F.when(F.col("_r") <= F.floor(F.col("_n") * F.lit(fraction)), "test").otherwise("train")
    return ranked.withColumn("split", split).withColumn("protocol", F.lit("random")).drop("_h", "_r", "_n")


def training_examples(silver: DataFrame, user_index: DataFrame, item_index: DataFrame, as_of: date,
                      valid_days: int, test_days: int, random_fraction: float, seed: int) -> DataFrame:
    both = time_split(silver, as_of, valid_days, test_days).unionByName(
        random_split(silver, as_of, random_fraction, seed))
    return (both.join(user_index.select("user_id", F.col("idx").alias("user_idx")), "user_id")
            .join(item_index.select("item_id", F.col("idx").alias("item_idx")), "item_id")
            .withColumn("as_of_date", F.lit(as_of).cast("date"))
            .select(*EXAMPLE_COLUMNS))
