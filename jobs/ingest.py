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
from typing import Dict, List, Optional, Set, Tuple

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from features import catalog as catalog_fx
from features.expectations import events_expectations
from features.interactions import build_silver
from features.row_quality import QualityLimits, quarantine_rows, split_good_bad, with_reasons
from features.source_mapping import map_to_contract
from jobs import ingested_files, return_netting
from config import Config, SourceConfig
from core.errors import EmptyInputError, InputSchemaError, QualityGateError, RunDateError
from jobs.lakehouse import Lakehouse
from jobs.pipeline_runs import record_run
from jobs.storage import InputFile, batch_id_for, changed_since, resolve_inputs, unclaimed
from jobs.validate import run_suite

log = logging.getLogger(__name__)

CORRUPT = "_corrupt_record"


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


def synthetic_params(cfg: Config):
    from features.synthetic import SyntheticParams
    s = cfg.synthetic
    return SyntheticParams(seed=s.seed, n_users=s.n_users, n_items=s.n_items, n_events=s.n_events,
                           start_date=s.start_date, days=s.days, countries=tuple(s.countries),
                           n_segments=s.n_segments, popularity_exponent=s.popularity_exponent,
                           return_rate=s.return_rate)


def default_run_date(cfg: Config, source: str) -> date:
    """The synthetic data's last day; other sources need an explicit date."""
    if cfg.source(source).kind == "synthetic":
        return date.fromisoformat(cfg.synthetic.start_date) + timedelta(days=cfg.synthetic.days - 1)
    raise RunDateError(f"source '{source}' needs an explicit run date: pass --date YYYY-MM-DD "
                       "(the logical date the batch belongs to)")


# ---------------------------------------------------------------- reading raw rows

def _read_header(spark: SparkSession, f: InputFile, layout) -> List[str]:
    if not layout.header:
        return list(layout.names or [])
    first = (spark.read.option("header", "true").option("sep", layout.delimiter)
             .option("encoding", layout.encoding).option("inferSchema", "false").csv(f.local_path))
    return first.columns


def read_raw_csv(spark: SparkSession, files: List[InputFile], layout, needed: Set[str], setting: str) -> DataFrame:
    """All columns as strings; a malformed line lands in ``_corrupt_record``.

    Args:
        layout: ``header``, ``delimiter``, ``encoding``, ``names`` (a source's or its catalog's config).
        needed: columns the mapping uses; a file without one of them fails with a clear error.
        setting: where the layout lives in conf, for messages (``sources.x`` or ``sources.x.catalog``).
    """
    headers = {f.uri: _read_header(spark, f, layout) for f in files}
    distinct = {tuple(h) for h in headers.values()}
    if len(distinct) > 1:
        detail = "; ".join(f"{u}: {h}" for u, h in headers.items())
        raise InputSchemaError(f"source '{setting.split('.')[1]}' ({setting}): the batch's files have different "
                               f"headers ({detail}); "
                               "split them into separate batches or fix the export")
    columns = list(next(iter(distinct)))
    _check_columns(columns, needed, layout.delimiter, setting, files[0].uri)
    schema = T.StructType([T.StructField(c, T.StringType()) for c in columns] +
                          [T.StructField(CORRUPT, T.StringType())])
    return (spark.read.schema(schema).option("header", str(layout.header).lower()).option("sep", layout.delimiter)
            .option("encoding", layout.encoding).option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", CORRUPT).option("enforceSchema", "true")
            .csv([f.local_path for f in files])
            .withColumn("_source_file", F.input_file_name()))


def _source_columns(src: SourceConfig) -> Set[str]:
    needed = set(src.columns.values())
    if src.event_type and src.event_type.column:
        needed.add(src.event_type.column)
    if src.cancellation:
        needed.add(src.cancellation.column)
    return needed


def _check_columns(columns: List[str], needed: Set[str], delimiter: str, setting: str, where: str) -> None:
    missing = sorted(needed - set(columns))
    if not missing:
        return
    hint = ""
    if len(columns) == 1:
        for sep in (";", "\t", "|", ","):
            if sep != delimiter and sep in columns[0]:
                hint = (f" The header is one column {columns[0][:80]!r}: the file looks {sep!r}-delimited; "
                        f"set {setting}.delimiter to {sep!r}.")
                break
    source = setting.split(".")[1]
    raise InputSchemaError(
        f"source '{source}': {where} is missing column(s) {missing} that the mapping in conf ({setting}.columns) "
        f"expects; found {columns[:20]}.{hint} Fix the export or the mapping.")


def ingest_catalog_file(spark: SparkSession, lh: Lakehouse, cfg: Config, source: str, run_date: date) -> DataFrame:
    """Read a source's catalog file; bad lines go to quarantine (source ``<name>:catalog``).

    Returns the good catalog rows (catalog contract columns).
    """
    cat = cfg.source(source).catalog
    files = resolve_inputs(cat.path, cfg.lakehouse.staging_dir, endpoint_url=cfg.s3.endpoint_url,
                           region=cfg.s3.region)
    batch_id = batch_id_for(files)
    raw = read_raw_csv(spark, files, cat, set(cat.columns.values()), f"sources.{source}.catalog")
    raw_cols = [c for c in raw.columns if c not in (CORRUPT, "_source_file")]
    rows = raw.select("*", F.monotonically_increasing_id().alias("row_id"),
                      F.to_json(F.struct(*[F.col(f"`{c}`") for c in raw_cols + [CORRUPT]])).alias("raw"))
    checked = catalog_fx.catalog_from_file(rows, dict(cat.columns), cat.category_from)
    bad = (checked.filter(F.size("reasons") > 0)
           .withColumn("source", F.lit(f"{source}:catalog")).withColumn("batch_id", F.lit(batch_id)))
    lh.replace(quarantine_rows(bad, run_date), "quarantine", {"source": f"{source}:catalog", "batch_id": batch_id})
    good = checked.filter(F.size("reasons") == 0).select(*catalog_fx.CATALOG_COLUMNS)
    n_bad = lh.read("quarantine").filter(
        (F.col("source") == f"{source}:catalog") & (F.col("batch_id") == batch_id)).count()
    log.info("[ingest %s] catalog file %s: %d rows quarantined", source, ", ".join(f.uri for f in files), n_bad)
    return good


# ---------------------------------------------------------------- the job

def live_synthetic_events(spark: SparkSession, cfg: Config, window: Tuple[datetime, datetime]) -> DataFrame:
    """Synthetic events of the days a window touches, as if they arrived live: the same users, items and
    behaviour as the built-in data set, at its average daily volume, drawn per day (seeded by the day),
    so an hour's events do not depend on which window asked for them. Session ids carry the day. Only the
    window's events are drawn (``generate_events(window=...)``: the same rows, without the rest of the day)."""
    from dataclasses import replace

    from features.synthetic import generate_events
    base = synthetic_params(cfg)
    per_day = max(1, round(base.n_events / base.days))
    lo, hi = window
    day, frames = lo.date(), []
    while datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc) < hi:
        p = replace(base, seed=base.seed + 7919 * day.toordinal() % 1_000_003, n_events=per_day,
                    start_date=day.isoformat(), days=1)
        ev = generate_events(spark, p, num_partitions=2, window=window)
        frames.append(ev.withColumn("session_id", F.concat(F.lit(f"live{day:%Y%m%d}-"), F.col("session_id"))))
        day += timedelta(days=1)
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f)
    return out


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
    live_day = src.kind == "synthetic" and window is None and run_date > default_run_date(cfg, source)
    if live_day:
        # a nightly past the built-in data set: the day's live events (what the hourly feed delivered,
        # complete), as one nightly batch of that day that supersedes its hourly batches
        window = (datetime.combine(run_date, datetime.min.time(), tzinfo=timezone.utc),
                  datetime.combine(run_date + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc))
        batch_id = batch_id or f"synthetic-live-{run_date:%Y%m%d}"

    # 1. bronze
    if src.kind == "synthetic" and window is not None:
        events = live_synthetic_events(spark, cfg, window).filter(
            (F.col("event_time") >= F.lit(window[0]).cast("timestamp"))
            & (F.col("event_time") < F.lit(window[1]).cast("timestamp")))
        raw = events.select(*[
            (F.date_format(c, "yyyy-MM-dd HH:mm:ss") if c == "event_time" else F.col(c).cast("string")).alias(c)
            for c in events.columns])
        files = [f"synthetic://live/{window[0].isoformat()}/{window[1].isoformat()}"]
        raw = raw.withColumn("_source_file", F.lit(files[0]))
        batch_catalog = None       # live events reuse the catalog the full data set landed
    elif src.kind == "synthetic":
        from features.synthetic import generate_catalog, generate_events
        params = synthetic_params(cfg)
        events = generate_events(spark, params)
        raw = events.select(*[
            (F.date_format(c, "yyyy-MM-dd HH:mm:ss") if c == "event_time" else F.col(c).cast("string")).alias(c)
            for c in events.columns])
        batch_id = batch_id or f"synthetic-s{params.seed}-n{params.n_events}-{params.start_date}-{params.days}d"
        files = [f"synthetic://seed={params.seed}"]
        raw = raw.withColumn("_source_file", F.lit(files[0]))
        batch_catalog = generate_catalog(spark, params)
    else:
        inputs = resolve_inputs(path or src.path, cfg.lakehouse.staging_dir,
                                endpoint_url=cfg.s3.endpoint_url, region=cfg.s3.region)
        if window is None:         # a nightly batch: the listed files no other night took (docs/INPUTS.md)
            inputs = _nights_files(lh, source, run_date, inputs)
            if not inputs:
                return _nothing_new(lh, source, run_date, dry_run, t0)
        batch_id = batch_id or batch_id_for(inputs)
        files = [f.uri for f in inputs]
        raw = read_raw_csv(spark, inputs, src, _source_columns(src), f"sources.{source}")
        if window is None and not dry_run:
            ingested_files.record(lh, source, run_date, batch_id, inputs)
        batch_catalog = None
    bronze_table = f"bronze_{source}"
    bronze = (raw.withColumn("_batch_id", F.lit(batch_id)).withColumn("_run_date", F.lit(run_date))
              .withColumn("_row_id", F.monotonically_increasing_id()))
    if dry_run:
        landed = bronze.persist(StorageLevel.MEMORY_AND_DISK)
    else:
        log.info("[ingest %s] 1/5 landing batch %s in %s", source, batch_id, bronze_table)
        # a later export may carry extra columns: bronze keeps them (schema evolution)
        # a window's batch id fixes its run date: the replace touches that one partition only
        where = {"_batch_id": batch_id, **({"_run_date": run_date} if window is not None else {})}
        lh.replace(bronze, bronze_table, where, partition_by=["_run_date"], merge_schema=True)
        landed = lh.read(bronze_table).filter(F.col("_batch_id") == batch_id)
    input_rows = landed.count()
    if input_rows == 0 and window is None:   # an hour of a live feed may be quiet: an empty window batch
        raise EmptyInputError(f"source '{source}': batch {batch_id} ({', '.join(files)}) has no data rows "
                              "(only a header, or nothing at all); check the export")

    # 2-3. contract mapping and row checks
    log.info("[ingest %s] 2/5 mapping %d rows onto the contract and checking them", source, input_rows)
    limits = QualityLimits.for_run(
        run_date, cfg.quality.min_event_time, cfg.quality.future_tolerance_hours, cfg.quality.max_string_length,
        cfg.quality.max_quantity, cfg.quality.max_price, cfg.interactions.rating_max, src.allow_anonymous)
    try:
        mapped = map_to_contract(landed, src, source)
    except KeyError as exc:
        raise InputSchemaError(f"source '{source}': bronze is missing mapped column(s) {exc.args[0]}") from None
    if window is not None:
        # rows of other windows are not this batch's; a row whose time did not parse stays (quarantined)
        t = F.col("event_time")
        inside = t.isNull() | ((t >= F.lit(window[0]).cast("timestamp")) & (t < F.lit(window[1]).cast("timestamp")))
        mapped = mapped.filter(inside)
        in_window = mapped.count()
        if in_window < input_rows:
            log.info("[ingest %s] %d of %d rows fall outside the window %s .. %s (other batches)", source,
                     input_rows - in_window, input_rows, window[0], window[1])
        input_rows = in_window
        if in_window == 0:
            log.info("[ingest %s] no events in %s .. %s: nothing to add", source, window[0], window[1])
            result = IngestResult(source=source, batch_id=batch_id, run_date=run_date.isoformat(), input_rows=0,
                                  accepted_rows=0, excluded_rows=0, quarantined_rows=0, files=files)
            if not dry_run:
                for table in ("quarantine", "excluded"):
                    if lh.exists(table):   # a rerun of a window that once had rows: now it has none
                        lh.delete(table, {"source": source, "batch_id": batch_id})
                withdraw_batch(lh, cfg, source, batch_id)
                _record(lh, source, batch_id, run_date, "empty", result, t0)
            return result
    checked = with_reasons(mapped, limits).persist(StorageLevel.MEMORY_AND_DISK)
    good, bad = split_good_bad(checked)
    quarantined_by_rule = _count_by(bad.select(F.explode("reasons").alias("r"))
                                    .select(F.split("r", ":")[0].alias("rule")), "rule")
    quarantined = bad.count()

    log.info("[ingest %s] 3/5 great-expectations suite on the batch", source)
    suite = (f"{source}_events", events_expectations(limits))
    report = run_suite(checked, *suite, quality_dir=cfg.quality.quality_dir, source=source, batch_id=batch_id,
                       stage="batch", pandas_max_rows=cfg.quality.pandas_max_rows)

    # 4. quarantine, then the gate
    result = IngestResult(source=source, batch_id=batch_id, run_date=run_date.isoformat(), input_rows=input_rows,
                          accepted_rows=0, excluded_rows=0, quarantined_rows=quarantined,
                          quarantined_by_rule=quarantined_by_rule, gx_success=report.success,
                          gx_result=report.result_path, files=files)
    if dry_run:
        checked.unpersist()
        return result
    lh.replace(quarantine_rows(bad, run_date), "quarantine", {"source": source, "batch_id": batch_id})
    if result.bad_share > cfg.quality.max_bad_row_share:
        _record(lh, source, batch_id, run_date, "failed_quality_gate", result, t0)
        checked.unpersist()
        top = ", ".join(f"{k}: {v}" for k, v in sorted(quarantined_by_rule.items(), key=lambda kv: -kv[1])[:5])
        raise QualityGateError(
            f"source '{source}', batch {batch_id}: {quarantined} of {input_rows} rows "
            f"({result.bad_share:.1%}) failed validation, above quality.max_bad_row_share="
            f"{cfg.quality.max_bad_row_share:.1%}. Top reasons: {top}. The rows are in the quarantine table "
            f"({lh.path('quarantine')}); the GX report is {report.result_path}. Fix the export or the mapping, "
            "or raise the threshold (RECO__QUALITY__MAX_BAD_ROW_SHARE) if this is expected.")

    # 5. silver + catalog; the accepted rows must pass the whole suite before anything is written. With
    # nothing quarantined the accepted rows are the batch's rows, whose suite result is already known.
    if quarantined == 0:
        accepted_check = report
        log.info("[ingest %s] no row quarantined: the accepted rows are the batch, which %s the suite", source,
                 "passed" if report.success else "failed")
    else:
        accepted_check = run_suite(good, *suite, quality_dir=cfg.quality.quality_dir, source=source,
                                   batch_id=batch_id, stage="accepted", pandas_max_rows=cfg.quality.pandas_max_rows)
    if not accepted_check.success:
        # the row rules and the suite disagree: a bug, not bad data
        raise RuntimeError(f"accepted rows of {source}/{batch_id} fail the GX suite: {accepted_check.failed}")
    log.info("[ingest %s] 4/5 building silver interactions", source)
    silver, excluded = build_silver(good, cfg.interactions.non_product_items, dict(cfg.interactions.strength),
                                    cfg.interactions.rating_max)
    # A nightly batch replaces the hourly batches of the days it covers (the same events, complete; the
    # hourly feed may read the nightly's own files) and the earlier nightly batches of its night (a
    # corrected export wins). They go in the same commit, so no reader counts an event twice or not at all.
    supersede = None
    if is_nightly(batch_id):
        supersede = nightly_supersedes(lh, source, run_date, batch_id, covered_days(good, run_date))
    # returns open after the batch's own purchases net against the customer's earlier purchases
    netted = return_netting.net_batch(lh, source, batch_id, good, silver, excluded,
                                      cfg.interactions.non_product_items, dict(cfg.interactions.strength),
                                      cfg.interactions.rating_max, superseded=supersede)
    lh.replace(netted.excluded.withColumn("run_date", F.lit(run_date)), "excluded",
               {"source": source, "batch_id": batch_id})
    pruned = None
    if window is not None and supersede is None:   # a window's rows lie in the days it touches
        pruned = (f"event_date >= DATE'{window[0].date().isoformat()}' AND "
                  f"event_date <= DATE'{(window[1] - timedelta(microseconds=1)).date().isoformat()}'")
        if netted.dates:                           # and purchases its returns net against in theirs
            pruned = f"({pruned}) OR event_date IN ({', '.join(_sql_date(d) for d in netted.dates)})"
    lh.replace(netted.silver, "silver_interactions", {"source": source, "batch_id": batch_id},
               partition_by=["event_date"], also=_any_of(supersede, netted.also), within=pruned)
    result.excluded_by_rule = _count_by(lh.read("excluded").filter(
        (F.col("source") == source) & (F.col("batch_id") == batch_id)), "rule")
    result.excluded_rows = sum(result.excluded_by_rule.values())
    result.accepted_rows = lh.read("silver_interactions").filter(
        (F.col("source") == source) & (F.col("batch_id") == batch_id)).count()

    log.info("[ingest %s] 5/5 updating the item catalog", source)
    if batch_catalog is None and src.kind == "synthetic":
        pass                       # live synthetic events: items come from the data set's catalog
    elif batch_catalog is None:
        non_products = list(cfg.interactions.non_product_items) or [""]
        events_for_catalog = good.filter((F.col("event_type") != "return") & ~F.col("item_id").isin(*non_products))
        batch_catalog = catalog_fx.catalog_from_events(
            events_for_catalog, src.catalog.category_from if src.catalog else None)
        if src.catalog is not None and src.catalog.path:
            # the file wins on title, category, price and availability; the events
            # give first_seen and a row for items the file does not list
            batch_catalog = catalog_fx.merge_catalog(
                batch_catalog, ingest_catalog_file(spark, lh, cfg, source, run_date))
    if batch_catalog is not None:
        _upsert_items(lh, batch_catalog)
    checked.unpersist()
    _record(lh, source, batch_id, run_date, "succeeded", result, t0)
    log.info("[ingest %s] done in %.1fs: %d in = %d accepted + %d excluded + %d quarantined", source,
             time.time() - t0, input_rows, result.accepted_rows, result.excluded_rows, quarantined)
    return result


HOURLY_PREFIX = "hourly-"       # jobs.hourly.batch_id: an hourly window's batch; any other is a nightly's


def is_nightly(batch_id: str) -> bool:
    return not batch_id.startswith(HOURLY_PREFIX)


def covered_days(good: DataFrame, run_date: date) -> List[date]:
    """The days a nightly batch covers: its run date and the event dates of its accepted rows (a file may
    hold late events of earlier days, or a whole history). One small Spark job."""
    days = {r[0] for r in good.select(F.to_date("event_time")).distinct().collect() if r[0] is not None}
    return sorted(days | {run_date})


def earlier_nightly_batches(lh: Lakehouse, source: str, run_date: date, batch_id: str) -> List[str]:
    """The source's other nightly batches landed for ``run_date`` (from bronze, written before silver, so a
    batch that stopped after its silver write is found too)."""
    bronze = f"bronze_{source}"
    if not lh.exists(bronze):
        return []
    rows = (lh.read(bronze).filter((F.col("_run_date") == F.lit(run_date))
                                   & ~F.col("_batch_id").startswith(HOURLY_PREFIX)
                                   & (F.col("_batch_id") != batch_id))
            .select("_batch_id").distinct().collect())
    return sorted(r[0] for r in rows)


def nightly_supersedes(lh: Lakehouse, source: str, run_date: date, batch_id: str, days: List[date]) -> str:
    """A SQL condition on ``silver_interactions``: the rows a nightly batch of ``source`` for ``run_date``
    replaces in its commit. They are the hourly batches' rows on ``days`` (:func:`covered_days`: the
    nightly holds those days' events, complete), whether or not the source has an ``hourly_path``, and
    every row of the source's earlier nightly batches for ``run_date`` (:func:`earlier_nightly_batches`:
    a corrected export replaces the night's earlier one). Pass it as ``Lakehouse.replace(also=...)``."""
    cond = (f"batch_id LIKE '{HOURLY_PREFIX}%' AND event_date IN ("
            + ", ".join(_sql_date(d) for d in sorted(set(days) | {run_date})) + ")")
    earlier = earlier_nightly_batches(lh, source, run_date, batch_id)
    if earlier:
        log.info("[ingest %s] batch %s replaces the earlier batch(es) of %s: %s", source, batch_id, run_date,
                 ", ".join(earlier))
        cond = f"({cond}) OR batch_id IN ({', '.join(_sql_str(b) for b in earlier)})"
    return f"source = {_sql_str(source)} AND ({cond})"


def withdraw_batch(lh: Lakehouse, cfg: Config, source: str, batch_id: str) -> None:
    """Remove a batch's rows from silver, netting again the returns it held open (its purchases' full
    quantities come back, the purchases its returns cancelled come back); for a batch that now has no rows."""
    if not lh.exists("silver_interactions"):
        return
    netted = return_netting.net_batch(lh, source, batch_id, None, None, None, cfg.interactions.non_product_items,
                                      dict(cfg.interactions.strength), cfg.interactions.rating_max)
    if netted.also:
        lh.replace(netted.silver, "silver_interactions", {"source": source, "batch_id": batch_id},
                   partition_by=["event_date"], also=netted.also)
    else:
        lh.delete("silver_interactions", {"source": source, "batch_id": batch_id})


def _nights_files(lh: Lakehouse, source: str, run_date: date, listed: List[InputFile]) -> List[InputFile]:
    """The listed files that are this night's (:func:`jobs.storage.unclaimed`); the others are logged."""
    mine, others = unclaimed(listed, ingested_files.claims(lh, source), run_date)
    if others:
        log.info("[ingest %s] %d of %d listed file(s) belong to other nights' batches and are skipped", source,
                 len(others), len(listed))
    for f, claim in others:
        if changed_since(f, claim):
            log.warning("[ingest %s] %s changed since the batch of %s took it: a correction of that night is "
                        "ingested by rerunning it (`reco ingest --source %s --date %s`), not by this one", source,
                        f.uri, claim.run_date, source, claim.run_date)
    return mine


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


def _sql_date(d: date) -> str:
    return f"DATE'{d.isoformat()}'"


def _sql_str(text: str) -> str:
    # Spark SQL escapes with a backslash: two quotes in a row are two literals, concatenated
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


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
