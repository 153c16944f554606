"""The tasks' alert callbacks (orchestration/tasks.py) against a real local HTTP receiver: a failed task,
a failed quality gate, and a run over its time budget."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pendulum
import pytest

from config import load_config
from core import alerts
from orchestration import schedule, tasks
from tests.webhook import Receiver, closed_port_url

UTC = timezone.utc


def context(exc, dag_id="reco_nightly", task_id="ingest"):
    cfg = load_config()
    task = tasks.reco_task(task_id, ["ingest", "--source", "synthetic", "--date", schedule.RUN_DATE], cfg=cfg)
    start, end = pendulum.datetime(2026, 10, 28, 2, tz="UTC"), pendulum.datetime(2026, 10, 29, 2, tz="UTC")
    task.render_template_fields({"data_interval_start": start, "data_interval_end": end})
    ti = SimpleNamespace(dag_id=dag_id, task_id=task_id, run_id="scheduled__2026-10-28T02:00:00+00:00",
                         try_number=3, max_tries=2)
    return {"ti": ti, "task": task, "exception": exc,
            "dag_run": SimpleNamespace(dag_id=dag_id, data_interval_start=start, data_interval_end=end)}


@pytest.fixture
def receiver(monkeypatch):
    with Receiver() as r:
        monkeypatch.setenv(alerts.WEBHOOK_ENV, r.url)
        yield r


def test_every_task_alerts_on_failure_and_checks_its_budget_on_success():
    task = tasks.reco_task("features", ["features", "--date", "2026-10-28"], cfg=load_config())
    assert task.on_failure_callback == [tasks.log_failure]
    assert task.on_success_callback == [tasks.check_time_budget]


def test_a_failed_task_sends_a_critical_alert_with_the_command_to_rerun(receiver, caplog):
    exc = RuntimeError("`reco ingest --source synthetic --date 2026-10-28` failed with exit code 2")
    with caplog.at_level(logging.ERROR):
        tasks.log_failure(context(exc))
    (body,) = receiver.received
    assert body["alert"] == {
        "kind": "task_failed", "severity": "critical", "summary": "task reco_nightly.ingest failed",
        "source": "retailreco",
        "details": {"dag": "reco_nightly", "task": "ingest", "run_id": "scheduled__2026-10-28T02:00:00+00:00",
                    "exit_code": 2, "error": str(exc), "rerun": "reco ingest --source synthetic --date 2026-10-28"}}
    assert body["text"].startswith("RetailReco [CRITICAL] task_failed: task reco_nightly.ingest failed (")
    # the summary still goes to the task's log, and the alert to the alerts' log
    assert "rerun by hand : reco ingest" in caplog.text and "ALERT [CRITICAL] task_failed" in caplog.text


def test_a_failed_quality_gate_is_named_as_such(receiver):
    # exit code 3 is QualityGateError's (core/errors.py), from run_reco or from spark-submit
    tasks.log_failure(context(RuntimeError("`reco ingest --source synthetic --date 2026-10-28` failed with "
                                           "exit code 3")))
    tasks.log_failure(context(RuntimeError("Cannot execute: spark-submit ... Error code is: 3.")))
    assert [(b["alert"]["kind"], b["alert"]["summary"], b["alert"]["details"]["exit_code"])
            for b in receiver.received] == [
        ("quality_gate", "task reco_nightly.ingest failed its quality gate", 3)] * 2


def test_a_failure_callback_survives_a_webhook_that_is_down(monkeypatch, caplog):
    monkeypatch.setenv(alerts.WEBHOOK_ENV, closed_port_url())
    with caplog.at_level(logging.WARNING):
        tasks.log_failure(context(RuntimeError("boom")))       # does not raise
    assert "alert not delivered to the webhook" in caplog.text


@pytest.mark.parametrize("task_start_min, task_end_min, crossed", [
    (200, 230, False),   # within the 240 min budget at the end
    (200, 250, True),    # went over during this task
    (239, 240, True),    # reached it exactly at the end
    (245, 260, False),   # already over when it started: the earlier task told
])
def test_budget_crossed_once_per_run(task_start_min, task_end_min, crossed):
    run = datetime(2026, 10, 29, 2, tzinfo=UTC)
    got = tasks.budget_crossed(run, run + timedelta(minutes=task_start_min), run + timedelta(minutes=task_end_min),
                               timedelta(minutes=240))
    assert got is crossed


def _success_context(dag_id, run_start, task_start, task_end):
    ti = SimpleNamespace(dag_id=dag_id, task_id="score", run_id="r1", start_date=task_start, end_date=task_end)
    return {"ti": ti, "dag_run": SimpleNamespace(dag_id=dag_id, start_date=run_start)}


def test_a_run_over_its_budget_sends_one_warning(receiver, monkeypatch):
    monkeypatch.setenv("RECO__MONITORING__ALERTS__RUN_BUDGET_MIN__RECO_NIGHTLY", "90")
    run = datetime(2026, 10, 29, 2, tzinfo=UTC)
    within = _success_context("reco_nightly", run, run + timedelta(minutes=10), run + timedelta(minutes=80))
    crossing = _success_context("reco_nightly", run, run + timedelta(minutes=80), run + timedelta(minutes=95))
    after = _success_context("reco_nightly", run, run + timedelta(minutes=95), run + timedelta(minutes=99))
    assert tasks.check_time_budget(within) is None
    sent = tasks.check_time_budget(crossing)
    assert tasks.check_time_budget(after) is None
    assert sent is not None and len(receiver.received) == 1
    assert receiver.received[0]["alert"] == {
        "kind": "time_budget", "severity": "warning", "source": "retailreco",
        "summary": "run reco_nightly r1 is over its time budget of 90 min",
        "details": {"dag": "reco_nightly", "task": "score", "run_id": "r1", "budget_min": 90, "elapsed_min": 95.0,
                    "setting": "monitoring.alerts.run_budget_min.reco_nightly"}}


def test_a_running_task_without_end_date_is_judged_at_now(receiver):
    """Airflow may call on_success_callback before it sets end_date: the callback's time is the end."""
    run = datetime(2026, 10, 29, 2, tzinfo=UTC)
    ctx = _success_context("reco_hourly", run, run + timedelta(minutes=20), None)   # hourly budget: 30 min
    assert tasks.check_time_budget(ctx, now=run + timedelta(minutes=25)) is None
    assert tasks.check_time_budget(ctx, now=run + timedelta(minutes=31)).kind == alerts.TIME_BUDGET
    assert len(receiver.received) == 1
