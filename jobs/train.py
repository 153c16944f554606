"""``reco train``: train the two-tower model for a run date, compare it with
the baselines on the same split, log everything to MLflow, register the model
and promote it to ``champion`` only if it passes the gate.

Reads the ``time`` protocol slice of ``training_examples`` for the run date at
a pinned Delta version (logged with the run), the id maps and the catalog.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date
from typing import Dict, Optional

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from config import Config
from core import alerts
from core.errors import EmptyInputError
from jobs.lakehouse import Lakehouse
from jobs.pipeline_runs import record_run
from training.data import Catalog, pairs_from_examples
from training.experiment import MODEL, ExperimentData, ExperimentResult, run_experiment
from training.search import SearchPlan, plan_search, search_candidates, space_id

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_date: str
    run_id: str
    version: str
    promoted: bool
    reason: str
    inputs: Dict[str, object]
    experiment: ExperimentResult


def served_settings(cfg: Config):
    """The served list as ``reco score`` builds it (``scoring:``, the rules file), with the blend settings
    to try on validation (``training.served_search``)."""
    from training.rules import load_rules
    from training.served import ServedSettings
    return ServedSettings.from_config(cfg.scoring, cfg.training.served_search, load_rules(cfg.scoring.rules_path))


def load_experiment_data(lh: Lakehouse, cfg: Config, run_date: date) -> ExperimentData:
    for table in ("training_examples", "user_index", "item_index"):
        if not lh.exists(table):
            raise EmptyInputError(f"no {table} table under {lh.root}: run `reco features --date {run_date}` first")
    versions = {t: lh.version(t) for t in ("training_examples", "user_index", "item_index", "items")
                if lh.exists(t)}
    examples = (lh.read("training_examples", version=versions["training_examples"])
                .filter(F.col("as_of_date") == F.lit(run_date).cast("date")).cache())
    counts = {r["split"]: r["count"] for r in
              examples.filter(F.col("protocol") == "time").groupBy("split").count().collect()}
    for split in ("train", "valid"):
        if not counts.get(split):
            s = cfg.splits
            raise EmptyInputError(
                f"training_examples as of {run_date} has no '{split}' pairs (time protocol: test = the last "
                f"{s.test_days} days, valid = the {s.valid_days} days before, train = older; counts {counts}); "
                f"run `reco features --date {run_date}` on data covering more than {s.test_days + s.valid_days} "
                "days, or shorten splits.valid_days / splits.test_days")
    user_index = lh.read("user_index", version=versions["user_index"])
    item_index = lh.read("item_index", version=versions["item_index"])
    n_users = user_index.agg(F.max("idx")).first()[0] + 1
    n_items = item_index.agg(F.max("idx")).first()[0] + 1
    items = lh.read("items", version=versions["items"]) if "items" in versions else None
    return ExperimentData(
        name=f"as-of-{run_date}", n_users=n_users, n_items=n_items,
        catalog=Catalog.from_spark(item_index, items),
        train=pairs_from_examples(examples, ["train"]).cache(), valid=pairs_from_examples(examples, ["valid"]).cache(),
        test=pairs_from_examples(examples, ["test"]).cache() if counts.get("test") else None,
        exclude_seen=cfg.training.exclude_seen, served=served_settings(cfg),
        info={"as_of_date": run_date.isoformat(), **{f"{t}_version": v for t, v in versions.items()},
              **{f"{k}_pairs": v for k, v in counts.items()}, "n_users": n_users, "n_items": n_items})


def search_plan(cfg: Config, run_date: date) -> SearchPlan:
    """Search the configured settings on validation, or reuse what the latest search within
    ``training.search_every_days`` kept (``training.search``)."""
    from training.tracking import last_search
    candidates = search_candidates(cfg.training.optim)
    every = cfg.training.search_every_days
    grids = cfg.training.baseline_search
    served = served_settings(cfg).candidates()
    found = last_search(cfg, run_date.isoformat(), space_id(candidates, grids, served)) if every > 0 else None
    run_id, params = found if found else ("", None)
    return plan_search(candidates, run_date, every, params, run_id, grids, served)


def train(spark: SparkSession, cfg: Config, run_date: date, register: bool = True, gate: bool = True) -> TrainResult:
    from training.tracking import log_training_run

    lh = Lakehouse(spark, cfg)
    t0 = time.time()
    data = load_experiment_data(lh, cfg, run_date)
    log.info("[train %s] inputs %s", run_date, data.info)
    plan = search_plan(cfg, run_date) if register else None
    result = run_experiment(spark, data, cfg.training, cfg.training_dir, serve_refit=cfg.training.refit, plan=plan)
    out = {"run_id": "", "version": "", "decision": None}
    if register:
        out = log_training_run(result, cfg, data.info, run_name=f"train-{run_date}",
                               report_title=f"RetailReco two-tower, as of {run_date}", gate=gate)
    decision = out["decision"]
    v = result.valid.metrics[MODEL]
    record_run(lh, "train", "all", f"as-of-{run_date.isoformat()}", run_date,
               "promoted" if decision and decision.promote else ("rejected" if decision else "trained"),
               {"mlflow_run_id": out["run_id"], "model_version": out["version"],
                "gate": decision.reason if decision else None, "inputs": data.info,
                "training": {k: result.valid.train_result.get(k) for k in ("device", "processes")},
                "valid": {k: v[k] for k in v if "@" in k or k == "mrr"}}, time.time() - t0)
    refused_promotion(cfg, run_date, out["version"], decision)
    return TrainResult(run_date=run_date.isoformat(), run_id=out["run_id"], version=out["version"],
                       promoted=bool(decision and decision.promote), reason=decision.reason if decision else "",
                       inputs=data.info, experiment=result)


def gate(spark: SparkSession, cfg: Config, run_date: date):
    """``reco gate``: evaluate-and-gate the version ``reco train --no-gate`` registered for the date, from the
    metrics its run logged (the challenger's and the baselines' on the validation split). Idempotent: a
    version gated before keeps its decision."""
    from training.tracking import gate_run_date
    t0 = time.time()
    version, decision = gate_run_date(cfg, run_date.isoformat())
    record_run(Lakehouse(spark, cfg), "gate", "all", f"as-of-{run_date.isoformat()}", run_date,
               "promoted" if decision.promote else "rejected",
               {"model_version": version, "gate": decision.reason}, time.time() - t0)
    refused_promotion(cfg, run_date, version, decision)
    return version, decision


def refused_promotion(cfg: Config, run_date: date, version: str, decision) -> Optional[alerts.Alert]:
    """A ``promotion_refused`` alert when the gate kept the challenger out (severity:
    ``monitoring.alerts.promotion_refused_severity``; critical stops the task once it is recorded)."""
    if decision is None or decision.promote:
        return None
    settings = cfg.monitoring.alerts
    alert = alerts.Alert(alerts.PROMOTION_REFUSED, settings.promotion_refused_severity,
                         f"model version {version} as of {run_date} was not promoted: {decision.reason}", {
                             "run_date": run_date.isoformat(), "model_version": version, "metric": decision.metric,
                             "challenger": decision.challenger, "champion": decision.champion,
                             "champion_version": decision.champion_version})
    alerts.raise_all([alert], timeout_s=settings.webhook_timeout_s)
    return alert


def summary_lines(result: TrainResult, ks=(10, 20)) -> list:
    lines = []
    for pr in (result.experiment.valid, result.experiment.test):
        if pr is None:
            continue
        lines.append(f"{pr.phase}: {pr.n_eval_pairs} pairs of {pr.metrics[MODEL]['n_users']} users")
        for name, m in pr.metrics.items():
            lines.append(f"  {name:<24} ndcg@{ks[0]}={m[f'ndcg@{ks[0]}']:.4f} recall@{ks[-1]}={m[f'recall@{ks[-1]}']:.4f}"
                         f" fit={pr.timings[name]['fit_s']:.1f}s recommend={pr.timings[name]['recommend_s']:.1f}s")
        for name, why in pr.skipped.items():
            lines.append(f"  {name:<24} skipped: {why}")
    if result.run_id:
        lines.append(f"MLflow run {result.run_id}; model version {result.version}: {result.reason}")
    return lines
