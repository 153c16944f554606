"""Run a great-expectations suite on a Spark DataFrame, keep the result.

The GX project lives in ``<quality_dir>/gx`` (a file context, so data docs
are built as static HTML under ``gx/uncommitted/data_docs/local_site``); each
run's result JSON is written to ``<quality_dir>/results/<source>/<batch>-<stage>.json``.
A small batch (``quality.pandas_max_rows``) is validated by GX's pandas engine, a larger one by its
Spark engine; the context has a ``spark`` and a ``pandas`` datasource, each with an asset per source.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

from pyspark.sql import DataFrame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValidationSummary:
    success: bool
    evaluated: int
    failed: List[Dict[str, object]]      # expectation type, column, unexpected_percent
    result_path: str
    docs_index: str


def _context(quality_dir: str):
    import great_expectations as gx
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    from great_expectations.data_context.types.base import ProgressBarsConfig
    Path(quality_dir).mkdir(parents=True, exist_ok=True)
    ctx = gx.get_context(mode="file", project_root_dir=quality_dir)
    pb = ctx.variables.progress_bars  # an object when set in this process, a dict when read back from disk
    globally = pb.get("globally") if isinstance(pb, dict) else getattr(pb, "globally", None)
    if pb is None or globally is not False:
        # our own log lines show progress; GX's bars would flood CI logs
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        ctx.variables.save()
    return ctx


SPARK, PANDAS = "spark", "pandas"


def _for_pandas(df: DataFrame) -> DataFrame:
    """``df`` with NaN in float columns turned into +infinity, for the pandas engine.

    Spark tells NaN from null (a NaN value is not null and is above every number, so it fails an
    upper bound), pandas does not (both are ``isnull``). +infinity behaves as Spark's NaN against the
    finite bounds of our suites and stays apart from null, so both engines give the same verdicts."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, FloatType

    floats = {f.name for f in df.schema.fields if isinstance(f.dataType, (DoubleType, FloatType))}
    if not floats:
        return df
    return df.select([F.when(F.isnan(F.col(f"`{c}`")), F.lit(float("inf"))).otherwise(F.col(f"`{c}`")).alias(c)
                      if c in floats else F.col(f"`{c}`") for c in df.columns])


def _pick_engine(df: DataFrame, pandas_max_rows: int):
    """(engine, batch): the rows as pandas when there are at most ``pandas_max_rows`` of them, else ``df``.

    GX's Spark engine runs several Spark jobs per expectation, seconds on a batch of a hundred rows,
    where pandas takes milliseconds. A limited count decides (0.3 s on a small batch); collecting the
    first ``pandas_max_rows + 1`` rows instead would cost a large batch seconds for nothing."""
    if pandas_max_rows <= 0 or df.limit(pandas_max_rows + 1).count() > pandas_max_rows:
        return SPARK, df
    return PANDAS, _for_pandas(df).toPandas()


def _batch_definition(ctx, engine: str, asset_name: str):
    """The whole-dataframe batch definition of ``asset_name`` on the engine's datasource (``spark`` or
    ``pandas``), created on first use; the two datasources have the same API."""
    try:
        ds = ctx.data_sources.get(engine)
    except (KeyError, ValueError):
        add = {SPARK: ctx.data_sources.add_spark, PANDAS: ctx.data_sources.add_pandas}[engine]
        ds = add(name=engine)
    try:
        asset = ds.get_asset(asset_name)
    except LookupError:
        asset = ds.add_dataframe_asset(name=asset_name)
    try:
        return asset.get_batch_definition("whole")
    except (KeyError, ValueError, LookupError):
        return asset.add_batch_definition_whole_dataframe("whole")


def run_suite(df: DataFrame, suite_name: str, expectations, *, quality_dir: str, source: str, batch_id: str,
              stage: str, pandas_max_rows: int = 0) -> ValidationSummary:
    """Validate ``df`` with a suite of ``expectations``; save the result JSON and refresh data docs.

    A batch of at most ``pandas_max_rows`` rows is validated by GX's pandas engine (0: always Spark);
    both engines give the same verdicts on our suites (see :func:`_for_pandas`)."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    if pandas_max_rows < 0:
        raise ValueError(f"pandas_max_rows must be >= 0 (0 = always Spark), got {pandas_max_rows}")
    engine, batch = _pick_engine(df, pandas_max_rows)
    log.info("[gx %s %s] validating %s with the %s engine", source, stage, suite_name, engine)
    ctx = _context(quality_dir)
    batch_def = _batch_definition(ctx, engine, source)
    suite = ctx.suites.add_or_update(gx.ExpectationSuite(name=suite_name, expectations=[
        e.copy() for e in expectations]))
    # one validation definition and checkpoint per engine: each is bound to its datasource's batch definition
    vd_name = f"{source}-{stage}" if engine == SPARK else f"{source}-{stage}-{engine}"
    vd = ctx.validation_definitions.add_or_update(gx.ValidationDefinition(name=vd_name, data=batch_def, suite=suite))
    cp = ctx.checkpoints.add_or_update(gx.Checkpoint(
        name=vd_name, validation_definitions=[vd], actions=[UpdateDataDocsAction(name="docs")],
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5}))
    result = cp.run(batch_parameters={"dataframe": batch})
    vres = list(result.run_results.values())[0]
    payload = vres.to_json_dict()
    out = Path(quality_dir) / "results" / source / f"{batch_id}-{stage}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1, default=str))
    failed = []
    for r in vres.results:
        if not r.success:
            cfg = r.expectation_config
            failed.append({"expectation": cfg.type, "column": cfg.kwargs.get("column"),
                           "unexpected_percent": (r.result or {}).get("unexpected_percent"),
                           "observed": (r.result or {}).get("observed_value")})
    docs = Path(quality_dir) / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    return ValidationSummary(success=bool(vres.success), evaluated=len(vres.results), failed=failed,
                             result_path=str(out), docs_index=str(docs))


def check_ingested(spark, cfg, source: str, run_date) -> Dict[str, object]:
    """``reco check``: the nightly's post-ingest gate for a run date. The day's latest ingest must have
    succeeded (:func:`latest_ingest`: a good export after a failed one passes, a failed one after a good
    one fails), the day must have events in silver (a missing or late export fails here, before any
    feature is built), and those rows pass the silver suite (great-expectations). A day with far fewer
    events than the trailing week's median is a warning, not a failure (sales do dip)."""
    from pyspark.sql import functions as F

    from features.expectations import silver_day_expectations
    from core.errors import EmptyInputError, QualityGateError
    from jobs.lakehouse import Lakehouse

    lh = Lakehouse(spark, cfg)
    day = F.lit(run_date).cast("date")
    nothing = f"nothing ingested under {lh.root}: run `reco ingest --source {source} --date {run_date}`"
    if not lh.exists("pipeline_runs"):
        raise EmptyInputError(nothing)
    runs = (lh.read("pipeline_runs").filter((F.col("step") == "ingest") & (F.col("source") == source)
                                            & (F.col("run_date") == day)).collect())
    if not runs:
        raise EmptyInputError(f"no ingest of source '{source}' for {run_date} in pipeline_runs: run "
                              f"`reco ingest --source {source} --date {run_date}` first")
    latest = latest_ingest(runs)
    if latest["status"] not in ("succeeded", "empty"):
        raise QualityGateError(f"the latest ingest of '{source}' for {run_date} ended '{latest['status']}' (batch "
                               f"{latest['batch_id']}): see the quarantine table and the GX report, fix the "
                               "export and rerun the ingest")
    if not lh.exists("silver_interactions"):
        raise EmptyInputError(nothing)
    silver = lh.read("silver_interactions").filter(F.col("source") == source)
    rows = silver.filter(F.col("event_date") == day)
    n = rows.count()
    if n == 0:
        raise EmptyInputError(f"silver_interactions has no '{source}' events dated {run_date}: the day's export is "
                              "missing, late or empty. Check the source, rerun `reco ingest`, then this check")
    trailing = (silver.filter((F.col("event_date") < day) & (F.col("event_date") >= F.date_sub(day, 7)))
                .groupBy("event_date").count().toPandas())
    median = int(trailing["count"].median()) if not trailing.empty else None
    warnings = []
    if median and n < 0.2 * median:
        warnings.append(f"{n} events on {run_date}, under a fifth of the trailing week's median ({median})")
    batch = latest["batch_id"]
    report = run_suite(rows, f"{source}_silver_day", silver_day_expectations(), quality_dir=cfg.quality.quality_dir,
                       source=source, batch_id=f"{batch}-{run_date}", stage="silver",
                       pandas_max_rows=cfg.quality.pandas_max_rows)
    if not report.success:
        raise QualityGateError(f"silver rows of '{source}' dated {run_date} fail the silver suite: {report.failed}; "
                               f"the report is {report.result_path}")
    for w in warnings:
        log.warning("[check %s %s] %s", source, run_date, w)
    return {"run_date": str(run_date), "events_on_day": n, "trailing_median": median, "batch_id": batch,
            "status": "passed", "warnings": warnings, "gx_result": report.result_path}


def latest_ingest(runs: List[Any]) -> Any:
    """The latest of a (source, run date)'s ingest rows of ``pipeline_runs``.

    Nightly batches are judged when there are any (an hourly window of the day does not vouch for its
    nightly export), by ``seq`` in their details (``jobs.ingest``: the night's ingests numbered in order).
    Rows written before ``seq`` existed count as the oldest; among rows that tie, a failed one wins, so
    an unordered failure is never hidden.
    """
    nightly = [r for r in runs if not r["batch_id"].startswith("hourly-")] or list(runs)

    def order(r) -> Tuple[int, bool]:
        try:
            seq = int(json.loads(r["details"] or "{}").get("seq") or 0)
        except (TypeError, ValueError):
            seq = 0
        return seq, r["status"] not in ("succeeded", "empty")

    return max(nightly, key=order)
