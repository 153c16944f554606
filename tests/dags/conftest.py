"""Fixtures for the DAG tests.

Airflow reads its configuration once, when first imported: the session fixture points it at a
throwaway AIRFLOW_HOME (no examples, the project's dags folder) before any test here imports it,
and puts the environment back at the end. Test modules in this folder import Airflow only inside
fixtures and tests; anything that depends on a particular AIRFLOW_HOME or on RECO__* overrides runs
in a subprocess (see ``run_python``).
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, Optional

import pytest

from orchestration.schedule import DAGS_FOLDER
from config import PROJECT_ROOT


@pytest.fixture(scope="session", autouse=True)
def airflow_home(tmp_path_factory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("airflow_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_HOME", str(home))
        mp.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        mp.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS_FOLDER))
        mp.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{home}/airflow.db")
        # the shape tests check the hourly DAG as four tasks; the default, one task, has its own test
        mp.setenv("RECO__ORCHESTRATION__HOURLY_TASKS", "steps")
        yield home


@pytest.fixture(scope="session")
def dagbag(airflow_home):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


def rendered_args(task, start, end) -> list:
    """The reco arguments of ``task`` rendered for the data interval [start, end) (a copy is rendered)."""
    from orchestration.harness import task_args

    t = copy.deepcopy(task)
    t.render_template_fields({"data_interval_start": start, "data_interval_end": end})
    return task_args(t)


def run_python(code: str, env: Optional[Dict[str, str]] = None, timeout: int = 120) -> dict:
    """Run ``code`` in a fresh interpreter (project root as cwd) and return the JSON its last line prints."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))}
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(PROJECT_ROOT), env=full_env, text=True,
                          capture_output=True, timeout=timeout)
    assert proc.returncode == 0, f"subprocess failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])
