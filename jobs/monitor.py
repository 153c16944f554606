"""``reco monitor``: the nightly's drift checks of a run date, one row per metric in ``monitoring``.

Inputs: the day's ``silver_interactions`` of the source against the ``monitoring.drift.trailing_days``
days before it (the data the champion was trained on). Outputs: the day's ``recommendations``
against the previous day's, and against the catalog (``items``). Each metric is judged against its
limits (``monitoring.drift.thresholds``); a rerun for the date replaces the date's rows. Every
breached limit raises a ``drift`` alert (``core/alerts.py``); a critical one then fails the task, so
the nightly's publish, which runs after it, is held back.
"""
from __future__ import annotations

import json
import logging
import statistics
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Dict, List, Optional, Tuple

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from config import Config
from config.monitoring import DRIFT_METRICS
from core import alerts
from features import drift
from jobs.lakehouse import Lakehouse

log = logging.getLogger(__name__)

SCHEMA = T.StructType([
    T.StructField("run_date", T.DateType(), False),
    T.StructField("source", T.StringType(), False),
    T.StructField("metric", T.StringType(), False),
    T.StructField("value", T.DoubleType(), True),
    T.StructField("bound", T.StringType(), False),
    T.StructField("warning", T.DoubleType(), True),
    T.StructField("critical", T.DoubleType(), True),
    T.StructField("threshold", T.DoubleType(), True),
    T.StructField("status", T.StringType(), False),
    T.StructField("reference", T.StringType(), False),
    T.StructField("details", T.StringType(), True),
])


@dataclass
class Check:
    """One metric of one run: its value (None: no data) and what it was compared with."""
    metric: str
    value: Optional[float]
    reference: str
    details: Dict[str, object]


@dataclass
class MonitorResult:
    run_date: date
    source: str
    rows: List[Tuple]          # the rows written, in SCHEMA's order
    alerts: List[alerts.Alert]


def _with_category(lh: Lakehouse, events: DataFrame) -> Optional[DataFrame]:
    """The events with their item's ``items.category`` (``unknown`` for an item not in the catalog); None
    without a catalog."""
    if not lh.exists("items"):
        return None
    return (events.join(lh.read("items").select("item_id", "category"), "item_id", "left")
            .withColumn("category", F.coalesce("category", F.lit("unknown"))))


def input_checks(lh: Lakehouse, cfg: Config, source: str, run_date: date) -> List[Check]:
    """The day's events against the reference window's: volume, event-type mix, prices, categories,
    activity, new ids."""
    d = cfg.monitoring.drift
    days = [run_date - timedelta(days=n) for n in range(d.trailing_days, 0, -1)]
    window = f"{days[0]}..{days[-1]}"
    events = (lh.read("silver_interactions").filter(F.col("source") == source)
              .filter(F.col("event_date").between(F.lit(days[0]), F.lit(run_date))).cache())
    try:
        day = events.filter(F.col("event_date") == F.lit(run_date))
        ref = events.filter(F.col("event_date") < F.lit(run_date))
        per_day = drift.daily_counts(events, days)
        n_day = day.count()
        mix_ref, mix_day = drift.counts_by(ref, "event_type"), drift.counts_by(day, "event_type")
        ref_days = f"silver_interactions {window}"
        activity_day = drift.per_user_day(day).cache()
        n_customers = activity_day.count()

        def psi_check(metric: str, rows: int, compute, details: Dict[str, object]) -> Check:
            return _psi_check(metric, rows, d.min_rows, compute, ref_days, details)

        categorized = _with_category(lh, events)

        def category_psi() -> Optional[float]:
            if categorized is None:
                return None
            return drift.psi(drift.counts_by(categorized.filter(F.col("event_date") < F.lit(run_date)), "category"),
                             drift.counts_by(categorized.filter(F.col("event_date") == F.lit(run_date)), "category"))

        checks = [
            Check("event_volume_ratio", drift.volume_ratio(n_day, per_day), f"median day of {ref_days}",
                  {"events": n_day, "reference_median": statistics.median(per_day) if per_day else None}),
            psi_check("event_type_psi", n_day, lambda: drift.psi(mix_ref, mix_day),
                      {"day": mix_day, "reference": mix_ref}),
            psi_check("price_psi", n_day, lambda: drift.numeric_psi(ref, day, "price", d.price_bins),
                      {"bins": d.price_bins}),
            psi_check("category_psi", n_day, category_psi, {"catalog": categorized is not None}),
            psi_check("user_activity_psi", n_customers,
                      lambda: drift.numeric_psi(drift.per_user_day(ref), activity_day, "n", d.activity_bins),
                      {"bins": d.activity_bins}),
            Check("new_user_share", drift.new_share(day, ref, "user_id"), ref_days, {}),
            Check("new_item_share", drift.new_share(day, ref, "item_id"), ref_days, {}),
        ]
        activity_day.unpersist()
        return checks
    finally:
        events.unpersist()


def _psi_check(metric: str, rows: int, min_rows: int, compute, reference: str, details: Dict[str, object]) -> Check:
    """A PSI, judged only over ``min_rows`` rows of the day or more (``monitoring.drift.min_rows``)."""
    enough = rows >= min_rows
    return Check(metric, compute() if enough else None, reference,
                 {**details, "rows": rows, **({} if enough else {"min_rows": min_rows})})


def output_checks(lh: Lakehouse, cfg: Config, run_date: date) -> List[Check]:
    """The day's served lists against yesterday's and against the catalog (no data until scored)."""
    yesterday = run_date - timedelta(days=1)
    today: Optional[DataFrame] = None
    before: Optional[DataFrame] = None
    if lh.exists("recommendations"):
        recs = lh.read("recommendations").select("run_date", "user_id", "item_id", "source")
        today = recs.filter(F.col("run_date") == F.lit(run_date)).cache()
        before = recs.filter(F.col("run_date") == F.lit(yesterday)).cache()
        if today.isEmpty():
            today = None
    catalog = lh.read("items").count() if lh.exists("items") else 0
    overlap = drift.list_overlap(today, before) if today is not None else None
    covered = drift.coverage(today, catalog) if today is not None else None
    n_today = today.count() if today is not None else 0
    mix_today = drift.counts_by(today, "source") if today is not None else {}
    mix_before = drift.counts_by(before, "source") if before is not None else {}
    for frame in (today, before):
        if frame is not None:
            frame.unpersist()
    reference = f"recommendations {yesterday}"
    return [
        Check("list_overlap", overlap, reference, {}),
        _psi_check("list_source_psi", n_today, cfg.monitoring.drift.min_rows,
                   lambda: drift.psi(mix_before, mix_today), reference, {"today": mix_today, "yesterday": mix_before}),
        Check("catalog_coverage", covered, "items", {"catalog_items": catalog}),
    ]


def judged(checks: List[Check], cfg: Config, source: str, run_date: date) -> List[Tuple]:
    """The ``monitoring`` rows: each check with its limits and status, in ``DRIFT_METRICS`` order."""
    order = {m: i for i, m in enumerate(DRIFT_METRICS)}
    rows = []
    for c in sorted(checks, key=lambda c: order[c.metric]):
        t = cfg.monitoring.drift.thresholds[c.metric]
        value = None if c.value is None else float(c.value)
        status = drift.judge(value, t.bound, t.warning, t.critical)
        rows.append((run_date, source, c.metric, value, t.bound, t.warning, t.critical,
                     drift.limit_used(status, t.warning, t.critical), status, c.reference,
                     json.dumps(c.details, sort_keys=True, default=str)))
    return rows


def drift_alerts(rows: List[Tuple]) -> List[alerts.Alert]:
    """A ``drift`` alert per breached limit, with the severity of the limit breached."""
    out = []
    for run_date, source, metric, value, bound, _, _, threshold, status, reference, _ in rows:
        if status not in (drift.WARNING, drift.CRITICAL):
            continue
        side = "above" if bound == "max" else "below"
        out.append(alerts.Alert(alerts.DRIFT, status, f"{metric} {value:.4g} on {run_date} is {side} its {status} "
                                f"limit {threshold:g}", {
                                    "run_date": str(run_date), "source": source, "metric": metric,
                                    "value": round(value, 6), "threshold": threshold, "bound": bound,
                                    "reference": reference,
                                    "setting": f"monitoring.drift.thresholds.{metric}"}))
    return out


def monitor(spark: SparkSession, cfg: Config, source: str, run_date: date) -> MonitorResult:
    """Compute, judge and write the date's checks, then raise their alerts (critical: stop)."""
    lh = Lakehouse(spark, cfg)
    if not cfg.monitoring.drift.enabled:
        log.info("[monitor %s] monitoring.drift.enabled is false: nothing checked", run_date)
        return MonitorResult(run_date, source, [], [])
    lh.require("silver_interactions", run=f"reco ingest --source {source} --date {run_date}")
    rows = judged(input_checks(lh, cfg, source, run_date) + output_checks(lh, cfg, run_date), cfg, source, run_date)
    lh.replace(spark.createDataFrame(rows, SCHEMA), "monitoring", {"run_date": run_date, "source": source})
    for r in rows:
        log.info("[monitor %s] %-20s %-10s %s", run_date, r[2], "-" if r[3] is None else f"{r[3]:.4g}", r[8])
    found = drift_alerts(rows)
    result = MonitorResult(run_date, source, rows, found)
    alerts.raise_all(found, timeout_s=cfg.monitoring.alerts.webhook_timeout_s)
    return result
