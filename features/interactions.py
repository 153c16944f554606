"""Silver interactions: from validated contract rows to graded, netted events.

Every accepted row ends in exactly one place: the silver table, or the
``excluded`` table with the named rule that took it out. Rules:

* ``non_product_item``: the item code is on the configured non-product list
  (postage, fees, manual adjustments);
* ``netted_by_return``: a purchase fully cancelled by the same customer's later
  returns of that item (returns are netted against the latest purchases first);
* ``return_netted``: a return line whose quantity was netted against purchases;
* ``return_without_purchase``: a return with no purchase of that item by that
  customer in the batch (bought before the data starts) or by an anonymous buyer.

A return larger than the purchases it nets against cancels them all; the
remainder refers to purchases outside the batch and is not kept.

A partly cancelled purchase stays with its remaining quantity.
"""
from __future__ import annotations

from typing import Dict, Iterable, Tuple

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

SILVER_COLUMNS = ("source", "batch_id", "row_id", "user_id", "item_id", "event_type", "value", "price",
                  "event_time", "event_date", "country", "session_id", "is_anonymous", "strength")


def strength(event_type: Column, value: Column, grades: Dict[str, float], rating_max: float) -> Column:
    """Graded interaction strength: view 0.3, cart 0.6, purchase 1.0 (from config);
    a rating r on 1..rating_max maps by rank to r / rating_max."""
    out = F.when(event_type == "rating", F.least(F.greatest(value / F.lit(rating_max), F.lit(0.0)), F.lit(1.0)))
    for name, grade in sorted(grades.items()):
        out = out.when(event_type == name, F.lit(float(grade)))
    return out.otherwise(F.lit(0.0))


def net_returns(rows: DataFrame) -> DataFrame:
    """Net returns against purchases per (source, user, item).

    Adds ``net_value`` (remaining quantity; for returns the part not matched to
    a purchase) and ``exclude_rule`` (null when the row stays). Latest
    purchases are cancelled first: a return usually refers to a recent order.
    """
    key = ["source", "user_id", "item_id"]
    is_p, is_r = F.col("event_type") == "purchase", F.col("event_type") == "return"
    returned = F.sum(F.when(is_r, F.col("value")).otherwise(0.0)).over(Window.partitionBy(*key))
    bought = F.sum(F.when(is_p, F.col("value")).otherwise(0.0)).over(Window.partitionBy(*key))
    # purchases ordered newest first; cum_after = quantity bought at or after this row
    newest_first = Window.partitionBy(*key, F.col("event_type")).orderBy(
        F.col("event_time").desc(), F.col("row_id").desc()).rowsBetween(Window.unboundedPreceding, 0)
    cum = F.sum("value").over(newest_first)
    with_tot = rows.withColumn("_returned", returned).withColumn("_bought", bought).withColumn("_cum", cum)
    cancelled = F.least(F.col("value"), F.greatest(F.lit(0.0), F.col("_returned") - (F.col("_cum") - F.col("value"))))
    unmatched_return = F.greatest(F.lit(0.0), F.col("_returned") - F.col("_bought"))
    anonymous = F.col("user_id").isNull()
    net_value = (F.when(anonymous, F.col("value"))
                 .when(is_p, F.col("value") - cancelled)
                 .when(is_r, F.least(F.col("value"), unmatched_return))
                 .otherwise(F.col("value")))
    rule = (F.when(is_r & (anonymous | (F.col("_bought") == 0)), F.lit("return_without_purchase"))
            .when(is_r, F.lit("return_netted"))
            .when(is_p & ~anonymous & (net_value <= 0), F.lit("netted_by_return")))
    return (with_tot.withColumn("net_value", net_value).withColumn("exclude_rule", rule)
            .drop("_returned", "_bought", "_cum"))


def build_silver(valid: DataFrame, non_product_items: Iterable[str], grades: Dict[str, float],
                 rating_max: float) -> Tuple[DataFrame, DataFrame]:
    """Split validated contract rows into (silver interactions, excluded rows).

    Args:
        valid: rows that passed :mod:`features.row_quality` (contract columns,
            lineage columns and ``raw``).
        non_product_items: item codes that are not products.
        grades: strength per event type (view, cart, purchase).
        rating_max: top of the rating scale.
    Returns:
        ``silver`` with :data:`SILVER_COLUMNS`, and ``excluded`` with lineage,
        ``raw`` and ``rule``.
    """
    codes = sorted(set(non_product_items))
    non_product = F.col("item_id").isin(*codes) if codes else F.lit(False)
    netted = net_returns(valid.filter(~non_product))
    products_rule = netted.select("*")
    excluded = (valid.filter(non_product).withColumn("rule", F.lit("non_product_item"))
                .select("source", "batch_id", "row_id", "raw", "rule")
                .unionByName(products_rule.filter(F.col("exclude_rule").isNotNull())
                             .select("source", "batch_id", "row_id", "raw", F.col("exclude_rule").alias("rule"))))
    kept = products_rule.filter(F.col("exclude_rule").isNull())
    silver = kept.select(
        "source", "batch_id", "row_id", "user_id", "item_id",
        "event_type",  # returns never get here: every return is netted or unmatched (excluded)
        F.col("net_value").alias("value"), "price", "event_time",
        F.to_date("event_time").alias("event_date"),
        "country", "session_id",
        F.col("user_id").isNull().alias("is_anonymous"),
        strength(F.col("event_type"), F.col("net_value"), grades, rating_max).alias("strength"),
    )
    return silver, excluded
