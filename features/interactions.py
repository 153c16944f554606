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
remainder (:func:`open_returns`) refers to purchases outside the batch: it nets
against the same customer's purchases of the item in earlier batches
(:func:`net_open_returns`, applied by ``jobs.return_netting``), so a return in
the hour after its purchase cancels it as one in the same batch would.

A partly cancelled purchase stays with its remaining quantity.
"""
from __future__ import annotations

from typing import Dict, Iterable, Tuple

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

# How far back a return reaches for purchases of earlier batches: the synthetic data's returns come
# 2-14 days after their purchase; a shop's return window is usually 14-30 days.
RETURN_LOOKBACK_DAYS = 30

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


def _non_product(non_product_items: Iterable[str]) -> Column:
    codes = sorted(set(non_product_items))
    return F.col("item_id").isin(*codes) if codes else F.lit(False)


def open_returns(valid: DataFrame, non_product_items: Iterable[str]) -> DataFrame:
    """Per (source, batch, customer, item): the returned quantity the batch's own purchases do not cover.

    These are the returns :func:`net_returns` cannot match in the batch (``return_without_purchase``, or
    the part of a return above the batch's purchases); they may refer to purchases of earlier batches.
    One row per pair, shaped like silver (:data:`SILVER_COLUMNS`): ``event_type`` ``return``, ``value``
    the open quantity, ``event_time`` the pair's latest return, ``row_id`` and ``session_id`` that
    return's. Anonymous returns cannot be matched to anyone and have no row.
    """
    rows = valid.filter(~_non_product(non_product_items) & F.col("user_id").isNotNull()
                        & F.col("event_type").isin("purchase", "return"))
    is_r = F.col("event_type") == "return"
    latest = F.max_by(F.struct("row_id", "session_id", "price", "country"),
                      F.when(is_r, F.struct("event_time", "row_id")))
    per_pair = (rows.groupBy("source", "batch_id", "user_id", "item_id")
                .agg(F.sum(F.when(is_r, F.col("value")).otherwise(0.0)).alias("_returned"),
                     F.sum(F.when(~is_r, F.col("value")).otherwise(0.0)).alias("_bought"),
                     F.max(F.when(is_r, F.col("event_time"))).alias("event_time"),
                     latest.alias("_last")))
    return (per_pair.filter(F.col("_returned") > F.col("_bought"))
            .select("source", "batch_id", F.col("_last.row_id").alias("row_id"), "user_id", "item_id",
                    F.lit("return").alias("event_type"), (F.col("_returned") - F.col("_bought")).alias("value"),
                    F.col("_last.price").alias("price"), "event_time", F.to_date("event_time").alias("event_date"),
                    F.col("_last.country").alias("country"), F.col("_last.session_id").alias("session_id"),
                    F.lit(False).alias("is_anonymous"), F.lit(0.0).alias("strength")))


def net_open_returns(purchases: DataFrame, returns: DataFrame, lookback_days: int = RETURN_LOOKBACK_DAYS) -> DataFrame:
    """Net open returns (:func:`open_returns`, of any batch) against purchases (of any batch).

    Per (source, customer, item), the open quantity of all the returns cancels purchases bought from
    ``lookback_days`` before the earliest of those returns up to the latest one, latest purchases first
    (a return usually refers to a recent order), as :func:`net_returns` does within a batch. It is a
    function of the rows alone, not of the order batches came in, so re-netting a pair after a rerun,
    a correction or a superseded batch gives the same answer.

    Args:
        purchases: silver-shaped purchase rows of known customers, ``value`` the quantity as bought
            (after their own batch's netting, before any open return's).
        returns: open returns: ``source``, ``user_id``, ``item_id``, ``value``, ``event_time``.
    Returns:
        ``purchases`` with ``cancelled``: the quantity of the row the returns take (0 when none).
    """
    key = ["source", "user_id", "item_id"]
    per_pair = (returns.groupBy(*key)
                .agg(F.sum("value").alias("_open"), F.max("event_time").alias("_last"),
                     F.min("event_time").alias("_first")))
    joined = purchases.join(per_pair, key, "left")
    eligible = (F.col("_open").isNotNull() & (F.col("event_time") <= F.col("_last"))
                & (F.col("event_time") >= F.col("_first") - F.expr(f"INTERVAL {int(lookback_days)} DAYS")))
    newest_first = Window.partitionBy(*key).orderBy(
        F.col("event_time").desc(), F.col("batch_id").desc(), F.col("row_id").desc()).rowsBetween(
        Window.unboundedPreceding, 0)
    eligible_rows = joined.withColumn("_eligible", eligible)
    cum = F.sum(F.when(F.col("_eligible"), F.col("value")).otherwise(0.0)).over(newest_first)
    cancelled = F.when(F.col("_eligible"), F.least(F.col("value"), F.greatest(
        F.lit(0.0), F.col("_open") - (F.col("_cum") - F.col("value"))))).otherwise(F.lit(0.0))
    return (eligible_rows.withColumn("_cum", cum).withColumn("cancelled", cancelled)
            .drop("_open", "_last", "_first", "_eligible", "_cum"))
