"""reco_nightly: the nightly batch, one run per day D (wiring only; see docs/AIRFLOW.md).

    ingest >> validate >> features >> train >> gate >> score >> monitor >> publish >> report
                                                                             publish >> backtest   (backtest.enabled)
    feedback                                                                 (feedback.drain.nightly)

``monitor`` (``monitoring.drift.enabled``) writes the day's drift checks to ``monitoring`` and alerts on a
breached limit; a critical one fails it, so the day's lists are not published (docs/OPERATIONS.md).

The run fires at ``orchestration.nightly_schedule`` (UTC) and covers the day D its data interval
starts in: every job gets ``--date D``, never "latest" and never now(). The backtest scores the lists of
D - ``backtest.days`` (``--date``) against the days after them, up to D, which this run's ingest completed.

``feedback`` drains the impressions and events streams into Delta and then attributes day D's events
(``reco feedback drain --date D``: one task, one Spark session; docs/FEEDBACK.md). It depends on nothing
of the model's chain and nothing depends on it: a failed training still drains the streams, and a failed
drain never holds the lists back.
"""
from __future__ import annotations

from airflow.sdk import DAG

from config import load_config
from core.names import NIGHTLY_DAG_ID
from orchestration.schedule import (RUN_DATE, RUN_DATE_MINUS_DAYS, asset, dag_source, daily_offset, start_date,
                                    timetable)
from orchestration.tasks import reco_task

cfg = load_config()
orch = cfg.orchestration
daily_offset(orch.nightly_schedule)  # refuse a cron that does not fire once a day
SOURCE = dag_source(cfg)
LONG = orch.train_timeout_min

with DAG(
    dag_id=NIGHTLY_DAG_ID,
    schedule=timetable(orch.nightly_schedule),
    start_date=start_date(cfg),
    catchup=False,  # backfills are explicit: airflow backfill create --dag-id reco_nightly ...
    max_active_runs=1,
    tags=["retailreco", "nightly"],
    doc_md=__doc__,
) as dag:
    steps = [
        reco_task("ingest", ["ingest", "--source", SOURCE, "--date", RUN_DATE], cfg=cfg,
                  outlets=[asset("silver_interactions")]),
        reco_task("validate", ["check", "--source", SOURCE, "--date", RUN_DATE], cfg=cfg,
                  inlets=[asset("silver_interactions")]),
        reco_task("features", ["features", "--date", RUN_DATE], cfg=cfg),
        reco_task("train", ["train", "--date", RUN_DATE, "--no-gate", "--no-test-phase"], cfg=cfg,
                  timeout_min=LONG),
        reco_task("gate", ["gate", "--date", RUN_DATE], cfg=cfg, timeout_min=LONG, outlets=[asset("champion")]),
        reco_task("score", ["score", "--date", RUN_DATE], cfg=cfg, inlets=[asset("champion")]),
        *([reco_task("monitor", ["monitor", "--source", SOURCE, "--date", RUN_DATE], cfg=cfg)]
          if cfg.monitoring.drift.enabled else []),
        reco_task("publish", ["publish", "--date", RUN_DATE], cfg=cfg, outlets=[asset("nightly_lists")]),
        reco_task("report", ["report", "--date", RUN_DATE], cfg=cfg),
    ]
    for upstream, downstream in zip(steps, steps[1:]):
        upstream >> downstream
    if cfg.feedback.drain.nightly:
        reco_task("feedback", ["feedback", "drain", "--date", RUN_DATE], cfg=cfg)
    if cfg.backtest.enabled:
        back = cfg.backtest.days
        dag.get_task("publish") >> reco_task(
            "backtest", ["backtest", "--source", SOURCE, "--date", RUN_DATE_MINUS_DAYS % back, "--days", back,
                         "--skip-missing"], cfg=cfg)
