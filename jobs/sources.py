"""Reading a source's batch: CSV exports (local or s3://, checked against the source's mapping before
Spark reads a row), the source's catalog file, and the synthetic generator (its fixed data set and the
"live" events of a window)."""
from __future__ import annotations

import logging
from datetime import date, datetime, timedelta, timezone
from typing import List, Set, Tuple

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from config import Config, SourceConfig
from core.errors import InputSchemaError, RunDateError
from features import catalog as catalog_fx
from features.row_quality import quarantine_rows
from jobs.lakehouse import Lakehouse
from jobs.storage import InputFile, batch_id_for, resolve_inputs

log = logging.getLogger(__name__)

CORRUPT = "_corrupt_record"


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


def source_columns(src: SourceConfig) -> Set[str]:
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
