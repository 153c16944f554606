"""`reco score`: every user's served list, every item's similar items and the fallback lists, as of
the run date, from the MLflow ``champion`` model, written to Delta (``recommendations``,
``similar_items``, ``fallback_lists``).

The job reads, for ``--date D``: ``training_examples`` (as of D: every (user, item) pair up to D, the
users' state), ``user_index``/``item_index``, ``items``, ``item_features`` and ``user_features`` (as of
D), ``silver_interactions`` (up to D: popular, trending, buy-again and co-purchase lists). Users are
scored in ``scoring.user_buckets`` Spark groups (a cogrouped ``applyInPandas``: each group's pairs and
buy-again lists) with the model and the catalog broadcast; see ``training/recommend.py`` for the
per-user steps. Every write replaces the run date's slice, so a rerun for a date is idempotent.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Dict, List, Optional

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from features import lists
from config import Config
from core.errors import EmptyInputError
from jobs.lakehouse import Lakehouse
from jobs.pipeline_runs import record_run
from training.registry import load_champion

log = logging.getLogger(__name__)

RECS_SCHEMA = "kind string, user long, rank int, item_id string, score float, source string"


@dataclass
class ScoreResult:
    run_date: str
    model_version: str
    run_id: str
    score_id: str                       # content key of this scoring run (the publish version builds on it)
    counts: Dict[str, int]
    diversity: Dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def _lists_to_arrays(df, idx: Dict[str, int]) -> Dict[str, tuple]:
    """Each list of ``df`` (list_name, rank, item_id, score; a Spark or a pandas DataFrame) as (item
    indices, scores) by rank; items without an index are left out."""
    pdf = (df if isinstance(df, pd.DataFrame) else df.toPandas()).sort_values(["list_name", "rank"])
    out = {}
    for name, g in pdf.groupby("list_name", sort=True):
        ids = np.array([idx.get(i, -1) for i in g["item_id"]], np.int64)
        keep = ids >= 0
        # padded rows (filled from a wider list) have no score: rank them below, in order
        scores = g["score"].to_numpy(np.float64)
        filler = ~np.isfinite(scores)
        floor = np.nanmin(scores) if (~filler).any() else 0.0
        scores[filler] = floor - g["rank"].to_numpy(np.float64)[filler]
        out[name] = (ids[keep], scores.astype(np.float32)[keep])
    return out


@dataclass
class ScoringContext:
    """What scoring any set of users needs: the champion, the catalog (vectors, categories, availability,
    newness), the popular / trending lists and the rules, as :class:`training.recommend.ServingInputs`."""
    inp: object                          # training.recommend.ServingInputs
    model: object
    model_version: str
    model_run_id: str
    rules: object
    idx: Dict[str, int]                  # item_id -> item index
    item_vecs: Optional[np.ndarray]
    categories: np.ndarray
    new_items: np.ndarray
    list_arrays: Dict[str, tuple]
    k: int


def fallback_frame(events: DataFrame, catalog_df: DataFrame, as_of: date, L) -> DataFrame:
    """The raw popular (``popular:global``, ``popular:segment:<s>``) and trending (``trending:...``) lists
    as of a date, from the events up to then (features/lists.py)."""
    popular = lists.popular_lists(events, catalog_df, as_of, L.popular_window_days, L.fallback_k)
    trending = lists.trending_lists(events, catalog_df, as_of, L.trending_short_days, L.trending_long_days,
                                    L.fallback_k, L.trending_min_events)
    return popular.withColumn("list_name", F.concat(F.lit("popular:"), "list_name")).unionByName(trending)


def scoring_context(cfg: Config, lh: Lakehouse, features_date: date, run_date: date, pairs: DataFrame,
                    fallback: DataFrame, champion=None) -> ScoringContext:
    """Build the scoring inputs from the id maps and catalog, ``item_features`` as of ``features_date``,
    item counts from ``pairs`` and the raw lists in ``fallback`` (a Spark DataFrame, or its rows already in
    pandas); rules apply as of ``run_date``."""
    import torch

    from training.data import Catalog
    from training.recommend import ServingInputs
    from training.rules import load_rules
    from training.index import make_index

    sc = cfg.scoring
    rules = load_rules(sc.rules_path)                       # a bad rule file fails before any work
    make_index(sc.index)                                    # so does a missing faiss
    model, model_version, model_run_id = champion or load_champion(cfg.mlflow.tracking_uri,
                                                                   cfg.mlflow.registered_model)
    items = lh.read("items") if lh.exists("items") else None
    catalog = Catalog.from_spark(lh.read("item_index"), items)      # one read of the id map serves both
    idx = dict(zip(catalog.frame["item_id"], catalog.frame["idx"].to_numpy(np.int64)))
    n_items = max(idx.values()) + 1
    item_feats = lh.read("item_features").filter(F.col("as_of_date") == F.lit(features_date).cast("date")).toPandas()
    if item_feats.empty:
        raise EmptyInputError(f"item_features has no rows as of {features_date}: run `reco features --date "
                              f"{features_date}`")

    # -- the catalog: ids, categories, availability, newness, the champion's item vectors
    counts_pdf = pairs.groupBy("item").count().toPandas()
    counts = np.zeros(n_items, np.float64)
    counts[counts_pdf["item"].to_numpy(np.int64)] = counts_pdf["count"].to_numpy(np.float64)
    item_vecs = None
    if model is not None:
        model.set_item_meta(catalog.item_meta(n_items, counts, model.cfg))
        with torch.inference_mode():
            item_vecs = model.all_item_vectors().numpy().astype(np.float32)
    item_ids = np.empty(n_items, object)
    categories = np.full(n_items, "unknown", object)
    item_ids[catalog.frame["idx"].to_numpy(np.int64)] = catalog.frame["item_id"].to_numpy()
    cats = catalog.frame["category"].where(catalog.frame["category"].notna(), "unknown")
    categories[catalog.frame["idx"].to_numpy(np.int64)] = cats.to_numpy()
    available = np.ones(n_items, bool)
    new_items = np.zeros(n_items, bool)
    f_idx = np.array([idx.get(i, -1) for i in item_feats["item_id"]], np.int64)
    ok = f_idx >= 0
    available[f_idx[ok]] = item_feats["available"].fillna(True).to_numpy(bool)[ok]
    first_seen = pd.to_datetime(item_feats["first_seen"]).dt.date
    recent = first_seen.map(lambda x: x is not None and not pd.isna(x)
                            and (run_date - x).days <= sc.explore.new_item_days).to_numpy(bool)
    new_items[f_idx[ok]] = (recent & (item_feats["n_events"].fillna(0).to_numpy() <= sc.explore.max_events))[ok]
    popularity = np.zeros(n_items)
    popularity[f_idx[ok]] = item_feats["popularity"].fillna(0).to_numpy(np.float64)[ok]
    backfill = np.array([i for i in np.lexsort((np.arange(n_items), -popularity)) if available[i]], np.int64)

    list_arrays = _lists_to_arrays(fallback, idx)
    n_avail = int(available.sum())
    promised = rules.list_length(sc.k)            # the rules file may promise its own length
    k = min(promised, n_avail)
    if k < promised:
        log.warning("only %d available items: lists hold %d items instead of %d", n_avail, k, promised)
    weights, mmr_strength = dict(sc.weights), sc.diversity.mmr_strength
    if model_run_id and sc.weights_from_model:
        from training.tracking import served_choice
        chosen = served_choice(cfg.mlflow.tracking_uri, model_run_id)
        if chosen is not None:
            weights, mmr_strength = chosen["weights"], chosen["mmr_strength"]
            log.info("blend of model v%s, chosen on validation: weights %s, mmr_strength %g", model_version,
                     weights, mmr_strength)
    inp = ServingInputs(item_ids=item_ids, categories=categories, item_vecs=item_vecs, available=available,
                        new_items=new_items, lists=list_arrays, rules=rules, run_date=run_date, k=k,
                        fetch=min(max(sc.fetch, k), n_items), weights=weights, fallback_weights=dict(sc.weights),
                        mmr_strength=mmr_strength, exclude_bought=sc.exclude_bought,
                        block_users=sc.block_users, backfill=backfill, index=sc.index)
    if sc.diversity.max_per_category and rules.max_per_category is None:
        from dataclasses import replace
        inp.rules = replace(rules, max_per_category=sc.diversity.max_per_category)
    return ScoringContext(inp=inp, model=model, model_version=model_version, model_run_id=model_run_id,
                          rules=rules, idx=idx, item_vecs=item_vecs, categories=categories, new_items=new_items,
                          list_arrays=list_arrays, k=k)


def score_users(spark: SparkSession, cfg: Config, ctx: ScoringContext, pairs: DataFrame, segments: DataFrame,
                buy_again: DataFrame, at: float, n_users: Optional[int] = None) -> DataFrame:
    """Rows of RECS_SCHEMA (kind ``final``: the served list; ``personal``: the model's own top k) for every
    user in ``pairs`` (user, item, weight, count, first_time, time), their state as of unix time ``at``.
    ``segments``: (user, segment); ``buy_again``: (user, item, rank, score). Cached; unpersist it.

    ``n_users``: at most how many users ``pairs`` holds, when the caller knows. Up to ``scoring.driver_max_users``
    they are scored in this process by the same per-bucket function as one bucket (the hourly path's few
    active customers: no Python workers to start, no model to broadcast); otherwise in
    ``scoring.user_buckets`` Spark groups."""
    B = cfg.scoring.user_buckets
    pair_rows = pairs.join(segments, "user", "left")
    if n_users is not None and n_users <= cfg.scoring.driver_max_users:
        score = _score_bucket(_Local((ctx.model, ctx.inp, at)), threads=None)   # the driver's torch threads
        pdf = score(pair_rows.toPandas(), buy_again.toPandas())
        log.info("scored %d users in the driver (scoring.driver_max_users=%d)", n_users,
                 cfg.scoring.driver_max_users)
        return _null_scores(spark.createDataFrame(pdf.astype({"user": "int64", "rank": "int32", "score": "float32"}),
                                                  RECS_SCHEMA)).cache()
    pair_rows = pair_rows.withColumn("bucket", F.pmod("user", F.lit(B)))
    ba = buy_again.withColumn("bucket", F.pmod("user", F.lit(B)))
    shared = spark.sparkContext.broadcast((ctx.model, ctx.inp, at))
    return _null_scores(pair_rows.groupBy("bucket").cogroup(ba.groupBy("bucket"))
                        .applyInPandas(_score_bucket(shared), RECS_SCHEMA)).cache()


def _null_scores(recs: DataFrame) -> DataFrame:
    """An item without a score (back-fill, a pin that was no candidate) has a null score, as
    docs/TABLES.md says, whichever way it was scored: pandas' NaN comes out of ``applyInPandas`` as NaN but
    out of ``createDataFrame`` (Arrow) as null, which made the two paths' tables differ."""
    return recs.withColumn("score", F.nanvl("score", F.lit(None).cast("float")))


@dataclass
class _Local:
    """A broadcast's stand-in for scoring in the driver: the same ``.value``."""
    value: object


def buy_again_rows(events: DataFrame, as_of: date, L, user_index: DataFrame, item_index: DataFrame) -> DataFrame:
    """(user, item, rank, score) of every user's buy-again list, in index space."""
    return (lists.buy_again(events, as_of, L.buy_again_half_life_days, L.buy_again_k)
            .join(user_index.select("user_id", F.col("idx").cast("long").alias("user")), "user_id")
            .join(item_index.select("item_id", F.col("idx").cast("long").alias("item")), "item_id")
            .select("user", "item", "rank", F.col("score").cast("float").alias("score")))


def served_fallbacks(spark: SparkSession, ctx: ScoringContext) -> DataFrame:
    """The lists served to users without their own: ``global`` and ``segment:<s>`` (blended, under the
    rules), as rows (list_name, rank, item_id, score, source)."""
    from training.recommend import fallback_list
    served_names, served = ["global"], [fallback_list(ctx.inp, None)]
    for name in sorted(ctx.list_arrays):
        if name.startswith("popular:segment:"):
            seg = name[len("popular:segment:"):]
            served_names.append(f"segment:{seg}")
            served.append(fallback_list(ctx.inp, seg))
    pdf = _long_frame("list_name", served_names, [x[0] for x in served], [x[1] for x in served],
                      [x[2] for x in served]).rename(columns={"list_item": "item_id"})
    return spark.createDataFrame(pdf, "list_name string, rank int, item_id string, score float, source string")


def raw_fallbacks(fallback: DataFrame) -> DataFrame:
    return fallback.select("list_name", F.col("rank").cast("int"), "item_id", F.col("score").cast("float"),
                           F.regexp_extract("list_name", "^(popular|trending)", 1).alias("source"))


# how the users are grouped, not what comes out (tested: same tables): not part of the content key
EXECUTION_SETTINGS = frozenset({"user_buckets", "driver_max_users"})


# where the rules file is, not what it says (its content's digest is in the key): a retry on another
# worker, or another checkout, with the same file must find the same id (and so publish nothing new)
LOCATION_SETTINGS = frozenset({"rules_path"})


def score_id_for(cfg: Config, run_date: date, ctx: ScoringContext, *extra: str) -> str:
    sc = cfg.scoring
    settings = sc.model_dump_json(exclude=set(EXECUTION_SETTINGS | LOCATION_SETTINGS))
    return _score_id(run_date, ctx.model_version, settings, _file_digest(sc.rules_path), *extra)


def score(spark: SparkSession, cfg: Config, run_date: date) -> ScoreResult:
    from training.data import pairs_from_examples
    from training.recommend import diversity_report, similar_items, similar_lists

    t0 = time.time()
    sc = cfg.scoring
    L = sc.lists
    lh = Lakehouse(spark, cfg)
    lh.require("training_examples", "user_index", "item_index", "item_features", "user_features",
               "silver_interactions", run=f"run `reco ingest` and `reco features --date {run_date}`")
    d = F.lit(run_date).cast("date")
    item_index = lh.read("item_index")
    user_index = lh.read("user_index")
    items = lh.read("items") if lh.exists("items") else None
    examples = lh.read("training_examples").filter(F.col("as_of_date") == d)
    pairs = pairs_from_examples(examples, ["train", "valid", "test"]).cache()
    if pairs.limit(1).count() == 0:
        raise EmptyInputError(f"training_examples has no pairs as of {run_date}: run `reco features --date {run_date}`")
    events = lh.read("silver_interactions").filter(F.col("event_date") <= d)
    catalog_df = items if items is not None else item_index.select("item_id", F.lit(True).alias("available"))
    fallback = fallback_frame(events, catalog_df, run_date, L).cache()
    ctx = scoring_context(cfg, lh, run_date, run_date, pairs, fallback)
    idx, item_vecs, inp = ctx.idx, ctx.item_vecs, ctx.inp
    n_items = len(inp.item_ids)

    # -- every user with history: cogrouped by bucket (pairs + segment, buy-again lists)
    users = user_index.select("user_id", F.col("idx").cast("long").alias("user"))
    segments = lists.segment_of_users(lh.read("user_features"), run_date).join(users, "user_id").select("user", "segment")
    at = float(dt.datetime.combine(run_date + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc).timestamp())
    out = score_users(spark, cfg, ctx, pairs, segments, buy_again_rows(events, run_date, L, user_index, item_index), at,
                      n_users=users.count())

    score_id = score_id_for(cfg, run_date, ctx, inputs_digest(examples))
    meta_cols = [F.lit(ctx.model_version).alias("model_version"), F.lit(ctx.model_run_id).alias("run_id"),
                 F.lit(score_id).alias("score_id"), d.alias("run_date")]
    recs = (out.filter(F.col("kind") == "final").join(users, "user")
            .select("user_id", "rank", "item_id", "score", "source", *meta_cols))
    lh.replace(recs, "recommendations", where={"run_date": run_date}, partition_by=["run_date"])

    # -- similar items (item vectors; co-purchase fills where vectors give too few)
    co = lists.co_purchase_neighbours(events, run_date, L.similar_k, L.co_purchase_min_support,
                                      L.max_basket_items).toPandas()
    co_map: Dict[int, List[int]] = {}
    for item_id, g in co.sort_values(["item_id", "rank"]).groupby("item_id"):
        if item_id in idx:
            co_map[idx[item_id]] = [idx[n] for n in g["neighbour_id"] if n in idx]
    nb, nsc, from_co = similar_items(item_vecs, L.similar_k, inp.available, co_map, block=sc.block_users)
    n_avail = int(inp.available.sum())
    sim_k = min(L.similar_k, n_avail - 1)
    sim_ids, sim_lists, sim_scores, sim_sources = similar_lists(inp, nb, nsc, from_co, sim_k)
    sim_pdf = _long_frame("item_id", sim_ids, sim_lists, sim_scores, sim_sources).rename(
        columns={"list_item": "similar_item_id"})
    sim = spark.createDataFrame(sim_pdf, "item_id string, rank int, similar_item_id string, score float, "
                                         "source string").select("*", *meta_cols)
    lh.replace(sim, "similar_items", where={"run_date": run_date}, partition_by=["run_date"])

    # -- fallback lists: the raw popular / trending lists, and the served ones (blended, under the rules)
    served = served_fallbacks(spark, ctx)
    fb = raw_fallbacks(fallback).unionByName(served).select("*", *meta_cols)
    lh.replace(fb, "fallback_lists", where={"run_date": run_date}, partition_by=["run_date"])

    # -- diversity before (the model's own top k) and after (the served lists), on a sample of users
    sample = out.filter(F.pmod("user", F.lit(97)) == 0).toPandas()
    div = {}
    if not sample.empty and item_vecs is not None:
        sample["item"] = [idx.get(i, -1) for i in sample["item_id"]]
        by = {kind: [g.sort_values("rank")["item"].to_numpy(np.int64) for _, g in grp.groupby("user")]
              for kind, grp in sample.groupby("kind")}
        div = diversity_report(by.get("personal", []), by.get("final", []), item_vecs, ctx.categories, n_items)
    counts_out = {"users": out.filter(F.col("kind") == "final").select("user").distinct().count(),
                  "recommendations": lh.read("recommendations").filter(F.col("run_date") == d).count(),
                  "similar_items": len(sim_pdf), "fallback_lists": len(ctx.list_arrays) + served.count(),
                  "k": ctx.k, "new_items": int(ctx.new_items.sum()), "available_items": n_avail}
    by_source = {r["source"]: r["count"] for r in
                 lh.read("recommendations").filter(F.col("run_date") == d).groupBy("source").count().collect()}
    out.unpersist()
    pairs.unpersist()
    fallback.unpersist()
    seconds = time.time() - t0
    record_run(lh, "score", "all", f"as-of-{run_date.isoformat()}", run_date, "succeeded",
               {**counts_out, "by_source": by_source, "diversity": div, "model_version": ctx.model_version,
                "mlflow_run_id": ctx.model_run_id, "score_id": score_id}, seconds)
    log.info("[score %s] %s; by source %s; diversity %s", run_date, counts_out, by_source,
             {k: round(v, 4) for k, v in div.items()})
    return ScoreResult(run_date=run_date.isoformat(), model_version=ctx.model_version, run_id=ctx.model_run_id,
                       score_id=score_id, counts={**counts_out, **{f"source.{s}": c for s, c in by_source.items()}},
                       diversity=div, seconds=seconds)


def _long_frame(key: str, keys: List[str], lists_: List[List[str]], scores: List[List[float]],
                sources: List[List[str]]) -> pd.DataFrame:
    """Ranked lists as rows (key, rank, list_item, score, source); a missing score is null."""
    n = [len(x) for x in lists_]
    return pd.DataFrame({key: np.repeat(np.asarray(keys, object), n),
                         "rank": np.concatenate([np.arange(1, m + 1) for m in n]).astype(np.int32) if n else [],
                         "list_item": [i for x in lists_ for i in x],
                         "score": np.asarray([v for x in scores for v in x], np.float32),
                         "source": [v for x in sources for v in x]})


def _file_digest(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return ""


def inputs_digest(examples: DataFrame) -> str:
    """An order-free digest of the day's ``training_examples`` rows (one aggregate): part of the score id, so
    a corrected export of a day already scored (other events, so other pairs) gives a new version that the
    publish moves readers to, while a plain rerun on the same data gives the same id (a no-op)."""
    n, total = examples.agg(F.count("*"), F.sum(F.xxhash64(*examples.columns).cast("decimal(38,0)"))).first()
    return f"{n}:{total}"


def _score_id(run_date: date, model_version: str, *parts: str) -> str:
    """A content key: same date, model, scoring settings, rules and inputs -> same id."""
    h = hashlib.sha256(json.dumps([run_date.isoformat(), model_version, *parts]).encode()).hexdigest()[:10]
    return f"{run_date:%Y%m%d}-m{model_version}-{h}"


def _score_bucket(shared, threads: Optional[int] = 1):
    """The cogrouped function: one bucket's pairs (+ segment) and buy-again rows -> rows of RECS_SCHEMA.
    ``threads``: torch threads per call (one per Spark task: Spark runs a task per core); None: leave
    the process's setting."""

    def fn(pairs: pd.DataFrame, ba: pd.DataFrame) -> pd.DataFrame:
        import torch

        from training.score_frame import score_frame

        if threads is not None:
            torch.set_num_threads(threads)
        model, inp, at = shared.value
        return score_frame(model, inp, at, pairs, ba)

    return fn
