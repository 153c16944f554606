"""The task factory both DAG files use: :func:`reco_task` makes an operator that runs one ``reco``
sub-command, either in the Airflow worker (``orchestration.executor: inprocess``, a PythonOperator
calling :func:`run_reco`) or through ``spark-submit`` (``spark_submit``, a SparkSubmitOperator).
Retries, backoff, timeouts, the pool and the failure summary come from ``cfg.orchestration`` and are the
same for every task.

Parse time stays light: this module imports nothing heavy (no pyspark, torch, mlflow, redis, great
expectations, delta) and opens no connection, Variable or database; Airflow itself is imported only
inside the functions that build operators.
"""
from __future__ import annotations

import logging
import re
import shlex
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

from config import PROJECT_ROOT, Config, load_config
from core import alerts
from core.errors import QualityGateError
from orchestration.harness import task_args

log = logging.getLogger(__name__)

CLI_PATH = PROJECT_ROOT / "orchestration" / "cli.py"
# Modules a DAG file must never import at parse time (tests/dags/test_dagbag.py checks it).
HEAVY_MODULES = ("pyspark", "torch", "mlflow", "redis", "great_expectations", "delta")


def reco_command(args: Sequence[Any]) -> str:
    """The shell line that runs the same step by hand."""
    return "reco " + shlex.join(str(a) for a in args)


def run_reco(args: Sequence[Any]) -> None:
    """Run ``reco ARGS`` in this process (the PythonOperator's callable).

    Raises:
        AirflowException: the command exited non-zero; the message names the command and the code.
    """
    from airflow.sdk.exceptions import AirflowException

    from orchestration.cli import main

    argv = [str(a) for a in args]
    command = reco_command(argv)
    log.info("running: %s", command)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse rejects bad arguments with SystemExit(2)
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if code:
        raise AirflowException(f"`{command}` failed with exit code {code}")


# "`reco ...` failed with exit code N" (run_reco), "... Error code is: N." (SparkSubmitOperator)
_EXIT_CODE = re.compile(r"(?:exit code|Error code is:?) (\d+)")


def exit_code(exc: Optional[BaseException]) -> Optional[int]:
    """The ``reco`` exit code a failed task's exception names, if any (``core/errors.py``'s codes)."""
    m = _EXIT_CODE.search(str(exc)) if exc is not None else None
    return int(m.group(1)) if m else None


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
    args = task_args(task)
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


def _names(context: Mapping[str, Any]) -> Dict[str, Any]:
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    task = context.get("task") or getattr(ti, "task", None)
    return {"dag": getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", "?"),
            "task": getattr(ti, "task_id", None) or getattr(task, "task_id", "?"),
            "run_id": getattr(ti, "run_id", None) or context.get("run_id") or getattr(dag_run, "run_id", "?")}


def failure_alert(context: Mapping[str, Any]) -> alerts.Alert:
    """The critical alert of a failed task: a failed quality gate (exit code 3) says so in its kind."""
    exc = context.get("exception")
    code = exit_code(exc)
    names = _names(context)
    task = context.get("task") or getattr(context.get("ti"), "task", None)
    args = task_args(task)
    kind = alerts.QUALITY_GATE if code == QualityGateError.exit_code else alerts.TASK_FAILED
    what = "failed its quality gate" if kind == alerts.QUALITY_GATE else "failed"
    return alerts.Alert(kind, alerts.CRITICAL, f"task {names['dag']}.{names['task']} {what}", {
        **names, "exit_code": code, "error": (str(exc) or type(exc).__name__) if exc is not None else None,
        "rerun": reco_command(args) if args is not None else None})


def _alerts_config():
    return load_config().monitoring.alerts


def log_failure(context: Mapping[str, Any]) -> None:
    """on_failure_callback of every task: log :func:`failure_summary` and send :func:`failure_alert`
    (the log, and the webhook when ``RECO_ALERT_WEBHOOK_URL`` is set; a webhook that is down is logged)."""
    log.error("%s", failure_summary(context))
    alerts.send(failure_alert(context), timeout_s=_alerts_config().webhook_timeout_s)


def _utc(value: Any) -> Optional[datetime]:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def budget_crossed(run_start: datetime, task_start: datetime, task_end: datetime, budget: timedelta) -> bool:
    """Whether the run went over ``budget`` while this task ran: the one task of a run that tells
    (the run was within budget when it started and over it when it ended)."""
    return task_start - run_start < budget <= task_end - run_start


def check_time_budget(context: Mapping[str, Any], now: Optional[datetime] = None) -> Optional[alerts.Alert]:
    """on_success_callback of every task: send a ``time_budget`` warning when the run crossed its
    budget (``monitoring.alerts.run_budget_min`` of its DAG) during this task. Returns the alert sent."""
    cfg = _alerts_config()
    names = _names(context)
    minutes = cfg.run_budget_min.get(names["dag"])
    ti = context.get("ti") or context.get("task_instance")
    run_start = _utc(getattr(context.get("dag_run"), "start_date", None))
    task_start = _utc(getattr(ti, "start_date", None))
    if not minutes or run_start is None or task_start is None:
        return None
    end = _utc(getattr(ti, "end_date", None)) or now or datetime.now(timezone.utc)
    if not budget_crossed(run_start, task_start, end, timedelta(minutes=minutes)):
        return None
    alert = alerts.Alert(alerts.TIME_BUDGET, alerts.WARNING,
                         f"run {names['dag']} {names['run_id']} is over its time budget of {minutes} min", {
                             **names, "budget_min": minutes,
                             "elapsed_min": round((end - run_start).total_seconds() / 60, 1),
                             "setting": f"monitoring.alerts.run_budget_min.{names['dag']}"})
    alerts.send(alert, timeout_s=cfg.webhook_timeout_s)
    return alert


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
        on_success_callback=check_time_budget,
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
