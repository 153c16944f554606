"""Ingest one batch of a source: bronze -> validation -> quarantine -> silver.

Reads like a table of contents:

1. resolve the batch's input files (local or s3://) and land them, all
   columns as strings, in ``bronze_<source>`` (replacing the batch if it was
   ingested before);
2. map the rows onto the input contract with the source's column mapping;
3. check every row against the quality rules; validate the batch with the
   great-expectations suite (result JSON + data docs);
4. write bad rows to ``quarantine`` with their reasons; fail when the batch's
   bad-row share is above ``quality.max_bad_row_share``;
5. net returns, drop non-products (to ``excluded``, with the rule), grade
   strengths, and write ``silver_interactions``; upsert the ``items`` catalog;
6. record the counts in ``pipeline_runs``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Dict, List, Optional, Tuple

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from config import Config, SourceConfig
from core.errors import EmptyInputError, InputSchemaError, QualityGateError
from features import catalog as catalog_fx
from features.expectations import events_expectations
from features.interactions import build_silver
from features.row_quality import QualityLimits, quarantine_rows, split_good_bad, with_reasons
from features.source_mapping import map_to_contract
from jobs import ingested_files, return_netting
from jobs.batches import covered_days, is_nightly, nightly_supersedes, nights_files, sql_date, withdraw_batch
from jobs.forget import drop_forgotten
from jobs.lakehouse import Lakehouse
from jobs.pipeline_runs import record_run
from jobs.sources import (default_run_date, ingest_catalog_file, live_synthetic_events, read_raw_csv,
                          source_columns, synthetic_params)
from jobs.storage import batch_id_for, resolve_inputs
from jobs.validate import ValidationSummary, run_suite

log = logging.getLogger(__name__)



@dataclass
class IngestResult:
    source: str
    batch_id: str
    run_date: str
    input_rows: int
    accepted_rows: int
    excluded_rows: int
    quarantined_rows: int
    excluded_by_rule: Dict[str, int] = field(default_factory=dict)
    quarantined_by_rule: Dict[str, int] = field(default_factory=dict)
    gx_success: bool = True
    gx_result: str = ""
    files: List[str] = field(default_factory=list)

    @property
    def bad_share(self) -> float:
        return self.quarantined_rows / self.input_rows if self.input_rows else 0.0


# ---------------------------------------------------------------- reading raw rows


# ---------------------------------------------------------------- the job


def ingest(spark: SparkSession, cfg: Config, source: str, run_date: date, path: Optional[str] = None,
           dry_run: bool = False, window: Optional[Tuple[datetime, datetime]] = None,
           batch_id: Optional[str] = None) -> IngestResult:
    """Ingest one batch; with ``dry_run`` only check it (GX result JSON is the one thing written).

    ``window`` = [start, end) (UTC): an incremental batch (the hourly path). Only events whose time falls
    in it belong to the batch (rows without a readable time stay, to be quarantined); the synthetic
    source then draws "live" events for the window instead of its fixed data set. ``batch_id`` names
    the batch (default: from the input files' identity), so a rerun replaces it.
    """
    src = cfg.source(source)
    lh = Lakehouse(spark, cfg)
    t0 = time.time()
    if src.kind == "synthetic" and window is None and run_date > default_run_date(cfg, source):
        window, batch_id = _live_day(run_date), batch_id or f"synthetic-live-{run_date:%Y%m%d}"
    batch = _read_batch(spark, lh, cfg, source, run_date, path, window, batch_id, dry_run)      # 1. the files
    if batch is None:
        return _nothing_new(lh, source, run_date, dry_run, t0)
    batch.raw = drop_forgotten(lh, batch.raw, src, source)     # `reco forget`: never landed again, not counted
    landed, input_rows = _land(lh, batch, source, run_date, window, dry_run)                     # 1. bronze
    mapped, input_rows = _map(landed, src, source, window, input_rows)                           # 2. contract
    result = IngestResult(source=source, batch_id=batch.batch_id, run_date=run_date.isoformat(),
                          input_rows=input_rows, accepted_rows=0, excluded_rows=0, quarantined_rows=0,
                          files=batch.files)
    if window is not None and input_rows == 0:
        return _empty_window(lh, cfg, result, run_date, window, dry_run, t0)
    checks = _check(mapped, cfg, src, source, batch.batch_id, run_date, result)                   # 3. rules, GX
    if dry_run:
        checks.checked.unpersist()
        return result
    _quarantine_and_gate(lh, cfg, checks, result, run_date, t0)                                  # 4. quarantine
    _write_silver(lh, cfg, checks, result, run_date, window)                                      # 5. silver
    _update_catalog(spark, lh, cfg, src, source, run_date, batch.catalog, checks.good)            # 5. items
    checks.checked.unpersist()
    _record(lh, source, batch.batch_id, run_date, "succeeded", result, t0)                        # 6. the run
    log.info("[ingest %s] done in %.1fs: %d in = %d accepted + %d excluded + %d quarantined", source,
             time.time() - t0, input_rows, result.accepted_rows, result.excluded_rows, result.quarantined_rows)
    return result


@dataclass
class _Batch:
    raw: DataFrame                  # every column as a string, plus _source_file
    batch_id: str
    files: List[str]
    catalog: Optional[DataFrame]    # the batch's own catalog (synthetic data set), else None


@dataclass
class _Checks:
    checked: DataFrame              # the mapped rows with their reasons (persisted)
    good: DataFrame
    bad: DataFrame
    suite: Tuple[str, list]         # (suite name, expectations)
    report: ValidationSummary       # the batch's GX result


def _live_day(run_date: date) -> Tuple[datetime, datetime]:
    """A nightly past the built-in synthetic data set ingests the day's live events (what the hourly feed
    delivered, complete) as one nightly batch of that day that supersedes its hourly batches."""
    return (datetime.combine(run_date, datetime.min.time(), tzinfo=timezone.utc),
            datetime.combine(run_date + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc))


def _as_raw(events: DataFrame, file: str) -> DataFrame:
    """Generated events as a file would land them: every column a string, times as text."""
    return events.select(*[
        (F.date_format(c, "yyyy-MM-dd HH:mm:ss") if c == "event_time" else F.col(c).cast("string")).alias(c)
        for c in events.columns]).withColumn("_source_file", F.lit(file))


def _read_batch(spark: SparkSession, lh: Lakehouse, cfg: Config, source: str, run_date: date, path: Optional[str],
                window: Optional[Tuple[datetime, datetime]], batch_id: Optional[str],
                dry_run: bool) -> Optional["_Batch"]:
    """The batch's raw rows and identity; None when a nightly finds no file that no other night took."""
    src = cfg.source(source)
    if src.kind == "synthetic" and window is not None:
        events = live_synthetic_events(spark, cfg, window).filter(
            (F.col("event_time") >= F.lit(window[0]).cast("timestamp"))
            & (F.col("event_time") < F.lit(window[1]).cast("timestamp")))
        file = f"synthetic://live/{window[0].isoformat()}/{window[1].isoformat()}"
        # live events reuse the catalog the full data set landed
        return _Batch(_as_raw(events, file), batch_id, [file], None)
    if src.kind == "synthetic":
        from features.synthetic import generate_catalog, generate_events
        params = synthetic_params(cfg)
        file = f"synthetic://seed={params.seed}"
        return _Batch(_as_raw(generate_events(spark, params), file),
                      batch_id or f"synthetic-s{params.seed}-n{params.n_events}-{params.start_date}-{params.days}d",
                      [file], generate_catalog(spark, params))
    inputs = resolve_inputs(path or src.path, cfg.lakehouse.staging_dir,
                            endpoint_url=cfg.s3.endpoint_url, region=cfg.s3.region)
    if window is None:         # a nightly batch: the listed files no other night took (docs/INPUTS.md)
        inputs = nights_files(lh, source, run_date, inputs)
        if not inputs:
            return None
    batch_id = batch_id or batch_id_for(inputs)
    raw = read_raw_csv(spark, inputs, src, source_columns(src), f"sources.{source}")
    if window is None and not dry_run:
        ingested_files.record(lh, source, run_date, batch_id, inputs)
    return _Batch(raw, batch_id, [f.uri for f in inputs], None)


def _land(lh: Lakehouse, batch: "_Batch", source: str, run_date: date, window: Optional[Tuple[datetime, datetime]],
          dry_run: bool) -> Tuple[DataFrame, int]:
    """The batch in ``bronze_<source>`` (replacing an earlier landing of it) and its row count."""
    bronze_table = f"bronze_{source}"
    bronze = (batch.raw.withColumn("_batch_id", F.lit(batch.batch_id)).withColumn("_run_date", F.lit(run_date))
              .withColumn("_row_id", F.monotonically_increasing_id()))
    if dry_run:
        landed = bronze.persist(StorageLevel.MEMORY_AND_DISK)
    else:
        log.info("[ingest %s] 1/5 landing batch %s in %s", source, batch.batch_id, bronze_table)
        # a later export may carry extra columns: bronze keeps them (schema evolution)
        # a window's batch id fixes its run date: the replace touches that one partition only
        where = {"_batch_id": batch.batch_id, **({"_run_date": run_date} if window is not None else {})}
        lh.replace(bronze, bronze_table, where, partition_by=["_run_date"], merge_schema=True)
        landed = lh.read(bronze_table).filter(F.col("_batch_id") == batch.batch_id)
    input_rows = landed.count()
    if input_rows == 0 and window is None:   # an hour of a live feed may be quiet: an empty window batch
        raise EmptyInputError(f"source '{source}': batch {batch.batch_id} ({', '.join(batch.files)}) has no data "
                              "rows (only a header, or nothing at all); check the export")
    return landed, input_rows


def _map(landed: DataFrame, src: SourceConfig, source: str, window: Optional[Tuple[datetime, datetime]],
         input_rows: int) -> Tuple[DataFrame, int]:
    """The rows on the contract (a window keeps its own rows, and those whose time did not parse)."""
    log.info("[ingest %s] 2/5 mapping %d rows onto the contract and checking them", source, input_rows)
    try:
        mapped = map_to_contract(landed, src, source)
    except KeyError as exc:
        raise InputSchemaError(f"source '{source}': bronze is missing mapped column(s) {exc.args[0]}") from None
    if window is None:
        return mapped, input_rows
    t = F.col("event_time")
    inside = t.isNull() | ((t >= F.lit(window[0]).cast("timestamp")) & (t < F.lit(window[1]).cast("timestamp")))
    mapped = mapped.filter(inside)
    in_window = mapped.count()
    if in_window < input_rows:
        log.info("[ingest %s] %d of %d rows fall outside the window %s .. %s (other batches)", source,
                 input_rows - in_window, input_rows, window[0], window[1])
    return mapped, in_window


def _empty_window(lh: Lakehouse, cfg: Config, result: IngestResult, run_date: date,
                  window: Tuple[datetime, datetime], dry_run: bool, t0: float) -> IngestResult:
    """A quiet window: nothing to add; a rerun of a window that once had rows withdraws them."""
    log.info("[ingest %s] no events in %s .. %s: nothing to add", result.source, window[0], window[1])
    if not dry_run:
        for table in ("quarantine", "excluded"):
            if lh.exists(table):
                lh.delete(table, {"source": result.source, "batch_id": result.batch_id})
        withdraw_batch(lh, cfg, result.source, result.batch_id)
        _record(lh, result.source, result.batch_id, run_date, "empty", result, t0)
    return result


def _check(mapped: DataFrame, cfg: Config, src: SourceConfig, source: str, batch_id: str, run_date: date,
           result: IngestResult) -> "_Checks":
    """Every row against the quality rules, the batch against the great-expectations suite."""
    limits = QualityLimits.for_run(
        run_date, cfg.quality.min_event_time, cfg.quality.future_tolerance_hours, cfg.quality.max_string_length,
        cfg.quality.max_quantity, cfg.quality.max_price, cfg.interactions.rating_max, src.allow_anonymous)
    checked = with_reasons(mapped, limits).persist(StorageLevel.MEMORY_AND_DISK)
    good, bad = split_good_bad(checked)
    result.quarantined_by_rule = _count_by(bad.select(F.explode("reasons").alias("r"))
                                           .select(F.split("r", ":")[0].alias("rule")), "rule")
    result.quarantined_rows = bad.count()
    log.info("[ingest %s] 3/5 great-expectations suite on the batch", source)
    suite = (f"{source}_events", events_expectations(limits))
    report = run_suite(checked, *suite, quality_dir=cfg.quality.quality_dir, source=source, batch_id=batch_id,
                       stage="batch", pandas_max_rows=cfg.quality.pandas_max_rows)
    result.gx_success, result.gx_result = report.success, report.result_path
    return _Checks(checked, good, bad, suite, report)


def _quarantine_and_gate(lh: Lakehouse, cfg: Config, checks: "_Checks", result: IngestResult, run_date: date,
                         t0: float) -> None:
    """Bad rows to ``quarantine`` with their reasons; the batch fails above quality.max_bad_row_share. The
    accepted rows must then pass the whole suite before anything else is written."""
    source, batch_id = result.source, result.batch_id
    lh.replace(quarantine_rows(checks.bad, run_date), "quarantine", {"source": source, "batch_id": batch_id})
    if result.bad_share > cfg.quality.max_bad_row_share:
        _record(lh, source, batch_id, run_date, "failed_quality_gate", result, t0)
        checks.checked.unpersist()
        top = ", ".join(f"{k}: {v}" for k, v in sorted(result.quarantined_by_rule.items(), key=lambda kv: -kv[1])[:5])
        raise QualityGateError(
            f"source '{source}', batch {batch_id}: {result.quarantined_rows} of {result.input_rows} rows "
            f"({result.bad_share:.1%}) failed validation, above quality.max_bad_row_share="
            f"{cfg.quality.max_bad_row_share:.1%}. Top reasons: {top}. The rows are in the quarantine table "
            f"({lh.path('quarantine')}); the GX report is {checks.report.result_path}. Fix the export or the "
            "mapping, or raise the threshold (RECO__QUALITY__MAX_BAD_ROW_SHARE) if this is expected.")
    # with nothing quarantined the accepted rows are the batch's rows, whose suite result is already known
    if result.quarantined_rows == 0:
        accepted = checks.report
        log.info("[ingest %s] no row quarantined: the accepted rows are the batch, which %s the suite", source,
                 "passed" if accepted.success else "failed")
    else:
        accepted = run_suite(checks.good, *checks.suite, quality_dir=cfg.quality.quality_dir, source=source,
                             batch_id=batch_id, stage="accepted", pandas_max_rows=cfg.quality.pandas_max_rows)
    if not accepted.success:
        # the row rules and the suite disagree: a bug, not bad data
        raise RuntimeError(f"accepted rows of {source}/{batch_id} fail the GX suite: {accepted.failed}")


def _write_silver(lh: Lakehouse, cfg: Config, checks: "_Checks", result: IngestResult, run_date: date,
                  window: Optional[Tuple[datetime, datetime]]) -> None:
    """Net returns, drop non-products (to ``excluded``), grade strengths, write ``silver_interactions``."""
    source, batch_id = result.source, result.batch_id
    log.info("[ingest %s] 4/5 building silver interactions", source)
    strength, rating_max = dict(cfg.interactions.strength), cfg.interactions.rating_max
    silver, excluded = build_silver(checks.good, cfg.interactions.non_product_items, strength, rating_max)
    # A nightly batch replaces the hourly batches of the days it covers (the same events, complete; the
    # hourly feed may read the nightly's own files) and the earlier nightly batches of its night (a
    # corrected export wins). They go in the same commit, so no reader counts an event twice or not at all.
    supersede = None
    if is_nightly(batch_id):
        supersede = nightly_supersedes(lh, source, run_date, batch_id, covered_days(checks.good, run_date))
    # returns open after the batch's own purchases net against the customer's earlier purchases
    netted = return_netting.net_batch(lh, source, batch_id, checks.good, silver, excluded,
                                      cfg.interactions.non_product_items, strength, rating_max, superseded=supersede)
    lh.replace(netted.excluded.withColumn("run_date", F.lit(run_date)), "excluded",
               {"source": source, "batch_id": batch_id})
    pruned = None
    if window is not None and supersede is None:   # a window's rows lie in the days it touches
        pruned = (f"event_date >= DATE'{window[0].date().isoformat()}' AND "
                  f"event_date <= DATE'{(window[1] - timedelta(microseconds=1)).date().isoformat()}'")
        if netted.dates:                           # and purchases its returns net against in theirs
            pruned = f"({pruned}) OR event_date IN ({', '.join(sql_date(d) for d in netted.dates)})"
    lh.replace(netted.silver, "silver_interactions", {"source": source, "batch_id": batch_id},
               partition_by=["event_date"], also=_any_of(supersede, netted.also), within=pruned)
    result.excluded_by_rule = _count_by(lh.read("excluded").filter(
        (F.col("source") == source) & (F.col("batch_id") == batch_id)), "rule")
    result.excluded_rows = sum(result.excluded_by_rule.values())
    result.accepted_rows = lh.read("silver_interactions").filter(
        (F.col("source") == source) & (F.col("batch_id") == batch_id)).count()


def _update_catalog(spark: SparkSession, lh: Lakehouse, cfg: Config, src: SourceConfig, source: str,
                    run_date: date, batch_catalog: Optional[DataFrame], good: DataFrame) -> None:
    """Upsert ``items``: the batch's own catalog, else one derived from its events (merged with the
    source's catalog file when it has one). Live synthetic events add nothing (the data set's catalog)."""
    log.info("[ingest %s] 5/5 updating the item catalog", source)
    if batch_catalog is None and src.kind == "synthetic":
        return
    if batch_catalog is None:
        non_products = list(cfg.interactions.non_product_items) or [""]
        events_for_catalog = good.filter((F.col("event_type") != "return") & ~F.col("item_id").isin(*non_products))
        batch_catalog = catalog_fx.catalog_from_events(
            events_for_catalog, src.catalog.category_from if src.catalog else None)
        if src.catalog is not None and src.catalog.path:
            # the file wins on title, category, price and availability; the events
            # give first_seen and a row for items the file does not list
            batch_catalog = catalog_fx.merge_catalog(
                batch_catalog, ingest_catalog_file(spark, lh, cfg, source, run_date))
    _upsert_items(lh, batch_catalog)


def _nothing_new(lh: Lakehouse, source: str, run_date: date, dry_run: bool, t0: float) -> IngestResult:
    """A night whose path lists no file that is its own: nothing to ingest; ``reco check`` then looks at
    silver for the day's events (a whole-history file taken by another night may hold them)."""
    log.warning("[ingest %s] no new file for %s: every listed file belongs to another night's batch (is the "
                "export late?)", source, run_date)
    result = IngestResult(source=source, batch_id=f"none-{run_date:%Y%m%d}", run_date=run_date.isoformat(),
                          input_rows=0, accepted_rows=0, excluded_rows=0, quarantined_rows=0, files=[])
    if not dry_run:
        _record(lh, source, result.batch_id, run_date, "empty", result, t0)
    return result


def _record(lh: Lakehouse, source: str, batch_id: str, run_date: date, status: str, result: IngestResult,
            t0: float) -> None:
    """The outcome in ``pipeline_runs``. A nightly batch's details carry ``seq``, its place among the
    night's ingests (the latest has the highest), which ``reco check`` judges (``jobs.validate``)."""
    counts = _counts(result)
    if is_nightly(batch_id):
        counts["seq"] = _next_seq(lh, source, run_date, batch_id)
    record_run(lh, "ingest", source, batch_id, run_date, status, counts, time.time() - t0)


def _next_seq(lh: Lakehouse, source: str, run_date: date, batch_id: str) -> int:
    """1 + the highest ``seq`` of the night's nightly ingests; a batch that is already the latest keeps its
    own (a rerun of the same batch leaves ``pipeline_runs`` as one run would)."""
    if not lh.exists("pipeline_runs"):
        return 1
    rows = (lh.read("pipeline_runs").filter((F.col("step") == "ingest") & (F.col("source") == source)
                                            & (F.col("run_date") == F.lit(run_date)))
            .select("batch_id", F.get_json_object("details", "$.seq").cast("int").alias("seq")).collect())
    seqs = {r["batch_id"]: r["seq"] or 0 for r in rows if is_nightly(r["batch_id"])}
    top = max(seqs.values(), default=0)
    if seqs.get(batch_id) == top and top > 0 and list(seqs.values()).count(top) == 1:
        return top
    return top + 1


def _any_of(*conditions: Optional[str]) -> Optional[str]:
    present = [c for c in conditions if c]
    return " OR ".join(f"({c})" for c in present) if present else None


def _upsert_items(lh: Lakehouse, batch_catalog: DataFrame) -> None:
    cols = list(catalog_fx.CATALOG_COLUMNS)
    batch_catalog = batch_catalog.select(*cols)
    if lh.exists("items"):
        current = lh.read("items").select(*cols)
        merged = catalog_fx.merge_catalog(current, batch_catalog).select(*cols)
        lh.overwrite(merged, "items")
    else:
        lh.overwrite(batch_catalog, "items")


def _count_by(df: DataFrame, col: str) -> Dict[str, int]:
    return {r[0]: int(r[1]) for r in df.groupBy(col).count().collect()}


def _counts(result: IngestResult) -> Dict[str, object]:
    d = asdict(result)
    d.pop("files")
    return d
