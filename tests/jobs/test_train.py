"""`reco train` on a tiny synthetic lakehouse: reproducible metrics from a pinned data version,
MLflow run + registry + gate, and `reco benchmark` from plain files."""
from __future__ import annotations

import json
from datetime import date

import pandas as pd
import pytest

from jobs.build_features import build_features
from orchestration.cli import main
from jobs.ingest import ingest
from jobs.sources import default_run_date
from jobs.train import train
from tests.conftest import make_config

TINY_TRAINING = {"optim": {"max_epochs": 2, "patience": 1, "batch_size": 256, "others_share": [0.0], "search": [{}]},
                 "model": {"dim": 16, "hidden": 32, "history_len": 5, "n_title_buckets": 512},
                 "baselines": ["popular", "buy_again", "als"], "gate": {"baselines": ["popular", "als"]},
                 "baseline_params": {"als": {"rank": 8, "max_iter": 3}}, "launcher": "inprocess",
                 "blend_weights": [0.0, 1.0],
                 # tuning is tested on its own (tests/training/test_baseline_search.py); here ALS, a Spark fit
                 # each, keeps one setting, and buy-again (numpy) two
                 "baseline_search": {"als": [], "buy_again": [{"half_life_days": 14}, {"half_life_days": 60}]}}


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    cfg = make_config(tmp, synthetic={"n_events": 8000, "n_users": 300, "n_items": 80, "days": 60},
                      splits={"valid_days": 10, "test_days": 10}, training=TINY_TRAINING)
    run_date = default_run_date(cfg, "synthetic")
    ingest(spark, cfg, "synthetic", run_date, None)
    build_features(spark, cfg, run_date)
    return cfg, run_date


def test_same_data_version_and_seed_give_the_same_metrics(spark, lake):
    cfg, run_date = lake
    a = train(spark, cfg, run_date, register=False)
    b = train(spark, cfg, run_date, register=False)
    assert a.inputs == b.inputs and a.inputs["training_examples_version"] >= 0
    for phase in ("valid", "test"):
        ma, mb = getattr(a.experiment, phase).metrics, getattr(b.experiment, phase).metrics
        assert ma.keys() == mb.keys() and "two_tower" in ma and "als" in ma
        for model in ma:
            for key, value in ma[model].items():
                if isinstance(value, float) and key != "recommend_s":
                    assert value == pytest.approx(mb[model][key], abs=1e-6, nan_ok=True), (phase, model, key)


def test_train_logs_registers_and_gates(spark, lake):
    import mlflow
    from mlflow.tracking import MlflowClient

    cfg, run_date = lake
    # margin 10x: no model can beat the baselines by that much, so the first version is not promoted
    strict = cfg.model_copy(update={"training": cfg.training.model_copy(
        update={"gate": cfg.training.gate.model_copy(update={"margin": 10.0})})})
    first = train(spark, strict, run_date)
    assert first.version == "1" and not first.promoted and "does not beat" in first.reason
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    client = MlflowClient()
    assert "champion" not in client.get_registered_model(cfg.mlflow.registered_model).aliases
    run = client.get_run(first.run_id)
    assert run.data.params["input.as_of_date"] == run_date.isoformat()
    assert "input.training_examples_version" in run.data.params
    for key in ("valid_ndcg_at_10", "test_recall_at_20", "als.valid_ndcg_at_10", "popular.test_ndcg_at_10"):
        assert key in run.data.metrics, key
    assert run.data.tags["gate_decision"] == "rejected"
    artifacts = {a.path for a in client.list_artifacts(first.run_id)}
    assert {"report.html", "item_embeddings.npy", "metrics.json"} <= artifacts


def test_a_later_run_reuses_the_search_and_refits_the_same_model(spark, lake, tmp_path):
    import mlflow
    import torch
    from mlflow.tracking import MlflowClient

    cfg, run_date = lake
    t = cfg.training
    # two settings to search, the second with model fields (its own towers and a wider history than the
    # defaults' 5: the users' state is cut per model)
    linear = {"model.towers": "linear", "model.history_len": 8, "model.history_dropout": 0.5,
              "negatives": "all_items", "temperature": 0.2}
    own = cfg.model_copy(update={   # its own MLflow: no earlier search
        "mlflow": cfg.mlflow.model_copy(update={"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
                                                "artifact_root": str(tmp_path / "mlartifacts")}),
        "training": t.model_copy(update={"optim": t.optim.model_copy(update={"search": [{}, linear]}),
                                         "evaluate_test": False})})
    first = train(spark, own, run_date)
    second = train(spark, own, run_date)     # a rerun of the date (or the next night): reuses that search
    mlflow.set_tracking_uri(own.mlflow.tracking_uri)
    p1, p2 = (MlflowClient().get_run(r.run_id).data.params for r in (first, second))
    assert p1["search.mode"] == "search" and p2["search.mode"] == "reuse"
    assert len(first.experiment.valid.train_result["candidates_tried"]) == 2
    assert len(second.experiment.valid.train_result["candidates_tried"]) == 1
    for key in ("search.date", "search.space", "search.kept", "search.epochs"):
        assert p1[key] == p2[key], key
    assert p1["search.date"] == run_date.isoformat()
    assert json.loads(p2["search.kept"]) == second.experiment.valid.kept
    # the kept candidate's model settings are the served model's, also when reused
    kept = second.experiment.valid.kept
    for exp in (first.experiment, second.experiment):
        assert exp.model_config.towers == kept.get("model.towers", "mlp")
        assert exp.model_config.history_len == kept.get("model.history_len", 5)
        assert exp.serve_model.cfg.towers == exp.model_config.towers
    assert int(p2["search.epochs"]) == first.experiment.valid.best_epoch == second.experiment.valid.best_epoch
    # the kept settings for the kept epochs, with the same seed: the same model, metrics and serving weights
    ma, mb = first.experiment.valid.metrics["two_tower"], second.experiment.valid.metrics["two_tower"]
    for key in ("ndcg@10", "recall@20", "mrr"):
        assert ma[key] == pytest.approx(mb[key], abs=1e-6), key
    with torch.no_grad():
        assert torch.allclose(first.experiment.serve_model.all_item_vectors(),
                              second.experiment.serve_model.all_item_vectors(), atol=1e-6)
    # every search-less run can say where its settings came from
    assert "reusing" in MlflowClient().get_run(second.run_id).data.tags["search_reason"]


def test_benchmark_mode_from_files(spark, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RECO__LAKEHOUSE__ROOT", str(tmp_path / "lakehouse"))
    for k, v in {"MAX_EPOCHS": "2", "PATIENCE": "1", "BATCH_SIZE": "128"}.items():
        monkeypatch.setenv(f"RECO__TRAINING__OPTIM__{k}", v)
    monkeypatch.setenv("RECO__TRAINING__LAUNCHER", "inprocess")
    monkeypatch.setenv("RECO__TRAINING__BASELINES", json.dumps(["popular", "als"]))
    monkeypatch.setenv("RECO__TRAINING__GATE__BASELINES", json.dumps(["popular"]))
    monkeypatch.setenv("RECO__TRAINING__BASELINE_SEARCH__ALS", "[]")      # one ALS fit (tuning: its own tests)
    # users 0..59 in 3 groups of 6 items; timestamps increase; the test file holds each user's last item
    rows, test = [], []
    for u in range(60):
        g = u % 3
        items = [g * 6 + j for j in range(6)]
        for t, it in enumerate(items[:-1]):
            rows.append((f"u{u}", f"i{it}", 1000 + t))
        test.append((f"u{u}", f"i{items[-1]}", 2000))
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(test, columns=["user", "item", "timestamp"]).to_csv(tmp_path / "test.tsv", sep="\t", index=False)
    (tmp_path / "users.txt").write_text("\n".join(f"u{u}" for u in range(60)) + "\nnew_user\n")
    out = tmp_path / "recs.csv"
    assert main(["benchmark", "--train", str(tmp_path / "train.csv"), "--users", str(tmp_path / "users.txt"),
                 "--k", "5", "--out", str(out), "--test", str(tmp_path / "test.tsv"), "--exclude-seen"]) == 0
    recs = pd.read_csv(out)
    assert list(recs.columns) == ["user", "item", "rank", "score"]
    # every listed user (the unknown one too) gets exactly k items, ranks 1..k, none seen in train
    assert recs.groupby("user")["rank"].apply(list).apply(lambda r: r == [1, 2, 3, 4, 5]).all()
    assert recs["user"].nunique() == 61
    seen = set(rows_key for rows_key in ((u, i) for u, i, _ in rows))
    assert not any((u, i) in seen for u, i in zip(recs["user"], recs["item"]))
    printed = capsys.readouterr().out
    assert "test metrics (full ranking, 60 users)" in printed and "two_tower" in printed and "als" in printed


def test_benchmark_mode_names_a_missing_column(spark, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RECO__LAKEHOUSE__ROOT", str(tmp_path / "lakehouse"))
    (tmp_path / "train.csv").write_text("customer,when\nc1,2020-01-01\n")
    (tmp_path / "users.txt").write_text("c1\n")
    assert main(["benchmark", "--train", str(tmp_path / "train.csv"), "--users", str(tmp_path / "users.txt"),
                 "--out", str(tmp_path / "r.csv")]) == 2
    err = capsys.readouterr().err
    assert "no item column" in err and "train.csv" in err and "Traceback" not in err


def test_train_without_features_is_a_clear_error(spark, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RECO__LAKEHOUSE__ROOT", str(tmp_path / "lakehouse"))
    assert main(["train", "--date", "2026-10-28"]) == 2
    err = capsys.readouterr().err
    assert "reco features --date 2026-10-28" in err and "Traceback" not in err
