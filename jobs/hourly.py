"""The hourly path: keep the served lists fresh between nightly retrains.

Each step takes the Airflow run's data interval ``[start, end)`` (UTC), never "now":

1. ``ingest`` (:mod:`jobs.hourly_window`): the hour's new events into silver as one batch (``hourly-<end>``). A watermark per
   source in the Delta table ``watermarks`` records which windows were ingested: the batch starts at the
   last watermark when hours were missed (up to ``MAX_CATCHUP_HOURS``, 24), and a rerun of a window
   reuses the bounds it had, so it replaces exactly the same rows.
2. ``refresh``: item popularity and trend as of ``end`` (events up to then), the raw popular and trending
   lists and the served fallback lists (``global``, ``segment:<s>``) -> ``hourly_lists``.
3. ``score``: the users with events in the batch, with the current champion and their history up to
   ``end`` (the latest nightly ``training_examples`` before the hour's day plus the silver events since):
   a fresh history-pooled user vector, the refreshed lists, the same blend, diversity and rules as the
   nightly -> ``hourly_recommendations``.
4. ``publish``: a *patch* over the nightly version readers are on (``serving.publish``): the lists of
   every user scored by an hourly run since that version's data ended (the latest list per user), the
   hour's fallback lists and the details of items first seen since. One pointer write switches readers to
   "patch over base" atomically; the nightly version is not reloaded.

Every write replaces the slice keyed by the window's end, so a rerun of an hour is idempotent.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Dict, Optional

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from config import Config
from core.errors import EmptyInputError
from jobs.lakehouse import Lakehouse
from jobs.hourly_window import WATERMARKS, batch_id, day_of, naive
from jobs.pipeline_runs import record_run

log = logging.getLogger(__name__)

HOURLY_LISTS = "hourly_lists"
HOURLY_RECS = "hourly_recommendations"


# ---------------------------------------------------------------- shared inputs

@dataclass
class HourInputs:
    """The state of the lakehouse as of a window's end."""
    base_date: date                      # the latest nightly feature date before the window's day
    events: DataFrame                    # silver events up to the window's end
    pairs: DataFrame                     # the base's pairs plus the events since, in index space
    ids: DataFrame                       # (user_id, user) of known and new users


def _base_date(lh: Lakehouse, end: datetime) -> date:
    """The latest ``training_examples`` date strictly before the window's day: what a nightly had built
    when the hour ran (a rerun picks the same, whatever nightlies ran later)."""
    day = day_of(end)
    found = (lh.read("item_features").filter(F.col("as_of_date") < F.lit(day).cast("date"))
             .agg(F.max("as_of_date")).first()[0])
    if found is None:
        raise EmptyInputError(f"no nightly features before {day}: the hourly path refreshes a nightly's lists; "
                              f"run the nightly DAG (or `reco features --date D`) for a day before {day} first")
    return found


def hour_inputs(lh: Lakehouse, end: datetime) -> HourInputs:
    from training.data import pairs_from_examples
    lh.require("silver_interactions", "training_examples", "item_features", "user_index", "item_index",
               run="run the nightly pipeline")
    base = _base_date(lh, end)
    cutoff = datetime.combine(base + timedelta(days=1), dt.time())
    events = lh.read("silver_interactions").filter(F.col("event_time") < F.lit(naive(end)))
    examples = lh.read("training_examples").filter(F.col("as_of_date") == F.lit(base).cast("date"))
    pairs = pairs_from_examples(examples, ["train", "valid", "test"])
    ids = user_ids(lh.read("user_index"), events).cache()
    new = new_pairs(events.filter(F.col("event_time") >= F.lit(cutoff)), ids, lh.read("item_index"))
    return HourInputs(base_date=base, events=events, pairs=pairs.unionByName(new), ids=ids)


def new_pairs(events: DataFrame, ids: DataFrame, item_index: DataFrame) -> DataFrame:
    """Pairs (user, item, weight, count, first_time, time) of events not yet in ``training_examples``, as
    ``features.training_examples`` builds them (max strength, event count, first and last time), with user
    indices from ``ids`` (:func:`user_ids`). Items not in ``item_index`` are skipped: they have no vector
    before the next nightly."""
    ev = events.filter(~F.col("is_anonymous") & (F.col("event_type") != "return"))
    return (ev.join(ids, "user_id").join(item_index.select("item_id", F.col("idx").cast("long").alias("item")),
                                         "item_id")
            .groupBy("user", "item")
            .agg(F.max("strength").cast("float").alias("weight"), F.count("*").cast("float").alias("count"),
                 F.unix_timestamp(F.min("event_time")).cast("double").alias("first_time"),
                 F.unix_timestamp(F.max("event_time")).cast("double").alias("time")))


def user_ids(user_index: DataFrame, events: DataFrame) -> DataFrame:
    """(user_id, user): every known user's index and, numbered after them by id, the customers new since
    the last nightly. The model treats an index beyond its table as out of vocabulary and builds that
    user's vector from their items, so a new customer with a few events already gets a personal list."""
    n_users = user_index.agg(F.max("idx")).first()[0] + 1
    known = user_index.select("user_id", F.col("idx").cast("long").alias("user"))
    ev = events.filter(~F.col("is_anonymous") & (F.col("event_type") != "return"))
    fresh = (ev.select("user_id").distinct().join(known, "user_id", "left_anti")
             .withColumn("user", F.lit(n_users).cast("long") + F.row_number().over(_by_id()).cast("long") - 1))
    return known.unionByName(fresh)


def _by_id():
    from pyspark.sql import Window
    return Window.orderBy("user_id")


# ---------------------------------------------------------------- 2. refresh

@dataclass
class RefreshResult:
    end: str
    base_date: str
    lists: int
    rows: int
    seconds: float


def refresh(spark: SparkSession, cfg: Config, start: datetime, end: datetime) -> RefreshResult:
    """Popular and trending lists as of ``end`` and the served fallback lists -> ``hourly_lists``."""
    from jobs.score import fallback_frame, raw_fallbacks, scoring_context, served_fallbacks
    t0 = time.time()
    lh = Lakehouse(spark, cfg)
    hi = hour_inputs(lh, end)
    day = day_of(end)
    items = lh.read("items") if lh.exists("items") else lh.read("item_index").select("item_id", F.lit(True).alias("available"))
    fallback = fallback_frame(hi.events, items, day, cfg.scoring.lists).cache()
    ctx = scoring_context(cfg, lh, hi.base_date, day, hi.pairs, fallback)
    rows = (raw_fallbacks(fallback).unionByName(served_fallbacks(spark, ctx))
            .select(F.lit(naive(end)).alias("hour_end"), "*", F.lit(ctx.model_version).alias("model_version")))
    lh.replace(rows, HOURLY_LISTS, where={"hour_end": naive(end)})
    written = lh.read(HOURLY_LISTS).filter(F.col("hour_end") == F.lit(naive(end)))
    n_lists, n_rows = written.agg(F.countDistinct("list_name"), F.count("*")).first()   # one Spark job
    fallback.unpersist()
    seconds = time.time() - t0
    record_run(lh, "hourly_refresh", "all", batch_id(end), day, "succeeded",
               {"lists": n_lists, "rows": n_rows, "base_date": hi.base_date.isoformat()}, seconds)
    log.info("[hourly refresh %s] %d lists (%d rows) as of %s on the %s nightly", end.isoformat(), n_lists, n_rows,
             end.isoformat(), hi.base_date)
    return RefreshResult(end=end.isoformat(), base_date=hi.base_date.isoformat(), lists=n_lists, rows=n_rows,
                         seconds=seconds)


# ---------------------------------------------------------------- 3. score

@dataclass
class HourScoreResult:
    end: str
    users: int
    model_version: str
    score_id: str
    seconds: float
    counts: Dict[str, int] = field(default_factory=dict)


def active_users(lh: Lakehouse, source: Optional[str], end: datetime) -> DataFrame:
    """user_id of every identified customer with an event in the window's batch."""
    if not lh.exists(WATERMARKS):
        raise EmptyInputError("no watermarks table: run `reco hourly ingest` for the window first")
    q = lh.read(WATERMARKS).filter(F.col("batch_id") == batch_id(end))
    if source:
        q = q.filter(F.col("source") == source)
    if q.limit(1).count() == 0:
        raise EmptyInputError(f"window ending {end.isoformat()} was not ingested (no {batch_id(end)} in watermarks):"
                              f" run `reco hourly ingest --end {end.isoformat()}` first")
    silver = lh.read("silver_interactions").filter((F.col("batch_id") == batch_id(end)) & ~F.col("is_anonymous"))
    if source:
        silver = silver.filter(F.col("source") == source)
    return silver.select("user_id").distinct()


def score_hour(spark: SparkSession, cfg: Config, source: Optional[str], start: datetime,
               end: datetime) -> HourScoreResult:
    from jobs.score import buy_again_rows, scoring_context, score_id_for, score_users
    from features import lists
    t0 = time.time()
    lh = Lakehouse(spark, cfg)
    lh.require(HOURLY_LISTS, run="run the nightly pipeline")
    hi = hour_inputs(lh, end)
    day = day_of(end)
    fallback = (lh.read(HOURLY_LISTS).filter(F.col("hour_end") == F.lit(naive(end)))
                .filter(F.col("list_name").startswith("popular:") | F.col("list_name").startswith("trending:")))
    fallback = fallback.toPandas()      # small (a few lists of fallback_k): one Spark job checks and reads it
    if fallback.empty:
        raise EmptyInputError(f"no refreshed lists for the hour ending {end.isoformat()}: run `reco hourly refresh` "
                              "for the window first")
    ctx = scoring_context(cfg, lh, hi.base_date, day, hi.pairs, fallback)
    ids = hi.ids
    active = active_users(lh, source, end).join(ids, "user_id").cache()
    n_active = active.count()
    pairs = hi.pairs.join(active.select("user"), "user")
    # everything below is per customer: the active customers' own events are all it needs (computing the
    # buy-again lists of every customer and keeping ten cost seconds)
    their_events = hi.events.join(F.broadcast(active.select("user_id")), "user_id", "left_semi")
    segments = (lists.segment_of_users(lh.read("user_features"), hi.base_date).join(active, "user_id")
                .select("user", "segment"))
    # a new customer's segment (country) comes from their own events
    seg_new = (their_events.filter(F.col("country").isNotNull()).groupBy("user_id")
               .agg(F.max_by("country", "event_time").alias("segment")).join(active, "user_id")
               .select("user", "segment"))
    segments = seg_new.join(segments, "user", "left_anti").unionByName(segments)
    ba = buy_again_rows(their_events, day, cfg.scoring.lists, active.withColumnRenamed("user", "idx"),
                        lh.read("item_index"))
    out = score_users(spark, cfg, ctx, pairs, segments, ba, end.timestamp(), n_users=n_active)
    score_id = score_id_for(cfg, day, ctx, end.isoformat(), hi.base_date.isoformat())
    recs = (out.filter(F.col("kind") == "final").join(ids, "user")
            .select(F.lit(naive(end)).alias("hour_end"), "user_id", "rank", "item_id", "score", "source",
                    F.lit(ctx.model_version).alias("model_version"), F.lit(ctx.model_run_id).alias("run_id"),
                    F.lit(score_id).alias("score_id"), F.lit(hi.base_date).cast("date").alias("base_date")))
    lh.replace(recs, HOURLY_RECS, where={"hour_end": naive(end)})
    written = lh.read(HOURLY_RECS).filter(F.col("hour_end") == F.lit(naive(end)))
    n_users, n_rows = written.agg(F.countDistinct("user_id"), F.count("*")).first()   # one Spark job
    out.unpersist()
    active.unpersist()
    seconds = time.time() - t0
    counts = {"active_users": n_active, "users": n_users, "rows": n_rows, "k": ctx.k}
    record_run(lh, "hourly_score", source or "all", batch_id(end), day, "succeeded",
               {**counts, "model_version": ctx.model_version, "score_id": score_id}, seconds)
    log.info("[hourly score %s] %s with model v%s", end.isoformat(), counts, ctx.model_version)
    return HourScoreResult(end=end.isoformat(), users=n_users, model_version=ctx.model_version, score_id=score_id,
                           seconds=seconds, counts=counts)


# ---------------------------------------------------------------- 4. publish

@dataclass
class HourPublishResult:
    version: str
    base: str
    skipped: bool
    counts: Dict[str, int]
    seconds: float
    held: str = ""      # why readers were not moved (a covered or older hour, a rolled-back patch)


def _scored(lh: Lakehouse, end: datetime) -> bool:
    """Whether the hour's score step finished (``pipeline_runs``), with or without active customers."""
    return lh.exists("pipeline_runs") and lh.read("pipeline_runs").filter(
        (F.col("step") == "hourly_score") & (F.col("batch_id") == batch_id(end))
        & (F.col("status") == "succeeded")).limit(1).count() > 0


def _patch_id(base: str, end: datetime, parts) -> str:
    h = hashlib.sha256(json.dumps([base, end.isoformat(), *parts]).encode()).hexdigest()[:8]
    return f"{base}.h{end:%Y%m%d%H%M}-{h}"


def publish_hour(spark: SparkSession, cfg: Config, start: datetime, end: datetime) -> HourPublishResult:
    from jobs.publish import item_records, keyspace, ranked, records, redis_client
    from serving.publish import publish_version
    from serving.versions import current_version, read_meta

    t0 = time.time()
    lh = Lakehouse(spark, cfg)
    lh.require(HOURLY_RECS, HOURLY_LISTS, run="run the nightly pipeline")
    r, ks = redis_client(cfg), keyspace(cfg)
    current = current_version(r, ks)
    if current is None:
        raise EmptyInputError("nothing is published yet: the hourly path patches a nightly version; run the nightly "
                              "DAG (or `reco publish --date D`) first")
    meta = read_meta(r, ks, current)
    base = meta.get("base") or current
    base_meta = read_meta(r, ks, base) if base != current else meta
    base_day = date.fromisoformat(str(base_meta.get("run_date")))
    cutoff = datetime.combine(base_day + timedelta(days=1), dt.time(), tzinfo=timezone.utc)
    if end <= cutoff:
        # a retried or cleared hour that the nightly readers are on already holds: nothing to patch, and
        # readers must not move (the task succeeds)
        log.info("[hourly publish %s] readers are on %s, built from data up to %s, which already covers this "
                 "hour: nothing to patch", end.isoformat(), current, cutoff.isoformat())
        record_run(lh, "hourly_publish", "all", batch_id(end), day_of(end), "skipped",
                   {"version": current, "base": base, "reason": "covered by the nightly"}, time.time() - t0)
        return HourPublishResult(version=current, base=base, skipped=True, counts={}, seconds=time.time() - t0,
                                 held=f"the nightly {base} readers are on already covers this hour")
    hourly = (lh.read(HOURLY_RECS).filter((F.col("hour_end") > F.lit(naive(cutoff)))
                                          & (F.col("hour_end") <= F.lit(naive(end)))))
    if lh.read(HOURLY_RECS).filter(F.col("hour_end") == F.lit(naive(end))).limit(1).count() == 0 and not _scored(
            lh, end):
        # a quiet hour is scored with no active customer: it has no rows, but its score step ran
        raise EmptyInputError(f"no hourly lists for the hour ending {end.isoformat()}: run `reco hourly score` first")
    latest = hourly.groupBy("user_id").agg(F.max("hour_end").alias("hour_end"))
    users = hourly.join(latest, ["user_id", "hour_end"])
    fallback = (lh.read(HOURLY_LISTS).filter(F.col("hour_end") == F.lit(naive(end)))
                .filter((F.col("list_name") == "global") | F.col("list_name").startswith("segment:")))
    listed = users.select("item_id").union(fallback.select("item_id")).distinct()
    items = None
    if lh.exists("items"):
        items = (lh.read("items").filter(F.col("first_seen") >= F.lit(naive(cutoff))).join(listed, "item_id")
                 .select("item_id", "title", "category", F.col("price").cast("double")))
    score_ids = sorted(r_[0] for r_ in hourly.select("score_id").distinct().collect())
    version = _patch_id(base, end, score_ids)
    users_df = ranked(users, "user_id", "item_id")
    fallback_df = ranked(fallback, "list_name", "item_id")
    expected = {"u": users.select("user_id").distinct().count(), "f": fallback.select("list_name").distinct().count()}
    if items is not None:
        expected["i"] = items.count()

    def all_records():
        yield from records("f", fallback_df, "list_name")
        if items is not None:
            yield from item_records(items)
        yield from records("u", users_df, "user_id")

    res = publish_version(r, ks, version, all_records(), base=base,
                          metadata={"run_date": day_of(end).isoformat(), "data_day": base_day.isoformat(),
                                    "hour_end": end.isoformat(),
                                    "hour_start": start.isoformat(), "score_ids": ",".join(score_ids)},
                          expected=expected, batch_keys=cfg.redis.batch_keys, keep=cfg.redis.keep_versions,
                          lock_ttl=cfg.redis.publish_lock_ttl_s)
    seconds = time.time() - t0
    record_run(lh, "hourly_publish", "all", batch_id(end), day_of(end), "skipped" if res.skipped else "succeeded",
               {"version": version, "base": base, **{f"count_{k}": v for k, v in expected.items()},
                **({"held": res.held} if res.held else {})}, seconds)
    if res.held:
        log.warning("[hourly publish %s] readers stay on %s: %s", end.isoformat(), res.version, res.held)
    else:
        log.info("[hourly publish %s] %s over %s: %s keys in %.1f s", end.isoformat(),
                 "already published" if res.skipped else "patch published", base, expected, seconds)
    return HourPublishResult(version=res.version if res.held else version, base=base, skipped=res.skipped,
                             counts=expected, seconds=seconds, held=res.held)
