"""End to end through Airflow on tiny synthetic data with a real Redis: the README's run command runs the
nightly DAG (``airflow dags test``), then the hourly DAG refreshes the lists of the hour's active
customers, and only theirs, as a patch over the nightly version. Rerunning the hour changes nothing.

Slow by nature (two Airflow runs, each with its own Spark): one module-scoped lakehouse serves every test.
"""
from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from core.names import HOURLY_DAG_ID
from orchestration.harness import run_dag
from orchestration.cli import main
from config import load_config
from jobs.hourly import HOURLY_LISTS, HOURLY_RECS
from jobs.hourly_window import batch_id
from jobs.sources import default_run_date
from jobs.lakehouse import Lakehouse
from jobs.publish import keyspace, redis_client
from jobs.tables import content_checksum
from serving.client import LookupClient
from serving.versions import current_version, read_meta

ENV = {
    "RECO__SYNTHETIC__N_EVENTS": "9000", "RECO__SYNTHETIC__N_USERS": "150",
    "RECO__SYNTHETIC__N_ITEMS": "80", "RECO__SYNTHETIC__DAYS": "40",
    "RECO__SPLITS__VALID_DAYS": "7", "RECO__SPLITS__TEST_DAYS": "7",
    "RECO__SPARK__MASTER": "local[2]", "RECO__SPARK__DRIVER_MEMORY": "1g",
    "RECO__SPARK__CONF__spark.sql.shuffle.partitions": "2",
    "RECO__TRAINING__LAUNCHER": "inprocess", "RECO__TRAINING__OPTIM__MAX_EPOCHS": "1",
    "RECO__TRAINING__OPTIM__OTHERS_SHARE": "[0.0]", "RECO__TRAINING__OPTIM__SEARCH": "[{}]",
    "RECO__TRAINING__MODEL__DIM": "16",
    "RECO__TRAINING__MODEL__HIDDEN": "32", "RECO__TRAINING__BASELINES": "[popular]",
    "RECO__TRAINING__GATE__BASELINES": "[]",            # the first model becomes champion
    "RECO__SCORING__K": "10", "RECO__SCORING__USER_BUCKETS": "2",
    "RECO__SCORING__LISTS__FALLBACK_K": "30", "RECO__SCORING__LISTS__TRENDING_MIN_EVENTS": "1",
    "RECO__REDIS__EMBEDDED": "false", "RECO__REDIS__NAMESPACE": "e2e",
    "RECO__ORCHESTRATION__RETRIES": "0",
}


@pytest.fixture(scope="module")
def lake(tmp_path_factory, redis_server, spark):
    tmp = tmp_path_factory.mktemp("e2e")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**ENV, "RECO__LAKEHOUSE__ROOT": str(tmp / "lakehouse"),
                           "RECO__LAKEHOUSE__STAGING_DIR": str(tmp / "staging"),
                           "RECO__QUALITY__QUALITY_DIR": str(tmp / "quality"),
                           "RECO__MLFLOW__TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
                           "RECO__MLFLOW__ARTIFACT_ROOT": str(tmp / "mlartifacts"),
                           "RECO__REDIS__URL": redis_server}.items():
            mp.setenv(key, value)
        cfg = load_config()
        yield cfg


def _dag_runs(cfg):
    with sqlite3.connect(Path(cfg.airflow_home) / "airflow.db") as db:
        return db.execute("select dag_id, state from dag_run order by id").fetchall()


def _lists(df, key="user_id"):
    rows = df.select(key, "rank", "item_id", "score").collect()
    out = {}
    for r in sorted(rows, key=lambda r: (r[key], r["rank"])):
        out.setdefault(r[key], []).append((r["item_id"], round(float(r["score"]), 4) if r["score"] is not None else None))
    return out


def _served(client, user):
    hit = client.recommendations(user, k=10)
    return hit, [(i, round(float(s), 4) if s == s else None) for i, s in zip(hit.items, hit.scores)]


@pytest.fixture(scope="module")
def nightly(lake, spark):
    assert main(["run"]) == 0                 # the README's run command: the nightly DAG through Airflow
    return default_run_date(lake, "synthetic")


def test_reco_run_goes_through_airflow_and_publishes(lake, spark, nightly, capfd):
    assert _dag_runs(lake) == [("reco_nightly", "success")]
    lh = Lakehouse(spark, lake)
    recs = lh.read("recommendations").filter(F.col("run_date") == F.lit(nightly).cast("date"))
    score_id = recs.select("score_id").first()[0]
    r, ks = redis_client(lake), keyspace(lake)
    assert current_version(r, ks) == score_id
    steps = {row[0] for row in lh.read("pipeline_runs").select("step").collect()}
    assert {"ingest", "train", "gate", "score"} <= steps
    # the nightly's backtest ran: the lists of the day before do not exist on a fresh lakehouse, so it is skipped
    (backtest,) = lh.read("pipeline_runs").filter(F.col("step") == "backtest").collect()
    assert (backtest["run_date"], backtest["status"]) == (nightly - timedelta(days=1), "skipped")
    assert "no served lists for" in backtest["details"]
    client = LookupClient(r, ks)
    for user, expected in list(_lists(recs).items())[:20]:
        hit, served = _served(client, user)
        assert hit.source == "personal" and served == expected

    # `reco run` is quiet: the whole output went to a log file, the summary the report task wrote to a file of
    # its own (the console printed it at the end)
    logs = Path(lake.logs_dir)
    assert "[DAG TEST] end task task_id=report" in (logs / f"reco_nightly-{nightly}.log").read_text()
    summary = (logs / f"reco_nightly-{nightly}-summary.txt").read_text()
    assert "champion: retailreco-two-tower v1" in summary and "http://127.0.0.1:8000/" in summary

    # the run's summary (the nightly's last task prints it; here it is asked for again)
    capfd.readouterr()
    assert main(["report"]) == 0
    out = capfd.readouterr().out
    for table in ("silver_interactions", "training_examples", "recommendations", "fallback_lists"):
        line = next(l for l in out.splitlines() if l.startswith(table + " "))
        assert str(Path(lake.lakehouse.root) / table) in line
    assert "champion: retailreco-two-tower v1" in out and "model retailreco-two-tower v1 for" in out
    redis_line = next(l for l in out.splitlines() if l.startswith("Redis: "))
    assert score_id in redis_line and "(personal)" in redis_line and "(global, fallback)" in redis_line
    assert "http://127.0.0.1:8000/" in out and "http://127.0.0.1:8080/" in out
    # the README's query command works against what the run built
    daily = Path(lake.lakehouse.root).parent / "daily.csv"
    assert main(["sql", "daily_sales", "--param", "start_date=2000-01-01", "--param", "end_date=2100-01-01",
                 "--out", str(daily)]) == 0
    assert daily.read_text().count("\n") > 10


def test_hourly_refreshes_the_active_customers_only(lake, spark, nightly):
    hour = datetime.combine(nightly + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc) + timedelta(hours=12)
    end = hour + timedelta(hours=1)
    lh = Lakehouse(spark, lake)
    r, ks = redis_client(lake), keyspace(lake)
    base = current_version(r, ks)
    before = _lists(lh.read("recommendations").filter(F.col("run_date") == F.lit(nightly).cast("date")))

    assert run_dag(lake, HOURLY_DAG_ID, hour) == 0
    assert _dag_runs(lake)[-1] == ("reco_hourly", "success")
    active = {row[0] for row in lh.read("silver_interactions")
              .filter((F.col("batch_id") == batch_id(end)) & ~F.col("is_anonymous")).select("user_id").distinct().collect()}
    assert active, "the hour has no identified customer: pick a busier hour"
    hourly = _lists(lh.read(HOURLY_RECS).filter(F.col("hour_end") == F.lit(end.replace(tzinfo=None))))
    assert set(hourly) == active

    patch = current_version(r, ks)
    assert patch != base and read_meta(r, ks, patch).get("base") == base
    client = LookupClient(r, ks)
    changed = 0
    for user in active:
        hit, served = _served(client, user)
        assert hit.layer == "patch" and served == hourly[user]
        changed += served != before.get(user)
    assert changed == len(active)          # every active customer's list moved (fresh history and lists)
    for user in sorted(set(before) - active):
        hit, served = _served(client, user)
        assert hit.layer == "base" and served == before[user], user

    # the same hour again, all four steps in one call (`reco hourly all`, what orchestration.hourly_tasks=one
    # runs as its single task; the Airflow path above ran them as four tasks): identical tables, the same
    # patch, readers untouched. `ingested_at` is the audit time of the watermark's latest write.
    sums = _checksums(lh)
    assert main(["hourly", "all", "--start", hour.isoformat(), "--end", end.isoformat()]) == 0
    assert _checksums(lh) == sums
    assert current_version(r, ks) == patch


def _checksums(lh):
    return {t: content_checksum(lh.read(t), exclude=("ingested_at",))
            for t in (HOURLY_RECS, HOURLY_LISTS, "silver_interactions", "watermarks")}
