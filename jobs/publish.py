"""`reco publish`: bulk-load one run date's lists from Delta into Redis as a new version, verify it,
switch readers to it with one pointer write, keep the last ``redis.keep_versions`` for rollback.

What is published for ``--date D`` (from the Delta tables of that run date): every user's list
(``recommendations``), every item's similar items (``similar_items``), the served fallback lists
(``fallback_lists`` named ``global`` and ``segment:<s>``), and every catalog item's details (``items``:
title, price, category), so a lookup is self-contained. The version id is the scoring run's
``score_id`` (date, model version and a hash of the scoring settings and rules): publishing the same
run twice is a no-op that leaves readers on it; rescoring with other rules gives a new version.

Counts per kind are taken from Delta before loading and checked against what was written, and a
sample of written keys is read back (``serving.publish``). Redis failures stop the job with a message
that says readers stay on the previous version.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import date
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from config import Config
from core.errors import EmptyInputError
from jobs.lakehouse import Lakehouse

log = logging.getLogger(__name__)

CHUNK = 20_000          # records per chunk handed to the publisher (one chunk held at a time)


@dataclass
class PublishSummary:
    version: str
    previous: Optional[str]
    skipped: bool
    counts: Dict[str, int]
    keys_per_s: float
    seconds: float
    deleted: List[str]
    held: str = ""      # why readers were not moved to this run's lists (serving.publish.publish_version)


def redis_client(cfg: Config, role: str = "publisher"):
    """A client for ``redis.url`` as ``role``'s ACL user (``redis.publisher_user``, or the default user
    with REDIS_PASSWORD); with ``redis.embedded`` the local server is started when none answers."""
    from serving.connection import connect, ping_or_raise
    from serving.embedded import ensure_running
    if cfg.redis.embedded:
        ensure_running(cfg.redis.url, cfg.redis_dir, password=cfg.redis_password)
    r = connect(cfg.redis.url, socket_timeout=cfg.redis.socket_timeout_s, **cfg.redis.client_options(role))
    ping_or_raise(r, cfg.redis.url, cfg.redis.password_variable(role))
    return r


def keyspace(cfg: Config):
    from serving.keys import KeySpace
    return KeySpace(namespace=cfg.redis.namespace, n_shards=cfg.redis.n_shards)


def ranked(df: DataFrame, key: str, item: str) -> DataFrame:
    """One row per ``key`` with its list as an array of (rank, item, score, source), by rank."""
    return (df.groupBy(key)
            .agg(F.sort_array(F.collect_list(F.struct("rank", F.col(item).alias("item"), "score", "source")))
                 .alias("list")))


def _score(v) -> float:
    return 0.0 if v is None or not math.isfinite(v) else float(v)


def _chunked(records: Iterable[Tuple[str, str, bytes]]) -> Iterator[List[Tuple[str, str, bytes]]]:
    """``records`` in lists of CHUNK (one chunk held at a time)."""
    chunk = []
    for rec in records:
        chunk.append(rec)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def records(kind: str, df: DataFrame, key: str) -> Iterator[List[Tuple[str, str, bytes]]]:
    from serving.codec import encode_list

    def value(lst) -> bytes:
        return encode_list([x["item"] for x in lst], [_score(x["score"]) for x in lst], [x["source"] for x in lst])
    yield from _chunked((kind, str(row[key]), value(row["list"])) for row in df.toLocalIterator(prefetchPartitions=True))


ENCODE_IN_DRIVER_MAX = 5_000  # lists this many or fewer are encoded in the driver (no Python workers to start)
KEYS_PER_GROUP = 5_000        # lists encoded per Python worker call (about KEYS_PER_GROUP x k rows in memory)


def _list_records(kind: str, df: DataFrame, key: str, item: str,
                  n_keys: int) -> Iterator[List[Tuple[str, str, bytes]]]:
    """Each ``key``'s list of ``df`` (rows: key, rank, item, score, source) as (kind, key, encoded list),
    in chunks of CHUNK records.

    Up to ENCODE_IN_DRIVER_MAX lists (an hour's patch) are grouped in Spark and encoded here. More (a
    nightly's every user) are encoded by Spark's Python workers, KEYS_PER_GROUP lists per call, and only
    the encoded bytes come to the driver: turning a million nested (rank, item, score, source) rows into
    Python objects in the driver cost 13 s for 20k users. The values are the same bytes either way."""
    if n_keys <= ENCODE_IN_DRIVER_MAX:
        yield from records(kind, ranked(df, key, item), key)
        return
    groups = max(1, math.ceil(n_keys / KEYS_PER_GROUP))
    flat = df.select(F.col(key).cast("string").alias("key"), "rank", F.col(item).cast("string").alias("item"),
                     F.col("score").cast("double").alias("score"), "source")
    encoded = (flat.groupBy(F.pmod(F.xxhash64("key"), F.lit(groups)).alias("group"))
               .applyInPandas(_encode_group, "key string, value binary"))
    yield from _chunked((kind, row["key"], bytes(row["value"]))
                        for row in encoded.toLocalIterator(prefetchPartitions=True))


def _encode_group(pdf):
    """(key, value) per key of a group of rows (key, rank, item, score, source): the list by rank, encoded
    as :func:`records` encodes it (a missing or non-finite score is 0)."""
    import numpy as np
    import pandas as pd

    from serving.codec import encode_list
    pdf = pdf.sort_values(["key", "rank"], kind="stable")
    keys = pdf["key"].to_numpy()
    if len(keys) == 0:
        return pd.DataFrame({"key": pd.Series([], dtype=object), "value": pd.Series([], dtype=object)})
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(keys)]
    items, sources = pdf["item"].tolist(), pdf["source"].tolist()
    scores = pdf["score"].to_numpy(np.float64)
    scores = np.where(np.isfinite(scores), scores, 0.0).tolist()
    values = [encode_list(items[a:b], scores[a:b], sources[a:b]) for a, b in zip(starts, ends)]
    return pd.DataFrame({"key": keys[starts], "value": values})


def item_records(items: DataFrame) -> Iterator[List[Tuple[str, str, bytes]]]:
    from serving.codec import encode_item

    def price(v):
        return None if v is None or not math.isfinite(v) else round(float(v), 2)
    yield from _chunked(("i", str(row["item_id"]), encode_item({"title": row["title"], "category": row["category"],
                                                                "price": price(row["price"])}))
                        for row in items.toLocalIterator(prefetchPartitions=True))


def publish(spark: SparkSession, cfg: Config, run_date: date, restore: bool = False) -> PublishSummary:
    """Publish ``run_date``'s lists as a new version and switch readers to it, unless that would move
    them backwards in data time (readers are on a later day's lists: a backfill) or the version was
    rolled back (``restore`` brings it back on purpose); then the summary is ``skipped`` with ``held``
    saying why. Readers on an hourly patch over this very version stay on the patch."""
    from serving.publish import publish_version

    lh = Lakehouse(spark, cfg)
    d = F.lit(run_date).cast("date")
    for table in ("recommendations", "similar_items", "fallback_lists"):
        if not lh.exists(table):
            raise EmptyInputError(f"no {table} table under {lh.root}: run `reco score --date {run_date}` first")
    recs = lh.read("recommendations").filter(F.col("run_date") == d)
    head = recs.select("score_id", "model_version", "run_id").limit(1).collect()
    if not head:
        raise EmptyInputError(f"recommendations has no rows for {run_date}: run `reco score --date {run_date}` first")
    score_id, model_version, run_id = head[0]
    ids = recs.select("score_id").distinct().count()
    if ids != 1:
        raise EmptyInputError(f"recommendations for {run_date} mix {ids} scoring runs; rerun `reco score --date "
                              f"{run_date}` (it replaces the date's rows)")
    similar = lh.read("similar_items").filter((F.col("run_date") == d) & (F.col("score_id") == score_id))
    fallback = (lh.read("fallback_lists").filter((F.col("run_date") == d) & (F.col("score_id") == score_id))
                .filter((F.col("list_name") == "global") | F.col("list_name").startswith("segment:")))
    items = (lh.read("items").select("item_id", "title", "category", F.col("price").cast("double"))
             if lh.exists("items") else None)

    fallback_df = ranked(fallback, "list_name", "item_id")
    expected = {"u": recs.select("user_id").distinct().count(),
                "s": similar.select("item_id").distinct().count(),
                "f": fallback.select("list_name").distinct().count()}
    if items is not None:
        expected["i"] = items.count()
    if expected["f"] == 0 or "global" not in {r[0] for r in fallback.select("list_name").distinct().collect()}:
        raise EmptyInputError(f"fallback_lists has no 'global' list for {run_date}: rerun `reco score --date {run_date}`")
    k = recs.groupBy("user_id").count().agg(F.min("count"), F.max("count")).first()
    sample_users = [r[0] for r in recs.select("user_id").distinct().orderBy("user_id").limit(20).collect()]

    def all_records():
        yield from records("f", fallback_df, "list_name")
        if items is not None:
            yield from item_records(items)
        yield from _list_records("s", similar, "item_id", "similar_item_id", expected["s"])
        yield from _list_records("u", recs, "user_id", "item_id", expected["u"])

    written = {"n": 0}

    def progress(n: int) -> None:
        if n - written["n"] >= 200_000:
            log.info("[publish %s] %d keys written", score_id, n)
            written["n"] = n

    r = redis_client(cfg)
    from serving.versions import current_version, read_meta
    current = current_version(r, keyspace(cfg))
    current_meta = read_meta(r, keyspace(cfg), current) if current else {}
    if current and current != score_id and current_meta.get("base") == score_id:
        # readers are on an hourly patch over this very version: it is published, and fresher
        log.info("[publish %s] %s is published and readers are on hourly patch %s over it: nothing to do",
                 run_date, score_id, current)
        return PublishSummary(version=current, previous=current, skipped=True, counts=expected, keys_per_s=0.0,
                              seconds=0.0, deleted=[])
    res = publish_version(r, keyspace(cfg), score_id, all_records(),
                          metadata={"run_date": run_date.isoformat(), "data_day": run_date.isoformat(),
                                    "model_version": model_version,
                                    "run_id": run_id, "score_id": score_id, "list_length": int(k[1]),
                                    "sample_users": ",".join(sample_users)},
                          expected=expected, batch_keys=cfg.redis.batch_keys, keep=cfg.redis.keep_versions,
                          progress=progress, restore=restore, lock_ttl=cfg.redis.publish_lock_ttl_s)
    if res.held:
        # a backfill, a retry after a rollback: the lists are in Delta; readers stay where they are
        log.warning("[publish %s] readers stay on %s: %s", run_date, res.version, res.held)
        return PublishSummary(version=res.version, previous=res.previous_version, skipped=True, counts=expected,
                              keys_per_s=0.0, seconds=res.seconds, deleted=[], held=res.held)
    if k[0] != k[1]:
        log.warning("[publish %s] user lists have %d to %d items (the rules promise one length)", score_id, k[0], k[1])
    log.info("[publish %s] %s: %s keys in %.1f s; readers on %s (was %s)", run_date,
             "already published" if res.skipped else "published", res.counts, res.seconds, res.version,
             res.previous_version)
    return PublishSummary(version=res.version, previous=res.previous_version, skipped=res.skipped,
                          counts=dict(res.counts or expected), keys_per_s=res.keys_per_s, seconds=res.seconds,
                          deleted=list(res.deleted_versions))


def rollback(cfg: Config) -> Tuple[str, str]:
    from serving.publish import rollback as do_rollback
    frm, to = do_rollback(redis_client(cfg), keyspace(cfg))
    log.info("rolled back: readers moved from %s to %s", frm, to)
    return frm, to
