"""When the DAGs run and what each run covers: the cron offsets, the timetables, the templates of a run's
period, the project's Airflow Assets, and the logical date that makes a run cover a given day or hour.

What a run covers (the DAGs' timetables are ``CronDataIntervalTimetable`` over the config's cron
strings, in UTC): the nightly's data interval is ``[D hh:mm, D+1 hh:mm)`` for a cron ``mm hh * * *``
and its jobs get ``--date D`` (the calendar day the interval starts in); the hourly's data interval is
``[H:mm, H+1:mm)`` for a cron ``mm * * * *`` and its jobs get the clock hour ``--start H:00 --end
H+1:00``. The cron's offset is the grace given to late events; the covered day or hour always ended
before the run starts.

Parse time stays light: nothing heavy is imported, and Airflow only inside the functions that need it.
"""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from typing import Union

from config import PROJECT_ROOT, Config, ConfigError
from core.names import HOURLY_DAG_ID, MAINTENANCE_DAG_ID, NIGHTLY_DAG_ID

DAGS_FOLDER = PROJECT_ROOT / "dags"

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
