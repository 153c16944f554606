"""Wall time of the README's run command (the nightly DAG through Airflow) and of the hourly DAG.

    python -m bench.pipeline [--hours 2]

In a fresh lakehouse under ``bench/out/pipeline`` (its own MLflow, Airflow home and embedded Redis on
another port), on the synthetic default data set:

1. ``reco run``: ``airflow dags test reco_nightly`` for the synthetic data's last day, end to end
   (ingest, check, features, train, gate, score, publish, report);
2. ``python -m orchestration.harness run-dag reco_hourly H`` for the first ``--hours`` hours after that day
   (live synthetic events; each run patches the nightly's Redis version), then the next hour with each
   task in a process of its own (``run-task``), as a scheduler's workers run them;
3. ``python -m orchestration.harness run-dag reco_maintenance D``: OPTIMIZE + VACUUM of every table, the daily
   job that keeps table maintenance off the nightly's critical path (reported; it has no target);
4. ``python -m orchestration.harness run-dag reco_nightly D+1``: the next night, a steady-state nightly. Its
   train task reuses the settings and epochs the first night's search kept (``training.search_every_days``,
   training/search.py) instead of searching again; the first night (1.) is what a fresh clone's
   ``make run`` does, and always searches.

Each command runs in a fresh process tree, timed and with its peak RSS sampled (bench/measure.py); the
time per task comes from the Airflow metadata DB. Targets on a 2-core machine: nightly < 10 min,
hourly < 2 min. Results: ``bench/out/pipeline.json``; BENCHMARKS.md is re-rendered by
``bench.run_all``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any, Dict, List

from bench.measure import ROOT, machine, run_measured

OUT = ROOT / "bench" / "out"
NIGHTLY_TARGET_S, HOURLY_TARGET_S = 600, 120


def _env(work: Path) -> Dict[str, str]:
    return {"RECO__LAKEHOUSE__ROOT": str(work / "lakehouse"),
            "RECO__LAKEHOUSE__STAGING_DIR": str(work / "staging"),
            "RECO__QUALITY__QUALITY_DIR": str(work / "quality"),
            "RECO__MLFLOW__TRACKING_URI": f"sqlite:///{work}/mlflow.db",
            "RECO__MLFLOW__ARTIFACT_ROOT": str(work / "mlartifacts"),
            "RECO__REDIS__URL": "redis://127.0.0.1:6391/0", "RECO__REDIS__DATA_DIR": str(work / "redis"),
            "RECO__ORCHESTRATION__AIRFLOW_HOME": str(work / "airflow")}


def _task_times(airflow_db: Path, dag_id: str) -> List[Dict[str, Any]]:
    """Per task of the DAG's runs: the run's interval, the task, its state and seconds."""
    with sqlite3.connect(airflow_db) as db:
        rows = db.execute(
            "select r.data_interval_start, t.task_id, t.state, t.start_date, t.end_date from task_instance t "
            "join dag_run r on r.run_id = t.run_id and r.dag_id = t.dag_id where t.dag_id = ? "
            "order by r.id, t.start_date", (dag_id,)).fetchall()
    out = []
    for interval, task, state, start, end in rows:
        secs = None
        if start and end:
            secs = (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()
        out.append({"interval": interval, "task": task, "state": state, "seconds": secs})
    return out


def _per_task_process(env: Dict[str, str], work: Path, hour: dt.datetime, one_task: bool = False) -> Dict[str, Any]:
    """The hourly DAG for ``hour`` with every task in a process of its own (``run-task``: ``airflow tasks
    test``), one after the other, as a scheduler's workers run them: each task starts its own Spark driver.
    ``one_task``: the DAG as ``orchestration.hourly_tasks: one`` builds it (a single task, ``update``).
    The scheduler's own latency between tasks is not included."""
    if one_task:
        env, names, tag = {**env, "RECO__ORCHESTRATION__HOURLY_TASKS": "one"}, ["update"], "one-task"
    else:
        from core.names import HOURLY_STEPS
        names, tag = HOURLY_STEPS, "task"
    tasks = []
    for task in names:
        m = run_measured([sys.executable, "-m", "orchestration.harness", "run-task", "reco_hourly", task,
                          hour.isoformat()], env=env, log=work / f"hourly-{tag}-{task}.log", timeout_s=3600)
        tasks.append({"task": task, "wall_s": round(m.wall_s, 1), "rc": m.returncode,
                      "peak_rss_mb": round(m.peak_rss_mb)})
        if m.returncode != 0:
            raise SystemExit(f"hourly task {task} for {hour} failed (exit {m.returncode}); see the log:\n"
                             f"{m.output_tail}")
    return {"hour": hour.isoformat(), "wall_s": round(sum(t["wall_s"] for t in tasks), 1),
            "peak_rss_mb": max(t["peak_rss_mb"] for t in tasks), "tasks": tasks}


def run(hours: int) -> Dict[str, Any]:
    from config import load_config
    from jobs.sources import default_run_date

    work = OUT / "pipeline"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    env = _env(work)
    reco = str(Path(sys.prefix) / "bin" / "reco")
    day = default_run_date(load_config(), "synthetic")
    result: Dict[str, Any] = {"date": dt.date.today().isoformat(), "machine": machine(), "run_date": day.isoformat(),
                              "command": "python -m bench.pipeline", "targets_s": {"nightly": NIGHTLY_TARGET_S,
                                                                                  "hourly": HOURLY_TARGET_S}}
    print(f"nightly: reco run (covers {day})", flush=True)
    m = run_measured([reco, "run"], env=env, log=work / "nightly.log", timeout_s=3 * 3600)
    result["nightly"] = {"wall_s": round(m.wall_s, 1), "peak_rss_mb": round(m.peak_rss_mb), "rc": m.returncode,
                         "tasks": _task_times(work / "airflow" / "airflow.db", "reco_nightly")}
    if m.returncode != 0:
        raise SystemExit(f"reco run failed (exit {m.returncode}); see {work / 'nightly.log'}:\n{m.output_tail}")
    result["hourly"] = []
    for h in range(hours):
        hour = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(h))
        print(f"hourly: {hour.isoformat()}", flush=True)
        m = run_measured([sys.executable, "-m", "orchestration.harness", "run-dag", "reco_hourly", hour.isoformat()],
                         env=env, log=work / f"hourly-{h}.log", timeout_s=3600)
        result["hourly"].append({"hour": hour.isoformat(), "wall_s": round(m.wall_s, 1), "rc": m.returncode,
                                 "peak_rss_mb": round(m.peak_rss_mb)})
        if m.returncode != 0:
            raise SystemExit(f"hourly {hour} failed (exit {m.returncode}); see the log:\n{m.output_tail}")
    result["hourly_tasks"] = _task_times(work / "airflow" / "airflow.db", "reco_hourly")
    hour = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(hours))
    print(f"hourly, one process per task: {hour.isoformat()}", flush=True)
    result["hourly_per_task"] = _per_task_process(env, work, hour)
    hour += dt.timedelta(hours=1)
    print(f"hourly as one task (orchestration.hourly_tasks: one), in its own process: {hour.isoformat()}", flush=True)
    result["hourly_one_task"] = _per_task_process(env, work, hour, one_task=True)
    print(f"maintenance: {day}", flush=True)
    m = run_measured([sys.executable, "-m", "orchestration.harness", "run-dag", "reco_maintenance", day.isoformat()],
                     env=env, log=work / "maintenance.log", timeout_s=3600)
    result["maintenance"] = {"wall_s": round(m.wall_s, 1), "rc": m.returncode, "peak_rss_mb": round(m.peak_rss_mb),
                             "tasks": _task_times(work / "airflow" / "airflow.db", "reco_maintenance")}
    if m.returncode != 0:
        raise SystemExit(f"maintenance {day} failed (exit {m.returncode}); see the log:\n{m.output_tail}")
    nxt = day + dt.timedelta(days=1)
    print(f"next nightly: {nxt}", flush=True)
    m = run_measured([sys.executable, "-m", "orchestration.harness", "run-dag", "reco_nightly", nxt.isoformat()],
                     env=env, log=work / "nightly-next.log", timeout_s=3 * 3600)
    result["next_nightly"] = {"run_date": nxt.isoformat(), "wall_s": round(m.wall_s, 1), "rc": m.returncode,
                              "peak_rss_mb": round(m.peak_rss_mb),
                              "tasks": [r for r in _task_times(work / "airflow" / "airflow.db", "reco_nightly")
                                        if r["interval"][:10] == nxt.isoformat()]}
    if m.returncode != 0:
        raise SystemExit(f"nightly {nxt} failed (exit {m.returncode}); see the log:\n{m.output_tail}")
    # stop the embedded redis-server this run started
    run_measured([reco, "redis", "stop"], env=env)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "pipeline.json").write_text(json.dumps(result, indent=1))
    return result


def _row(label: str, run: Dict[str, Any], target_s: Any = None) -> str:
    """A row of the runs table: wall time against the target (none: "-"), and peak memory."""
    met = "-" if target_s is None else ("yes" if run["wall_s"] < target_s else "**no**")
    return f"| {label} | {run['wall_s']:.0f} | {'-' if target_s is None else target_s} | {met} | {run['peak_rss_mb']} |"


def to_markdown(data: Dict[str, Any]) -> str:
    n = data["nightly"]
    t = data["targets_s"]
    lines = [f"Written by `{data['command']}` on {data['date']}; machine: {data['machine']}. Synthetic default "
             f"data set (conf/base.yaml `synthetic:`), nightly run date {data['run_date']}, everything embedded "
             "(Spark local, Delta on disk, MLflow and Airflow on sqlite, redis-server started by the run).", "",
             "| run | wall s | target s | met | peak RSS MB |", "|---|---:|---:|---|---:|",
             _row("nightly DAG (`reco run`)", n, t["nightly"])]
    lines += [_row(f"hourly DAG, {h['hour']}", h, t["hourly"]) for h in data.get("hourly", [])]
    pt = data.get("hourly_per_task")
    if pt:
        lines.append(_row(f"hourly DAG, {pt['hour']}, each task in its own process (as a scheduler's workers run "
                          "them; sum of the tasks)", pt, t["hourly"]))
    one = data.get("hourly_one_task")
    if one:
        lines.append(_row(f"hourly DAG, {one['hour']}, as one task (`orchestration.hourly_tasks: one`) in its own "
                          "process", one, t["hourly"]))
    nx = data.get("next_nightly")
    if nx:
        lines.append(_row(f"nightly DAG, next night ({nx['run_date']}: reuses the first night's search)", nx,
                          t["nightly"]))
    mt = data.get("maintenance")
    if mt:
        lines.append(_row("maintenance DAG (OPTIMIZE + VACUUM of every table, daily, off the nightly's path), "
                          f"{data['run_date']}", mt))
    lines += ["", "Time per task (from the Airflow metadata DB; the rest of a run's wall time is Airflow's own "
              "start, DAG parsing and the Spark session start):", "", "| DAG | interval | task | s |", "|---|---|---|---:|"]
    first = [r for r in n.get("tasks", []) if not nx or r["interval"][:10] != nx["run_date"]]
    for dag, rows in (("nightly", first), ("hourly", data.get("hourly_tasks", [])),
                      ("maintenance", (mt or {}).get("tasks", [])), ("nightly (next)", (nx or {}).get("tasks", []))):
        for r in rows:
            secs = "-" if r["seconds"] is None else f"{r['seconds']:.0f}"
            lines.append(f"| {dag} | {r['interval'][:16]} | {r['task']} | {secs} |")
    if pt:
        lines += ["", f"The hourly DAG with each task in its own process (`python -m orchestration.harness run-task "
                  f"reco_hourly TASK {pt['hour']}`, i.e. `airflow tasks test`; wall time of each process, its "
                  "Python, Airflow and Spark driver start included):", "", "| task | s |", "|---|---:|"]
        lines += [f"| {r['task']} | {r['wall_s']:.0f} |" for r in pt["tasks"]]
    if one:
        lines += ["", f"With `orchestration.hourly_tasks: one` the DAG is a single task, `update` (`reco hourly all`: "
                  "the four steps in one process and one Spark driver; `run-task reco_hourly update "
                  f"{one['hour']}`): {one['wall_s']:.0f} s."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=int, default=2, help="hourly runs after the nightly (default 2)")
    args = ap.parse_args()
    print(to_markdown(run(args.hours)))


if __name__ == "__main__":
    main()
