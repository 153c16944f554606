"""`reco rehearse`: two simulated days of two hourly runs (and the closing day's first hour), every fault, on tiny data, through the real DAG
files (tasks in this process, one Spark session; a killed task in a process of its own), with the invariants
checked after every run. This is CI's rehearsal; `make bench` runs the default size as a scheduler does."""
from __future__ import annotations

import json

import pytest

from orchestration.rehearsal_plan import FAULTS, HOURLY, NIGHTLY
from tests.conftest import free_port, make_config
from tests.jobs.conftest import SCORING
from tests.jobs.test_train import TINY_TRAINING


@pytest.fixture(scope="module")
def rehearsal(spark, tmp_path_factory):
    from orchestration.rehearse import rehearse
    tmp = tmp_path_factory.mktemp("rehearsal")
    cfg = make_config(tmp, synthetic={"n_events": 8000, "n_users": 300, "n_items": 80, "days": 60},
                      splits={"valid_days": 10, "test_days": 10},
                      training={**TINY_TRAINING, "gate": {"baselines": []}}, scoring=SCORING,
                      redis={"url": f"redis://127.0.0.1:{free_port()}/0", "embedded": True, "namespace": "rehearsal"},
                      orchestration={"retries": 2},
                      # CI's rehearsal runs the nightly's tasks that move data between days; the backtest and the
                      # drift checks have tests of their own (tests/jobs/test_backtest.py, test_monitor.py) and cost
                      # a Spark task in every nightly of the rehearsal each. `reco rehearse` runs them all.
                      backtest={"enabled": False}, monitoring={"drift": {"enabled": False}})
    out = tmp / "out"
    summary = rehearse(cfg, days=2, hours_per_day=2, faults="all", out=str(out), runner="inline", kill_after_s=15)
    yield summary, out, cfg
    from orchestration.rehearse import Rehearsal
    Rehearsal(cfg, out / "stop", runner="inline")._server().stop(save=False)


def test_every_invariant_holds_after_every_run(rehearsal):
    summary, out, _ = rehearsal
    assert json.loads((out / "rehearsal.json").read_text()) == json.loads(json.dumps(summary, default=str))
    broken = [(r["kind"], r["covers"], r["problems"]) for r in summary["runs"] if r["problems"]]
    assert summary["invariants_failed"] == 0, broken


def test_every_fault_fired_and_was_recovered_from(rehearsal):
    summary, _, _ = rehearsal
    faults = {f["name"]: f for f in summary["faults"]}
    assert sorted(faults) == sorted(FAULTS) and len(summary["faults"]) >= 10
    assert [f for f in summary["faults"] if not (f["fired"] and f["recovered"])] == []


def test_every_run_is_listed_with_its_wall_time_and_the_readers_version(rehearsal):
    summary, out, _ = rehearsal
    kinds = [r["kind"] for r in summary["runs"] if r["scheduled"]]
    assert kinds.count(NIGHTLY) == 2 and kinds.count(HOURLY) == 5
    assert all(r["seconds"] > 0 and r["readers"].get("version") for r in summary["runs"])
    assert set(summary["wall_s"]) >= {NIGHTLY, HOURLY}
    page = (out / "rehearsal.html").read_text()
    assert "Timeline" in page and all(f in page for f in FAULTS)
