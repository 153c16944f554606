"""Airflow wiring for the ``reco`` jobs: the task factory both DAG files use, and the local harness.

The DAG files (``dags/nightly.py``, ``dags/hourly.py``) only wire tasks made by :func:`reco_task`.
Each task runs one ``reco`` sub-command, either in the Airflow worker (``orchestration.executor:
inprocess``, a PythonOperator calling :func:`run_reco`) or through ``spark-submit``
(``spark_submit``, a SparkSubmitOperator). Retries, backoff, timeouts, the pool and the failure
summary come from ``cfg.orchestration`` and are the same for every task.

Parse time stays light: this module imports nothing heavy (no pyspark, torch, mlflow, redis, great
expectations, delta) and opens no connection, Variable or database. Airflow itself is imported only
inside the functions that build operators, so the harness below can run without it.

What a run covers (the DAGs' timetables are ``CronDataIntervalTimetable`` over the config's cron
strings, in UTC): the nightly's data interval is ``[D hh:mm, D+1 hh:mm)`` for a cron ``mm hh * * *``
and its jobs get ``--date D`` (the calendar day the interval starts in); the hourly's data interval is
``[H:mm, H+1:mm)`` for a cron ``mm * * * *`` and its jobs get the clock hour ``--start H:00 --end
H+1:00``. The cron's offset is the grace given to late events; the covered day or hour always ended
before the run starts.

The local harness (``make run``, ``make airflow``)::

    python -m jobs.airflow_tasks run-dag reco_nightly 2026-10-28        # covers the day 2026-10-28
    python -m jobs.airflow_tasks run-dag reco_hourly 2026-10-28T13:00   # covers [13:00, 14:00) UTC
    python -m jobs.airflow_tasks run-task reco_hourly score 2026-10-28T13:00   # one task, its own process
    python -m jobs.airflow_tasks ui                                     # airflow standalone
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from jobs.config import PROJECT_ROOT, Config, ConfigError, load_config

log = logging.getLogger(__name__)

DAGS_FOLDER = PROJECT_ROOT / "dags"
CLI_PATH = PROJECT_ROOT / "jobs" / "cli.py"
NIGHTLY_DAG_ID = "reco_nightly"
HOURLY_DAG_ID = "reco_hourly"
MAINTENANCE_DAG_ID = "reco_maintenance"
# the hourly path's steps in order: `reco hourly all` runs them, and with orchestration.hourly_tasks: steps
# they are the hourly DAG's task ids (here, not in jobs/hourly.py, so that the CLI needs no pyspark to parse)
HOURLY_STEPS = ("ingest", "refresh", "score", "publish")
# Modules a DAG file must never import at parse time (tests/dags/test_dagbag.py checks it).
HEAVY_MODULES = ("pyspark", "torch", "mlflow", "redis", "great_expectations", "delta")

# Templates of the run's period (rendered by Airflow; see the module docstring).
RUN_DATE = "{{ data_interval_start | ds }}"
# The run date minus N days (a task that looks back, e.g. the nightly's backtest of earlier lists). Airflow and the
# rehearsal hand the templates pendulum datetimes, which subtract days.
RUN_DATE_MINUS_DAYS = "{{ data_interval_start.subtract(days=%d) | ds }}"
HOUR_START = "{{ data_interval_start.replace(minute=0, second=0, microsecond=0).isoformat() }}"
HOUR_END = "{{ data_interval_end.replace(minute=0, second=0, microsecond=0).isoformat() }}"

# Assets: what a DAG's tasks produce and read, so the UI shows the nightly -> hourly link.
# The "x-" scheme marks a custom scheme: Airflow keeps it as is (no provider normalizer lookup).
ASSET_URIS = {
    "silver_interactions": "x-retailreco://delta/silver_interactions",
    "champion": "x-retailreco://mlflow/champion",
    "nightly_lists": "x-retailreco://redis/lists",
    "hourly_lists": "x-retailreco://redis/hourly_patch",
}

_DAILY_CRON = re.compile(r"^(\d{1,2}) (\d{1,2}) \* \* \*$")
_HOURLY_CRON = re.compile(r"^(\d{1,2}) \* \* \* \*$")


# ---------------------------------------------------------------------------------------------
# Schedules


def daily_offset(cron: str, setting: str = "orchestration.nightly_schedule") -> timedelta:
    """Time of day of a once-a-day cron ``mm hh * * *`` (the nightly's grace after midnight UTC).

    Any other shape is refused: the nightly's ``--date`` is the day its data interval starts in,
    which only covers every day exactly once when the cron fires once a day.
    """
    m = _DAILY_CRON.match(cron.strip())
    if not m or int(m.group(1)) > 59 or int(m.group(2)) > 23:
        raise ConfigError(f"{setting} must fire once a day, as 'MM HH * * *' (e.g. '0 2 * * *'), got {cron!r}")
    return timedelta(hours=int(m.group(2)), minutes=int(m.group(1)))


def hourly_offset(cron: str, setting: str = "orchestration.hourly_schedule") -> timedelta:
    """Minute of a once-an-hour cron ``mm * * * *`` (the hourly's grace after the hour)."""
    m = _HOURLY_CRON.match(cron.strip())
    if not m or int(m.group(1)) > 59:
        raise ConfigError(f"{setting} must fire once an hour, as 'MM * * * *' (e.g. '10 * * * *'), got {cron!r}")
    return timedelta(minutes=int(m.group(1)))


def timetable(cron: str):
    """The DAGs' explicit timetable: data intervals between cron fires, in UTC."""
    from airflow.sdk import CronDataIntervalTimetable

    return CronDataIntervalTimetable(cron, timezone="UTC")


def start_date(cfg: Config) -> datetime:
    """``orchestration.start_date`` as midnight UTC (the first day a DAG may cover)."""
    try:
        day = date.fromisoformat(cfg.orchestration.start_date)
    except ValueError:
        raise ConfigError("orchestration.start_date must be YYYY-MM-DD, "
                          f"got {cfg.orchestration.start_date!r}") from None
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def dag_source(cfg: Config) -> str:
    """The source the DAGs ingest: ``orchestration.source`` or ``default_source`` (checked)."""
    name = cfg.orchestration.source or cfg.default_source
    cfg.source(name)  # an unknown name fails at parse time with the list of configured sources
    return name


def asset(key: str):
    """One of the project's Airflow Assets (see ``ASSET_URIS``)."""
    from airflow.sdk import Asset

    return Asset(name=f"retailreco_{key}", uri=ASSET_URIS[key], group="retailreco")


# ---------------------------------------------------------------------------------------------
# Tasks


def reco_command(args: Sequence[Any]) -> str:
    """The shell line that runs the same step by hand."""
    return "reco " + shlex.join(str(a) for a in args)


def run_reco(args: Sequence[Any]) -> None:
    """Run ``reco ARGS`` in this process (the PythonOperator's callable).

    Raises:
        AirflowException: the command exited non-zero; the message names the command and the code.
    """
    from airflow.sdk.exceptions import AirflowException

    from jobs.cli import main

    argv = [str(a) for a in args]
    command = reco_command(argv)
    log.info("running: %s", command)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse rejects bad arguments with SystemExit(2)
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if code:
        raise AirflowException(f"`{command}` failed with exit code {code}")


def _task_args(task: Any) -> Optional[List[str]]:
    """The (rendered, once the task ran) ``reco`` arguments of a task made by :func:`reco_task`."""
    if getattr(task, "application_args", None) is not None:
        return [str(a) for a in task.application_args]
    op_args = getattr(task, "op_args", None)
    if op_args:
        return [str(a) for a in op_args[0]]
    return None


def failure_summary(context: Mapping[str, Any]) -> str:
    """One block that says what failed and how to rerun that step by hand."""
    ti = context.get("ti") or context.get("task_instance")
    task = context.get("task") or getattr(ti, "task", None)
    dag_run = context.get("dag_run")
    dag_id = getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", "?")
    task_id = getattr(ti, "task_id", None) or getattr(task, "task_id", "?")
    run_id = getattr(ti, "run_id", None) or context.get("run_id") or getattr(dag_run, "run_id", "?")
    start = context.get("data_interval_start") or getattr(dag_run, "data_interval_start", None)
    end = context.get("data_interval_end") or getattr(dag_run, "data_interval_end", None)
    try_number = getattr(ti, "try_number", None)
    max_tries = getattr(ti, "max_tries", None)
    tries = (f"{try_number} of {max_tries + 1}" if try_number is not None and max_tries is not None
             else str(try_number or "?"))
    exc = context.get("exception")
    reason = (str(exc) or type(exc).__name__) if exc is not None else "(no exception in the context)"
    args = _task_args(task)
    rerun = reco_command(args) if args is not None else "(unknown: the task holds no reco arguments)"
    return "\n".join([
        "=" * 72,
        f"RetailReco task FAILED: {dag_id}.{task_id}",
        f"  run id        : {run_id}",
        f"  data interval : {start} .. {end}",
        f"  try           : {tries}",
        f"  error         : {reason}",
        f"  rerun by hand : {rerun}",
        "=" * 72,
    ])


def log_failure(context: Mapping[str, Any]) -> None:
    """on_failure_callback of every task: log :func:`failure_summary`."""
    log.error("%s", failure_summary(context))


def reco_task(task_id: str, args: Sequence[Any], *, cfg: Optional[Config] = None, timeout_min: Optional[int] = None,
              outlets: Iterable[Any] = (), inlets: Iterable[Any] = ()):
    """An operator that runs ``reco ARGS`` (args may hold Jinja templates).

    Args:
        task_id: the task's id.
        args: the ``reco`` command line without ``reco``.
        cfg: the configuration (loaded when not given).
        timeout_min: execution timeout; default ``orchestration.task_timeout_min``.
        outlets, inlets: Airflow Assets the task writes / reads.
    """
    cfg = cfg or load_config()
    orch = cfg.orchestration
    common: Dict[str, Any] = dict(
        task_id=task_id,
        pool=orch.pool,
        retries=orch.retries,
        retry_delay=timedelta(seconds=orch.retry_delay_s),
        retry_exponential_backoff=True,
        max_retry_delay=timedelta(seconds=orch.max_retry_delay_s),
        execution_timeout=timedelta(minutes=timeout_min or orch.task_timeout_min),
        on_failure_callback=log_failure,
        outlets=list(outlets),
        inlets=list(inlets),
    )
    args = [str(a) for a in args]
    if orch.executor == "spark_submit":
        from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

        sub = orch.spark_submit
        return SparkSubmitOperator(
            application=str(CLI_PATH),
            application_args=args,
            conn_id=sub.conn_id,
            deploy_mode=sub.deploy_mode,
            packages=",".join(sub.packages) or None,
            conf=dict(sub.conf) or None,
            py_files=sub.py_files,
            env_vars=dict(sub.env_vars) or None,
            name=f"reco-{task_id}",
            **common,
        )
    from airflow.providers.standard.operators.python import PythonOperator

    return PythonOperator(python_callable=run_reco, op_args=[args], **common)


# ---------------------------------------------------------------------------------------------
# Local harness: the embedded Airflow (sqlite metadata DB under cfg.airflow_home)


def airflow_env(cfg: Config, base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Environment for Airflow subprocesses: ``base`` (default ``os.environ``) plus the local settings."""
    home = Path(cfg.airflow_home)
    venv_bin = str(Path(sys.prefix) / "bin")
    env = dict(os.environ if base is None else base)
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin]
    pythonpath = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(PROJECT_ROOT)]
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(cfg.orchestration.parallelism),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(cfg.orchestration.parallelism),
        # the API server on loopback only; tasks reach the execution API there
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": "8080",
        "AIRFLOW__API__BASE_URL": "http://127.0.0.1:8080",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://127.0.0.1:8080/execution/",
        # small and quiet on a 2-core machine
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "True",
        "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        # the tasks' jobs hand Spark naive UTC datetimes (jobs.spark.use_utc); Airflow logs in UTC too
        "TZ": "UTC",
        "PATH": os.pathsep.join([venv_bin, *path]),
        "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), *pythonpath]),
    })
    return env


def _airflow(cfg: Config, *args: str, capture: bool = True) -> subprocess.CompletedProcess:
    """Run ``airflow ARGS`` with :func:`airflow_env`; a failure raises with the command's output."""
    cmd = [str(Path(sys.prefix) / "bin" / "airflow"), *args]
    proc = subprocess.run(cmd, env=airflow_env(cfg), cwd=str(PROJECT_ROOT), text=True,
                          capture_output=capture)
    if proc.returncode != 0:
        out = ((proc.stdout or "") + (proc.stderr or ""))[-4000:] if capture else ""
        raise RuntimeError(f"`airflow {shlex.join(args)}` failed with exit code {proc.returncode}\n{out}")
    return proc


def _run_foreground(cmd: List[str], env: Dict[str, str], grace_s: float = 60.0) -> int:
    """Run ``cmd`` in its own process group, its output on this terminal, and leave nothing behind.

    On Ctrl-C the group gets SIGINT and ``grace_s`` to stop; whatever is left of the group when
    ``cmd`` ends gets SIGTERM, then SIGKILL (``airflow standalone`` was seen leaving its triggerer
    running after a Ctrl-C, and ``subprocess.run`` alone would SIGKILL the command a quarter second
    after the Ctrl-C).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    proc = subprocess.Popen(cmd, env=env, cwd=str(PROJECT_ROOT), start_new_session=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        _signal_group(proc.pid, signal.SIGINT)
        try:
            return proc.wait(timeout=grace_s)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            return 130
    finally:
        _stop_group(proc)


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to a process group; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def _stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, whatever is left of ``proc``'s process group."""
    if _signal_group(proc.pid, signal.SIGTERM):
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _signal_group(proc.pid, 0):
            proc.poll()   # reap our own child as soon as it exits
            time.sleep(0.2)
        _signal_group(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass


def _airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow-core")


def ensure_airflow(cfg: Config, force: bool = False) -> Path:
    """Migrate the metadata DB and set the pool, once: later calls skip both while nothing changed.

    A stamp file beside the DB records the Airflow version it was migrated with and the pool it holds;
    a missing DB, another Airflow version or another pool setting redoes the step (each is idempotent).

    Returns:
        the AIRFLOW_HOME folder.
    """
    home = Path(cfg.airflow_home)
    home.mkdir(parents=True, exist_ok=True)
    stamp_path = home / ".retailreco-airflow.json"
    want = {"airflow": _airflow_version(), "pool": [cfg.orchestration.pool, cfg.orchestration.pool_slots]}
    try:
        have = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        have = {}
    db_ok = (home / "airflow.db").exists()
    if force or not db_ok or have.get("airflow") != want["airflow"]:
        log.info("airflow db migrate (AIRFLOW_HOME=%s)", home)
        _airflow(cfg, "db", "migrate")
        have = {"airflow": want["airflow"]}
        stamp_path.write_text(json.dumps(have))
    if force or have.get("pool") != want["pool"]:
        name, slots = want["pool"]
        _airflow(cfg, "pools", "set", name, str(slots),
                 "RetailReco jobs: nightly, hourly and maintenance tasks share these slots "
                 "(orchestration.pool_slots)")
        stamp_path.write_text(json.dumps(want))
    return home


def dag_test_date(cfg: Config, dag_id: str, run_date: Union[date, datetime, str]) -> datetime:
    """The logical date to give ``airflow dags test`` so that the run covers ``run_date``.

    ``airflow dags test DAG X`` infers the data interval as the last complete one ending at or
    before X, so X is the end of the wanted interval:

    - ``reco_nightly`` and ``reco_maintenance``, ``run_date`` a day D (``YYYY-MM-DD``): X = D+1 at the
      cron's time, data interval ``[D hh:mm, D+1 hh:mm)``, jobs get ``--date D``.
    - ``reco_hourly``, ``run_date`` an hour H (ISO, naive = UTC, on the hour): X = H+1h at the
      cron's minute, data interval ``[H:mm, H+1:mm)``, jobs get ``--start H --end H+1h``.
    """
    orch = cfg.orchestration
    daily = {NIGHTLY_DAG_ID: ("orchestration.nightly_schedule", orch.nightly_schedule),
             MAINTENANCE_DAG_ID: ("orchestration.maintenance_schedule", orch.maintenance_schedule)}
    if dag_id in daily:
        setting, cron = daily[dag_id]
        if isinstance(run_date, datetime):
            run_date = run_date.date()
        if isinstance(run_date, str):
            try:
                run_date = date.fromisoformat(run_date)
            except ValueError:
                raise ValueError(f"{dag_id} takes a run date YYYY-MM-DD, got {run_date!r}") from None
        midnight = datetime(run_date.year, run_date.month, run_date.day, tzinfo=timezone.utc)
        return midnight + timedelta(days=1) + daily_offset(cron, setting)
    if dag_id == HOURLY_DAG_ID:
        if isinstance(run_date, str):
            try:
                run_date = datetime.fromisoformat(run_date)
            except ValueError:
                raise ValueError(f"{dag_id} takes an hour such as 2026-10-28T13:00 (UTC), got {run_date!r}") from None
        elif not isinstance(run_date, datetime):
            raise ValueError(f"{dag_id} takes an hour such as 2026-10-28T13:00 (UTC), got the day {run_date}")
        hour = run_date.replace(tzinfo=timezone.utc) if run_date.tzinfo is None else run_date.astimezone(timezone.utc)
        if (hour.minute, hour.second, hour.microsecond) != (0, 0, 0):
            raise ValueError(f"{dag_id} covers whole clock hours: give the hour's start (minute 0), got {run_date}")
        return hour + timedelta(hours=1) + hourly_offset(orch.hourly_schedule)
    raise ValueError(f"unknown DAG {dag_id!r}; known: {NIGHTLY_DAG_ID}, {HOURLY_DAG_ID}, {MAINTENANCE_DAG_ID}")


def config_snapshot(cfg: Config, folder: Path) -> Dict[str, str]:
    """Write ``cfg`` as a config folder and return the env that makes ``load_config()`` rebuild it.

    Airflow parses the DAGs and runs the tasks in other processes, which build their config from
    ``RECO_CONF_DIR``/``RECO_ENV``: pointing them at a snapshot of the caller's config makes a run use
    exactly that config (a test's temp lakehouse included), not whatever ``conf/`` says. The config
    holds no secrets (they come from the environment, which the subprocess inherits). ``RECO__*``
    overrides must not reach that process: they are in the snapshot already.
    """
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base.yaml").write_text("# written by jobs.airflow_tasks.run_dag: the config of the run it started\n"
                                      + yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    (folder / f"{cfg.env}.yaml").write_text("{}\n")
    return {"RECO_CONF_DIR": str(folder), "RECO_ENV": cfg.env}


def run_dag(cfg: Config, dag_id: str, run_date: Union[date, datetime, str], *, source: Optional[str] = None) -> int:
    """Run one DAG run end to end through Airflow (``airflow dags test``) and return its exit code.

    The DagRun and its task instances are recorded in the metadata DB under ``cfg.airflow_home``;
    Airflow's output streams to this process's stdout/stderr. The DAG is parsed and its tasks run with
    ``cfg`` (see :func:`config_snapshot`); a failing task is retried as configured
    (``RECO__ORCHESTRATION__RETRIES=0`` for a fast failure).

    Args:
        dag_id: ``reco_nightly`` or ``reco_hourly``.
        run_date: what the run covers: the day D for the nightly, the hour H (UTC) for the hourly
            (see :func:`dag_test_date`); not Airflow's logical date.
        source: the source to ingest (default: ``orchestration.source`` or ``default_source``).
    """
    logical = dag_test_date(cfg, dag_id, run_date)
    if source is not None:
        cfg.source(source)  # an unknown name fails here, with the configured ones
        cfg = cfg.model_copy(update={"orchestration": cfg.orchestration.model_copy(update={"source": source})})
    cmd = [str(Path(sys.prefix) / "bin" / "airflow"), "dags", "test", dag_id, logical.isoformat()]
    log.info("%s  (covers %s)", shlex.join(cmd), run_date)
    return _run_foreground(cmd, _run_env(cfg))


def _run_env(cfg: Config) -> Dict[str, str]:
    """The environment of an Airflow command that parses the DAGs and runs tasks with exactly ``cfg``."""
    home = ensure_airflow(cfg)
    # the snapshot is the whole config: RECO__* overrides were applied to cfg already (or not, by intent)
    env = {k: v for k, v in airflow_env(cfg).items() if not k.startswith("RECO__")}
    env.update(config_snapshot(cfg, home / "reco_conf"))
    return env


def run_task(cfg: Config, dag_id: str, task_id: str, run_date: Union[date, datetime, str]) -> int:
    """Run one task of a DAG run in a process of its own (``airflow tasks test``), as a scheduler's worker
    runs each task, and return its exit code. ``run_date`` as for :func:`run_dag`. Nothing is recorded
    in the metadata DB; the task's jobs write what they always write."""
    logical = dag_test_date(cfg, dag_id, run_date)
    cmd = [str(Path(sys.prefix) / "bin" / "airflow"), "tasks", "test", dag_id, task_id, logical.isoformat()]
    log.info("%s  (covers %s)", shlex.join(cmd), run_date)
    return _run_foreground(cmd, _run_env(cfg))


def run_nightly(cfg: Config, source: Optional[str], run_date: Union[date, str]) -> int:
    """``reco run``: the nightly DAG for the day ``run_date`` through Airflow; returns the exit code."""
    return run_dag(cfg, NIGHTLY_DAG_ID, run_date, source=source)


def airflow_ui(cfg: Config) -> int:
    """``airflow standalone`` on 127.0.0.1:8080 (scheduler, dag-processor, triggerer, API server + UI).

    Runs until Ctrl-C; returns its exit code. The DAGs start paused: unpause one in the UI to let the
    scheduler run it, or trigger a run by hand.
    """
    home = ensure_airflow(cfg)
    env = airflow_env(cfg)
    password_file = home / "simple_auth_manager_passwords.json.generated"
    print(f"Airflow UI: {env['AIRFLOW__API__BASE_URL']}  (user 'admin'; the password is in {password_file},"
          " written on the first start)\n"
          f"AIRFLOW_HOME={home}  parallelism={cfg.orchestration.parallelism}  dags={DAGS_FOLDER}\n"
          "Ctrl-C stops every component.", flush=True)
    # 20 s: the components stop in a few seconds, except the triggerer, which can hang on shutdown
    return _run_foreground([str(Path(sys.prefix) / "bin" / "airflow"), "standalone"], env, grace_s=20)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.airflow_tasks",
                                description="the local Airflow of RetailReco (sqlite DB under "
                                            "orchestration.airflow_home)")
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("ui", help="airflow standalone on 127.0.0.1:8080")
    sp = sub.add_parser("run-dag", help="one DAG run through `airflow dags test`")
    sp.add_argument("dag_id", choices=[NIGHTLY_DAG_ID, HOURLY_DAG_ID, MAINTENANCE_DAG_ID])
    sp.add_argument("run_date", help="nightly, maintenance: the day it covers (YYYY-MM-DD); "
                                     "hourly: the hour it covers (2026-10-28T13:00, UTC)")
    st = sub.add_parser("run-task", help="one task of a DAG run, in its own process (`airflow tasks test`)")
    st.add_argument("dag_id", choices=[NIGHTLY_DAG_ID, HOURLY_DAG_ID, MAINTENANCE_DAG_ID])
    st.add_argument("task_id")
    st.add_argument("run_date", help="as for run-dag")
    sub.add_parser("init", help="migrate the metadata DB and set the pool (idempotent)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        cfg = load_config()
        if args.action == "ui":
            return airflow_ui(cfg)
        if args.action == "init":
            print(ensure_airflow(cfg, force=True))
            return 0
        if args.action == "run-task":
            return run_task(cfg, args.dag_id, args.task_id, args.run_date)
        return run_dag(cfg, args.dag_id, args.run_date)
    except (ConfigError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
