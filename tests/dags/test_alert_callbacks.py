"""The failure callback inside real Airflow (`airflow dags test`): a task made by reco_task that fails
sends its task_failed alert, with the command to rerun it, to a real local HTTP receiver."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from core import alerts
from orchestration import harness
from tests.conftest import make_config
from tests.webhook import Receiver

PROBE_DAG = textwrap.dedent("""
    import pendulum
    from airflow.sdk import DAG
    from config import load_config
    from orchestration.tasks import reco_task

    with DAG("alert_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False):
        # argparse refuses the date before any Spark starts: exit code 2
        reco_task("bad_date", ["features", "--date", "not-a-date"], cfg=load_config())
""")


def test_a_failed_task_alerts_through_airflow(tmp_path):
    cfg = make_config(tmp_path, orchestration={"airflow_home": str(tmp_path / "af")})
    harness.ensure_airflow(cfg)
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "alert_probe.py").write_text(PROBE_DAG)
    with Receiver() as r:
        env = {**harness.airflow_env(cfg), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
               "RECO__ORCHESTRATION__RETRIES": "0", alerts.WEBHOOK_ENV: r.url}
        proc = subprocess.run([str(Path(sys.prefix) / "bin" / "airflow"), "dags", "test", "alert_probe",
                               "2026-10-28"], env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(r.received) == 1, out
    alert = r.received[0]["alert"]
    assert (alert["kind"], alert["severity"], alert["summary"]) == ("task_failed", "critical",
                                                                     "task alert_probe.bad_date failed")
    assert alert["details"]["exit_code"] == 2
    assert alert["details"]["error"] == "`reco features --date not-a-date` failed with exit code 2"
    assert alert["details"]["rerun"] == "reco features --date not-a-date"
