"""``reco forget --customer ID``: remove one customer from the lakehouse and from Redis, and keep them out.

1. Every Delta table under the root that can hold the id loses the customer's rows (a MERGE ... WHEN MATCHED
   DELETE against a one-row source, so the id is not written into the table's history as a predicate):
   a ``user_id`` column (silver, return_netting, the gold and score tables, the hourly and feedback tables);
   ``bronze_<source>``'s raw customer column (``sources.<name>.columns.user_id``), spelled as silver spells it,
   and its unparsed lines (``_corrupt_record``) with the id as a field; ``quarantine`` / ``excluded`` rows
   whose ``raw`` JSON holds the id in their source's customer column or in an unparsed line.
2. ``user_index`` keeps the customer's ``idx`` under a tombstone (``features.id_maps_tombstone``): the index is
   never reused, and the clear id is gone.
3. Every table touched is VACUUMed with the configured retention. Delta keeps the files the DELETE removed (and
   the log keeps their statistics) until that retention, and the log retention, have passed: the rows stay
   readable by time travel until ``exposure_until``, which is printed and recorded.
4. Redis: the customer's list leaves every published version and hourly patch (:mod:`serving.forget`).
5. An audit row in ``forget_requests``: the customer's keyed hash (:mod:`core.pseudonym`), never the id.

Later ingests drop every row of a forgotten customer before bronze (:func:`drop_forgotten`), so a re-export of
old data does not bring them back, and the next nightly trains, scores and publishes without them.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Dict, List, Optional

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from config import Config
from config.sources import SourceConfig
from core.errors import ConfigError
from core.pseudonym import pseudonym, pseudonym_key
from features.id_maps_tombstone import customer_id, json_field, line_names, tombstone
from jobs.lakehouse import Lakehouse
from jobs.tables import list_tables

log = logging.getLogger(__name__)

AUDIT_TABLE = "forget_requests"
ID_MAP = "user_index"
LOG_RETENTION_PROPERTY = "delta.logRetentionDuration"
DEFAULT_LOG_RETENTION_HOURS = 30 * 24          # Delta's default delta.logRetentionDuration
AUDIT_SCHEMA = T.StructType([
    T.StructField("request_id", T.StringType()), T.StructField("customer_hash", T.StringType()),
    T.StructField("reason", T.StringType()), T.StructField("requested_at", T.TimestampType()),
    T.StructField("status", T.StringType()),
    T.StructField("rows_deleted", T.MapType(T.StringType(), T.LongType())),
    T.StructField("tables_touched", T.ArrayType(T.StringType())), T.StructField("tombstoned", T.BooleanType()),
    T.StructField("redis_keys_removed", T.IntegerType()),
    T.StructField("redis_versions", T.ArrayType(T.StringType())),
    T.StructField("exposure_until", T.TimestampType())])


@dataclass
class ForgetSummary:
    customer_hash: str
    requested_at: datetime
    rows_deleted: Dict[str, int] = field(default_factory=dict)     # table -> rows removed (or tombstoned)
    tombstoned: bool = False
    redis_keys_removed: int = 0
    redis_versions: List[str] = field(default_factory=list)
    exposure_until: Optional[datetime] = None
    status: str = "started"


def forget(spark: SparkSession, cfg: Config, customer: str, reason: str = "", redis_client=None,
           now: Optional[datetime] = None) -> ForgetSummary:
    """Forget ``customer`` everywhere (see the module's docstring). Idempotent: a rerun finds nothing more to
    remove and records a request with zero rows. ``redis_client``: the publisher's client (default: from cfg).

    Raises:
        ConfigError: ``RECO_PSEUDONYM_SECRET`` is not set (nothing is touched).
        PublishError / RedisUnavailable: Redis could not be cleaned; the tables are, and a failed request is
            recorded. Rerun.
    """
    from serving.keys import check_id
    key = pseudonym_key(why="reco forget records the customer only as a keyed hash")
    check_id(customer, "customer id")
    lh = Lakehouse(spark, cfg)
    out = ForgetSummary(pseudonym(customer, key), now or datetime.now(timezone.utc))
    reason = reason.replace(customer, "[customer]")
    # recorded first: an ingest that starts from now on drops the customer's rows (drop_forgotten)
    _audit(lh, out, reason, "started")
    target = spark.createDataFrame([(customer, tombstone(out.customer_hash))], "id string, tomb string")
    retention: Dict[str, int] = {}
    for table in [t for t in list_tables(lh) if t != AUDIT_TABLE]:
        n = _forget_in(lh, table, target)
        if n:
            out.rows_deleted[table] = n
            out.tombstoned |= table == ID_MAP
            retention[table] = _retention_hours(lh.vacuum(table))
    if retention:     # null when this request removed nothing (an unknown customer, a rerun)
        out.exposure_until = out.requested_at + timedelta(hours=max(retention.values()))
    log.info("[forget %s] rows removed %s; older table versions hold them until %s", out.customer_hash[:12],
             out.rows_deleted or "none", out.exposure_until.isoformat() if out.exposure_until else "-")
    cleaned = False
    try:
        from jobs.publish import keyspace, redis_client as connect
        from serving.forget import forget_user
        done = forget_user(redis_client or connect(cfg, "publisher"), keyspace(cfg), customer,
                           lock_ttl=cfg.redis.publish_lock_ttl_s)
        out.redis_keys_removed, out.redis_versions = len(done.keys_removed), done.versions_updated
        cleaned = True
    finally:        # the request is recorded either way; a failed one says so (the tables are clean: rerun)
        out.status = "succeeded" if cleaned else "failed: Redis not cleaned; rerun reco forget"
        _audit(lh, out, reason, out.status)
    return out


def _forget_in(lh: Lakehouse, table: str, target: DataFrame) -> int:
    """Remove (``user_index``: tombstone) the target customer's rows of ``table``; returns how many."""
    from delta.tables import DeltaTable
    cond = _matches(lh, table, set(lh.read(table).columns))
    if cond is None:
        return 0
    t, s = lh.read(table).alias("t"), F.broadcast(target).alias("s")
    n = t.join(s, cond, "left_semi").count()
    if n:
        merge = DeltaTable.forPath(lh.spark, lh.path(table)).alias("t").merge(target.alias("s"), cond)
        if table == ID_MAP:
            merge.whenMatchedUpdate(set={"user_id": F.col("s.tomb")}).execute()
        else:
            merge.whenMatchedDelete().execute()
        props = DeltaTable.forPath(lh.spark, lh.path(table)).detail().select("properties").first()[0] or {}
        if str(props.get("delta.enableDeletionVectors", "")).lower() == "true":
            # a deletion vector only hides the rows: rewrite the files so that the current version lacks them
            lh.spark.sql(f"REORG TABLE delta.`{lh.path(table)}` APPLY (PURGE)")
    return n


def _matches(lh: Lakehouse, table: str, columns: set) -> Optional[Column]:
    """The condition on ``t`` (the table) and ``s`` (the customer: ``s.id``) for rows naming the customer;
    None when the table cannot name one."""
    ours = F.col("s.id")
    conds: List[Column] = []
    if "user_id" in columns:
        conds.append(F.col("t.user_id") == ours)
    if table.startswith("bronze_"):
        src = lh.cfg.sources.get(table[len("bronze_"):])
        col = src.columns.get("user_id") if src else None
        if col and col in columns:
            conds.append(customer_id(F.col(f"t.`{col}`")) == ours)
        if src and "_corrupt_record" in columns:
            conds.append(line_names(F.col("t._corrupt_record"), ours, src.delimiter))
        if not col and "user_id" not in columns:
            log.warning("[forget] %s: no customer column known (source not configured): not searched", table)
    if {"raw", "source"} <= columns:
        for name, src in lh.cfg.sources.items():
            conds += _raw_conditions(name, src, ours)
    if not conds:
        return None
    cond = conds[0]
    for c in conds[1:]:
        cond = cond | c
    return cond


def _raw_conditions(name: str, src: SourceConfig, ours: Column) -> List[Column]:
    """Rows of ``quarantine`` / ``excluded`` from source ``name`` whose raw JSON names the customer."""
    col = src.columns.get("user_id")
    of_source = F.col("t.source") == name
    conds = [of_source & line_names(json_field(F.col("t.raw"), "_corrupt_record"), ours, src.delimiter)]
    if col:
        conds.append(of_source & (customer_id(json_field(F.col("t.raw"), col)) == ours))
    return conds


_INTERVAL = re.compile(r"^\s*interval\s+(\d+)\s+(hour|day|week)s?\s*$", re.IGNORECASE)


def _retention_hours(props: Dict[str, str]) -> int:
    """How long the table keeps what a commit removed: the longer of the files' and the log's retention."""
    def hours(text: Optional[str], default: int) -> int:
        m = _INTERVAL.match(text or "")
        return int(m.group(1)) * {"hour": 1, "day": 24, "week": 168}[m.group(2).lower()] if m else default
    files = hours(props.get("delta.deletedFileRetentionDuration"), 168)
    return max(files, hours(props.get(LOG_RETENTION_PROPERTY), DEFAULT_LOG_RETENTION_HOURS))


def _audit(lh: Lakehouse, out: ForgetSummary, reason: str, status: str) -> None:
    """Write (or, at the end, update) the request's row of ``forget_requests``."""
    request_id = f"{out.customer_hash[:16]}-{out.requested_at:%Y%m%dT%H%M%S%f}"
    row = (request_id, out.customer_hash, reason, out.requested_at, status,
           {k: int(v) for k, v in out.rows_deleted.items()}, sorted(out.rows_deleted), out.tombstoned,
           out.redis_keys_removed, list(out.redis_versions), out.exposure_until)
    lh.merge(lh.spark.createDataFrame([row], AUDIT_SCHEMA), AUDIT_TABLE, keys=["request_id"], few=True)


def forgotten_hashes(lh: Lakehouse) -> set:
    """The keyed hashes of every customer ``reco forget`` was asked to forget (empty without requests)."""
    if not lh.exists(AUDIT_TABLE):
        return set()
    return {r[0] for r in lh.read(AUDIT_TABLE).select("customer_hash").distinct().collect()}


def drop_forgotten(lh: Lakehouse, raw: DataFrame, src: SourceConfig, source: str) -> DataFrame:
    """``raw`` (a batch as read, before bronze) without the rows of forgotten customers.

    Without any forget request this reads nothing but the audit table's existence. With some, the batch's
    distinct customer ids are hashed on the driver and compared with the requests' hashes.

    Raises:
        ConfigError: there are forget requests but ``RECO_PSEUDONYM_SECRET`` is not set (a batch cannot be
            checked for forgotten customers without it).
    """
    col = src.columns.get("user_id")
    hashes = forgotten_hashes(lh) if col and col in raw.columns else set()
    if not hashes:
        return raw
    key = pseudonym_key(why=f"{AUDIT_TABLE} lists forgotten customers, and source '{source}''s batch must be "
                            "checked for them before it lands")
    ids = customer_id(F.col(f"`{col}`"))
    gone = [r[0] for r in raw.select(ids).distinct().collect() if r[0] is not None and pseudonym(r[0], key) in hashes]
    if not gone:
        return raw
    log.warning("[ingest %s] %d forgotten customer(s) in the batch: their rows are dropped before bronze",
                source, len(gone))
    return raw.filter(F.coalesce(~ids.isin(gone), F.lit(True)))


def check_forget_ready() -> None:
    """Fail before Spark starts when the key is missing (the CLI calls it)."""
    try:
        pseudonym_key()
    except ConfigError as e:
        raise ConfigError(f"reco forget: {e}") from None
