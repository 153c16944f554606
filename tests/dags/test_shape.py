"""The DAGs' tasks, edges, guards, rendered arguments and assets, for both executors."""
from __future__ import annotations

import textwrap
from datetime import timedelta

import pendulum
import pytest

from core.names import HOURLY_DAG_ID, MAINTENANCE_DAG_ID, NIGHTLY_DAG_ID
from orchestration.schedule import ASSET_URIS
from orchestration.tasks import CLI_PATH, log_failure, run_reco
from config import load_config
from tests.dags.conftest import rendered_args, run_python

NIGHTLY_CHAIN = ["ingest", "validate", "features", "train", "gate", "score", "monitor", "publish", "report"]
NIGHTLY_TASKS = [*NIGHTLY_CHAIN, "backtest", "feedback"]   # the backtest hangs off publish; feedback stands alone
HOURLY_CHAIN = ["ingest", "refresh", "score", "publish"]

UTC = pendulum.UTC
# the nightly run for the day 2026-10-28 (cron 0 2 * * *) and the hourly run for 13:00-14:00 (cron 10 * * * *)
NIGHTLY_INTERVAL = (pendulum.datetime(2026, 10, 28, 2, tz=UTC), pendulum.datetime(2026, 10, 29, 2, tz=UTC))
HOURLY_INTERVAL = (pendulum.datetime(2026, 10, 28, 13, 10, tz=UTC), pendulum.datetime(2026, 10, 28, 14, 10, tz=UTC))
H_START, H_END = "2026-10-28T13:00:00+00:00", "2026-10-28T14:00:00+00:00"


@pytest.fixture(scope="module")
def cfg():
    return load_config()


def _source(cfg):
    return cfg.orchestration.source or cfg.default_source


def expected_nightly(source):
    d = "2026-10-28"
    return {
        "ingest": ["ingest", "--source", source, "--date", d],
        "validate": ["check", "--source", source, "--date", d],
        "features": ["features", "--date", d],
        "train": ["train", "--date", d, "--no-gate", "--no-test-phase"],
        "gate": ["gate", "--date", d],
        "score": ["score", "--date", d],
        "monitor": ["monitor", "--source", source, "--date", d],
        "publish": ["publish", "--date", d],
        "report": ["report", "--date", d],
        # the lists of the day before (backtest.days: 1), against the day this run ingested
        "backtest": ["backtest", "--source", source, "--date", "2026-10-27", "--days", "1", "--skip-missing"],
        # the streams drained, then the day's events attributed (feedback.drain.nightly)
        "feedback": ["feedback", "drain", "--date", d],
    }


def expected_maintenance(source):
    return {"maintain": ["maintain", "--source", source, "--date", "2026-10-28"]}


def expected_hourly(source):
    window = ["--start", H_START, "--end", H_END]
    return {
        "ingest": ["hourly", "ingest", "--source", source, *window],
        "refresh": ["hourly", "refresh", *window],
        "score": ["hourly", "score", *window],
        "publish": ["hourly", "publish", *window],
    }


def edges(dag):
    return {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}


def chain_edges(ids):
    return set(zip(ids, ids[1:]))


def test_task_ids_and_edges(dagbag):
    nightly, hourly = dagbag.dags[NIGHTLY_DAG_ID], dagbag.dags[HOURLY_DAG_ID]
    assert sorted(nightly.task_ids) == sorted(NIGHTLY_TASKS)
    assert edges(nightly) == chain_edges(NIGHTLY_CHAIN) | {("publish", "backtest")}
    assert sorted(hourly.task_ids) == sorted(HOURLY_CHAIN)
    assert edges(hourly) == chain_edges(HOURLY_CHAIN)
    assert dagbag.dags[MAINTENANCE_DAG_ID].task_ids == ["maintain"]


def test_dag_settings(dagbag, cfg):
    orch = cfg.orchestration
    for dag, cron in ((dagbag.dags[NIGHTLY_DAG_ID], orch.nightly_schedule),
                      (dagbag.dags[HOURLY_DAG_ID], orch.hourly_schedule),
                      (dagbag.dags[MAINTENANCE_DAG_ID], orch.maintenance_schedule)):
        assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
        assert dag.timetable.expression == cron
        assert str(dag.timetable.timezone) == "UTC"
        assert dag.start_date == pendulum.datetime(*map(int, orch.start_date.split("-")), tz=UTC)
        assert dag.catchup is False
        assert dag.max_active_runs == 1
        assert "retailreco" in dag.tags and dag.doc_md


def test_every_task_is_guarded_from_config(dagbag, cfg):
    orch = cfg.orchestration
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            where = f"{dag.dag_id}.{task.task_id}"
            assert type(task).__name__ == "PythonOperator", where
            assert task.python_callable is run_reco, where
            assert task.pool == orch.pool, where
            assert task.retries == orch.retries, where
            assert task.retry_delay == timedelta(seconds=orch.retry_delay_s), where
            assert task.retry_exponential_backoff, where
            assert task.max_retry_delay == timedelta(seconds=orch.max_retry_delay_s), where
            long = dag.dag_id == NIGHTLY_DAG_ID and task.task_id in ("train", "gate")
            minutes = orch.train_timeout_min if long else orch.task_timeout_min
            assert task.execution_timeout == timedelta(minutes=minutes), where
            assert log_failure in task.on_failure_callback, where


def test_nightly_renders_the_day_its_interval_starts_in(dagbag, cfg):
    dag = dagbag.dags[NIGHTLY_DAG_ID]
    got = {t.task_id: rendered_args(t, *NIGHTLY_INTERVAL) for t in dag.tasks}
    assert got == expected_nightly(_source(cfg))


def test_maintenance_renders_its_day_and_shares_the_pipeline_pool(dagbag, cfg):
    dag = dagbag.dags[MAINTENANCE_DAG_ID]
    got = {t.task_id: rendered_args(t, *NIGHTLY_INTERVAL) for t in dag.tasks}
    assert got == expected_maintenance(_source(cfg))
    # the nightly no longer maintains tables on its critical path
    assert "--maintain" not in rendered_args(dagbag.dags[NIGHTLY_DAG_ID].get_task("features"), *NIGHTLY_INTERVAL)


def test_hourly_renders_the_clock_hour_as_iso_with_time_zone(dagbag, cfg):
    dag = dagbag.dags[HOURLY_DAG_ID]
    got = {t.task_id: rendered_args(t, *HOURLY_INTERVAL) for t in dag.tasks}
    assert got == expected_hourly(_source(cfg))
    # an interval whose start is on the hour (cron "0 * * * *") renders the same hour
    on_the_hour = (pendulum.datetime(2026, 10, 28, 13, tz=UTC), pendulum.datetime(2026, 10, 28, 14, tz=UTC))
    assert rendered_args(dag.get_task("score"), *on_the_hour) == expected_hourly(_source(cfg))["score"]


def test_assets_link_nightly_and_hourly(dagbag):
    nightly, hourly = dagbag.dags[NIGHTLY_DAG_ID], dagbag.dags[HOURLY_DAG_ID]

    def uris(objs):
        return {a.uri for a in objs}

    assert uris(nightly.get_task("gate").outlets) == {ASSET_URIS["champion"]}
    assert uris(hourly.get_task("score").inlets) == {ASSET_URIS["champion"]}
    assert uris(nightly.get_task("publish").outlets) == {ASSET_URIS["nightly_lists"]}
    assert uris(hourly.get_task("publish").inlets) == {ASSET_URIS["nightly_lists"]}
    assert uris(hourly.get_task("publish").outlets) == {ASSET_URIS["hourly_lists"]}
    assert uris(nightly.get_task("ingest").outlets) == uris(hourly.get_task("ingest").outlets) == {
        ASSET_URIS["silver_interactions"]}


# Loads the DAGs in a fresh interpreter with the executor switched by environment, and renders each
# task's arguments for the same intervals as above.
SPARK_SUBMIT_SHAPE = textwrap.dedent("""
    import json
    import pendulum
    from airflow.dag_processing.dagbag import DagBag
    from orchestration.schedule import DAGS_FOLDER
    from tests.dags.conftest import rendered_args
    from tests.dags.test_shape import HOURLY_INTERVAL, NIGHTLY_INTERVAL
    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    out = {"errors": {k: str(v)[-800:] for k, v in bag.import_errors.items()}, "tasks": {}}
    for dag in bag.dags.values():
        interval = HOURLY_INTERVAL if dag.dag_id == "reco_hourly" else NIGHTLY_INTERVAL
        for t in dag.tasks:
            out["tasks"][f"{dag.dag_id}.{t.task_id}"] = dict(
                cls=type(t).__name__, conn_id=t._conn_id, deploy_mode=t._deploy_mode, packages=t.packages,
                conf=t.conf, env_vars=t.env_vars, application=t.application, args=rendered_args(t, *interval),
                name=t.name, pool=t.pool, retries=t.retries, timeout_s=t.execution_timeout.total_seconds(),
                callbacks=[c.__name__ for c in t.on_failure_callback])
    print(json.dumps(out))
""")


def test_spark_submit_executor_builds_spark_submit_operators(cfg, airflow_home):
    """RECO__ORCHESTRATION__EXECUTOR=spark_submit (config re-read at parse): SparkSubmitOperators, same args."""
    env = {
        "RECO__ORCHESTRATION__EXECUTOR": "spark_submit",
        "RECO__ORCHESTRATION__SPARK_SUBMIT__CONN_ID": "spark_cluster",
        "RECO__ORCHESTRATION__SPARK_SUBMIT__DEPLOY_MODE": "cluster",
        "RECO__ORCHESTRATION__SPARK_SUBMIT__PACKAGES": "[io.delta:delta-spark_2.13:4.4.0, org.example:extra:1.0]",
        "RECO__ORCHESTRATION__SPARK_SUBMIT__CONF": "{spark.executor.memory: 8g}",
        "RECO__ORCHESTRATION__SPARK_SUBMIT__ENV_VARS": "{RECO_ENV: prod}",
    }
    out = run_python(SPARK_SUBMIT_SHAPE, env=env)
    assert out["errors"] == {}
    src, orch = _source(cfg), cfg.orchestration
    want = {**{f"{NIGHTLY_DAG_ID}.{k}": v for k, v in expected_nightly(src).items()},
            **{f"{HOURLY_DAG_ID}.{k}": v for k, v in expected_hourly(src).items()},
            **{f"{MAINTENANCE_DAG_ID}.{k}": v for k, v in expected_maintenance(src).items()}}
    assert {k: t["args"] for k, t in out["tasks"].items()} == want
    for key, t in out["tasks"].items():
        task_id = key.split(".")[1]
        assert t["cls"] == "SparkSubmitOperator", key
        assert (t["conn_id"], t["deploy_mode"]) == ("spark_cluster", "cluster"), key
        assert t["packages"] == "io.delta:delta-spark_2.13:4.4.0,org.example:extra:1.0", key
        assert t["conf"] == {"spark.executor.memory": "8g"} and t["env_vars"] == {"RECO_ENV": "prod"}, key
        assert t["application"] == str(CLI_PATH), key
        assert t["name"] == f"reco-{task_id}", key
        assert (t["pool"], t["retries"]) == (orch.pool, orch.retries), key
        long = key in (f"{NIGHTLY_DAG_ID}.train", f"{NIGHTLY_DAG_ID}.gate")
        assert t["timeout_s"] == 60 * (orch.train_timeout_min if long else orch.task_timeout_min), key
        assert t["callbacks"] == ["log_failure"], key


ONE_TASK_HOURLY = textwrap.dedent("""
    import json
    from airflow.dag_processing.dagbag import DagBag
    from orchestration.schedule import DAGS_FOLDER
    from orchestration.tasks import run_reco
    from tests.dags.conftest import rendered_args
    from tests.dags.test_shape import HOURLY_INTERVAL, edges
    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    dag = bag.dags["reco_hourly"]
    out = {"errors": {k: str(v)[-800:] for k, v in bag.import_errors.items()}, "edges": sorted(edges(dag)),
           "nightly": sorted(bag.dags["reco_nightly"].task_ids), "tasks": {}}
    for t in dag.tasks:
        out["tasks"][t.task_id] = dict(
            in_process=t.python_callable is run_reco, args=rendered_args(t, *HOURLY_INTERVAL), pool=t.pool,
            retries=t.retries, timeout_s=t.execution_timeout.total_seconds(),
            callbacks=[c.__name__ for c in t.on_failure_callback],
            inlets=sorted(a.uri for a in t.inlets), outlets=sorted(a.uri for a in t.outlets))
    print(json.dumps(out))
""")


def test_hourly_as_one_task_runs_every_step_in_one_process(cfg, airflow_home):
    """RECO__ORCHESTRATION__HOURLY_TASKS=one: a single guarded task `reco hourly all` for the same window,
    holding every asset the four steps read and write; the nightly is unchanged."""
    out = run_python(ONE_TASK_HOURLY, env={"RECO__ORCHESTRATION__HOURLY_TASKS": "one"})
    assert out["errors"] == {}
    assert out["edges"] == [] and sorted(out["nightly"]) == sorted(NIGHTLY_TASKS)
    assert list(out["tasks"]) == ["update"]
    t, orch, steps = out["tasks"]["update"], cfg.orchestration, expected_hourly(_source(cfg))
    assert t["args"] == ["hourly", "all", *steps["ingest"][2:]]
    assert t["in_process"] and t["callbacks"] == ["log_failure"]
    assert (t["pool"], t["retries"], t["timeout_s"]) == (orch.pool, orch.retries, 60 * orch.task_timeout_min)
    assert t["inlets"] == sorted([ASSET_URIS["champion"], ASSET_URIS["nightly_lists"]])
    assert t["outlets"] == sorted([ASSET_URIS["silver_interactions"], ASSET_URIS["hourly_lists"]])


BACKTEST_TASK = textwrap.dedent("""
    import json
    from airflow.dag_processing.dagbag import DagBag
    from orchestration.schedule import DAGS_FOLDER
    from tests.dags.conftest import rendered_args
    from tests.dags.test_shape import NIGHTLY_INTERVAL, edges
    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    dag = bag.dags["reco_nightly"]
    task = dag.task_dict.get("backtest")
    print(json.dumps({"errors": {k: str(v)[-800:] for k, v in bag.import_errors.items()},
                      "edges": sorted(edges(dag)), "args": rendered_args(task, *NIGHTLY_INTERVAL) if task else None}))
""")


@pytest.mark.parametrize("env, args", [
    # a 3-day window: the night of 10-28 backtests the lists of 10-25 against 10-26 .. 10-28
    ({"RECO__BACKTEST__DAYS": "3"}, ["--date", "2026-10-25", "--days", "3", "--skip-missing"]),
    ({"RECO__BACKTEST__ENABLED": "false"}, None),
])
def test_the_nightly_backtest_follows_its_config(cfg, airflow_home, env, args):
    out = run_python(BACKTEST_TASK, env=env)
    assert out["errors"] == {}
    if args is None:
        assert sorted(map(tuple, out["edges"])) == sorted(chain_edges(NIGHTLY_CHAIN))
    else:
        assert out["args"] == ["backtest", "--source", _source(cfg), *args]
        assert ["publish", "backtest"] in out["edges"]


NIGHTLY_TASK_IDS = textwrap.dedent("""
    import json
    from airflow.dag_processing.dagbag import DagBag
    from orchestration.schedule import DAGS_FOLDER
    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    print(json.dumps({"errors": {k: str(v)[-800:] for k, v in bag.import_errors.items()},
                      "tasks": sorted(bag.dags["reco_nightly"].task_ids)}))
""")


def test_the_nightly_feedback_task_follows_its_switch(airflow_home):
    out = run_python(NIGHTLY_TASK_IDS, env={"RECO__FEEDBACK__DRAIN__NIGHTLY": "false"})
    assert out["errors"] == {}
    assert out["tasks"] == sorted(set(NIGHTLY_TASKS) - {"feedback"})
