"""Wall time of the schedule as a scheduler runs it: `reco rehearse` over days of the default synthetic size,
every task in its own process (`airflow tasks test`), against the targets nightly <= 10 min, hourly <= 2 min.

    python -m bench.rehearsal [--days 3] [--hours-per-day 6] [--faults none]

In a fresh lakehouse under ``bench/out/rehearsal`` (its own MLflow, Airflow home and embedded Redis on another
port), on the synthetic default data set: the setup nightly of the data set's last day, then ``--days`` days of
``--hours-per-day`` hourly runs, a maintenance run and the nightly of the day before, each DAG run's tasks in
processes of their own, with every invariant checked after each run (jobs/invariants.py). Results:
``bench/out/rehearsal.json`` (the rehearsal's own JSON plus the machine and the command);
BENCHMARKS.md is re-rendered by ``bench.run_all``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
from typing import Any, Dict

from bench.measure import ROOT, machine, run_measured
from bench.pipeline import HOURLY_TARGET_S, NIGHTLY_TARGET_S, _env

OUT = ROOT / "bench" / "out"


def run(days: int, hours_per_day: int, faults: str) -> Dict[str, Any]:
    work = OUT / "rehearsal"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**os.environ, **_env(work), "RECO__REDIS__URL": "redis://127.0.0.1:6393/0"}
    cmd = [sys.executable, "-m", "orchestration.cli", "rehearse", "--days", str(days), "--hours-per-day", str(hours_per_day),
           "--faults", faults, "--runner", "process", "--out", str(work / "out")]
    m = run_measured(cmd, log=OUT / "rehearsal.log", timeout_s=8 * 3600, env=env)
    summary = json.loads((work / "out" / "rehearsal.json").read_text())
    data = {"date": dt.date.today().isoformat(), "machine": machine(), "command": " ".join(cmd[3:]),
            "returncode": m.returncode, "wall_s": m.wall_s, "summary": summary}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "rehearsal.json").write_text(json.dumps(data, indent=1, default=str))
    return data


def to_markdown(data: Dict[str, Any]) -> str:
    s = data["summary"]
    command = data["command"].removeprefix("orchestration.cli ")
    targets = {"reco_nightly": NIGHTLY_TARGET_S, "reco_hourly": HOURLY_TARGET_S}
    lines = [f"Written by `python -m bench.rehearsal` (part of `make bench`) on {data['date']}; machine: "
             f"{data['machine']}. Command: `reco {command}` (the default synthetic size, every task in its "
             f"own process as a scheduler's workers run them; {len(s['runs'])} DAG runs in {s['seconds']:.0f} s; "
             f"invariants failed after {s['invariants_failed']} runs).", "",
             "| DAG | runs | median s | worst s | target s | median and worst meet it |", "|---|---|---|---|---|---|"]
    for kind, w in s["wall_s"].items():
        target = targets.get(kind)
        ok = "-" if target is None else ("yes" if w["worst_s"] <= target else
                                          "median only" if w["median_s"] <= target else "no")
        lines.append(f"| {kind} | {w['runs']} | {w['median_s']:.0f} | {w['worst_s']:.0f} | {target or '-'} | {ok} |")
    setup = [r["seconds"] for r in s["runs"] if r["kind"] == "setup"]
    lines += ["", "Each run's wall time is the sum of its tasks' processes (Python, Airflow and Spark start "
              "included), from the rehearsal's `rehearsal.json`. Not counted above: the setup nightly of the data "
              "set's last day, a fresh lakehouse's first night, which also searches the training settings"
              + (f" ({setup[0]:.0f} s)" if setup else "") + "; later nights reuse the search "
              "(`training.search_every_days`)."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--hours-per-day", type=int, default=6)
    ap.add_argument("--faults", default="none")
    args = ap.parse_args()
    print(to_markdown(run(args.days, args.hours_per_day, args.faults)))


if __name__ == "__main__":
    main()
