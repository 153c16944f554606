"""training/tracking.py: what the gate compares (the served list against every baseline that ran), and a
planted case through the nightly's path (`reco train --no-gate`, then `reco gate`) on a real sqlite
MLflow store."""
from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")   # before mlflow is imported

import mlflow  # noqa: E402
import pytest  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.tracking._tracking_service import utils as tracking_utils  # noqa: E402

from config import load_config  # noqa: E402
from training.registry import load_alias, register_challenger  # noqa: E402
from training.tracking import gate_inputs, gate_run_date  # noqa: E402

BASELINES = ["popular", "popular_recent", "buy_again", "als", "ease"]
# validation ndcg@10 of a planted run: the served list beats everything but EASE; the model alone loses to
# buy-again (it does not see repeat purchases the way the served list does)
PLANTED = {"valid_ndcg_at_10": 0.20, "two_tower_plus_buy_again.valid_ndcg_at_10": 0.27,
           "served.valid_ndcg_at_10": 0.30, "popular.valid_ndcg_at_10": 0.08,
           "popular_recent.valid_ndcg_at_10": 0.11, "buy_again.valid_ndcg_at_10": 0.24,
           "als.valid_ndcg_at_10": 0.15, "ease.valid_ndcg_at_10": 0.31}


def _cfg(tmp=None, **gate):
    over = {"training": {"gate": gate}} if gate else {}
    if tmp is not None:
        over["mlflow"] = {"tracking_uri": f"sqlite:///{tmp}/mlflow.db", "artifact_root": str(tmp / "artifacts"),
                          "registered_model": "gate-planted"}
    return load_config(env="local", environ={}, overrides=over)


def test_the_served_list_is_gated_against_every_baseline_that_ran():
    g = _cfg().training.gate
    assert g.baselines == "all" and g.challenger == "served"          # the defaults
    label, key, keys, notes = gate_inputs(g, BASELINES, PLANTED)
    assert label == "valid ndcg@10 of the served list" and key == "served.valid_ndcg_at_10"
    assert list(keys) == BASELINES and keys["ease"] == "ease.valid_ndcg_at_10" and notes == []
    # without a served list: the blend, then the model; a baseline that did not run is named, not compared
    run = {k: v for k, v in PLANTED.items() if not k.startswith(("served", "ease"))}
    label, key, keys, notes = gate_inputs(g, BASELINES, run)
    assert key == "two_tower_plus_buy_again.valid_ndcg_at_10" and "ease" not in keys
    assert notes == ["not compared (did not run): ease"]
    assert gate_inputs(g, BASELINES, {"valid_ndcg_at_10": 0.2})[1] == "valid_ndcg_at_10"
    # challenger: model gates the two-tower's own ranking; a listed baseline is required whether it ran or not
    g2 = _cfg(challenger="model", baselines=["popular", "ease"]).training.gate
    label, key, keys, _ = gate_inputs(g2, BASELINES, run)
    assert label == "valid ndcg@10 of the two-tower" and key == "valid_ndcg_at_10" and list(keys) == ["popular", "ease"]


@pytest.fixture()
def tracking(tmp_path):
    previous_uri, previous_env = tracking_utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    yield tmp_path
    mlflow.set_tracking_uri(previous_uri)
    if previous_env is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous_env


class _Identity(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def _register(cfg, as_of: str, metrics) -> str:
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    exp = mlflow.get_experiment_by_name("e") or mlflow.get_experiment(
        mlflow.create_experiment("e", artifact_location=cfg.mlflow.artifact_root))
    with mlflow.start_run(experiment_id=exp.experiment_id) as run:
        mlflow.pyfunc.log_model(name="model", python_model=_Identity(), pip_requirements=["mlflow"])
        mlflow.log_metrics(metrics)
    return register_challenger(MlflowClient(), cfg.mlflow.registered_model, run.info.run_id, "model", as_of_date=as_of)


def test_a_challenger_that_loses_to_one_baseline_is_refused_and_says_which(tracking):
    cfg = _cfg(tracking)
    _register(cfg, "2026-10-01", PLANTED)
    version, d = gate_run_date(cfg, "2026-10-01")
    assert not d.promote and load_alias(cfg.mlflow.registered_model) is None
    assert "valid ndcg@10 of the served list 0.3000 does not beat ease (0.3100)" in d.reason
    assert set(d.baselines) == set(BASELINES)
    # the same run without EASE in the gate's list: promoted, and the reason names every baseline beaten
    _register(cfg, "2026-10-02", PLANTED)
    cfg2 = _cfg(tracking, baselines=["popular", "popular_recent", "buy_again", "als"])
    version, d = gate_run_date(cfg2, "2026-10-02")
    assert d.promote and load_alias(cfg.mlflow.registered_model)[0] == version
    assert all(f"{b} (" in d.reason for b in ["popular", "popular_recent", "buy_again", "als"])
    # the model alone loses to buy-again: with challenger: model the same run is refused
    _register(cfg, "2026-10-03", {**PLANTED, "ease.valid_ndcg_at_10": 0.1})
    cfg3 = _cfg(tracking, challenger="model")
    _, d = gate_run_date(cfg3, "2026-10-03")
    assert not d.promote and "buy_again (0.2400)" in d.reason and "of the two-tower 0.2000" in d.reason
