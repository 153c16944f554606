"""``reco feedback drain``: the impressions and events streams into the Delta tables ``impressions``
and ``feedback``, each row exactly once (issue 25, point 3; docs/FEEDBACK.md has the streams).

Per stream, in rounds of ``feedback.drain.count`` entries:

1. read with a consumer group (``XREADGROUP``; the group is made on first use, from the stream's
   start): first the entries an earlier drain read and never acknowledged (it died, or was killed,
   before its ``XACK``), then new ones;
2. MERGE them into the table, insert-only on the id (``impression_id`` = the answer's request id,
   ``event_id``), on ``event_date`` too so that only the days concerned are read: a row already
   there (written by the drain that died after its commit) is not written again; entries repeating
   one id (a retried event) become one row;
3. ``XACK`` them only after that Delta commit.

So a drain killed anywhere leaves every entry either acknowledged and in the table, or pending and
read again by the next drain, which then finds its rows present: nothing lost, nothing doubled.
One consumer name (``drain``) for every run: drains must not run at once (the DAGs' single pool
slot sees to it), or one would take over the other's pending entries while it still works on them.

An entry the stream trimmed away before it was read (the drain ran less often than ``maxlen``
entries arrive) cannot be recovered: XREADGROUP returns it empty; it is acknowledged and counted
as ``trimmed`` (logged as a warning).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Dict, List, Optional, Tuple

import redis
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from config import Config
from jobs.lakehouse import Lakehouse
from serving.keys import KeySpace

log = logging.getLogger(__name__)

CONSUMER = "drain"

IMPRESSIONS_SCHEMA = T.StructType([
    T.StructField("impression_id", T.StringType(), False),
    T.StructField("ts", T.TimestampType(), False),
    T.StructField("event_date", T.DateType(), False),
    T.StructField("route", T.StringType(), False),
    T.StructField("user_id", T.StringType(), True),
    T.StructField("anchor_item_id", T.StringType(), True),
    T.StructField("segment", T.StringType(), True),
    T.StructField("k", T.IntegerType(), False),
    T.StructField("version", T.StringType(), True),
    T.StructField("variant", T.StringType(), True),
    T.StructField("source", T.StringType(), False),
    T.StructField("fallback", T.BooleanType(), False),
    T.StructField("items", T.ArrayType(T.StructType([
        T.StructField("item_id", T.StringType(), False),
        T.StructField("position", T.IntegerType(), False),
        T.StructField("tag", T.StringType(), True)])), False),
])

FEEDBACK_SCHEMA = T.StructType([
    T.StructField("event_id", T.StringType(), False),
    T.StructField("ts", T.TimestampType(), False),
    T.StructField("event_date", T.DateType(), False),
    T.StructField("type", T.StringType(), False),
    T.StructField("user_id", T.StringType(), False),
    T.StructField("item_id", T.StringType(), False),
    T.StructField("request_id", T.StringType(), True),
    T.StructField("received_ts", T.TimestampType(), False),
    T.StructField("quantity", T.IntegerType(), True),
    T.StructField("price", T.DoubleType(), True),
])

Entry = Tuple[bytes, Optional[Dict[bytes, bytes]]]


def _time(ms: str) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc).replace(tzinfo=None)   # the session is UTC


def _or_none(value: str) -> Optional[str]:
    return value or None


def impression_row(f: Dict[str, str]) -> tuple:
    ts = _time(f["ts"])
    items = [(item, int(pos), tag) for item, pos, tag in json.loads(f["items"])]
    return (f["request_id"], ts, ts.date(), f["route"], _or_none(f["user_id"]), _or_none(f["item_id"]),
            _or_none(f["segment"]), int(f["k"]), _or_none(f["version"]), _or_none(f["variant"]), f["source"],
            f["fallback"] == "1", items)


def feedback_row(f: Dict[str, str]) -> tuple:
    ts = _time(f["ts"])
    return (f["event_id"], ts, ts.date(), f["type"], f["user_id"], f["item_id"], _or_none(f["request_id"]),
            _time(f["received_ts"]), int(f["quantity"]) if f["quantity"] else None,
            float(f["price"]) if f["price"] else None)


@dataclass(frozen=True)
class Target:
    stream: str
    table: str
    key: str
    schema: T.StructType
    to_row: Callable[[Dict[str, str]], tuple]


@dataclass
class Drained:
    """What one stream's drain did: entries read, rows new to the table, entries trimmed before read."""
    read: int = 0
    inserted: int = 0
    trimmed: int = 0
    rounds: List[int] = field(default_factory=list)


def targets(cfg: Config) -> List[Target]:
    """The two streams (their keys in ``redis.namespace``: ``<namespace>:stream:<name>``, where the
    lookup service writes them) and the tables they drain into."""
    fb, ks = cfg.feedback, KeySpace(cfg.redis.namespace)
    return [Target(ks.stream(fb.impressions.stream), "impressions", "impression_id", IMPRESSIONS_SCHEMA,
                   impression_row),
            Target(ks.stream(fb.events.stream), "feedback", "event_id", FEEDBACK_SCHEMA, feedback_row)]


def _ensure_group(r: redis.Redis, stream: str, group: str) -> None:
    try:
        r.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _read(r: redis.Redis, stream: str, group: str, count: int, pending: bool) -> List[Entry]:
    answer = r.xreadgroup(group, CONSUMER, {stream: "0" if pending else ">"}, count=count)
    return answer[0][1] if answer else []


def _write(spark: SparkSession, lh: Lakehouse, target: Target, rows: List[tuple]) -> int:
    """MERGE ``rows`` into the table, insert-only on (event_date, id); how many were new."""
    df: DataFrame = spark.createDataFrame(rows, target.schema).dropDuplicates([target.key])
    if not lh.exists(target.table):
        df.write.format("delta").partitionBy("event_date").save(lh.path(target.table))
        return df.count()
    before = lh.version(target.table)
    lh.merge(df, target.table, keys=["event_date", target.key], update=False)
    if lh.version(target.table) == before:
        return 0
    from delta.tables import DeltaTable
    metrics = DeltaTable.forPath(spark, lh.path(target.table)).history(1).select("operationMetrics").first()[0]
    return int((metrics or {}).get("numTargetRowsInserted", 0))


def drain_stream(spark: SparkSession, lh: Lakehouse, r: redis.Redis, target: Target, group: str, count: int,
                 after_commit: Optional[Callable[[str], None]] = None) -> Drained:
    """Drain one stream into its table (see the module's docstring). ``after_commit(table)`` runs
    between each Delta commit and its XACK (tests kill the drain there)."""
    _ensure_group(r, target.stream, group)
    done, pending = Drained(), True
    while True:
        entries = _read(r, target.stream, group, count, pending)
        if not entries:
            if pending:          # the earlier drains' unacknowledged entries are done: now the new ones
                pending = False
                continue
            return done
        ids = [entry_id for entry_id, _ in entries]
        fields = [{k.decode(): v.decode() for k, v in f.items()} for _, f in entries if f]
        trimmed = len(entries) - len(fields)
        if trimmed:
            log.warning("%d entries of %s were trimmed before the drain read them: they are lost (drain more "
                        "often, or raise feedback.*.maxlen)", trimmed, target.stream)
        inserted = _write(spark, lh, target, [target.to_row(f) for f in fields]) if fields else 0
        if after_commit is not None:
            after_commit(target.table)
        r.xack(target.stream, group, *ids)
        done.read += len(fields)
        done.inserted += inserted
        done.trimmed += trimmed
        done.rounds.append(len(entries))


def drain(spark: SparkSession, cfg: Config, r: redis.Redis,
          after_commit: Optional[Callable[[str], None]] = None) -> Dict[str, Drained]:
    """Drain both streams (``feedback.impressions.stream``, ``feedback.events.stream``, keys in
    ``redis.namespace``) into ``impressions`` and ``feedback``; per table, what was done."""
    lh = Lakehouse(spark, cfg)
    out = {}
    for target in targets(cfg):
        out[target.table] = d = drain_stream(spark, lh, r, target, cfg.feedback.drain.group,
                                             cfg.feedback.drain.count, after_commit)
        log.info("drained %s into %s: %d entries read, %d new rows, %d trimmed before read", target.stream,
                 target.table, d.read, d.inserted, d.trimmed)
    return out
