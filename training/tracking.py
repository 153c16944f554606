"""Everything one training run leaves in MLflow: parameters, per-epoch and final
metrics of the model and of every baseline, the input Delta versions, the
model (registered, then gated), its item embeddings, and the HTML report.

Metric keys: ``<phase>_<metric>`` for the two-tower (``valid_ndcg_at_10``),
``<baseline>.<phase>_<metric>`` for the others (``als.valid_ndcg_at_10``),
``@`` written as ``_at_`` (MLflow keys do not allow ``@``).
"""
from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import asdict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")   # no usage data leaves the machine
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mlflow.tracking import MlflowClient

from core.errors import RecoError  # noqa: E402
from core.redact import env_secrets, redact_text, redact_url  # noqa: E402
from training.experiment import BLEND, CHALLENGER_LABELS, MODEL, SERVED, ExperimentResult
from training.registry import GateDecision, register_and_gate
from training.report import write_report

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"
SERVED_WEIGHTS, SERVED_MMR = "served.weights", "served.mmr_strength"   # run params: the blend scoring uses
SCALAR_METRICS = ("precision", "recall", "ndcg", "map", "hit", "coverage")


def log_params(params: Mapping[str, object]) -> None:
    """``mlflow.log_params`` with every value redacted (core/redact.py): an input path or URL may carry a
    password or a token (``s3a://key:secret@bucket``, ``?X-Amz-Signature=``), which must not become a param."""
    secrets = env_secrets()
    mlflow.log_params({k: v if isinstance(v, (bool, int, float)) or v is None else redact_text(str(v), secrets)
                       for k, v in params.items()})


def metric_key(phase: str, metric: str, model: str = MODEL) -> str:
    key = f"{phase}_{metric}".replace("@", "_at_").replace("/", ".")
    return key if model == MODEL else f"{model.replace('+', '_plus_')}.{key}"


def _flat(phase_result, phase: str) -> Dict[str, float]:
    out = {}
    for model, m in phase_result.metrics.items():
        for k, v in m.items():
            if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) \
                    and math.isfinite(float(v)):
                out[metric_key(phase, k, model)] = float(v)
    return out


def gate_inputs(gate_cfg, baselines: Sequence[str], metrics: Mapping[str, float]
                ) -> Tuple[str, str, Dict[str, str], List[str]]:
    """What the gate compares, from a run's flat metrics (the MLflow keys of :func:`metric_key`):
    ``(label, challenger key, {baseline: key}, notes)``.

    The challenger is the list customers get (``gate.challenger: served``): the served list's validation
    metric when the run evaluated it, else the model blended with buy-again, else the model alone;
    ``gate.challenger: model`` gates the two-tower's own ranking. ``gate.baselines: all`` compares with
    every baseline of ``training.baselines`` that ran (one that refused the data, e.g. EASE on a catalog
    above its ``max_items``, is named in ``notes``); a listed baseline must have run (else ValueError
    later: a gate that cannot check must not pass)."""
    order = (SERVED, BLEND, MODEL) if gate_cfg.challenger == "served" else (MODEL,)
    name = next((n for n in order if metric_key("valid", gate_cfg.metric, n) in metrics), MODEL)
    label = f"valid {gate_cfg.metric} of the {CHALLENGER_LABELS[name]}"
    notes: List[str] = []
    if gate_cfg.baselines == "all":
        required = [b for b in baselines if metric_key("valid", gate_cfg.metric, b) in metrics]
        missing = [b for b in baselines if b not in required]
        if missing:
            notes.append(f"not compared (did not run): {', '.join(missing)}")
    else:
        required = list(gate_cfg.baselines)
    return label, metric_key("valid", gate_cfg.metric, name), \
        {b: metric_key("valid", gate_cfg.metric, b) for b in required}, notes


def report_metrics(result: ExperimentResult) -> Dict[str, Dict[str, float]]:
    """model -> {"valid/ndcg@10": ...} for the report."""
    out: Dict[str, Dict[str, float]] = {}
    for pr in (result.valid, result.test):
        if pr is None:
            continue
        for model, m in pr.metrics.items():
            for k, v in m.items():
                if k.split("@")[0] in SCALAR_METRICS or k == "mrr":
                    out.setdefault(model, {})[f"{pr.phase}/{k}"] = float(v)
    return out


def write_run_report(result: ExperimentResult, path: str, title: str, notes: Sequence[str] = (),
                     params: Optional[dict] = None) -> str:
    last = result.test or result.valid
    write_report(path, title, report_metrics(result), result.valid.history, last.item_counts, last.topk,
                 result.model_config.n_items, notes=list(notes), params=params)
    return path


def _ensure_experiment(name: str, artifact_root: str) -> str:
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return mlflow.create_experiment(name, artifact_location=artifact_root)


def log_training_run(result: ExperimentResult, cfg, inputs: Dict[str, object], run_name: str,
                     report_title: str, gate: bool = True) -> Dict[str, object]:
    """Log the run, register the model, apply the gate (unless ``gate`` is false: then the version is a
    challenger waiting for :func:`gate_run_date`). Returns run id, version and the decision (None when
    not gated)."""
    tcfg = cfg.training
    missing = [b for b in (tcfg.gate.baselines if tcfg.gate.baselines != "all" else [])
               if b not in result.valid.metrics]
    if missing:
        raise RecoError(f"the gate compares with {missing}, which did not run "
                        f"({ {b: result.valid.skipped.get(b, 'not run') for b in missing} }); nothing was "
                        "registered. Remove them from training.gate.baselines or make them runnable")
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    exp_id = _ensure_experiment(cfg.mlflow.experiment, cfg.mlflow.artifact_root)
    tcfg = cfg.training
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name) as run:
        log_params({f"model.{k}": v for k, v in result.model_config.to_dict().items()})
        log_params({f"optim.{k}": v for k, v in asdict(result.params).items()})
        # processes as run (training.processes auto is one per GPU: training/fit.py placement)
        ran = result.valid.train_result
        log_params({"processes": ran.get("processes", tcfg.processes), "launcher": tcfg.launcher,
                           "exclude_seen": tcfg.exclude_seen, "blend_weight": result.valid.blend_weight,
                           "best_epoch": result.valid.best_epoch,
                           "gate": json.dumps(tcfg.gate.model_dump())})
        log_params({f"input.{k}": v for k, v in inputs.items()})
        if result.valid.served is not None:     # the served list's blend, chosen on validation: scoring uses it
            log_params({SERVED_WEIGHTS: json.dumps(result.valid.served["weights"]),
                               SERVED_MMR: result.valid.served["mmr_strength"]})
        # every baseline's settings as fitted (tuned on validation: training.baseline_search)
        log_params({f"baseline.{name}.{k}": v for name, ps in result.valid.baseline_params.items()
                           for k, v in ps.items()})
        if result.plan is not None:     # how later runs find this run's search (training.search)
            log_params(result.plan.params(result.valid.kept, result.valid.best_epoch, result.valid.baselines,
                                                 result.valid.served))
            mlflow.set_tag("search_reason", result.plan.reason[:500])
        mlflow.set_tags({"as_of_date": str(inputs.get("as_of_date", "")),
                         "device": result.valid.train_result.get("device", "cpu")})
        for row in result.valid.history:
            # per-epoch curves under epoch.* keys: the final valid_* values (which the gate reads) stay
            # distinct from the last epoch's
            mlflow.log_metrics({"epoch." + k.replace("@", "_at_"): float(v) for k, v in row.items()
                                if k != "epoch"}, step=int(row["epoch"]))
        for pr in (result.valid, result.test):
            if pr is None:
                continue
            mlflow.log_metrics(_flat(pr, pr.phase))
            for name, t in pr.timings.items():
                mlflow.log_metrics({metric_key(pr.phase, k, name): float(v) for k, v in t.items()})
            for name, why in pr.skipped.items():
                mlflow.set_tag(f"skipped.{name}", why[:500])
        model = result.serve_model
        model.eval()
        with tempfile.TemporaryDirectory() as tmp:
            with torch.no_grad():
                np.save(os.path.join(tmp, "item_embeddings.npy"), model.all_item_vectors().numpy())
            with open(os.path.join(tmp, "metrics.json"), "w") as f:
                json.dump(report_metrics(result), f, indent=1, sort_keys=True)
            write_run_report(result, os.path.join(tmp, "report.html"), report_title,
                             notes=[f"{k}: {v}" for k, v in {**result.valid.skipped,
                                                             **((result.test.skipped) if result.test else {})}.items()],
                             params={**{k: redact_text(str(v), env_secrets()) for k, v in inputs.items()},
                                     "best_epoch": result.valid.best_epoch,
                                     "blend_weight": result.valid.blend_weight})
            mlflow.log_artifacts(tmp)
        # pickle format: loads back as the project's TwoTower class (the default "pt2" export would need an
        # input example and load as a GraphModule); pip_requirements given to skip slow inference
        mlflow.pytorch.log_model(model, name=MODEL_ARTIFACT, serialization_format="pickle",
                                 pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
        run_id = run.info.run_id

    if not gate:
        from training.registry import register_challenger
        version = register_challenger(MlflowClient(), cfg.mlflow.registered_model, run_id, MODEL_ARTIFACT,
                                      as_of_date=str(inputs.get("as_of_date", "")))
        log.info("MLflow run %s, model %s v%s registered as challenger (gate: `reco gate`)", run_id,
                 cfg.mlflow.registered_model, version)
        return {"run_id": run_id, "version": version, "decision": None}
    flat = _flat(result.valid, "valid")
    label, mkey, keys, notes = gate_inputs(tcfg.gate, tcfg.baselines, flat)
    if notes:
        log.info("gate: %s", "; ".join(notes))
    decision, version = register_and_gate(MlflowClient(), cfg.mlflow.registered_model, run_id, MODEL_ARTIFACT,
                                          label, flat[mkey], {b: flat[k] for b, k in keys.items() if k in flat},
                                          list(keys), tcfg.gate.margin, mkey)
    log.info("MLflow run %s, model %s v%s: %s", run_id, cfg.mlflow.registered_model, version, decision.reason)
    return {"run_id": run_id, "version": version, "decision": decision}


def served_choice(tracking_uri: str, run_id: str) -> Optional[Dict[str, object]]:
    """The served list's blend (``{"weights": {...}, "mmr_strength": x}``) a training run chose on
    validation, or None when the run logged none (a run from before, or without a served evaluation)."""
    params = MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.params
    if SERVED_WEIGHTS not in params:
        return None
    try:
        return {"weights": {str(k): float(v) for k, v in json.loads(params[SERVED_WEIGHTS]).items()},
                "mmr_strength": float(params[SERVED_MMR])}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise RecoError(f"run {run_id} logged an unreadable served blend ({SERVED_WEIGHTS}="
                        f"{params.get(SERVED_WEIGHTS)!r}, {SERVED_MMR}={params.get(SERVED_MMR)!r}: {e}); "
                        "set scoring.weights_from_model: false to use scoring.weights") from e


def last_search(cfg, run_date: str, space: str) -> Optional[Tuple[str, Dict[str, str]]]:
    """(run id, parameters) of the latest finished run that searched ``space`` and is dated (tag
    ``as_of_date``) at or before ``run_date``; None when there is none (or no experiment yet)."""
    from training.search import SEARCH_MODE, SEARCH_SPACE
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    exp = mlflow.get_experiment_by_name(cfg.mlflow.experiment)
    if exp is None:
        return None
    runs = MlflowClient().search_runs(
        [exp.experiment_id], filter_string=(f"params.`{SEARCH_MODE}` = 'search' and params.`{SEARCH_SPACE}` = "
                                            f"'{space}' and attributes.status = 'FINISHED'"),
        max_results=5000)
    dated = [(r.data.tags.get("as_of_date", ""), r.info.start_time or 0, r) for r in runs
             if "" < r.data.tags.get("as_of_date", "") <= run_date]
    if not dated:
        return None
    _, _, run = max(dated, key=lambda t: (t[0], t[1]))
    return run.info.run_id, dict(run.data.params)


def gate_run_date(cfg, as_of_date: str):
    """Gate the version ``reco train --no-gate`` registered for a run date. Returns (version, decision)."""
    from training.registry import find_version, gate_version
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    client = MlflowClient()
    name = cfg.mlflow.registered_model
    version = find_version(client, name, as_of_date)
    if version is None:
        raise RecoError(f"no version of model '{name}' was registered for {as_of_date} at "
                        f"{redact_url(cfg.mlflow.tracking_uri)}: "
                        f"run `reco train --date {as_of_date} --no-gate` first")
    g = cfg.training.gate
    run_metrics = client.get_run(client.get_model_version(name, version).run_id).data.metrics
    label, mkey, keys, notes = gate_inputs(g, cfg.training.baselines, run_metrics)
    if notes:
        log.info("gate: %s", "; ".join(notes))
    decision = gate_version(client, name, version, label, mkey, keys, list(keys), g.margin)
    log.info("model %s v%s (%s): %s", name, version, as_of_date, decision.reason)
    return version, decision


__all__ = ["log_training_run", "metric_key", "write_run_report", "report_metrics", "GateDecision"]
