"""The rehearsal's calendar: the runs a scheduler starts, in order, and where the faults go (pure, no Spark)."""
from datetime import date

import pytest

from orchestration.rehearsal_plan import FAULTS, HOURLY, MAINTENANCE, NIGHTLY, _hours, parse_faults, plan

L = date(2026, 10, 28)   # the data set's last day


def labels(steps):
    return [(s.kind, s.covers) for s in steps]


def test_two_days_of_three_hours_in_the_order_the_schedules_fire():
    steps = plan(L, 2, 3, [])
    assert labels(steps) == [
        (HOURLY, "2026-10-29T00:00:00+00:00"),      # 01:10: readers on the setup nightly of the 28th
        (HOURLY, "2026-10-29T01:00:00+00:00"),      # 02:10
        (MAINTENANCE, "2026-10-28"),                # 03:00
        (HOURLY, "2026-10-29T12:00:00+00:00"),
        (HOURLY, "2026-10-30T00:00:00+00:00"),      # 01:10 of the 30th, before ...
        (NIGHTLY, "2026-10-29"),                    # ... 02:00: the nightly of the 29th
        (HOURLY, "2026-10-30T01:00:00+00:00"),
        (MAINTENANCE, "2026-10-29"),
        (HOURLY, "2026-10-30T12:00:00+00:00"),
        (HOURLY, "2026-10-31T00:00:00+00:00"),      # the closing day: its first hour and ...
        (NIGHTLY, "2026-10-30"),                    # ... the nightly that completes the last rehearsed day
    ]
    assert [s.at.isoformat() for s in steps[:3]] == ["2026-10-29T01:10:00+00:00", "2026-10-29T02:10:00+00:00",
                                                      "2026-10-29T03:00:00+00:00"]
    assert all(a.at < b.at for a, b in zip(steps, steps[1:]))


def test_hours_start_at_midnight_and_spread_over_the_day():
    assert _hours(1) == [0]
    assert _hours(3) == [0, 1, 12]
    assert _hours(6) == [0, 1, 5, 10, 14, 19]
    assert _hours(24) == list(range(24))
    with pytest.raises(ValueError, match="at least 1"):
        _hours(0)


def test_every_fault_is_placed_once():
    steps = plan(L, 2, 3, list(FAULTS))
    placed = [f for s in steps for f in s.faults]
    assert sorted(placed) == sorted(FAULTS)
    nightly = {f for s in steps if s.kind == NIGHTLY for f in s.faults}
    assert {"kill_nightly_task", "redis_down_publish", "rollback", "backfill", "rerun_nightly"} <= nightly


def test_with_every_hour_scheduled_missed_hours_removes_three_runs():
    full = plan(L, 1, 24, [])
    missed = plan(L, 1, 24, ["missed_hours"])
    assert len(full) - len(missed) == 3
    i = next(i for i, s in enumerate(missed) if "missed_hours" in s.faults)
    prev = [s for s in missed[:i] if s.kind == HOURLY][-1]
    assert missed[i].kind == HOURLY and (missed[i].at - prev.at).total_seconds() == 4 * 3600


def test_faults_are_named_or_refused():
    assert parse_faults("none") == [] and parse_faults("all") == list(FAULTS)
    assert parse_faults("rollback, backfill") == ["rollback", "backfill"]
    with pytest.raises(ValueError, match=r"unknown fault\(s\) \['bogus'\]"):
        parse_faults("rollback,bogus")
