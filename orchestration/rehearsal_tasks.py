"""Running one task of a rehearsed DAG run: in a process of its own (``airflow tasks test``, as a
scheduler's worker runs it; or the rendered ``reco`` command, for a task to be killed) or in this process
(the PythonOperator's own callable, CI's inline runner), and stopping Redis while a publish runs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from config import Config
from orchestration.rehearsal_plan import HOURLY, Step


def task_command(cfg: Config, runner: str, env: Dict[str, str], task, step: Step,
                 args: List[str]) -> Tuple[List[str], Dict[str, str]]:
    """The command and environment that run one try of ``task`` in a process of its own: ``airflow tasks
    test`` (the process runner), else the rendered ``reco`` command (a killed task of the inline runner)."""
    from orchestration.harness import run_env
    from orchestration.schedule import dag_test_date
    if runner == "process":
        logical = dag_test_date(cfg, step.kind, step.covers if step.kind == HOURLY else
                                date.fromisoformat(step.covers))
        return [str(Path(sys.prefix) / "bin" / "airflow"), "tasks", "test", step.kind, task.task_id,
                logical.isoformat()], {**run_env(cfg), **env}
    out = {k: v for k, v in os.environ.items() if not k.startswith("RECO__")}
    out.update({**env, "TZ": "UTC"})
    return [sys.executable, "-m", "orchestration.cli", *args], out


def run_process(cmd: List[str], env: Dict[str, str], log_path: Path,
                kill_after: Optional[float] = None) -> Tuple[int, bool]:
    """Run ``cmd`` in its own process group, output to ``log_path``; SIGKILL it after ``kill_after`` s.
    Returns (exit code, killed)."""
    with open(log_path, "ab") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=str(Path(__file__).resolve().parents[1]))
        try:
            proc.wait(timeout=kill_after)
            return proc.returncode, False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return proc.returncode, True


def try_task(cfg: Config, runner: str, env: Dict[str, str], out: Path, task, step: Step, args: List[str],
             kill_after: Optional[float] = None, tz: Optional[str] = None) -> Tuple[bool, bool]:
    """One try of a task, its output appended to ``out/logs/``. Returns (succeeded, killed)."""
    log_path = out / "logs" / f"{step.kind}-{step.covers.replace(':', '')}-{task.task_id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if runner == "process" or kill_after is not None:
        cmd, penv = task_command(cfg, runner, env, task, step, args)
        if tz:
            penv["TZ"] = tz
        code, killed = run_process(cmd, penv, log_path, kill_after)
        return code == 0 and not killed, killed
    from contextlib import redirect_stderr, redirect_stdout

    from airflow.sdk.exceptions import AirflowException

    # what the Airflow worker runs: the PythonOperator's callable (orchestration.tasks.run_reco)
    run = getattr(task, "python_callable", None)
    if run is None:
        raise ValueError(f"the inline runner runs PythonOperator tasks (orchestration.executor: inprocess); "
                         f"{task.task_id} is a {type(task).__name__}: use --runner process")
    old_tz = os.environ.get("TZ")
    if tz:
        os.environ["TZ"] = tz
        time.tzset()
    try:
        with open(log_path, "a") as fh, redirect_stdout(fh), redirect_stderr(fh):   # the console is for people
            run(args)
        code = 0
    except AirflowException:        # the command exited non-zero (its message is in the task's log)
        code = 1
    finally:
        if tz:
            os.environ["TZ"] = old_tz or "UTC"
            time.tzset()
    return code == 0, False


class RedisStopper(threading.Thread):
    """Stops the embedded Redis as soon as a publish takes its lock (the publish is under way)."""

    def __init__(self, reh, timeout_s: float = 600.0) -> None:     # reh: orchestration.rehearse.Rehearsal
        super().__init__(daemon=True)
        self.reh, self.timeout_s, self.stopped = reh, timeout_s, False
        self._done = threading.Event()

    def run(self) -> None:
        import redis as redis_py
        r, ks = self.reh.redis()
        deadline = time.time() + self.timeout_s
        while not self._done.is_set() and time.time() < deadline:
            try:
                if r.exists(ks.publish_lock):
                    self.reh._server().stop(save=True)
                    self.stopped = True
                    return
            except redis_py.RedisError:
                return
            time.sleep(0.05)

    def finish(self) -> None:
        self._done.set()
        self.join(timeout=30)
