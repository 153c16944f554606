"""Backtest metrics of served lists: how well the lists of a day ranked what customers did next.

Pure Spark logic (DataFrames and plain parameters in, a small dict out; no I/O, no config): the job
(``jobs/backtest.py``) cuts the inputs to the lists' date and the window after it.

Inputs

* ``lists``: ``user_id, rank, item_id, source``, one row per position of each served list (ranks
  1-based; a list holds an item once). Every user with a row is *served*.
* ``actions``: ``user_id, item_id, event_type``, what customers did in the window. Rows without a
  ``user_id`` (anonymous events) count for nothing.
* ``groups``: name -> event types, e.g. ``{"purchase": ["purchase"], "any": ["purchase", "cart",
  "view"]}``; each group is scored on its own.
* ``ks``: the cut-offs.

Per group, a served user's relevant items ``R`` are the distinct items they acted on with an event type
of the group. Users are *counted* when they were served and ``R`` is not empty (``users_active``);
every per-user metric is the mean over the counted users, with the definitions of
``training/metrics.py`` (binary relevance, ``hits@K`` = relevant items at ranks 1..K):

    hit@K       = 1 if hits@K > 0 else 0
    precision@K = hits@K / K
    recall@K    = hits@K / |R|
    ndcg@K      = DCG@K / IDCG@K,  DCG@K = sum over hits at rank i <= K of 1 / log2(i + 1),
                  IDCG@K = sum_{i=1..min(|R|, K)} 1 / log2(i + 1)

``hit_share@K`` says where the hits came from: per list ``source`` (``personal``, ``buy_again``,
``trending``, ``popular``, ``explore``, ``backfill``, ``pinned``), its share of all hits at rank <= K
of the counted users (the shares add up to 1; empty when there is no hit). With no counted user the
per-user metrics are ``None`` (undefined, not 0).

:func:`same_list_for_all` builds the lists of a non-personal reference (every served user gets the
same list, e.g. the global popular list of that date), to read the served lists' numbers against.
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

PER_USER_METRICS = ("hit", "precision", "recall", "ndcg")


def _check(groups: Mapping[str, Sequence[str]], ks: Sequence[int]) -> list:
    if not groups or any(not types for types in groups.values()):
        raise ValueError(f"groups must name at least one event type each, got {dict(groups)!r}")
    if not ks or any(int(k) < 1 for k in ks):
        raise ValueError(f"ks must be cut-offs of 1 or more, got {list(ks)!r}")
    return sorted({int(k) for k in ks})


def relevant_items(actions: DataFrame, groups: Mapping[str, Sequence[str]]) -> DataFrame:
    """``group, user_id, item_id``: the distinct items each identified customer acted on, per group."""
    known = actions.filter(F.col("user_id").isNotNull() & F.col("item_id").isNotNull())
    parts = [known.filter(F.col("event_type").isin(list(types))).select(F.lit(name).alias("group"), "user_id",
                                                                         "item_id")
             for name, types in groups.items()]
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part)
    return out.distinct()


def _idcg(kmax: int) -> list:
    """IDCG of n hits at the top, for n = 1..kmax (index n - 1)."""
    out, total = [], 0.0
    for i in range(1, kmax + 1):
        total += 1.0 / math.log2(i + 1)
        out.append(total)
    return out


def backtest_metrics(lists: DataFrame, actions: DataFrame, groups: Mapping[str, Sequence[str]],
                     ks: Sequence[int]) -> Dict[str, Dict[str, object]]:
    """The metrics of the module docstring, per group: ``{group: {"users_served", "users_acting" (customers
    with an action of the group, served or not), "users_active" (served and acting: the counted users),
    "hits@K" (relevant items at rank <= K, summed over counted users), "hit@K", "precision@K", "recall@K",
    "ndcg@K", "hit_share@K": {source: share}}}``. Four small Spark jobs whatever the size of the lists."""
    ks = _check(groups, ks)
    kmax = ks[-1]
    top = lists.filter(F.col("rank") <= kmax).select("user_id", "rank", "item_id", "source")
    served = lists.select("user_id").distinct()
    rel = relevant_items(actions, groups)
    n_rel = rel.groupBy("group", "user_id").agg(F.count("*").alias("n_rel"))
    active = n_rel.join(served, "user_id", "left_semi")
    hits = top.join(rel, ["user_id", "item_id"])                     # group, user_id, item_id, rank, source
    gain = 1.0 / F.log2(F.col("rank") + 1)
    per_user = hits.groupBy("group", "user_id").agg(
        *[F.sum(F.when(F.col("rank") <= k, 1).otherwise(0)).alias(f"h{k}") for k in ks],
        *[F.sum(F.when(F.col("rank") <= k, gain).otherwise(0.0)).alias(f"dcg{k}") for k in ks])
    users = active.join(per_user, ["group", "user_id"], "left").fillna(0, [f"h{k}" for k in ks]) \
        .fillna(0.0, [f"dcg{k}" for k in ks])
    idcg = F.array(*[F.lit(v) for v in _idcg(kmax)])
    aggs = [F.count("*").alias("users_active")]
    for k in ks:
        h = F.col(f"h{k}")
        aggs += [F.sum(h).alias(f"hits@{k}"),
                 F.avg(F.when(h > 0, 1.0).otherwise(0.0)).alias(f"hit@{k}"),
                 F.avg(h / F.lit(float(k))).alias(f"precision@{k}"),
                 F.avg(h / F.col("n_rel")).alias(f"recall@{k}"),
                 F.avg(F.col(f"dcg{k}") / F.element_at(idcg, F.least(F.col("n_rel"), F.lit(k)).cast("int")))
                 .alias(f"ndcg@{k}")]
    by_group = {r["group"]: r.asDict() for r in users.groupBy("group").agg(*aggs).collect()}
    acting = {r["group"]: r["n"] for r in rel.groupBy("group").agg(F.countDistinct("user_id").alias("n")).collect()}
    shares = hits.groupBy("group", "source").agg(
        *[F.sum(F.when(F.col("rank") <= k, 1).otherwise(0)).alias(f"h{k}") for k in ks]).collect()
    n_served = served.count()

    out: Dict[str, Dict[str, object]] = {}
    for name in groups:
        row = by_group.get(name, {})
        m: Dict[str, object] = {"users_served": n_served, "users_acting": int(acting.get(name, 0)),
                                "users_active": int(row.get("users_active") or 0)}
        for k in ks:
            m[f"hits@{k}"] = int(row.get(f"hits@{k}") or 0)
            for metric in PER_USER_METRICS:
                value: Optional[float] = row.get(f"{metric}@{k}")
                m[f"{metric}@{k}"] = None if value is None else float(value)
            counts = {r["source"]: int(r[f"h{k}"]) for r in shares if r["group"] == name and r[f"h{k}"]}
            total = sum(counts.values())
            m[f"hit_share@{k}"] = {s: c / total for s, c in sorted(counts.items())} if total else {}
        out[name] = m
    return out


def same_list_for_all(users: DataFrame, ranked: DataFrame, source: str, k: int) -> DataFrame:
    """``user_id, rank, item_id, source``: the first ``k`` items of one ranked list (``rank, item_id``) as the
    list of every user in ``users`` (``user_id``): a non-personal reference for :func:`backtest_metrics`."""
    head = F.broadcast(ranked.filter(F.col("rank") <= k).select("rank", "item_id"))
    return users.select("user_id").distinct().crossJoin(head).withColumn("source", F.lit(source))
