"""training/registry.py: the pure promotion gate, and register_and_gate against a real sqlite MLflow
store (one store per module: creating an MLflow sqlite schema takes seconds)."""
from __future__ import annotations

import math
import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")   # before mlflow is imported: no usage pings from tests

import mlflow  # noqa: E402
import pytest  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.tracking._tracking_service import utils as tracking_utils  # noqa: E402

from training.registry import GateDecision, gate_decision, load_alias, register_and_gate  # noqa: E402

METRIC, KEY = "valid ndcg@10", "valid_ndcg_at_10"
BASELINES = {"popular": 0.05, "als": 0.09}
REQUIRED = ("popular", "als")


# --------------------------------------------------------------------------------------- gate (pure)
def test_no_champion_and_beats_baselines_promotes():
    d = gate_decision(METRIC, 0.12, None, None, BASELINES, REQUIRED, 0.01)
    assert isinstance(d, GateDecision) and d.promote
    assert d.champion is None and d.champion_version is None
    assert d.baselines == BASELINES and d.margin == 0.01
    assert d.reason.startswith("promoted:") and "no champion yet" in d.reason
    assert "popular (0.0500)" in d.reason and "als (0.0900)" in d.reason


def test_beats_champion_but_loses_to_als_rejects_naming_als():
    d = gate_decision(METRIC, 0.10, 0.08, "3", {"popular": 0.05, "als": 0.11}, REQUIRED, 0.01)
    assert not d.promote
    assert d.reason.startswith("kept champion v3:")
    assert "als (0.1100)" in d.reason
    assert "popular" not in d.reason and "champion v3 (" not in d.reason   # only what it lost to is named


def test_margin_is_relative_and_equal_is_not_better():
    assert not gate_decision(METRIC, 0.10, 0.10, "1", {}, (), 0.0).promote             # equal, no margin
    assert not gate_decision(METRIC, 0.1009, 0.10, "1", {}, (), 0.01).promote          # within 1%
    assert not gate_decision(METRIC, 0.101, 0.10, "1", {}, (), 0.01).promote           # exactly 1%: not above
    assert gate_decision(METRIC, 0.1011, 0.10, "1", {}, (), 0.01).promote
    assert not gate_decision(METRIC, 0.0505, None, None, {"popular": 0.05}, ["popular"], 0.01).promote
    d = gate_decision(METRIC, 0.0506, None, None, {"popular": 0.05, "als": 0.2}, ["popular"], 0.01)
    assert d.promote and d.baselines == {"popular": 0.05}                   # only required baselines gate


def test_nan_never_promotes():
    for champion, version in ((None, None), (0.01, "2")):
        d = gate_decision(METRIC, float("nan"), champion, version, BASELINES, REQUIRED, 0.0)
        assert not d.promote and "not a finite value" in d.reason
    assert not gate_decision(METRIC, math.inf, None, None, {}, (), 0.0).promote
    # a NaN baseline cannot be beaten
    assert not gate_decision(METRIC, 0.5, None, None, {"als": float("nan")}, ["als"], 0.0).promote


def test_missing_required_baseline_raises():
    with pytest.raises(ValueError, match="'als'"):
        gate_decision(METRIC, 0.5, None, None, {"popular": 0.05}, REQUIRED, 0.01)
    with pytest.raises(ValueError, match="margin"):
        gate_decision(METRIC, 0.5, None, None, {}, (), -0.1)


def test_champion_without_value_still_needs_baselines():
    d = gate_decision(METRIC, 0.06, None, "4", BASELINES, REQUIRED, 0.0)
    assert not d.promote and "champion v4 has no valid ndcg@10 value" in d.reason and "als (0.0900)" in d.reason
    d = gate_decision(METRIC, 0.10, None, "4", BASELINES, REQUIRED, 0.0)
    assert d.promote and "champion v4 has no valid ndcg@10 value" in d.reason


# ---------------------------------------------------------------------------------- registry (sqlite)
class _Identity(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: list[float], params=None) -> list[float]:
        return model_input


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sqlite tracking store + artifact folder for this module; the global tracking URI (and the
    MLFLOW_TRACKING_URI variable mlflow.set_tracking_uri exports) are restored afterwards."""
    tmp = tmp_path_factory.mktemp("mlflow")
    previous_uri = tracking_utils._tracking_uri
    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    try:
        client = MlflowClient()
        experiment_id = client.create_experiment("registry-tests", artifact_location=str(tmp / "artifacts"))
        yield client, experiment_id
    finally:
        mlflow.set_tracking_uri(previous_uri)
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def _train(experiment_id: str, value=None) -> str:
    """A finished run with a tiny logged model named "model" and (unless None) the valid metric."""
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.pyfunc.log_model(name="model", python_model=_Identity(), pip_requirements=["mlflow"])
        if value is not None:
            mlflow.log_metric(KEY, value)
    return run.info.run_id


def _gate(client, name, run_id, value, margin=0.01, baselines=None):
    return register_and_gate(client, name, run_id, "model", METRIC, value, baselines or BASELINES, REQUIRED,
                             margin, KEY)


def test_register_gate_promote_reject_promote(store):
    client, exp = store
    name = "retailreco_two_tower"
    assert load_alias(name) is None                                              # no registered model yet

    run1 = _train(exp, 0.12)
    d1, v1 = _gate(client, name, run1, 0.12)
    assert d1.promote and v1 == "1" and d1.champion_version is None
    assert load_alias(name) == ("1", f"models:/{name}@champion")
    assert load_alias(name, "challenger") == ("1", f"models:/{name}@challenger")
    mv1 = client.get_model_version(name, v1)
    assert mv1.run_id == run1 and mv1.source.startswith("models:/m-")           # the MLflow 3 logged model
    assert mv1.tags["gate_decision"] == "promoted" and mv1.tags["gate_reason"] == d1.reason
    tags = client.get_run(run1).data.tags
    assert tags["gate_decision"] == "promoted" and tags["model_version"] == "1" and tags["gate_reason"] == d1.reason
    # the champion URI loads
    assert mlflow.pyfunc.load_model(f"models:/{name}@champion").predict([1.0, 2.0]) == [1.0, 2.0]

    # a worse challenger: registered, takes "challenger", never "champion"
    run2 = _train(exp, 0.11)
    d2, v2 = _gate(client, name, run2, 0.11)
    assert not d2.promote and v2 == "2"
    assert d2.champion == pytest.approx(0.12) and d2.champion_version == "1"
    assert d2.reason == "kept champion v1: valid ndcg@10 0.1100 does not beat champion v1 (0.1200) + margin 0.01"
    assert load_alias(name)[0] == "1" and load_alias(name, "challenger")[0] == "2"
    mv2 = client.get_model_version(name, v2)
    assert mv2.tags["gate_decision"] == "rejected" and mv2.tags["gate_reason"] == d2.reason
    tags = client.get_run(run2).data.tags
    assert tags["gate_decision"] == "rejected" and tags["model_version"] == "2" and "kept champion v1" in tags["gate_reason"]

    # a better one is promoted over the champion
    run3 = _train(exp, 0.20)
    d3, v3 = _gate(client, name, run3, 0.20)
    assert d3.promote and v3 == "3" and d3.champion_version == "1" and "champion v1 (0.1200)" in d3.reason
    assert load_alias(name)[0] == "3" and load_alias(name, "challenger")[0] == "3"
    assert client.get_run(run3).data.tags["gate_decision"] == "promoted"


def test_first_model_losing_to_a_baseline_is_not_champion(store):
    client, exp = store
    name = "retailreco_weak"
    run = _train(exp, 0.06)
    d, v = _gate(client, name, run, 0.06)
    assert not d.promote and "not promoted" in d.reason and "als (0.0900)" in d.reason
    assert load_alias(name) is None and load_alias(name, "challenger")[0] == v
    assert client.get_model_version(name, v).tags["gate_decision"] == "rejected"


def test_champion_without_metric_only_baselines_gate(store):
    client, exp = store
    name = "retailreco_nometric"
    run1 = _train(exp, None)                                                     # champion run lacks the metric
    d1, v1 = _gate(client, name, run1, 0.10)
    assert d1.promote
    run2 = _train(exp, 0.095)
    d2, v2 = _gate(client, name, run2, 0.095)
    assert d2.promote and d2.champion is None and d2.champion_version == v1
    assert "champion v1 has no valid ndcg@10 value" in d2.reason
    assert load_alias(name)[0] == v2


def test_missing_baseline_fails_before_registering(store):
    client, exp = store
    name = "retailreco_unchecked"
    run = _train(exp, 0.5)
    with pytest.raises(ValueError, match="'als'"):
        _gate(client, name, run, 0.5, baselines={"popular": 0.01})
    assert client.search_model_versions(f"name = '{name}'") == []
    assert "gate_decision" not in client.get_run(run).data.tags


def test_alias_lookup_with_explicit_tracking_uri(store):
    client, _ = store
    assert load_alias("no_such_model", tracking_uri=client.tracking_uri) is None
    client.create_registered_model("retailreco_no_alias")
    assert load_alias("retailreco_no_alias", tracking_uri=client.tracking_uri) is None
