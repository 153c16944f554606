"""Returns netted across batches, and the ``return_netting`` table that records it.

A batch nets its returns against its own purchases first (``features.interactions.build_silver``). What
is left, its *open returns* (a return in the hour after its purchase, a late return of last week's
order), nets against the same customer's purchases of the item in the source's other batches, within
``RETURN_LOOKBACK_DAYS``: silver's purchase rows are rewritten to their net quantity, and a purchase the
returns cancel whole leaves silver, so every reader of ``silver_interactions`` sees net quantities.

``return_netting`` holds what that needs, per (source, customer, item) touched by an open return:

* one ``return`` row per batch with open returns of the pair (``value`` the open quantity);
* one ``purchase`` row per purchase the open returns cancel, in part or whole: the silver row as bought
  (``value`` before the open returns) and ``cancelled``.

Netting a pair is a function of those rows and silver (:func:`features.interactions.net_open_returns`),
not of the order batches came in. So every write stays idempotent: a rerun of the return's batch drops
its own rows and nets again (the same answer); a rerun or correction of the purchase's batch nets its
fresh rows against the other batches' open returns (the full quantity does not come back); a batch a
nightly supersedes takes its rows along, and the pairs they touched are netted again without them.

The table is written before silver: should the job stop between the two, the purchase rows there still
hold the quantities as bought, which is all a rerun needs.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F
from pyspark.sql import types as T

from features.interactions import (RETURN_LOOKBACK_DAYS, SILVER_COLUMNS, build_silver, net_open_returns,
                                   open_returns)
from jobs.lakehouse import Lakehouse

log = logging.getLogger(__name__)

TABLE = "return_netting"
SILVER = "silver_interactions"

SILVER_SCHEMA = T.StructType([
    T.StructField("source", T.StringType()), T.StructField("batch_id", T.StringType()),
    T.StructField("row_id", T.LongType()), T.StructField("user_id", T.StringType()),
    T.StructField("item_id", T.StringType()), T.StructField("event_type", T.StringType()),
    T.StructField("value", T.DoubleType()), T.StructField("price", T.DoubleType()),
    T.StructField("event_time", T.TimestampType()), T.StructField("event_date", T.DateType()),
    T.StructField("country", T.StringType()), T.StructField("session_id", T.StringType()),
    T.StructField("is_anonymous", T.BooleanType()), T.StructField("strength", T.DoubleType()),
])
SCHEMA = T.StructType(SILVER_SCHEMA.fields + [T.StructField("cancelled", T.DoubleType())])
assert tuple(f.name for f in SILVER_SCHEMA.fields) == SILVER_COLUMNS


@dataclass
class NettedBatch:
    """What the batch's commits write.

    Attributes:
        silver: the batch's silver rows, net, and the other batches' purchase rows whose net quantity
            changed (rows a return now cancels whole are left out).
        excluded: the batch's excluded rows (its purchases cancelled whole by an earlier batch's open
            return are ``netted_by_return``; its returns matched in another batch are ``return_netted``).
        also: a condition on silver for the other batches' rows ``silver`` replaces; None when none.
        dates: the event dates of those rows (a partition hint for the write).
    """
    silver: Optional[DataFrame]
    excluded: Optional[DataFrame]
    also: Optional[str] = None
    dates: List[date] = field(default_factory=list)


def net_batch(lh: Lakehouse, source: str, batch_id: str, valid: Optional[DataFrame], silver: Optional[DataFrame],
              excluded: Optional[DataFrame], non_product_items: Iterable[str], grades: Dict[str, float],
              rating_max: float, superseded: Optional[str] = None,
              lookback_days: int = RETURN_LOOKBACK_DAYS) -> NettedBatch:
    """Net the batch's open returns against other batches, and other batches' against the batch's purchases.

    Writes ``return_netting`` for the pairs concerned; the caller then writes ``excluded`` and silver
    (the batch's slice, ``also`` and the rows superseded, in one commit).

    Args:
        valid: the batch's accepted contract rows; None for a batch that now has none (a rerun of a window
            that once had rows): its open returns are withdrawn.
        silver, excluded: ``build_silver`` of ``valid`` (None with it).
        superseded: a SQL condition on silver rows the batch's commit removes (a nightly's hourly batches
            and earlier batches of its night); their open returns and snapshots go too.
    """
    spark = lh.spark
    non_product_items = list(non_product_items)
    prior = lh.read(TABLE).filter(F.col("source") == source) if lh.exists(TABLE) else None
    leaving = F.col("batch_id") == batch_id
    if superseded:
        leaving = leaving | F.expr(superseded)
    pairs = _pairs(spark, valid, prior, leaving, non_product_items)
    if not pairs:
        return NettedBatch(silver, excluded)
    log.info("[ingest %s] %d customer-item pair(s) with returns open across batches: netting them", source,
             len(pairs))
    pairs_df = F.broadcast(spark.createDataFrame(pairs, "user_id string, item_id string"))

    def in_pairs(df: DataFrame) -> DataFrame:
        return df.join(pairs_df, ["user_id", "item_id"], "left_semi")

    staying = in_pairs(prior.filter(~leaving)).collect() if prior is not None else []
    returns = [_silver_tuple(r) for r in staying if r["event_type"] == "return"]
    snapshots = {(r["batch_id"], r["row_id"]): r for r in staying if r["event_type"] == "purchase"}
    mine: List[Row] = []
    if valid is not None:
        returns += [_silver_tuple(r) for r in in_pairs(open_returns(valid, non_product_items)).collect()]
        own, _ = build_silver(in_pairs(valid), non_product_items, grades, rating_max)
        mine = own.filter((F.col("event_type") == "purchase") & ~F.col("is_anonymous")).collect()

    # other batches' purchases of the pairs, as bought: from silver, or from their snapshot
    starts = [r[SILVER_COLUMNS.index("event_date")] - timedelta(days=lookback_days) for r in returns]
    starts += [s["event_date"] for s in snapshots.values()]
    current: Dict[Tuple[str, int], Row] = {}
    if starts and lh.exists(SILVER):
        rows = (in_pairs(lh.read(SILVER)).filter(
            (F.col("source") == source) & (F.col("batch_id") != batch_id) & (F.col("event_type") == "purchase")
            & ~F.col("is_anonymous") & (F.col("event_date") >= F.lit(min(starts))))
            .filter(~F.expr(superseded) if superseded else F.lit(True)).collect())
        current = {(r["batch_id"], r["row_id"]): r for r in rows}
    bought = [_silver_tuple(snapshots.get(k, r)) for k, r in current.items()]
    bought += [_silver_tuple(s) for k, s in snapshots.items() if k not in current]     # cancelled whole
    bought += [_silver_tuple(r) for r in mine]

    netted = net_open_returns(spark.createDataFrame(bought, SILVER_SCHEMA),
                              spark.createDataFrame(returns, SILVER_SCHEMA), lookback_days).collect()
    matched = {(r["user_id"], r["item_id"]) for r in netted if r["cancelled"] > 0}

    # 1. the record, before silver
    record = [(*t, 0.0) for t in returns] + [(*_silver_tuple(r), float(r["cancelled"]))
                                             for r in netted if r["cancelled"] > 0]
    lh.replace(spark.createDataFrame(record, SCHEMA), TABLE, {"source": source},
               also=None, within=_pairs_sql(pairs))

    # 2. other batches' rows whose net quantity changes (restored, reduced, or gone)
    changed, gone, dates = [], [], set()
    for r in netted:
        key = (r["batch_id"], r["row_id"])
        if r["batch_id"] == batch_id:
            continue
        net = float(r["value"]) - float(r["cancelled"])
        now = current.get(key)
        if now is not None and abs(float(now["value"]) - net) < 1e-9:
            continue
        dates.add(r["event_date"])
        if net > 0:
            changed.append(_silver_tuple(r)[:6] + (net,) + _silver_tuple(r)[7:])
        elif now is not None:
            gone.append(key)
    keys = [(r[1], r[2]) for r in changed] + gone
    also = None
    if keys:
        log.info("[ingest %s] returns change %d purchase row(s) of other batches (%d cancelled whole)", source,
                 len(keys), len(gone))
        also = (f"source = {_sql_str(source)} AND (batch_id, row_id) IN ("
                + ", ".join(f"({_sql_str(b)}, {int(i)}L)" for b, i in keys) + ")")

    # 3. the batch's own rows: its purchases an open return of another batch cancels, its matched returns
    out_silver, out_excluded = silver, excluded
    cancel = {r["row_id"]: float(r["cancelled"]) for r in netted if r["batch_id"] == batch_id and r["cancelled"] > 0}
    if valid is not None and cancel:
        c = F.broadcast(spark.createDataFrame(list(cancel.items()), "row_id long, _cancelled double"))
        out_silver = (silver.join(c, "row_id", "left")
                      .withColumn("value", F.col("value") - F.coalesce(F.col("_cancelled"), F.lit(0.0)))
                      .filter(F.col("_cancelled").isNull() | (F.col("value") > 1e-9)).select(*SILVER_COLUMNS))
        whole = [rid for rid, q in cancel.items() if q >= _value_of(mine, rid) - 1e-9]
        if whole:
            out_excluded = out_excluded.unionByName(
                valid.filter(F.col("row_id").isin(*whole))
                .select("source", "batch_id", "row_id", "raw", F.lit("netted_by_return").alias("rule")))
    if valid is not None and matched:
        pairs_matched = F.broadcast(spark.createDataFrame(sorted(matched), "user_id string, item_id string"))
        ids = (valid.filter(F.col("event_type") == "return").join(pairs_matched, ["user_id", "item_id"], "left_semi")
               .select("row_id", F.lit(True).alias("_matched")))
        out_excluded = (out_excluded.join(F.broadcast(ids), "row_id", "left")
                        .withColumn("rule", F.when(F.col("_matched") & (F.col("rule") == "return_without_purchase"),
                                                   F.lit("return_netted")).otherwise(F.col("rule")))
                        .select("source", "batch_id", "row_id", "raw", "rule"))
    others = spark.createDataFrame(changed, SILVER_SCHEMA)
    out_silver = others if out_silver is None else out_silver.select(*SILVER_COLUMNS).unionByName(others)
    return NettedBatch(out_silver, out_excluded, also, sorted(dates))


def _pairs(spark, valid: Optional[DataFrame], prior: Optional[DataFrame], leaving,
           non_product_items: Sequence[str]) -> List[Tuple[str, str]]:
    """The (customer, item) pairs to net again: the batch's open returns, its purchases that other batches'
    open returns may cancel, and the pairs of the rows leaving the record (the batch's earlier run, the
    batches it supersedes). One Spark job."""
    frames = []
    if valid is not None:
        frames.append(open_returns(valid, non_product_items).select("user_id", "item_id"))
    if prior is not None:
        frames.append(prior.filter(leaving).select("user_id", "item_id"))
        if valid is not None:
            open_elsewhere = prior.filter(~leaving & (F.col("event_type") == "return")).select("user_id", "item_id")
            frames.append(valid.filter((F.col("event_type") == "purchase") & F.col("user_id").isNotNull())
                          .select("user_id", "item_id").join(F.broadcast(open_elsewhere), ["user_id", "item_id"],
                                                             "left_semi"))
    if not frames:
        return []
    union = frames[0]
    for f in frames[1:]:
        union = union.unionByName(f)
    return sorted((r[0], r[1]) for r in union.distinct().collect())


def _silver_tuple(r: Row) -> tuple:
    return tuple(r[c] for c in SILVER_COLUMNS)


def _value_of(rows: List[Row], row_id: int) -> float:
    return next(float(r["value"]) for r in rows if r["row_id"] == row_id)


def _pairs_sql(pairs: List[Tuple[str, str]]) -> str:
    return "(user_id, item_id) IN (" + ", ".join(f"({_sql_str(u)}, {_sql_str(i)})" for u, i in pairs) + ")"


def _sql_str(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
