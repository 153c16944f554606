"""The hourly path's window: which events an hourly run covers, and its ingest (step 1 of ``jobs.hourly``).

A watermark per source in the Delta table ``watermarks`` records which windows were ingested: the batch
starts at the last watermark when hours were missed (up to ``MAX_CATCHUP_HOURS``, 24), a rerun of a window
reuses the bounds it had, so it replaces exactly the same rows, and a window never reaches back into a day a
nightly batch of the source already holds (:func:`plan_window`).
"""
from __future__ import annotations

import datetime as dt
import logging
from datetime import date, datetime, timedelta, timezone
from typing import Optional, Tuple

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from config import Config
from core.errors import RecoError
from jobs.lakehouse import Lakehouse
from jobs.pipeline_runs import record_run

log = logging.getLogger(__name__)

WATERMARKS = "watermarks"
MAX_CATCHUP_HOURS = 24


class WindowError(RecoError):
    exit_code = 2


def parse_window(start: str, end: str) -> Tuple[datetime, datetime]:
    """[start, end) from ISO timestamps (a naive one is UTC); a clear error when it is not a window."""
    out = []
    for name, text in (("--start", start), ("--end", end)):
        try:
            t = datetime.fromisoformat(text)
        except (TypeError, ValueError):
            raise WindowError(f"{name} must be an ISO timestamp such as 2026-10-29T01:00:00+00:00, got {text!r}") from None
        out.append(t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc))
    lo, hi = out
    if not lo < hi:
        raise WindowError(f"the window is empty: --start {lo.isoformat()} is not before --end {hi.isoformat()}")
    if hi - lo > timedelta(hours=MAX_CATCHUP_HOURS):
        raise WindowError(f"the window {lo.isoformat()} .. {hi.isoformat()} is longer than {MAX_CATCHUP_HOURS} h: "
                          "the hourly path refreshes hours; run the nightly DAG for whole days")
    return lo, hi


def batch_id(end: datetime) -> str:
    return f"hourly-{end:%Y%m%dT%H%M}"


def naive(t: datetime) -> datetime:
    """UTC wall time without tzinfo (Spark's session time zone is UTC)."""
    return t.astimezone(timezone.utc).replace(tzinfo=None)


def day_of(end: datetime) -> date:
    """The day a window belongs to: the day of its last instant."""
    return (end - timedelta(microseconds=1)).date()


# ---------------------------------------------------------------- 1. ingest

def plan_window(lh: Lakehouse, source: str, start: datetime, end: datetime) -> Tuple[datetime, datetime]:
    """The batch's bounds: a rerun keeps the bounds it had; otherwise it starts at the source's last
    watermark when that is before ``start`` by at most MAX_CATCHUP_HOURS (hours that were missed), else at
    ``start``. Either way it never reaches back into a day a nightly batch of the source already holds
    (:func:`nightly_end`): those events are in silver already; and with no mark after that day it starts
    where the nightly's data ends (the first hours after a nightly ran, or hours missed since). The bounds
    are empty (start == end) when the nightly holds the whole window (an old hour retried after its day's
    nightly)."""
    lo, hi = start, end
    held = nightly_end(lh, source)
    prior = None
    if lh.exists(WATERMARKS):
        # one small Spark job: this window's own mark, if any, and the latest mark up to its start
        marks = (lh.read(WATERMARKS).filter(F.col("source") == source)
                 .agg(F.max(F.when(F.col("batch_id") == batch_id(end), F.struct("low", "high"))).alias("same"),
                      F.max(F.when(F.col("high") <= F.lit(naive(start)), F.col("high"))).alias("prior"))
                 .first())                  # a global aggregate: one row, nulls where nothing matched
        if marks["same"] is not None:       # a rerun: the bounds it had (an empty mark: the window's own)
            lo = min(marks["same"]["low"].replace(tzinfo=timezone.utc), start)
            hi = marks["same"]["high"].replace(tzinfo=timezone.utc)
            return (min(max(lo, held), hi) if held else lo), hi
        if marks["prior"] is not None:
            prior = marks["prior"].replace(tzinfo=timezone.utc)
    # where the data already in silver ends: the last mark, or the nightly's day if it reaches further
    since = max((t for t in (prior, held) if t is not None and t <= start), default=None)
    if since is not None and start - since <= timedelta(hours=MAX_CATCHUP_HOURS):
        lo = since
    if held is not None and lo < held:
        lo = min(held, hi)
    return lo, hi


def nightly_end(lh: Lakehouse, source: str) -> Optional[datetime]:
    """The end (UTC midnight after) of the latest run date a nightly (non-hourly) batch of ``source``
    was ingested for, from ``pipeline_runs``; None when none was. Events before it are the nightly's."""
    if not lh.exists("pipeline_runs"):
        return None
    day = (lh.read("pipeline_runs")
           .filter((F.col("step") == "ingest") & (F.col("source") == source) & (F.col("status") == "succeeded")
                   & ~F.col("batch_id").startswith("hourly-"))
           .agg(F.max("run_date")).first()[0])
    return None if day is None else datetime.combine(day + timedelta(days=1), dt.time(), tzinfo=timezone.utc)


def ingest_hour(spark: SparkSession, cfg: Config, source: str, start: datetime, end: datetime):
    from jobs.ingest import ingest
    lh = Lakehouse(spark, cfg)
    src = cfg.source(source)
    lo, hi = plan_window(lh, source, start, end)
    if lo < start:
        log.info("[hourly ingest %s] the watermark is at %s: this batch also covers the missed %s .. %s",
                 source, lo.isoformat(), lo.isoformat(), start.isoformat())
    if lo >= hi:
        return _held_by_nightly(spark, lh, cfg, source, start, end)
    result = ingest(spark, cfg, source, day_of(hi), path=src.hourly_path, window=(lo, hi), batch_id=batch_id(hi))
    row = [(source, batch_id(hi), naive(lo), naive(hi), int(result.accepted_rows),
            datetime.now(timezone.utc).replace(tzinfo=None))]
    lh.merge(spark.createDataFrame(row, "source string, batch_id string, low timestamp, high timestamp, rows long, "
                                        "ingested_at timestamp"), WATERMARKS, keys=["source", "batch_id"], few=True)
    return result


def _held_by_nightly(spark: SparkSession, lh: Lakehouse, cfg: Config, source: str, start: datetime, end: datetime):
    """The window lies in days a nightly batch holds: nothing is ingested, the batch's rows from an earlier
    run (if the nightly did not supersede them yet) go, and an empty mark records the window."""
    from jobs.ingest import IngestResult
    bid = batch_id(end)
    log.info("[hourly ingest %s] %s .. %s lies in days a nightly batch already holds: nothing to ingest", source,
             start.isoformat(), end.isoformat())
    from jobs.batches import withdraw_batch
    for table in ("quarantine", "excluded"):
        if lh.exists(table):
            lh.delete(table, {"source": source, "batch_id": bid})
    withdraw_batch(lh, cfg, source, bid)      # its rows leave silver, and the returns it held open are netted again
    row = [(source, bid, naive(end), naive(end), 0, datetime.now(timezone.utc).replace(tzinfo=None))]
    lh.merge(spark.createDataFrame(row, "source string, batch_id string, low timestamp, high timestamp, rows long, "
                                        "ingested_at timestamp"), WATERMARKS, keys=["source", "batch_id"], few=True)
    result = IngestResult(source=source, batch_id=bid, run_date=day_of(end).isoformat(), input_rows=0,
                          accepted_rows=0, excluded_rows=0, quarantined_rows=0)
    record_run(lh, "ingest", source, bid, day_of(end), "empty", {"reason": "held by the nightly"}, 0.0)
    return result
