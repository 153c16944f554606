"""`reco rehearse`: run the schedule as production does, N days in fast-forward, with faults, checking the
invariants (``jobs/invariants.py``) after every DAG run.

The plan (``orchestration/rehearsal_plan.py``) lists the DAG runs a scheduler starts over the days after the
synthetic data's last day, fed by the live synthetic source. Each run's tasks come from the real DAG files
(parsed with this run's config), in their dependency order, and run:

- ``--runner process`` (the default, as a scheduler's workers run them): each task in its own process,
  ``airflow tasks test DAG TASK DATE`` (Airflow renders the task's ``reco`` command);
- ``--runner inline``: each task's rendered ``reco`` command in this process, on one Spark session (CI's
  small rehearsal; a killed task still runs in a process of its own, so that it can be killed).

A task that fails is retried up to ``orchestration.retries`` times, as a scheduler would. Faults are
injected where the plan puts them; each records whether it fired and whether the system recovered (the
retry succeeded, or the run that repeats something left every invariant holding).

Output: ``DIR/rehearsal.json`` (every run with its wall time, tasks, rows in and out, the version readers
were on, the invariants' problems; every fault with ``recovered``) and ``DIR/rehearsal.html`` (a timeline).
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from config import Config
from orchestration.rehearsal_plan import HOURLY, NIGHTLY, ROLLBACK, Step, parse_faults, plan
from orchestration.rehearsal_report import FaultRecord, RunRecord, TaskRun, timeline_html, wall_times
from orchestration.rehearsal_tasks import RedisStopper, try_task

log = logging.getLogger(__name__)

KILL_TASK = {NIGHTLY: "score"}                 # the nightly task killed by kill_nightly_task
NON_UTC = "America/New_York"


class TaskFailed(RuntimeError):
    pass


class Rehearsal:
    def __init__(self, cfg: Config, out: Path, runner: str = "process", kill_after_s: float = 25.0) -> None:
        from orchestration.harness import config_snapshot
        from jobs.sources import default_run_date
        if runner not in ("process", "inline"):
            raise ValueError(f"--runner must be process or inline, got {runner!r}")
        self.cfg, self.out, self.runner, self.kill_after_s = cfg, out, runner, kill_after_s
        self.source = cfg.orchestration.source or cfg.default_source
        if cfg.source(self.source).kind != "synthetic":
            raise ValueError(f"the rehearsal feeds the DAGs from the live synthetic source; orchestration.source "
                             f"is {self.source!r} ({cfg.source(self.source).kind})")
        self.last_day = default_run_date(cfg, self.source)
        self.runs: List[RunRecord] = []
        self.faults: List[FaultRecord] = []
        self.position: Optional[Tuple[str, str]] = None
        self.expected_day: Optional[str] = None
        self.finished_days: List[date] = []
        out.mkdir(parents=True, exist_ok=True)
        self.env = config_snapshot(cfg, out / "conf")        # the DAGs and tasks read exactly this config
        self._spark = None
        self._dags: Dict[str, Any] = {}

    # ------------------------------------------------------------------ plumbing

    @property
    def spark(self):
        if self._spark is None:
            from jobs.spark import build_spark
            self._spark = build_spark(self.cfg, app_name="retailreco-rehearsal")
            self._spark.sparkContext.setLogLevel("ERROR")    # Spark's warnings would drown the progress lines
        return self._spark

    def redis(self):
        from jobs.publish import keyspace, redis_client
        return redis_client(self.cfg), keyspace(self.cfg)

    def _server(self):
        from urllib.parse import urlsplit

        from serving.embedded import EmbeddedRedis
        parts = urlsplit(self.cfg.redis.url)
        return EmbeddedRedis(self.cfg.redis_dir, parts.port or 6379, host=parts.hostname or "127.0.0.1",
                             password=self.cfg.redis_password)

    def dag(self, dag_id: str):
        """The DAG as the scheduler parses it, with this run's config."""
        if dag_id not in self._dags:
            from airflow.dag_processing.dagbag import DagBag

            from orchestration.schedule import DAGS_FOLDER
            bag = DagBag(dag_folder=str(DAGS_FOLDER))
            if bag.import_errors:
                raise RuntimeError(f"the DAG files do not parse: {bag.import_errors}")
            self._dags.update(bag.dags)
        return self._dags[dag_id]

    def tasks(self, dag_id: str) -> List[Any]:
        """The DAG's tasks in dependency order."""
        dag = self.dag(dag_id)
        done: List[str] = []
        pending = dict(dag.task_dict)
        while pending:
            ready = sorted(t for t, task in pending.items() if set(task.upstream_task_ids) <= set(done))
            if not ready:
                raise RuntimeError(f"{dag_id} has a dependency cycle among {sorted(pending)}")
            done += ready
            for t in ready:
                pending.pop(t)
        return [dag.task_dict[t] for t in done]

    def _interval(self, step: Step) -> Tuple[datetime, datetime]:
        from core.names import HOURLY_DAG_ID
        from orchestration.schedule import dag_test_date
        end = dag_test_date(self.cfg, step.kind, step.covers if step.kind == HOURLY_DAG_ID else
                            date.fromisoformat(step.covers))
        length = timedelta(hours=1) if step.kind == HOURLY else timedelta(days=1)
        return end - length, end

    def render(self, task, step: Step) -> List[str]:
        """The task's ``reco`` arguments as Airflow renders them for the step's data interval."""
        import copy

        import pendulum

        from orchestration.harness import task_args
        start, end = (pendulum.instance(t) for t in self._interval(step))
        rendered = copy.deepcopy(task)
        rendered.render_template_fields({"data_interval_start": start, "data_interval_end": end})
        return task_args(rendered)

    # ------------------------------------------------------------------ running one task


    def _try(self, task, step: Step, args: List[str], kill_after: Optional[float] = None,
             tz: Optional[str] = None) -> Tuple[bool, bool]:
        return try_task(self.cfg, self.runner, self.env, self.out, task, step, args, kill_after, tz)

    def run_task(self, task, step: Step, faults: List[str]) -> TaskRun:
        """A task with the scheduler's retries; ``faults`` that concern this task fire on its first try."""
        args = self.render(task, step)
        tries, t0, fired = 0, time.time(), []
        retries = self.cfg.orchestration.retries
        while True:
            tries += 1
            kill_after, stopper = None, None
            if tries == 1:
                if "kill_nightly_task" in faults and task.task_id == KILL_TASK.get(step.kind):
                    kill_after = self.kill_after_s
                if "kill_hourly_task" in faults and step.kind == HOURLY and task is self.tasks(HOURLY)[0]:
                    kill_after = self.kill_after_s
                if any(f in faults for f in ("redis_down_publish", "redis_down_hourly")) and (
                        task.task_id in ("publish", "update")):
                    stopper = RedisStopper(self)
                    stopper.start()
            ok, killed = self._try(task, step, args, kill_after=kill_after,
                                   tz=NON_UTC if "timezone" in faults else None)
            if stopper is not None:
                stopper.finish()
                if stopper.stopped:
                    fired.append("redis_down")
                    self._server().start()          # the operator (or systemd) starts Redis again
            if killed:
                fired.append("killed")
            if ok:
                return TaskRun(task.task_id, tries, round(time.time() - t0, 1), "succeeded", fired)
            log.warning("[rehearsal] %s %s: %s failed on try %d%s", step.kind, step.covers, task.task_id, tries,
                        " (killed)" if killed else "")
            if tries > retries:
                return TaskRun(task.task_id, tries, round(time.time() - t0, 1), "failed", fired)

    # ------------------------------------------------------------------ one DAG run

    def run_dag(self, step: Step, only: Optional[List[str]] = None, note: str = "") -> RunRecord:
        t0 = time.time()
        rec = RunRecord(kind=step.kind, covers=step.covers, scheduled_at=step.at.isoformat(), seconds=0.0,
                        status="succeeded", faults=list(step.faults) if not note else [], note=note or step.note,
                        scheduled=not note)
        before = self._silver_rows()
        for task in self.tasks(step.kind):
            if only and task.task_id not in only:
                continue
            tr = self.run_task(task, step, step.faults)
            rec.tasks.append(tr)
            if tr.status != "succeeded":
                rec.status = "failed"
                break
        rec.seconds = round(time.time() - t0, 1)
        rec.rows_in = self._silver_rows() - before
        print(f"  {step.kind:<17} {step.covers:<26} {rec.status:<9} {rec.seconds:7.1f} s"
              f"{'  faults: ' + ','.join(rec.faults) if rec.faults else ''}"
              f"{'  (' + rec.note + ')' if rec.note else ''}",
              flush=True)
        return rec

    def _silver_rows(self) -> int:
        from jobs.lakehouse import Lakehouse
        lh = Lakehouse(self.spark, self.cfg)
        return lh.read("silver_interactions").count() if lh.exists("silver_interactions") else 0

    # ------------------------------------------------------------------ checks

    def check(self, rec: RunRecord, moved_back_on_purpose: bool = False) -> None:
        from jobs import invariants as inv
        r, ks = self.redis()
        problems, pos, readers = inv.readers(r, ks, self.expected_day, self.position, moved_back_on_purpose)
        self.position = pos or self.position
        rec.readers = readers
        from serving.versions import read_meta
        if readers.get("version"):
            rec.users_out = int(read_meta(r, ks, readers["version"]).get("count_u") or 0)
        problems += inv.lists_match(self.spark, self.cfg, r, ks)
        problems += inv.redis_versions(r, ks, self.cfg.redis.keep_versions)
        problems += inv.pipeline_runs(self.spark, self.cfg)
        for day in self.finished_days:
            problems += inv.events_exactly_once(self.spark, self.cfg, self.source, day)
        if rec.status != "succeeded":
            problems.append(f"the run failed: {[t.task for t in rec.tasks if t.status != 'succeeded']}")
        rec.problems = problems
        for p in problems:
            log.error("[rehearsal] invariant broken after %s %s: %s", rec.kind, rec.covers, p)
        self.runs.append(rec)

    def fault(self, name: str, rec: RunRecord, fired: bool, recovered: bool, detail: str) -> None:
        self.faults.append(FaultRecord(name, f"{rec.kind} {rec.covers}", fired, fired and recovered, detail))

    # ------------------------------------------------------------------ the whole rehearsal

    def setup(self) -> None:
        """The nightly of the data set's last day, unless readers are on it already."""
        from serving.versions import current_version
        r, ks = self.redis()
        day = self.last_day.isoformat()
        if current_version(r, ks) is None:
            step = Step(NIGHTLY, day, datetime.combine(self.last_day + timedelta(days=1), datetime.min.time(),
                                                       tzinfo=timezone.utc) + timedelta(hours=2))
            rec = self.run_dag(step, note="setup: the nightly of the built-in data set's last day")
            rec.kind = "setup"
            self.expected_day = day
            self.check(rec)
        else:
            self.expected_day = day
        self.finished_days = []

    def step(self, step: Step) -> None:
        rec = self.run_dag(step)
        hourly_before = [r for r in self.runs if r.kind == HOURLY]
        if step.kind == NIGHTLY and rec.status == "succeeded":
            self.expected_day = step.covers
            self.finished_days.append(date.fromisoformat(step.covers))
        self.check(rec)
        for tr in rec.tasks:
            for name in ("kill_nightly_task", "kill_hourly_task"):
                if name in step.faults and "killed" in tr.faults:
                    self.fault(name, rec, True, tr.status == "succeeded" and not rec.problems,
                               f"{tr.task} killed on its first try; {tr.tries} tries")
            for name in ("redis_down_publish", "redis_down_hourly"):
                if name in step.faults and "redis_down" in tr.faults:
                    self.fault(name, rec, True, tr.status == "succeeded" and not rec.problems,
                               f"Redis stopped during {tr.task}, started again; {tr.tries} tries")
        for name in ("kill_nightly_task", "kill_hourly_task", "redis_down_publish", "redis_down_hourly"):
            if name in step.faults and not any(f.name == name for f in self.faults):
                self.fault(name, rec, False, False, "did not fire (the task ended first)")
        if "timezone" in step.faults:
            self.fault("timezone", rec, True, rec.status == "succeeded" and not rec.problems,
                       f"the run's processes had TZ={NON_UTC}")
        if "missed_hours" in step.faults:
            self._missed_hours(rec, hourly_before)
        if "duplicate_hour" in step.faults and hourly_before:
            prev = hourly_before[-1]
            again = self.run_dag(Step(HOURLY, prev.covers, step.at), note="the earlier hour delivered again")
            self.check(again)
            self.fault("duplicate_hour", again, True, again.status == "succeeded" and not again.problems,
                       f"{prev.covers} ran again after {step.covers}: readers stayed, nothing doubled")
        if "redelivered_day" in step.faults:
            again = self.run_dag(step, only=["ingest"], note="the day's export delivered again")
            self.check(again)
            self.fault("redelivered_day", again, True, again.status == "succeeded" and not again.problems,
                       f"the ingest of {step.covers} ran again")
        if "rollback" in step.faults:
            self._rollback(step)
        if "rerun_nightly" in step.faults:
            again = self.run_dag(step, note="the whole nightly run cleared and run again")
            self.check(again)
            self.fault("rerun_nightly", again, True, again.status == "succeeded" and not again.problems,
                       f"the nightly of {step.covers} ran twice")
        if "backfill" in step.faults:
            old = (date.fromisoformat(step.covers) - timedelta(days=1)).isoformat()
            back = self.run_dag(Step(NIGHTLY, old, step.at), note="a backfill of an older day")
            self.check(back)
            self.fault("backfill", back, True, back.status == "succeeded" and not back.problems,
                       f"the nightly of {old} ran after {step.covers}'s: readers stayed on {step.covers}")

    def _missed_hours(self, rec: RunRecord, hourly_before: List[RunRecord]) -> None:
        from pyspark.sql import functions as F

        from jobs.hourly_window import WATERMARKS, batch_id
        from jobs.lakehouse import Lakehouse
        start = datetime.fromisoformat(rec.covers)
        end = start + timedelta(hours=1)
        mark = (Lakehouse(self.spark, self.cfg).read(WATERMARKS)
                .filter((F.col("source") == self.source) & (F.col("batch_id") == batch_id(end))).first())
        low = mark["low"].replace(tzinfo=timezone.utc) if mark else None
        missed = int((start - low).total_seconds() // 3600) if low else 0
        self.fault("missed_hours", rec, True, missed >= 3 and rec.status == "succeeded" and not rec.problems,
                   f"the batch of {rec.covers} starts at {low.isoformat() if low else '?'}: it caught up {missed} "
                   "missed hours (or the day's nightly held them)")

    def _rollback(self, step: Step) -> None:
        from jobs.publish import rollback
        from serving.versions import read_meta
        t0 = time.time()
        frm, to = rollback(self.cfg)
        r, ks = self.redis()
        meta = read_meta(r, ks, to)
        base_meta = read_meta(r, ks, meta["base"]) if meta.get("base") else meta
        self.expected_day = str(base_meta.get("data_day") or base_meta.get("run_date"))
        rec = RunRecord(kind=ROLLBACK, covers=step.covers, scheduled_at=step.at.isoformat(),
                        seconds=round(time.time() - t0, 2), status="succeeded", faults=["rollback"],
                        note=f"reco publish --rollback: {frm} -> {to}")
        self.position = None
        self.check(rec, moved_back_on_purpose=True)
        # the scheduler retries the nightly's publish task (a cleared task): it must not undo the rollback
        retry = self.run_dag(step, only=["publish"], note="the nightly's publish retried after the rollback")
        self.check(retry)
        held = retry.readers.get("version") == to
        self.fault("rollback", retry, True, held and retry.status == "succeeded" and not retry.problems,
                   f"readers moved {frm} -> {to}; the retried publish left them on {retry.readers.get('version')}; "
                   "the next hourly patches it and the next nightly moves on")

    def run(self, steps: List[Step]) -> Dict[str, Any]:
        t0 = time.time()
        # progress and the summary on the console; the jobs' and libraries' logging in DIR/rehearsal.log
        handler = logging.FileHandler(self.out / "rehearsal.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root = logging.getLogger()
        saved = root.handlers[:]
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        # the DAG files and (inline) the tasks' `reco` commands read exactly the rehearsal's config
        saved_env = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            return self._run(steps, t0)
        finally:
            root.handlers[:] = saved
            handler.close()
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def _run(self, steps: List[Step], t0: float) -> Dict[str, Any]:
        print(f"rehearsal: {len(steps)} DAG runs after {self.last_day} ({self.runner} runner); logs in "
              f"{self.out / 'logs'}", flush=True)
        self.setup()
        for s in steps:
            self.step(s)
        return self.write(time.time() - t0, steps)

    # ------------------------------------------------------------------ output

    def write(self, seconds: float, steps: List[Step]) -> Dict[str, Any]:
        failed = [r for r in self.runs if r.problems]
        summary = {
            "runner": self.runner, "source": self.source, "first_day": (self.last_day + timedelta(days=1)).isoformat(),
            "seconds": round(seconds, 1), "runs": [asdict(r) for r in self.runs],
            "faults": [asdict(f) for f in self.faults],
            "invariants_checked": len(self.runs), "invariants_failed": len(failed),
            "wall_s": wall_times(self.runs),
        }
        (self.out / "rehearsal.json").write_text(json.dumps(summary, indent=2, default=str))
        (self.out / "rehearsal.html").write_text(timeline_html(summary))
        return summary


def rehearse(cfg: Config, days: int, hours_per_day: int, faults: str, out: str, runner: str = "process",
             kill_after_s: float = 25.0) -> Dict[str, Any]:
    from jobs.sources import default_run_date
    names = parse_faults(faults)
    source = cfg.orchestration.source or cfg.default_source
    from orchestration.schedule import daily_offset, hourly_offset
    orch = cfg.orchestration
    steps = plan(default_run_date(cfg, source), days, hours_per_day, names,
                 nightly_at=daily_offset(orch.nightly_schedule), hourly_at=hourly_offset(orch.hourly_schedule),
                 maintenance_at=daily_offset(orch.maintenance_schedule, "orchestration.maintenance_schedule"))
    return Rehearsal(cfg, Path(out), runner=runner, kill_after_s=kill_after_s).run(steps)
