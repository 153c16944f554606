"""`reco backtest`: the lists served for a date, scored against the window after it, recorded once in
pipeline_runs and MLflow; a clear error (or, in the nightly's mode, a `skipped` row) when not ready."""
from __future__ import annotations

import json
from datetime import date, datetime

import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType
from pyspark.sql import functions as F

from jobs.backtest import backtest, batch_id
from orchestration.cli import main
from core.errors import NotReadyError
from jobs.lakehouse import Lakehouse
from jobs.pipeline_runs import record_run
from tests.conftest import make_config
from tests.features.test_backtest import G1, LISTS, assert_known_answer

D = date(2026, 10, 27)          # the lists' date; the window of 1 day is 2026-10-28
OVERRIDES = {"backtest": {"ks": [2, 3]}}

SILVER = [  # (user, item, event_type, event_time UTC): the actions of tests/features/test_backtest.py, in the window
    ("u1", "b", "purchase", "2026-10-28 10:00:00"),
    ("u1", "x", "purchase", "2026-10-28 11:00:00"),
    ("u1", "a", "view", "2026-10-28 12:00:00"),
    ("u2", "f", "purchase", "2026-10-28 00:00:00"),     # the window's first instant: counts
    ("u2", "f", "purchase", "2026-10-28 13:00:00"),
    ("u3", "h", "cart", "2026-10-28 09:00:00"),
    ("u5", "a", "purchase", "2026-10-28 09:30:00"),
    (None, "d", "purchase", "2026-10-28 09:45:00"),
    ("u2", "d", "purchase", "2026-10-27 23:59:59"),     # on D itself: the lists knew it (else a hit at rank 1)
    ("u2", "e", "purchase", "2026-10-29 00:00:00"),     # after the window (else a hit at rank 2)
    ("u4", "c", "return", "2026-10-28 08:00:00"),       # no group's type (else u4 would be counted)
]


def write_lake(spark, cfg) -> None:
    lh = Lakehouse(spark, cfg)
    meta = dict(model_version="7", run_id="run-7", score_id="20261027-m7-abc")
    recs = [(u, r, i, 1.0, s, *meta.values(), D) for u, r, i, s in LISTS]
    recs.append(("u1", 1, "x", 1.0, "personal", "6", "run-6", "20261026-m6-def", date(2026, 10, 26)))  # other date
    lh.overwrite(spark.createDataFrame(recs, "user_id string, rank int, item_id string, score float, source string, "
                                             "model_version string, run_id string, score_id string, run_date date"),
                 "recommendations", partition_by=["run_date"])
    # the reference: popular:global of D is f, b, z (the served `global` list is another list)
    fb = [("popular:global", 1, "f", "popular"), ("popular:global", 2, "b", "popular"),
          ("popular:global", 3, "z", "popular"), ("global", 1, "a", "popular")]
    lh.overwrite(spark.createDataFrame([(n, r, i, None, s, *meta.values(), D) for n, r, i, s in fb],
                                       "list_name string, rank int, item_id string, score float, source string, "
                                       "model_version string, run_id string, score_id string, run_date date"),
                 "fallback_lists", partition_by=["run_date"])
    silver = spark.createDataFrame([("synthetic", "b1", n, u, i, t, datetime.fromisoformat(ts), u is None)
                                    for n, (u, i, t, ts) in enumerate(SILVER)],
                                   "source string, batch_id string, row_id long, user_id string, item_id string, "
                                   "event_type string, event_time timestamp, is_anonymous boolean")
    lh.overwrite(silver.withColumn("event_date", F.to_date("event_time")), "silver_interactions",
                 partition_by=["event_date"])
    # 10-28 is ingested by its nightly; an hourly batch of 10-29 does not make 10-29 complete
    record_run(lh, "ingest", "synthetic", "synthetic-live-2026-10-28", date(2026, 10, 28), "succeeded", {}, 1.0)
    record_run(lh, "ingest", "synthetic", "hourly-20261029T0100", date(2026, 10, 29), "succeeded", {}, 1.0)


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("backtest")
    cfg = make_config(tmp, **OVERRIDES)
    write_lake(spark, cfg)
    return cfg, tmp


def runs_of(spark, cfg, run_date: date, days: int):
    return (Lakehouse(spark, cfg).read("pipeline_runs")
            .filter((F.col("step") == "backtest") & (F.col("batch_id") == batch_id(run_date, days))).collect())


def mlflow_runs(cfg, run_date: date):
    client = MlflowClient(tracking_uri=cfg.mlflow.tracking_uri)
    exp = client.get_experiment_by_name(cfg.mlflow.experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], f"tags.kind = 'backtest' and tags.as_of_date = '{run_date}'",
                              run_view_type=ViewType.ACTIVE_ONLY)


def test_known_answer_within_the_window_recorded_in_pipeline_runs_and_mlflow(spark, lake):
    cfg, _ = lake
    res = backtest(spark, cfg, D, 1, source="synthetic")
    assert (res.status, res.first_day, res.last_day) == ("succeeded", "2026-10-28", "2026-10-28")
    assert (res.model_version, res.score_id) == ("7", "20261027-m7-abc")
    # the lists of D (not of 10-26), the actions of 10-28 only (not D's, not 10-29's, not the anonymous)
    assert_known_answer(res.metrics)
    # the reference: everyone gets f, b, z; purchase: u1 (R = {b, x}) hits b at 2, u2 (R = {f}) hits f at 1
    ref = res.reference["purchase"]
    assert (ref["users_active"], ref["hits@2"], ref["hit@2"]) == (2, 2, 1.0)
    assert ref["ndcg@2"] == pytest.approx((G1 / (1 + G1) + 1) / 2)

    (row,) = runs_of(spark, cfg, D, 1)
    assert (row["source"], row["run_date"], row["status"]) == ("all", D, "succeeded")
    details = json.loads(row["details"])
    assert details["window"] == ["2026-10-28", "2026-10-28"] and details["model_version"] == "7"
    assert details["metrics"]["purchase"]["ndcg@3"] == pytest.approx(res.metrics["purchase"]["ndcg@3"])
    assert details["reference"]["list"] == "popular:global"

    (run,) = mlflow_runs(cfg, D)
    assert run.info.run_id == res.mlflow_run_id == details["mlflow_run_id"]
    assert run.info.run_name == "backtest-2026-10-27-next-1d" and run.info.status == "FINISHED"
    assert {k: run.data.tags[k] for k in ("kind", "as_of_date", "backtest_days", "model_version", "score_id")} == {
        "kind": "backtest", "as_of_date": "2026-10-27", "backtest_days": "1", "model_version": "7",
        "score_id": "20261027-m7-abc"}
    m = run.data.metrics
    assert m["backtest.purchase.ndcg_at_3"] == pytest.approx(res.metrics["purchase"]["ndcg@3"])
    assert m["backtest.any.recall_at_2"] == pytest.approx(res.metrics["any"]["recall@2"])
    assert m["backtest.purchase.hit_share_at_3.buy_again"] == pytest.approx(0.5)
    assert m["backtest.users_served"] == 4 and m["backtest.any.users_active"] == 3
    assert m["backtest.popular.purchase.hit_at_2"] == 1.0
    # no parameters: the training search (params.search.mode) and the registry (model version tags) never
    # take a backtest for a training run
    assert run.data.params == {}


def test_a_rerun_replaces_its_row_and_its_mlflow_run(spark, lake):
    from training.search import space_id
    from training.tracking import last_search

    cfg, _ = lake
    backtest(spark, cfg, D, 1, source="synthetic")
    again = backtest(spark, cfg, D, 1, source="synthetic")
    assert_known_answer(again.metrics)
    (row,) = runs_of(spark, cfg, D, 1)
    (run,) = mlflow_runs(cfg, D)
    assert run.info.run_id == again.mlflow_run_id == json.loads(row["details"])["mlflow_run_id"]
    assert last_search(cfg, "2100-01-01", space_id([{"others_share": 0.0}])) is None


def test_no_lists_for_the_date_is_a_clear_error_or_a_skipped_row(spark, lake):
    cfg, _ = lake
    day = date(2026, 10, 20)
    with pytest.raises(NotReadyError, match=r"no served lists for 2026-10-20 in recommendations \(.*\): run "
                                            r"`reco score --date 2026-10-20` first"):
        backtest(spark, cfg, day, 1, source="synthetic")
    assert runs_of(spark, cfg, day, 1) == []
    res = backtest(spark, cfg, day, 1, source="synthetic", skip_missing=True)      # the nightly's mode
    assert res.status == "skipped" and "no served lists for 2026-10-20" in res.reason
    (row,) = runs_of(spark, cfg, day, 1)
    assert row["status"] == "skipped" and "reco score --date 2026-10-20" in json.loads(row["details"])["reason"]
    assert mlflow_runs(cfg, day) == []


def test_an_incomplete_window_is_a_clear_error_or_a_skipped_row(spark, lake):
    cfg, _ = lake
    # 2 days: 10-28 and 10-29, and only an hourly batch of 10-29 is in
    with pytest.raises(NotReadyError, match=r"2026-10-28 \.\. 2026-10-29, is not complete: .* is for 2026-10-28\. "
                                            r"Backtest once 2026-10-29 is ingested"):
        backtest(spark, cfg, D, 2, source="synthetic")
    with pytest.raises(NotReadyError, match="source 'online_retail' in pipeline_runs does not exist"):
        backtest(spark, cfg, D, 1, source="online_retail")
    res = backtest(spark, cfg, D, 2, source="synthetic", skip_missing=True)
    (row,) = runs_of(spark, cfg, D, 2)
    assert res.status == row["status"] == "skipped" and "is not complete" in json.loads(row["details"])["reason"]


def test_the_command_prints_a_summary_and_fails_in_one_line(spark, lake, monkeypatch, capsys):
    cfg, tmp = lake
    for key, value in {"RECO__LAKEHOUSE__ROOT": cfg.lakehouse.root,
                       "RECO__LAKEHOUSE__STAGING_DIR": str(tmp / "staging"),
                       "RECO__QUALITY__QUALITY_DIR": cfg.quality.quality_dir,
                       "RECO__MLFLOW__TRACKING_URI": cfg.mlflow.tracking_uri,
                       "RECO__MLFLOW__ARTIFACT_ROOT": cfg.mlflow.artifact_root,
                       "RECO__BACKTEST__KS": "[2, 3]"}.items():
        monkeypatch.setenv(key, value)
    assert main(["backtest", "--date", "2026-10-27"]) == 0
    out = capsys.readouterr().out
    assert "backtest of the lists of 2026-10-27 against 2026-10-28 .. 2026-10-28 (model v7" in out
    served = next(line.split() for line in out.splitlines() if line.split()[:2] == ["served", "purchase"])
    assert served[2] == "2" and float(served[3]) == 0.5       # users active, hit@2
    assert "hits@2 by source (any): buy_again 50%, personal 50%" in out
    assert main(["backtest", "--date", "2026-10-20"]) == 2
    err = capsys.readouterr().err
    assert "error: no served lists for 2026-10-20" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["backtest", "--date", "2026-10-27", "--days", "0"])
    assert "--days must be a whole number of days, 1 or more" in capsys.readouterr().err
