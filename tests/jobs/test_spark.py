"""jobs.spark: the process runs in UTC, so the naive UTC datetimes the jobs hand Spark mean what they say."""
import os
import time
from datetime import datetime
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from jobs import spark as js
from jobs.spark import use_utc
from tests.conftest import make_config


@pytest.fixture
def new_york(monkeypatch):
    """This process in America/New_York (UTC-4 on 2026-10-29) until the test ends."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _as_spark_sees(spark, value: datetime) -> str:
    return spark.range(1).select(F.lit(value).cast("string")).first()[0]


def test_use_utc_makes_a_naive_datetime_the_same_wall_time_in_spark(spark, new_york):
    hour = datetime(2026, 10, 29, 2, 0)
    # the trap: PySpark converts a naive datetime with the process's zone, not the session's (UTC)
    assert _as_spark_sees(spark, hour) == "2026-10-29 06:00:00"
    use_utc()
    assert os.environ["TZ"] == "UTC"
    assert _as_spark_sees(spark, hour) == "2026-10-29 02:00:00"
    # and back: a collected timestamp is the UTC wall time
    assert spark.range(1).select(F.lit("2026-10-29 02:00:00").cast("timestamp")).first()[0] == hour


def test_build_spark_and_the_cli_run_in_utc(spark):
    # the session fixture went through build_spark; `reco` calls use_utc before anything else
    assert os.environ["TZ"] == "UTC"
    assert time.strftime("%z") == "+0000"


# ------------------------------------------------------------------ the driver's class archive


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.delenv(js._DUMP_ENV, raising=False)
    return make_config(tmp_path, spark={"class_archive_dir": str(tmp_path / "jvm")})


def test_the_archive_is_named_by_the_jvm_jars_and_driver_settings(cfg):
    path = js.class_archive_path(cfg)
    assert path.parent == Path(cfg.spark.class_archive_dir)
    assert path.name.startswith("spark-") and path.suffix == ".jsa"
    assert js.class_archive_path(cfg) == path                      # stable
    bigger = cfg.model_copy(update={"spark": cfg.spark.model_copy(update={"driver_memory": "40g"})})
    assert js.class_archive_path(bigger) != path                   # another heap layout: another archive
    opts = cfg.model_copy(update={"spark": cfg.spark.model_copy(
        update={"conf": {**cfg.spark.conf, "spark.driver.extraJavaOptions": "-XX:+UseSerialGC"}})})
    assert js.class_archive_path(opts) != path
    home = cfg.model_copy(update={"spark": cfg.spark.model_copy(update={"class_archive_dir": "~/x"})})
    assert js.class_archive_path(home).parent == Path.home() / "x"


def test_another_checkouts_jars_get_another_archive(cfg, monkeypatch, tmp_path):
    # a second virtual environment: the same jar names in another folder (the JVM checks the class
    # path and refuses an archive dumped with the first folder's jars)
    ours = js.class_archive_path(cfg)
    other = tmp_path / "venv2" / "pyspark" / "jars"
    other.mkdir(parents=True)
    for jar in js._spark_jars().glob("*.jar"):
        (other / jar.name).touch()
    monkeypatch.setattr(js, "_spark_jars", lambda: other)
    assert js.class_archive_path(cfg) != ours
    assert js.class_archive_path(cfg).parent == ours.parent          # the same folder, another name


def _driver_opts(cfg, **kw):
    return js.session_conf(cfg, **kw)["spark.driver.extraJavaOptions"]


def test_a_local_driver_maps_the_archive_only_when_it_exists(cfg, monkeypatch):
    cfg = cfg.model_copy(update={"spark": cfg.spark.model_copy(     # the defaults' driver options, not the tests'
        update={"conf": {k: v for k, v in cfg.spark.conf.items() if k != "spark.driver.extraJavaOptions"}})})
    assert _driver_opts(cfg) == "-Duser.timezone=UTC"              # none built yet
    archive = js.class_archive_path(cfg)
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"x")
    assert _driver_opts(cfg) == f"-Duser.timezone=UTC -XX:SharedArchiveFile={archive}"
    assert _driver_opts(cfg, submitted=True) == "-Duser.timezone=UTC"   # spark-submit started the JVM
    off = cfg.model_copy(update={"spark": cfg.spark.model_copy(update={"class_archive": False})})
    assert _driver_opts(off) == "-Duser.timezone=UTC"
    # the builder's warm-up JVM dumps instead of mapping
    monkeypatch.setenv(js._DUMP_ENV, "/tmp/a.jsa.tmp")
    assert _driver_opts(cfg) == "-Duser.timezone=UTC -XX:ArchiveClassesAtExit=/tmp/a.jsa.tmp"
    # the config's own driver options are kept
    mine = cfg.model_copy(update={"spark": cfg.spark.model_copy(
        update={"conf": {**cfg.spark.conf, "spark.driver.extraJavaOptions": "-Dx=1"}})})
    assert _driver_opts(mine).startswith("-Dx=1 -XX:ArchiveClassesAtExit=")


def test_a_failed_build_leaves_no_archive_and_says_so(cfg, monkeypatch, capsys):
    # the warm-up process exits 1 (here: the interpreter it runs is `false`)
    monkeypatch.setattr(js.sys, "executable", "/bin/false")
    assert js.build_class_archive(cfg) is None
    assert "class archive NOT built (exit code 1)" in capsys.readouterr().err
    assert list(Path(cfg.spark.class_archive_dir).iterdir()) == []   # no archive, no temporary file


def test_prune_keeps_the_newest_archives(tmp_path):
    for i in range(5):
        p = tmp_path / f"spark-4-{i}.jsa"
        p.write_bytes(b"x")
        os.utime(p, (1000 + i, 1000 + i))
    (tmp_path / "other.txt").write_text("kept")
    js._prune(tmp_path, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.txt", "spark-4-2.jsa", "spark-4-3.jsa", "spark-4-4.jsa"]
