"""The rehearsal's record and timeline (orchestration/rehearsal_report.py), with known answers."""
from __future__ import annotations

from dataclasses import asdict

from orchestration.rehearsal_report import FaultRecord, RunRecord, TaskRun, timeline_html, wall_times


def _run(kind, seconds, scheduled=True, problems=()):
    return RunRecord(kind=kind, covers="2026-10-29", scheduled_at="2026-10-30T02:00:00+00:00", seconds=seconds,
                     status="succeeded", tasks=[TaskRun("ingest", 2, seconds, "succeeded", ["killed"])],
                     problems=list(problems), scheduled=scheduled)


def test_wall_times_count_only_the_runs_the_scheduler_starts():
    runs = [_run("reco_nightly", 500.0), _run("reco_nightly", 700.0), _run("reco_nightly", 900.0, scheduled=False),
            _run("reco_hourly", 90.0), _run("reco_hourly", 110.0), _run("reco_hourly", 100.0)]
    assert wall_times(runs) == {"reco_nightly": {"runs": 2, "median_s": 600.0, "worst_s": 700.0},
                                "reco_hourly": {"runs": 3, "median_s": 100.0, "worst_s": 110.0}}


def test_the_timeline_shows_every_run_fault_and_problem_escaped():
    runs = [_run("reco_nightly", 10.0), _run("reco_hourly", 5.0, problems=["readers <moved> back"])]
    s = {"first_day": "2026-10-29", "runs": [asdict(r) for r in runs], "seconds": 15.0, "runner": "inline",
         "invariants_failed": 1, "faults": [asdict(FaultRecord("kill_nightly_task", "reco_nightly 2026-10-29",
                                                                True, True, "retried"))],
         "wall_s": wall_times(runs)}
    page = timeline_html(s)
    assert "readers &lt;moved&gt; back" in page and "<moved>" not in page
    assert "kill_nightly_task" in page and "ingest 10.0s (2 tries)" in page and "Timeline" in page
