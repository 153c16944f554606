"""The rehearsal's calendar: which DAG runs a scheduler starts over N days, in order, and where each fault
goes. Pure: no Spark, no Airflow, no I/O (``orchestration/rehearse.py`` runs the plan).

A day D of the rehearsal (the days after the synthetic data's last day L) is a calendar day. On it, in the
order the schedules fire (``orchestration``: nightly ``0 2 * * *``, hourly ``10 * * * *``, maintenance once
a day):

    01:10  reco_hourly      covers [D 00:00, D 01:00)      readers are still on the nightly of D-2 (+ patches)
    02:00  reco_nightly     covers the day D-1              (on the first day: the nightly of L ran at setup)
    03:00  reco_maintenance
    then   reco_hourly      for the rest of the day's sampled hours (``hours_per_day`` in all)

(the times are the schedules' offsets from ``orchestration``; these are the defaults) and one more
calendar day closes the rehearsal: its first hour and the nightly of the last day, so every
rehearsed day ends with the nightly that makes it complete.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Dict, List, Optional, Sequence

NIGHTLY, HOURLY, MAINTENANCE, ROLLBACK = "reco_nightly", "reco_hourly", "reco_maintenance", "rollback"

# name -> what it does (docs/OPERATIONS.md explains how each is recovered from)
FAULTS: Dict[str, str] = {
    "kill_nightly_task": "the nightly's score task is killed (SIGKILL) mid-way and retried",
    "kill_hourly_task": "an hourly task is killed (SIGKILL) mid-way and retried",
    "redis_down_publish": "Redis is stopped while the nightly publishes, started again, the task retried",
    "redis_down_hourly": "Redis is stopped during an hourly run, started again, the task retried",
    "redelivered_day": "the nightly's ingest of a day already ingested runs again (the day's export delivered "
                       "twice): its rows replace the day's, nothing doubles",
    "duplicate_hour": "an hour already ingested and published is delivered and run again after a later hour",
    "missed_hours": "three hourly runs do not happen; the next one catches up from the watermark",
    "backfill": "the nightly of a day already done runs again later (a backfill): readers stay on the newer lists",
    "rollback": "`reco publish --rollback`, then the next hourly and the next nightly",
    "rerun_nightly": "a whole nightly DAG run is cleared and run again (the retry after a bad night)",
    "timezone": "a DAG run's processes run with TZ=America/New_York",
}


@dataclass
class Step:
    """One DAG run (or an operator's command) of the plan."""
    kind: str                      # NIGHTLY, HOURLY, MAINTENANCE or ROLLBACK
    covers: str                    # nightly/maintenance: the day D; hourly: the hour's start (ISO, UTC)
    at: datetime                   # when a scheduler would start it (UTC)
    faults: List[str] = field(default_factory=list)
    note: str = ""

    @property
    def label(self) -> str:
        return f"{self.kind} {self.covers}"


def _hours(per_day: int) -> List[int]:
    """The day's sampled hours: 00:00 (before the nightly), then spread over the rest of the day."""
    if per_day < 1:
        raise ValueError(f"--hours-per-day must be at least 1, got {per_day}")
    if per_day > 24:
        raise ValueError(f"--hours-per-day must be at most 24, got {per_day}")
    rest = per_day - 1
    later = list(range(1, 24))          # [01:00, 02:00) fires at 02:10, after the nightly
    return [0] + [later[int(i * len(later) / rest)] for i in range(rest)]


def parse_faults(text: str) -> List[str]:
    """``none``, ``all`` or a comma list of names from :data:`FAULTS` (a clear error names the unknown)."""
    text = (text or "none").strip()
    if text == "none":
        return []
    if text == "all":
        return list(FAULTS)
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        raise ValueError(f"unknown fault(s) {unknown}; known: all, none, {', '.join(FAULTS)}")
    return names


def plan(last_day: date, days: int, hours_per_day: int, faults: Sequence[str],
         nightly_at: timedelta = timedelta(hours=2), hourly_at: timedelta = timedelta(minutes=10),
         maintenance_at: timedelta = timedelta(hours=3)) -> List[Step]:
    """The ordered DAG runs of a rehearsal of ``days`` days after ``last_day``, faults placed on them.

    Faults go where they bite: kills and a Redis stop on the first nightly and hourly runs that have
    something to lose; the rollback after the first nightly of the rehearsal, followed by an hourly and
    the next nightly; the backfill and the rerun on the last nightly. ``nightly_at``, ``hourly_at`` and
    ``maintenance_at`` are the schedules' offsets (time of day; minutes after the hour): a run starts there
    after the interval it covers ends."""
    if days < 1:
        raise ValueError(f"--days must be at least 1, got {days}")
    hours = _hours(hours_per_day)
    steps: List[Step] = []

    def at(d: date, h: int, m: int = 0) -> datetime:
        return datetime(d.year, d.month, d.day, tzinfo=timezone.utc) + timedelta(hours=h, minutes=m)

    for i in range(days + 1):                      # the last calendar day only closes the last rehearsed day
        d = last_day + timedelta(days=1 + i)
        closing = i == days
        day_hours = hours[:1] if closing else hours
        for h in day_hours:
            steps.append(Step(HOURLY, at(d, h).isoformat(), at(d, h + 1) + hourly_at))
        if i > 0:
            steps.append(Step(NIGHTLY, (d - timedelta(days=1)).isoformat(), at(d, 0) + nightly_at))
        if not closing:
            steps.append(Step(MAINTENANCE, (d - timedelta(days=1)).isoformat(), at(d, 0) + maintenance_at))
    steps.sort(key=lambda s: s.at)               # stable: the order the schedules fire in
    _place(steps, list(faults))
    return steps


def _place(steps: List[Step], faults: List[str]) -> None:
    nightlies = [s for s in steps if s.kind == NIGHTLY]
    hourlies = [s for s in steps if s.kind == HOURLY]

    def first(kind_steps: List[Step], skip: int = 0) -> Optional[Step]:
        return kind_steps[skip] if len(kind_steps) > skip else None

    # missed_hours: the first later hour that a sparse plan already reaches after a gap of 4 hours or more
    gaps = [h for i, h in enumerate(hourlies) if i >= 2 and _hour_gap(hourlies[i - 1], h) >= 4]
    where = {
        "kill_hourly_task": first(hourlies, 0),
        "redis_down_hourly": first(hourlies, 1),
        "missed_hours": gaps[0] if gaps else (first(hourlies, 4) or first(hourlies, len(hourlies) - 1)),
        "timezone": first(hourlies, 3) or first(hourlies, len(hourlies) - 1),
        "duplicate_hour": first(hourlies, 5) or first(hourlies, len(hourlies) - 1),
        "kill_nightly_task": first(nightlies, 0),
        "redis_down_publish": first(nightlies, 0),
        "redelivered_day": first(nightlies, 0),
        "rollback": first(nightlies, 0),
        "rerun_nightly": first(nightlies, len(nightlies) - 1),
        "backfill": first(nightlies, len(nightlies) - 1),
    }
    for name in faults:
        step = where.get(name)
        if step is not None:
            step.faults.append(name)
    missed = where.get("missed_hours")
    if "missed_hours" in faults and missed is not None:
        # with every hour scheduled, the three before it do not run; sparser plans skip hours anyway
        i = steps.index(missed)
        before = [s for s in steps[:i] if s.kind == HOURLY][-3:]
        if len(before) == 3 and _hour_gap(before[0], missed) == 3:
            for s in before:
                steps.remove(s)
        missed.note = "catches up the hours missed since the last watermark"


def _hour_gap(a: Step, b: Step) -> int:
    return int((datetime.fromisoformat(b.covers) - datetime.fromisoformat(a.covers)).total_seconds() // 3600)
