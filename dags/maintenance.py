"""reco_maintenance: Delta table maintenance once a day (wiring only; see docs/AIRFLOW.md).

    maintain

OPTIMIZE (compaction) and VACUUM of every table under the lakehouse root: bronze, quarantine and the
hourly and audit tables gather one small file per batch, and VACUUM bounds the storage that replaced
slices leave behind. It runs at ``orchestration.maintenance_schedule`` (UTC), outside the nightly's
critical path, in the same pool as the nightly and hourly tasks, so it never rewrites a table while
one of them writes it.
"""
from __future__ import annotations

from airflow.sdk import DAG

from config import load_config
from core.names import MAINTENANCE_DAG_ID
from orchestration.schedule import RUN_DATE, dag_source, daily_offset, start_date, timetable
from orchestration.tasks import reco_task

cfg = load_config()
orch = cfg.orchestration
daily_offset(orch.maintenance_schedule, "orchestration.maintenance_schedule")  # once a day
SOURCE = dag_source(cfg)

with DAG(
    dag_id=MAINTENANCE_DAG_ID,
    schedule=timetable(orch.maintenance_schedule),
    start_date=start_date(cfg),
    catchup=False,  # one run compacts whatever accumulated: missed days need no catching up
    max_active_runs=1,
    tags=["retailreco", "maintenance"],
    doc_md=__doc__,
) as dag:
    reco_task("maintain", ["maintain", "--source", SOURCE, "--date", RUN_DATE], cfg=cfg)
