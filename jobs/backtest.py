"""`reco backtest --date D [--days N]`: the lists served for day D scored against what customers did next.

Reads, for the lists' date D and a window of N days (``backtest.days``; the window is D+1 .. D+N by UTC
``event_date``, so nothing the lists were built from counts):

* ``recommendations`` of D: the lists ``reco score --date D`` wrote, which readers got from D's nightly
  publish on (the hourly patches of active customers are not backtested);
* ``silver_interactions`` of the window: the actions of ``backtest.groups()`` (``purchase``, ``any``);
* ``fallback_lists`` of D: the global popular list (``popular:global``), scored over the same users as a
  non-personal reference, when the date has one;
* ``pipeline_runs``: the window must be complete, i.e. a nightly ingest of the source (not an hourly
  batch) for the window's last day, or a later day, succeeded. The nightly of a day holds that day
  complete (docs/OPERATIONS.md); hourly batches of a day still under way do not.

Metrics: ``features/backtest.py``. Writes one ``pipeline_runs`` row (step ``backtest``, source ``all``,
batch ``lists-of-D-next-Nd``, run date D; MERGE, so a rerun replaces it) and one MLflow run in
``mlflow.experiment`` named ``backtest-D-next-Nd`` with tags ``kind=backtest``, ``as_of_date=D``,
``backtest_days=N``, ``model_version``, ``score_id`` and metrics ``backtest.<group>.<metric>_at_<k>``.
The run logs no parameters, so neither the training search (``params.search.mode``) nor the registry
(model version tags) can take it for a training run. A rerun deletes the earlier run of the same date and
window and logs a new one: the experiment holds one backtest run per (date, window).

Not ready (no lists for D, the window not complete): :class:`NotReadyError`, which says what to run. With
``skip_missing`` (the nightly's mode: the first night of a fresh lakehouse has no earlier lists) the row
says ``skipped`` with that reason, nothing is logged to MLflow, and the job succeeds.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Dict, List, Optional, Tuple

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from features.backtest import PER_USER_METRICS, backtest_metrics, same_list_for_all
from config import Config
from core.errors import NotReadyError, RecoError
from jobs.batches import HOURLY_PREFIX
from jobs.lakehouse import Lakehouse
from jobs.pipeline_runs import record_run

log = logging.getLogger(__name__)

STEP = "backtest"
REFERENCE_LIST = "popular:global"     # the fallback_lists list scored beside the served lists
REFERENCE = "popular"                 # its name in metric keys


@dataclass
class BacktestResult:
    run_date: str                       # the lists' date D
    days: int
    first_day: str                      # the window: D+1 ..
    last_day: str                       # .. D+N
    status: str                         # succeeded | skipped
    reason: str = ""                    # why it was skipped
    model_version: str = ""
    score_id: str = ""
    metrics: Dict[str, Dict[str, object]] = field(default_factory=dict)     # group -> metrics of the served lists
    reference: Dict[str, Dict[str, object]] = field(default_factory=dict)   # the same for REFERENCE_LIST; {} if none
    mlflow_run_id: str = ""
    seconds: float = 0.0


def batch_id(run_date: date, days: int) -> str:
    return f"lists-of-{run_date.isoformat()}-next-{days}d"


def window(run_date: date, days: int) -> Tuple[date, date]:
    """The first and last day (UTC) of the window after the lists' date."""
    return run_date + timedelta(days=1), run_date + timedelta(days=days)


def served_lists(lh: Lakehouse, run_date: date) -> Tuple[DataFrame, str, str]:
    """(the date's ``recommendations`` rows, their model version, their score id)."""
    missing = (f"no served lists for {run_date} in recommendations ({lh.path('recommendations')}): run "
               f"`reco score --date {run_date}` first")
    if not lh.exists("recommendations"):
        raise NotReadyError(missing)
    lists = lh.read("recommendations").filter(F.col("run_date") == F.lit(run_date).cast("date"))
    first = lists.select("model_version", "score_id").limit(1).collect()
    if not first:
        raise NotReadyError(missing)
    return lists, str(first[0]["model_version"]), str(first[0]["score_id"])


def check_window(lh: Lakehouse, source: str, run_date: date, days: int) -> None:
    """Raise :class:`NotReadyError` unless a nightly ingest of ``source`` for the window's last day or later
    succeeded."""
    first, last = window(run_date, days)
    newest: Optional[date] = None
    if lh.exists("pipeline_runs"):
        newest = (lh.read("pipeline_runs")
                  .filter((F.col("step") == "ingest") & (F.col("source") == source)
                          & (F.col("status") == "succeeded") & ~F.col("batch_id").startswith(HOURLY_PREFIX))
                  .agg(F.max("run_date")).first()[0])
    if newest is None or newest < last:
        have = f"is for {newest}" if newest else "does not exist"
        raise NotReadyError(f"the window of the lists of {run_date}, {first} .. {last}, is not complete: the newest "
                            f"succeeded nightly ingest of source '{source}' in pipeline_runs {have}. Backtest once "
                            f"{last} is ingested (`reco ingest --source {source} --date {last}`, the nightly of "
                            f"{last})")


def window_actions(lh: Lakehouse, run_date: date, days: int, event_types: List[str]) -> DataFrame:
    """``user_id, item_id, event_type`` of the window's events of the given types."""
    first, last = window(run_date, days)
    if not lh.exists("silver_interactions"):
        raise NotReadyError(f"no silver_interactions table under {lh.root}: run `reco ingest --date {last}` first")
    return (lh.read("silver_interactions")
            .filter(F.col("event_date").between(F.lit(first).cast("date"), F.lit(last).cast("date"))
                    & F.col("event_type").isin(event_types))
            .select("user_id", "item_id", "event_type"))


def reference_lists(lh: Lakehouse, run_date: date, users: DataFrame, k: int) -> Optional[DataFrame]:
    """Every served user with the date's ``REFERENCE_LIST`` (its first ``k`` items); None when there is none."""
    if not lh.exists("fallback_lists"):
        return None
    ranked = (lh.read("fallback_lists")
              .filter((F.col("run_date") == F.lit(run_date).cast("date")) & (F.col("list_name") == REFERENCE_LIST))
              .select("rank", "item_id"))
    if not ranked.limit(1).count():
        return None
    return same_list_for_all(users, ranked, REFERENCE, k)


def backtest(spark: SparkSession, cfg: Config, run_date: date, days: Optional[int] = None,
             source: Optional[str] = None, skip_missing: bool = False) -> BacktestResult:
    """Score the lists of ``run_date`` against the ``days`` after it (default ``backtest.days``); the window's
    completeness is judged by the ingests of ``source`` (default: the DAGs' source)."""
    t0 = time.time()
    bt = cfg.backtest
    days = bt.days if days is None else days
    if days < 1:
        raise RecoError(f"--days must be at least 1, got {days}")
    source = source or cfg.orchestration.source or cfg.default_source
    lh = Lakehouse(spark, cfg)
    first, last = window(run_date, days)
    result = BacktestResult(run_date=run_date.isoformat(), days=days, first_day=first.isoformat(),
                            last_day=last.isoformat(), status="succeeded")
    groups = bt.groups()
    try:
        lists, result.model_version, result.score_id = served_lists(lh, run_date)
        check_window(lh, source, run_date, days)
        actions = window_actions(lh, run_date, days, sorted({t for ts in groups.values() for t in ts}))
    except NotReadyError as exc:
        if not skip_missing:
            raise
        result.status, result.reason = "skipped", str(exc)
        log.warning("[backtest %s] skipped: %s", run_date, exc)
        _record(lh, result, source, time.time() - t0)
        return result

    kmax = max(bt.ks)
    lists = lists.filter(F.col("rank") <= kmax).select("user_id", "rank", "item_id", "source").cache()
    actions = actions.cache()
    result.metrics = backtest_metrics(lists, actions, groups, bt.ks)
    ref = reference_lists(lh, run_date, lists.select("user_id"), kmax)
    result.reference = backtest_metrics(ref, actions, groups, bt.ks) if ref is not None else {}
    lists.unpersist()
    actions.unpersist()
    result.mlflow_run_id = log_backtest_run(cfg, result)
    _record(lh, result, source, time.time() - t0)
    k = bt.ks[0]
    log.info("[backtest %s] %s", run_date, ", ".join(
        f"{g} ndcg@{k}={m[f'ndcg@{k}']} over {m['users_active']} active users" for g, m in result.metrics.items()))
    return result


def _record(lh: Lakehouse, result: BacktestResult, source: str, seconds: float) -> None:
    result.seconds = seconds
    details = {"lists_date": result.run_date, "window": [result.first_day, result.last_day], "days": result.days,
               "source": source}
    if result.status == "skipped":
        details["reason"] = result.reason
    else:
        details.update({"model_version": result.model_version, "score_id": result.score_id,
                        "metrics": result.metrics, "reference": {"list": REFERENCE_LIST, "metrics": result.reference},
                        "mlflow_run_id": result.mlflow_run_id})
    record_run(lh, STEP, "all", batch_id(date.fromisoformat(result.run_date), result.days),
               date.fromisoformat(result.run_date), result.status, details, seconds)


# ---------------------------------------------------------------------------------------------- MLflow

def metric_items(metrics: Dict[str, Dict[str, object]], prefix: str = "backtest") -> Dict[str, float]:
    """The MLflow metrics of one set of group metrics: ``<prefix>.<group>.ndcg_at_10``,
    ``<prefix>.<group>.hit_share_at_10.<source>``, ``<prefix>.<group>.users_active``, ... (``@`` written as
    ``_at_``); undefined values (no counted user) are left out."""
    out: Dict[str, float] = {}
    for group, m in metrics.items():
        for key, value in m.items():
            name = key.replace("@", "_at_")
            if isinstance(value, dict):
                out.update({f"{prefix}.{group}.{name}.{s}": float(v) for s, v in value.items()})
            elif key == "users_served":
                out[f"{prefix}.users_served"] = float(value)
            elif value is not None:
                out[f"{prefix}.{group}.{name}"] = float(value)
    return out


def log_backtest_run(cfg: Config, result: BacktestResult) -> str:
    """Log the result as the MLflow run of its (date, window), replacing an earlier one; returns its id."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")   # no usage data leaves the machine
    from mlflow import MlflowClient
    from mlflow.entities import Metric, ViewType

    client = MlflowClient(tracking_uri=cfg.mlflow.tracking_uri)
    name = cfg.mlflow.experiment
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name, artifact_location=cfg.mlflow.artifact_root)
    key = {"kind": "backtest", "as_of_date": result.run_date, "backtest_days": str(result.days)}
    earlier = client.search_runs([exp_id], " and ".join(f"tags.{k} = '{v}'" for k, v in key.items()),
                                 run_view_type=ViewType.ACTIVE_ONLY, max_results=100)
    tags = {**key, "model_version": result.model_version, "score_id": result.score_id,
            "window": f"{result.first_day}..{result.last_day}", "reference": REFERENCE_LIST}
    run = client.create_run(exp_id, run_name=f"backtest-{result.run_date}-next-{result.days}d", tags=tags)
    now = int(time.time() * 1000)
    values = {**metric_items(result.metrics), **metric_items(result.reference, f"backtest.{REFERENCE}")}
    items = [Metric(k, v, now, 0) for k, v in sorted(values.items())]
    for i in range(0, len(items), 1000):         # log_batch takes at most 1000 metrics a call
        client.log_batch(run.info.run_id, metrics=items[i:i + 1000])
    client.set_terminated(run.info.run_id, "FINISHED")
    for old in earlier:             # only now: a crash above leaves the earlier run, never none
        client.delete_run(old.info.run_id)
    log.info("[backtest %s] MLflow run %s (%d metrics; replaced %d earlier run(s))", result.run_date, run.info.run_id,
             len(items), len(earlier))
    return run.info.run_id


# ---------------------------------------------------------------------------------------------- summary

def summary_lines(result: BacktestResult, ks: List[int]) -> List[str]:
    """A short human summary: one line per group and reference, then where the hits came from."""
    head = f"backtest of the lists of {result.run_date} against {result.first_day} .. {result.last_day}"
    if result.status == "skipped":
        return [f"{head}: skipped: {result.reason}"]
    any_group = next(iter(result.metrics.values()), {})
    lines = [f"{head} (model v{result.model_version}, {result.score_id}): {any_group.get('users_served', 0)} users "
             "served"]
    cols = [f"{m}@{k}" for k in ks for m in PER_USER_METRICS]
    lines.append("  " + "lists".ljust(16) + "group".ljust(10) + "users active".rjust(13)
                 + "".join(c.rjust(14) for c in cols))
    for label, metrics in (("served", result.metrics), (REFERENCE_LIST, result.reference)):
        for group, m in metrics.items():
            vals = "".join((f"{m[c]:14.4f}" if m.get(c) is not None else "-".rjust(14)) for c in cols)
            lines.append("  " + label.ljust(16) + group.ljust(10) + f"{m['users_active']:>13}" + vals)
    k = ks[0]
    for group, m in result.metrics.items():
        shares = m.get(f"hit_share@{k}") or {}
        if shares:
            text = ", ".join(f"{s} {v:.0%}" for s, v in sorted(shares.items(), key=lambda kv: -kv[1]))
            lines.append(f"  hits@{k} by source ({group}): {text}")
    lines.append(f"MLflow run {result.mlflow_run_id}")
    return lines
