"""The local Airflow of RetailReco: a sqlite metadata DB under ``orchestration.airflow_home``, DAG runs
through ``airflow dags test``, single tasks in processes of their own (``airflow tasks test``, as a
scheduler's worker runs them) and ``airflow standalone`` for the UI. ``make run`` and ``make airflow``
use it::

    python -m orchestration.harness run-dag reco_nightly 2026-10-28        # covers the day 2026-10-28
    python -m orchestration.harness run-dag reco_hourly 2026-10-28T13:00   # covers [13:00, 14:00) UTC
    python -m orchestration.harness run-task reco_hourly score 2026-10-28T13:00   # one task, its own process
    python -m orchestration.harness ui                                     # airflow standalone
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
from datetime import date, datetime
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from config import PROJECT_ROOT, Config, ConfigError, load_config
from core.names import HOURLY_DAG_ID, MAINTENANCE_DAG_ID, NIGHTLY_DAG_ID
from orchestration.schedule import DAGS_FOLDER, dag_test_date

log = logging.getLogger(__name__)


def task_args(task: Any) -> Optional[List[str]]:
    """The (rendered, once the task ran) ``reco`` arguments of a task made by
    :func:`orchestration.tasks.reco_task`."""
    if getattr(task, "application_args", None) is not None:
        return [str(a) for a in task.application_args]
    op_args = getattr(task, "op_args", None)
    if op_args:
        return [str(a) for a in op_args[0]]
    return None


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


def _run_foreground(cmd: List[str], env: Dict[str, str], grace_s: float = 60.0,
                    log_to: Optional[Path] = None) -> int:
    """Run ``cmd`` in its own process group, its output on this terminal (or, with ``log_to``, in that
    file, this terminal getting one line per finished task: :class:`_Progress`), and leave nothing behind.

    On Ctrl-C the group gets SIGINT and ``grace_s`` to stop; whatever is left of the group when
    ``cmd`` ends gets SIGTERM, then SIGKILL (``airflow standalone`` was seen leaving its triggerer
    running after a Ctrl-C, and ``subprocess.run`` alone would SIGKILL the command a quarter second
    after the Ctrl-C).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    out = None if log_to is None else subprocess.PIPE
    proc = subprocess.Popen(cmd, env=env, cwd=str(PROJECT_ROOT), start_new_session=True, stdout=out,
                            stderr=subprocess.STDOUT if out else None, text=out is not None, errors="replace")
    try:
        if log_to is not None:
            _Progress(log_to).follow(proc.stdout)
        return proc.wait()
    except KeyboardInterrupt:
        _signal_group(proc.pid, signal.SIGINT)
        try:
            return proc.wait(timeout=grace_s)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            return 130
    finally:
        _stop_group(proc)


class _Progress:
    """Copies a DAG run's output to a log file and prints, for people, one line per task as it ends
    (``[DAG TEST] end task task_id=...``, with the seconds since the previous one) and any task's failure
    summary (the block :func:`orchestration.tasks.failure_summary` logs)."""
    END = re.compile(r"\[DAG TEST\] end task task_id=(\S+)")
    FAILED = "RetailReco task FAILED"

    def __init__(self, log_to: Path) -> None:
        self.log_to = log_to

    def follow(self, stream) -> None:
        self.log_to.parent.mkdir(parents=True, exist_ok=True)
        t0 = last = time.monotonic()
        block: Optional[List[str]] = None
        with open(self.log_to, "w") as fh:
            for line in stream:
                fh.write(line)
                if block is not None:                 # inside a failure summary: up to its closing rule
                    block.append(line.rstrip("\n"))
                    if line.startswith("=" * 20) and len(block) > 2:
                        print("\n".join(block), flush=True)
                        block = None
                    continue
                if self.FAILED in line:
                    block = ["=" * 72, line.rstrip("\n")]
                    continue
                m = self.END.search(line)
                if m:
                    now = time.monotonic()
                    print(f"  {m.group(1):<12} done  {now - last:6.0f} s   ({now - t0:.0f} s so far)", flush=True)
                    last = now


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
    (folder / "base.yaml").write_text("# written by orchestration.harness.run_dag: the config of the run it started\n"
                                      + yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    (folder / f"{cfg.env}.yaml").write_text("{}\n")
    return {"RECO_CONF_DIR": str(folder), "RECO_ENV": cfg.env}


def run_dag(cfg: Config, dag_id: str, run_date: Union[date, datetime, str], *, source: Optional[str] = None,
            quiet: bool = False) -> int:
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
        quiet: Airflow's, Spark's and the jobs' output go to ``<orchestration.logs_dir>/<dag>-<date>.log``;
            the console gets a line per task and, at the end, the summary ``reco report`` writes.
    """
    logical = dag_test_date(cfg, dag_id, run_date)
    if source is not None:
        cfg.source(source)  # an unknown name fails here, with the configured ones
        cfg = cfg.model_copy(update={"orchestration": cfg.orchestration.model_copy(update={"source": source})})
    cmd = [str(Path(sys.prefix) / "bin" / "airflow"), "dags", "test", dag_id, logical.isoformat()]
    log.info("%s  (covers %s)", shlex.join(cmd), run_date)
    if not quiet:
        return _run_foreground(cmd, run_env(cfg))
    from jobs.commands import SUMMARY_FILE_ENV
    stem = f"{dag_id}-{str(run_date).replace(':', '')}"
    log_to, summary = Path(cfg.logs_dir) / f"{stem}.log", Path(cfg.logs_dir) / f"{stem}-summary.txt"
    summary.unlink(missing_ok=True)
    print(f"{dag_id} for {run_date} through Airflow; the full output: {log_to}", flush=True)
    code = _run_foreground(cmd, {**run_env(cfg), SUMMARY_FILE_ENV: str(summary)}, log_to=log_to)
    if summary.exists():
        print(summary.read_text(), end="", flush=True)
    print(f"{dag_id} for {run_date}: {'succeeded' if code == 0 else f'FAILED (exit code {code})'}; "
          f"the full output: {log_to}", flush=True)
    return code


def run_env(cfg: Config) -> Dict[str, str]:
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
    return _run_foreground(cmd, run_env(cfg))


def run_nightly(cfg: Config, source: Optional[str], run_date: Union[date, str], quiet: bool = True) -> int:
    """``reco run``: the nightly DAG for the day ``run_date`` through Airflow; returns the exit code.
    ``quiet`` (the default; ``reco run --verbose`` turns it off): see :func:`run_dag`."""
    return run_dag(cfg, NIGHTLY_DAG_ID, run_date, source=source, quiet=quiet)


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
    p = argparse.ArgumentParser(prog="python -m orchestration.harness",
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
