"""reco_hourly: keep the served lists fresh between nightly runs (wiring only; see docs/AIRFLOW.md).

    update: the four steps in one task             (orchestration.hourly_tasks: one, the default)
    ingest >> refresh >> score >> publish          (orchestration.hourly_tasks: steps)

The run fires at ``orchestration.hourly_schedule`` (UTC) and covers the clock hour its data interval
starts in: every job gets ``--start H:00 --end H+1:00`` as ISO timestamps with their time zone.
Scoring reads the champion the nightly gate promotes (an Asset), and the publish patches the
nightly's Redis version.
"""
from __future__ import annotations

from airflow.sdk import DAG

from config import load_config
from core.names import HOURLY_DAG_ID
from orchestration.schedule import HOUR_END, HOUR_START, asset, dag_source, hourly_offset, start_date, timetable
from orchestration.tasks import reco_task

cfg = load_config()
orch = cfg.orchestration
hourly_offset(orch.hourly_schedule)  # refuse a cron that does not fire once an hour
SOURCE = dag_source(cfg)
WINDOW = ["--start", HOUR_START, "--end", HOUR_END]

with DAG(
    dag_id=HOURLY_DAG_ID,
    schedule=timetable(orch.hourly_schedule),
    start_date=start_date(cfg),
    catchup=False,  # a skipped hour is caught up by the next run's ingest (watermark in Delta)
    max_active_runs=1,
    tags=["retailreco", "hourly"],
    doc_md=__doc__,
) as dag:
    if orch.hourly_tasks == "one":
        # one process, one Spark driver for the four steps (a scheduler starts a process per task)
        reco_task("update", ["hourly", "all", "--source", SOURCE, *WINDOW], cfg=cfg,
                  inlets=[asset("champion"), asset("nightly_lists")],
                  outlets=[asset("silver_interactions"), asset("hourly_lists")])
    else:
        steps = [
            reco_task("ingest", ["hourly", "ingest", "--source", SOURCE, *WINDOW], cfg=cfg,
                      outlets=[asset("silver_interactions")]),
            reco_task("refresh", ["hourly", "refresh", *WINDOW], cfg=cfg, inlets=[asset("silver_interactions")]),
            reco_task("score", ["hourly", "score", *WINDOW], cfg=cfg, inlets=[asset("champion")]),
            reco_task("publish", ["hourly", "publish", *WINDOW], cfg=cfg, inlets=[asset("nightly_lists")],
                      outlets=[asset("hourly_lists")]),
        ]
        for upstream, downstream in zip(steps, steps[1:]):
            upstream >> downstream
