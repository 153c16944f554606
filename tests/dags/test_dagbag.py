"""The DAG files load without errors, quickly, and without heavy imports or lookups at parse time."""
from __future__ import annotations

import textwrap

import pytest

from core.names import HOURLY_DAG_ID, MAINTENANCE_DAG_ID, NIGHTLY_DAG_ID
from orchestration.schedule import DAGS_FOLDER
from orchestration.tasks import HEAVY_MODULES
from tests.dags.conftest import run_python


def test_dagbag_loads_every_dag_without_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert sorted(dagbag.dag_ids) == sorted([NIGHTLY_DAG_ID, HOURLY_DAG_ID, MAINTENANCE_DAG_ID])
    assert dagbag.dags[NIGHTLY_DAG_ID].fileloc == str(DAGS_FOLDER / "nightly.py")
    assert dagbag.dags[HOURLY_DAG_ID].fileloc == str(DAGS_FOLDER / "hourly.py")
    assert dagbag.dags[MAINTENANCE_DAG_ID].fileloc == str(DAGS_FOLDER / "maintenance.py")


def test_dags_serialize(dagbag):
    """The DAG processor stores DAGs serialized: the timetable, assets and callbacks must survive it."""
    from airflow.serialization.serialized_objects import DagSerialization

    for dag in dagbag.dags.values():
        back = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
        assert sorted(back.task_ids) == sorted(dag.task_ids)
        assert back.timetable.summary == dag.timetable.expression


# Imports one DAG file in a fresh interpreter with every lookup path booby-trapped: Variable and
# Connection lookups (the task SDK's functions behind Variable.get, Connection.get and
# BaseHook.get_connection) and any SQLAlchemy connection raise. Then checks that the traps work.
PARSE_ONE = textwrap.dedent("""
    import importlib.util, json, sys, time
    import sqlalchemy.engine
    import airflow.sdk.execution_time.context as ctx
    from airflow.sdk import DAG

    calls = []
    class Trap(Exception):
        pass
    def trap(name):
        def f(*a, **k):
            calls.append(name)
            raise Trap(name)
        return f
    ctx._get_connection = trap("connection")
    ctx._get_variable = trap("variable")
    sqlalchemy.engine.Engine.connect = trap("database")

    t0 = time.perf_counter()
    spec = importlib.util.spec_from_file_location("dag_under_test", {path!r})
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parse_s = time.perf_counter() - t0
    heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r}))
    dags = sorted(v.dag_id for v in vars(module).values() if isinstance(v, DAG))
    lookups = list(calls)

    # the traps must fire, or the test proves nothing
    from airflow.sdk import BaseHook, Variable
    fired = []
    for probe in (lambda: Variable.get("x"), lambda: BaseHook.get_connection("spark_default")):
        try:
            probe()
        except Trap as exc:
            fired.append(str(exc))
    print(json.dumps(dict(heavy=heavy, dags=dags, lookups=lookups, fired=fired, parse_s=parse_s)))
""")


def _parse_in_fresh_process(path, airflow_home):
    return run_python(PARSE_ONE.format(path=str(path), heavy=list(HEAVY_MODULES)),
                      env={"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home}/no-such-dir/airflow.db"})


@pytest.mark.parametrize("file, dag_id", [("nightly.py", NIGHTLY_DAG_ID), ("hourly.py", HOURLY_DAG_ID),
                                          ("maintenance.py", MAINTENANCE_DAG_ID)])
def test_dag_file_parses_light(airflow_home, file, dag_id):
    out = _parse_in_fresh_process(DAGS_FOLDER / file, airflow_home)
    assert out["dags"] == [dag_id]
    assert out["heavy"] == [], f"parse-time imports of heavy modules: {out['heavy']}"
    assert out["lookups"] == []
    assert out["fired"] == ["variable", "connection"]
    assert out["parse_s"] < 5, f"parsing took {out['parse_s']:.2f}s"
