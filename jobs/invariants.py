"""What must hold after every DAG run, however the runs were retried, repeated or interrupted (the
rehearsal checks these; see docs/OPERATIONS.md). Each check returns a list of problems (empty: holds).

- readers: on the newest complete nightly (or a patch over it), never moved backwards in data time;
- events: no event of a finished day is in silver twice, every view and cart the live source generated
  for it is there, and nothing is there that was not generated (purchases a later return cancelled are
  in ``excluded``; return netting across batches has its own tests in tests/jobs/test_return_netting.py);
- lists: for a sample of customers, Redis answers the Delta row of the version served, of the promised
  length;
- redis: the namespace holds only registered versions, and the live one is listed;
- runs: ``pipeline_runs`` has at most one row per (step, source, batch, run date) and no failed one (the
  rehearsal itself records every task's tries and outcome).
"""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from typing import Dict, List, Optional, Tuple

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from config import Config
from jobs.lakehouse import Lakehouse

EVENT_KEY = ["user_id", "item_id", "event_type", "event_time", "session_id"]
SAMPLE_USERS = 20


def readers(r, ks, expected_day: Optional[str], previous: Optional[Tuple[str, str]],
            moved_back_on_purpose: bool) -> Tuple[List[str], Optional[Tuple[str, str]], Dict[str, object]]:
    """Readers are on a complete version built on ``expected_day`` (a nightly or a patch over it), and
    their data position did not go back since ``previous`` (unless a rollback moved them on purpose).
    Returns (problems, the position now, what readers are on)."""
    from serving.versions import current_version, data_position, is_usable, read_meta
    current = current_version(r, ks)
    if current is None:
        return ["nothing is published: readers get nothing"], previous, {}
    meta = read_meta(r, ks, current)
    problems = []
    if not is_usable(r, ks, current):
        problems.append(f"readers are on {current}, which is not complete (or its base is not)")
    pos = data_position(meta)
    if expected_day and (pos is None or pos[0] != expected_day):
        problems.append(f"readers are on {current} built on {pos[0] if pos else '?'}, not on the newest "
                        f"complete nightly ({expected_day})")
    if pos and previous and not moved_back_on_purpose and pos < previous:
        problems.append(f"readers moved backwards in data time: {previous} -> {pos} ({current})")
    return problems, pos, {"version": current, "base": meta.get("base"), "data_day": meta.get("data_day"),
                           "hour_end": meta.get("hour_end")}


def events_exactly_once(spark: SparkSession, cfg: Config, source: str, day: date) -> List[str]:
    """No event of ``day`` is in silver more often than the live source generated it (by :data:`EVENT_KEY`,
    as multisets: twice is a double delivery, never is a foreign row); every generated view and cart of
    the day is there."""
    from jobs.sources import live_synthetic_events
    lh = Lakehouse(spark, cfg)
    lo = datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc)
    want = live_synthetic_events(spark, cfg, (lo, lo + timedelta(days=1)))
    want = want.filter(F.col("event_time") >= F.lit(lo.replace(tzinfo=None))).filter(
        F.col("event_time") < F.lit((lo + timedelta(days=1)).replace(tzinfo=None)))
    silver = lh.read("silver_interactions").filter((F.col("source") == source)
                                                   & (F.col("event_date") == F.lit(day).cast("date")))
    problems = []
    keyed = lambda df, types: (df.filter(F.col("event_type").isin(*types))  # noqa: E731
                               .select(*[F.col(c).cast("string").alias(c) for c in EVENT_KEY]))
    # multisets: the generator may draw the same line twice (two identical purchase lines), silver then
    # holds it twice as well; one copy more than generated is an event delivered twice
    extra = keyed(silver, ["view", "cart", "purchase"]).exceptAll(keyed(want, ["view", "cart", "purchase"]))
    n_extra = extra.count()
    if n_extra:
        batches = [r[0] for r in silver.join(extra.dropDuplicates(), EVENT_KEY).select("batch_id").distinct()
                   .limit(5).collect()]
        problems.append(f"{day}: {n_extra} silver events are there more often than generated (twice, or never "
                        f"generated for the day; batches {batches})")
    missing = keyed(want, ["view", "cart"]).exceptAll(keyed(silver, ["view", "cart"])).count()
    if missing:
        problems.append(f"{day}: {missing} generated views/carts are not in silver")
    return problems


def lists_match(spark: SparkSession, cfg: Config, r, ks) -> List[str]:
    """A sample of customers: Redis answers the Delta list of the version served (a patch's users their
    latest hourly list, the others the base's), each list of the promised length."""
    from serving.client import LookupClient
    from serving.versions import current_version, read_meta
    lh = Lakehouse(spark, cfg)
    current = current_version(r, ks)
    if current is None:
        return []
    meta = read_meta(r, ks, current)
    base = meta.get("base") or current
    base_meta = read_meta(r, ks, base) if base != current else meta
    k = int(base_meta.get("list_length") or cfg.scoring.k)
    recs = lh.read("recommendations").filter(F.col("score_id") == base)
    lengths = recs.groupBy("user_id").count().agg(F.min("count"), F.max("count")).first()
    problems = []
    if lengths[0] is None:
        return [f"recommendations has no rows of the version served ({base})"]
    if lengths[0] != lengths[1] or lengths[1] != cfg.scoring.k:
        problems.append(f"lists of {base} have {lengths[0]}..{lengths[1]} items; the rules promise {cfg.scoring.k}")
    want: Dict[str, List[str]] = {}
    users = [x[0] for x in recs.select("user_id").distinct().orderBy(F.xxhash64("user_id")).limit(SAMPLE_USERS)
             .collect()]
    for row in recs.filter(F.col("user_id").isin(*users)).orderBy("user_id", "rank").collect():
        want.setdefault(row["user_id"], []).append(row["item_id"])
    if meta.get("base") and lh.exists("hourly_recommendations"):
        cutoff = datetime.combine(date.fromisoformat(str(base_meta["run_date"])) + timedelta(days=1),
                                  datetime.min.time())
        end = datetime.fromisoformat(str(meta["hour_end"])).astimezone(timezone.utc).replace(tzinfo=None)
        hourly = lh.read("hourly_recommendations").filter((F.col("hour_end") > F.lit(cutoff))
                                                          & (F.col("hour_end") <= F.lit(end)))
        patched = [x[0] for x in hourly.select("user_id").distinct().orderBy(F.xxhash64("user_id"))
                   .limit(SAMPLE_USERS // 2).collect()]
        latest = hourly.filter(F.col("user_id").isin(*patched)).groupBy("user_id").agg(F.max("hour_end").alias("h"))
        rows = (hourly.join(latest, "user_id").filter(F.col("hour_end") == F.col("h"))
                .orderBy("user_id", "rank").collect())
        for u in patched:
            want[u] = []
        for row in rows:
            want[row["user_id"]].append(row["item_id"])
    client = LookupClient(r, ks)
    for user, items in sorted(want.items()):
        got = client.recommendations(user, k=k)
        if got.items != items[:k]:
            problems.append(f"customer {user}: Redis ({got.version}) answers {got.items[:5]}..., Delta holds "
                            f"{items[:5]}...")
    return problems


_VERSION_OF_KEY = re.compile(r"^[^:]+:\{(.+):[^:}]+\}:")


def redis_versions(r, ks, keep: int) -> List[str]:
    """The namespace holds keys of registered versions only, and the live version is listed."""
    from serving.versions import current_version
    seen = set()
    for key in r.scan_iter(match=f"{ks.namespace}:{{*", count=2000):
        m = _VERSION_OF_KEY.match(key.decode())
        if m:
            seen.add(m.group(1))
    registered = {v.decode() for v in r.smembers(ks.registry)}
    listed = [v.decode() for v in r.lrange(ks.versions, 0, -1)]
    problems = []
    stray = sorted(seen - registered)
    if stray:
        problems.append(f"redis holds keys of unregistered versions {stray} (a cleanup can never find them)")
    kept = set(listed) | {v.decode() for v in r.lrange(ks.rolled_back, 0, -1)}
    kept |= {current_version(r, ks)} - {None}
    lost = sorted(registered - seen - kept)
    if lost:
        problems.append(f"registered versions {lost} have no keys")
    current = current_version(r, ks)
    if current and current not in listed:
        problems.append(f"the live version {current} is not in {ks.versions} (a prune could delete it)")
    if len(listed) > 2 * keep:   # keep newest, plus at most one kept base under each
        problems.append(f"{len(listed)} versions are listed, more than keep={keep} and their bases")
    return problems


def pipeline_runs(spark: SparkSession, cfg: Config) -> List[str]:
    """No step's row says failed (a retried task replaces its row), and no step ran twice under one key."""
    lh = Lakehouse(spark, cfg)
    if not lh.exists("pipeline_runs"):
        return ["no pipeline_runs table"]
    runs = lh.read("pipeline_runs")
    problems = []
    dup = runs.groupBy("step", "source", "batch_id", "run_date").count().filter("count > 1").count()
    if dup:
        problems.append(f"pipeline_runs has {dup} keys with more than one row")
    failed = [f"{r['step']} {r['batch_id']} {r['run_date']}" for r in
              runs.filter(F.col("status").startswith("failed")).select("step", "batch_id", "run_date").collect()]
    if failed:
        problems.append(f"pipeline_runs rows still failed: {failed[:5]}")
    return problems
