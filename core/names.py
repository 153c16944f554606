"""Names that several layers share: the DAG ids and the hourly path's steps (the CLI, the jobs and the DAG
files spell them from here)."""

NIGHTLY_DAG_ID = "reco_nightly"
HOURLY_DAG_ID = "reco_hourly"
MAINTENANCE_DAG_ID = "reco_maintenance"
# the hourly path's steps in order: `reco hourly all` runs them, and with orchestration.hourly_tasks: steps
# they are the hourly DAG's task ids
HOURLY_STEPS = ("ingest", "refresh", "score", "publish")
