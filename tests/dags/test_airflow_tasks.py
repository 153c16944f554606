"""The task callable, the failure summary, and the local harness (env, DB + pool, dags-test dates)."""
from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
from datetime import date, datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pendulum
import pytest

from orchestration import harness, schedule, tasks
from config import ConfigError, load_config
from tests.conftest import make_config


# ------------------------------------------------------------------ run_reco


def test_run_reco_raises_with_command_and_exit_code_on_an_unknown_source():
    """An unknown source exits 2 before any Spark session starts."""
    from airflow.sdk.exceptions import AirflowException

    args = ["ingest", "--source", "no-such-source", "--date", "2026-10-28"]
    with pytest.raises(AirflowException) as err:
        tasks.run_reco(args)
    assert str(err.value) == "`reco ingest --source no-such-source --date 2026-10-28` failed with exit code 2"


def test_run_reco_turns_an_argparse_exit_into_the_same_error():
    from airflow.exceptions import AirflowException  # the core name is the same class

    with pytest.raises(AirflowException, match=r"`reco features --date not-a-date` failed with exit code 2"):
        tasks.run_reco(["features", "--date", "not-a-date"])


# ------------------------------------------------------------------ failure callback


@pytest.fixture
def failed_context():
    cfg = load_config()
    task = tasks.reco_task("ingest", ["ingest", "--source", "synthetic", "--date", schedule.RUN_DATE], cfg=cfg)
    start, end = pendulum.datetime(2026, 10, 28, 2, tz="UTC"), pendulum.datetime(2026, 10, 29, 2, tz="UTC")
    task.render_template_fields({"data_interval_start": start, "data_interval_end": end})
    ti = SimpleNamespace(dag_id="reco_nightly", task_id="ingest", run_id="scheduled__2026-10-28T02:00:00+00:00",
                         try_number=3, max_tries=2)
    return {"ti": ti, "task": task, "dag_run": SimpleNamespace(data_interval_start=start, data_interval_end=end),
            "exception": RuntimeError("`reco ingest --source synthetic --date 2026-10-28` failed with exit code 3")}


def test_failure_summary_names_the_run_and_the_command_to_rerun(failed_context):
    text = tasks.failure_summary(failed_context)
    assert "reco_nightly.ingest" in text
    assert "run id        : scheduled__2026-10-28T02:00:00+00:00" in text
    assert "data interval : 2026-10-28 02:00:00+00:00 .. 2026-10-29 02:00:00+00:00" in text
    assert "try           : 3 of 3" in text
    assert "error         : `reco ingest --source synthetic --date 2026-10-28` failed with exit code 3" in text
    assert "rerun by hand : reco ingest --source synthetic --date 2026-10-28" in text


def test_log_failure_logs_the_summary(failed_context, caplog):
    with caplog.at_level(logging.ERROR, logger="orchestration.tasks"):
        tasks.log_failure(failed_context)
    assert "rerun by hand : reco ingest --source synthetic --date 2026-10-28" in caplog.text


def test_failure_summary_of_a_spark_submit_task(failed_context):
    cfg = load_config(overrides={"orchestration": {"executor": "spark_submit"}})
    task = tasks.reco_task("gate", ["gate", "--date", "2026-10-28"], cfg=cfg)
    text = tasks.failure_summary({**failed_context, "task": task, "ti": None})
    assert "rerun by hand : reco gate --date 2026-10-28" in text


# ------------------------------------------------------------------ schedules and dags-test dates


def test_dag_test_date_is_the_end_of_the_interval_that_covers_the_run_date():
    cfg = load_config(environ={}, overrides={"orchestration": {"nightly_schedule": "0 2 * * *",
                                                               "hourly_schedule": "10 * * * *"}})
    utc = timezone.utc
    assert schedule.dag_test_date(cfg, "reco_nightly", "2026-10-28") == datetime(2026, 10, 29, 2, tzinfo=utc)
    assert schedule.dag_test_date(cfg, "reco_nightly", date(2026, 12, 31)) == datetime(2027, 1, 1, 2, tzinfo=utc)
    assert schedule.dag_test_date(cfg, "reco_maintenance", "2026-10-28") == datetime(2026, 10, 29, 5, 30, tzinfo=utc)
    assert schedule.dag_test_date(cfg, "reco_hourly", "2026-10-28T13:00") == datetime(2026, 10, 28, 14, 10, tzinfo=utc)
    assert schedule.dag_test_date(cfg, "reco_hourly", "2026-10-28T15:00+02:00") == datetime(2026, 10, 28, 14, 10, tzinfo=utc)
    assert schedule.dag_test_date(cfg, "reco_hourly", "2026-10-28T23:00Z") == datetime(2026, 10, 29, 0, 10, tzinfo=utc)
    with pytest.raises(ValueError, match="whole clock hours"):
        schedule.dag_test_date(cfg, "reco_hourly", "2026-10-28T13:30")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        schedule.dag_test_date(cfg, "reco_nightly", "28/10/2026")
    with pytest.raises(ValueError, match="unknown DAG"):
        schedule.dag_test_date(cfg, "reco_weekly", "2026-10-28")


def test_schedules_that_do_not_tile_days_or_hours_are_refused():
    assert schedule.daily_offset("30 1 * * *").total_seconds() == 5400
    assert schedule.hourly_offset("0 * * * *").total_seconds() == 0
    for bad in ("0 2 * * 1-5", "*/5 * * * *", "0 24 * * *", "@daily"):
        with pytest.raises(ConfigError, match="orchestration.nightly_schedule"):
            schedule.daily_offset(bad)
    for bad in ("*/15 * * * *", "0 2 * * *", "60 * * * *"):
        with pytest.raises(ConfigError, match="orchestration.hourly_schedule"):
            schedule.hourly_offset(bad)


# ------------------------------------------------------------------ harness


def test_airflow_env(tmp_path):
    cfg = make_config(tmp_path, orchestration={"airflow_home": str(tmp_path / "af"), "parallelism": 3})
    env = harness.airflow_env(cfg, base={"PATH": "/usr/bin:/bin", "KEEP": "me", "PYTHONPATH": "/x"})
    venv_bin = str(Path(sys.prefix) / "bin")
    assert env["KEEP"] == "me"
    assert env["PATH"] == f"{venv_bin}:/usr/bin:/bin"
    assert env["PYTHONPATH"] == f"{harness.PROJECT_ROOT}:/x"
    assert env["AIRFLOW_HOME"] == str(tmp_path / "af")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(harness.PROJECT_ROOT / "dags")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path / 'af' / 'airflow.db'}"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "3"
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://127.0.0.1:")
    assert env["TZ"] == "UTC"   # the tasks' jobs and Airflow's logs in UTC (jobs.spark.use_utc)
    # the default airflow_home: <lakehouse>/_airflow
    assert harness.airflow_env(make_config(tmp_path))["AIRFLOW_HOME"] == str(tmp_path / "lakehouse" / "_airflow")


def test_config_snapshot_rebuilds_the_same_config(tmp_path):
    cfg = make_config(tmp_path, orchestration={"source": "synthetic", "retries": 0})
    env = harness.config_snapshot(cfg, tmp_path / "snap")
    assert load_config(env=env["RECO_ENV"], conf_dir=Path(env["RECO_CONF_DIR"]), environ={}) == cfg


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    """A config whose AIRFLOW_HOME is a fresh temp folder, after ensure_airflow (runs the airflow CLI)."""
    tmp = tmp_path_factory.mktemp("harness")
    cfg = make_config(tmp, orchestration={"airflow_home": str(tmp / "af")})
    harness.ensure_airflow(cfg)
    return cfg


def _pools(cfg):
    with sqlite3.connect(Path(cfg.airflow_home) / "airflow.db") as db:
        return dict(db.execute("select pool, slots from slot_pool"))


def test_ensure_airflow_creates_the_db_and_the_pool_once(migrated, monkeypatch):
    assert (Path(migrated.airflow_home) / "airflow.db").is_file()
    assert _pools(migrated)[migrated.orchestration.pool] == migrated.orchestration.pool_slots

    def no_cli(*args, **kwargs):
        raise AssertionError(f"airflow CLI called again: {args[1:]}")

    monkeypatch.setattr(harness, "_airflow", no_cli)
    harness.ensure_airflow(migrated)   # nothing changed: no CLI call


def test_ensure_airflow_updates_the_pool_when_the_config_changes(migrated, monkeypatch):
    calls = []
    real = harness._airflow
    monkeypatch.setattr(harness, "_airflow", lambda cfg, *args, **kw: calls.append(args) or real(cfg, *args, **kw))
    wider = migrated.model_copy(update={"orchestration": migrated.orchestration.model_copy(update={"pool_slots": 2})})
    harness.ensure_airflow(wider)
    assert [c[:2] for c in calls] == [("pools", "set")]   # no second migration
    assert _pools(migrated)[migrated.orchestration.pool] == 2


@pytest.mark.parametrize("dag_id, run_date, interval", [
    ("reco_nightly", "2026-10-28", ("2026-10-28 02:00:00", "2026-10-29 02:00:00")),
    ("reco_hourly", "2026-10-28T13:00", ("2026-10-28 13:10:00", "2026-10-28 14:10:00")),
])
def test_airflow_dags_test_with_the_harness_date_runs_the_wanted_interval(migrated, dag_id, run_date, interval):
    """What `airflow dags test` really does with the logical date run_dag passes (tasks marked success,
    no job runs): the DagRun's data interval is the one that renders the run date."""
    logical = schedule.dag_test_date(migrated, dag_id, run_date)
    proc = subprocess.run([str(Path(sys.prefix) / "bin" / "airflow"), "dags", "test", dag_id, logical.isoformat(),
                           "--mark-success-pattern", ".*"],
                          env=harness.airflow_env(migrated), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with sqlite3.connect(Path(migrated.airflow_home) / "airflow.db") as db:
        rows = db.execute("select data_interval_start, data_interval_end, state from dag_run where dag_id = ?",
                          (dag_id,)).fetchall()
    assert [(s[:19], e[:19], state) for s, e, state in rows] == [(*interval, "success")]


def test_run_foreground_leaves_no_process_behind(tmp_path):
    """What the command started and left running (as airflow standalone's triggerer can) is stopped."""
    pid_file = tmp_path / "pid"
    code = harness._run_foreground(["bash", "-c", f"sleep 300 & echo $! > {pid_file}; exit 3"], env=dict(os.environ))
    assert code == 3
    stat = Path(f"/proc/{pid_file.read_text().strip()}/stat")
    state = stat.read_text().rsplit(")", 1)[1].split()[0] if stat.exists() else "gone"
    assert state in ("gone", "Z"), f"the background sleep is still alive (state {state})"


def test_run_task_runs_one_task_in_its_own_airflow_process(migrated, monkeypatch):
    seen = {}
    monkeypatch.setattr(harness, "_run_foreground", lambda cmd, env: seen.update(cmd=cmd, env=env) or 0)
    assert harness.run_task(migrated, "reco_hourly", "score", "2026-10-28T13:00") == 0
    assert seen["cmd"] == [str(Path(sys.prefix) / "bin" / "airflow"), "tasks", "test", "reco_hourly", "score",
                           "2026-10-28T14:10:00+00:00"]   # the logical date run_dag gives the same hour
    # the task parses the DAGs and runs with exactly this config, as run_dag's tasks do
    snap = seen["env"]
    assert load_config(env=snap["RECO_ENV"], conf_dir=Path(snap["RECO_CONF_DIR"]), environ={}) == migrated
    assert not any(k.startswith("RECO__") for k in snap)
