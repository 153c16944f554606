"""jobs.spark: the process runs in UTC, so the naive UTC datetimes the jobs hand Spark mean what they say; the
driver's class archive; the GPU resource settings of training.gpu."""
import json
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


# ------------------------------------------------------------------ GPU resources (training.gpu)

GPU_SCRIPT = str(js.PROJECT_ROOT / "conf" / "gpu_discovery.sh")


@pytest.fixture
def nvidia_smi(tmp_path, monkeypatch):
    """A stand-in ``nvidia-smi`` first on PATH: ``nvidia_smi("0\\n1\\n")`` lists two GPUs, ``None`` fails as on a
    machine whose driver is broken (the real one is not run, so the answers hold on any machine)."""
    folder = tmp_path / "fakebin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    def lists(out):
        body = f"printf '{out}'" if out is not None else "echo 'NVIDIA-SMI has failed' >&2; exit 9"
        (folder / "nvidia-smi").write_text(f"#!/bin/sh\n{body}\n")
        (folder / "nvidia-smi").chmod(0o755)
    return lists


def _run_script(**env):
    import subprocess
    return subprocess.run([GPU_SCRIPT], capture_output=True, text=True, check=True,
                          env={**os.environ, **env}).stdout


def test_the_discovery_script_prints_sparks_resource_json(nvidia_smi):
    assert os.access(GPU_SCRIPT, os.X_OK)
    nvidia_smi("0\\n1\\n")
    out = _run_script()
    assert out == '{"name": "gpu", "addresses": ["0", "1"]}\n'
    assert json.loads(out) == {"name": "gpu", "addresses": ["0", "1"]}
    # CUDA_VISIBLE_DEVICES: positions in it (TorchDistributor maps an address back through it)
    assert json.loads(_run_script(CUDA_VISIBLE_DEVICES="1"))["addresses"] == ["0"]
    assert json.loads(_run_script(CUDA_VISIBLE_DEVICES=""))["addresses"] == []
    nvidia_smi(None)                                    # nvidia-smi fails: none, and the script still succeeds
    assert json.loads(_run_script()) == {"name": "gpu", "addresses": []}


def _gpu_cfg(cfg, master="local[2]", on_driver=True, **gpu):
    training = cfg.training.model_copy(update={"gpu": cfg.training.gpu.model_copy(update=gpu),
                                               "distributor_local_mode": on_driver})
    return cfg.model_copy(update={"training": training, "spark": cfg.spark.model_copy(update={"master": master})})


def _resource_keys(conf):
    return {k: v for k, v in conf.items() if ".resource." in k or k.startswith("spark.executorEnv.")}


def test_auto_finds_no_gpu_here_and_adds_nothing(cfg, nvidia_smi):
    nvidia_smi(None)
    assert js.discover_gpus(GPU_SCRIPT) == []
    assert cfg.training.gpu.enabled == "auto"
    assert js.gpu_conf(cfg) == {}
    assert _resource_keys(js.session_conf(cfg)) == {}


def test_local_gpus_add_exactly_the_drivers_resource_settings(cfg, nvidia_smi):
    nvidia_smi("0\\n1\\n")
    want = {"spark.driver.resource.gpu.amount": "2", "spark.driver.resource.gpu.discoveryScript": GPU_SCRIPT}
    assert js.gpu_conf(cfg) == want
    assert _resource_keys(js.session_conf(cfg)) == want
    assert js.gpu_conf(_gpu_cfg(cfg, enabled=True)) == want
    assert js.gpu_conf(_gpu_cfg(cfg, enabled=False)) == {}           # off: none, GPUs or not
    assert _resource_keys(js.session_conf(_gpu_cfg(cfg, enabled=False))) == {}
    # spark.conf's own value wins
    mine = cfg.model_copy(update={"spark": cfg.spark.model_copy(
        update={"conf": {**cfg.spark.conf, "spark.driver.resource.gpu.amount": "1"}})})
    assert js.session_conf(mine)["spark.driver.resource.gpu.amount"] == "1"


def test_gpus_required_but_none_found_fails_at_start(cfg, nvidia_smi):
    nvidia_smi(None)
    with pytest.raises(js.ConfigError, match="finds no GPU"):
        js.gpu_conf(_gpu_cfg(cfg, enabled=True))


def test_ranks_on_a_clusters_executors_get_executor_and_task_amounts_when_enabled(cfg, nvidia_smi):
    nvidia_smi(None)                                     # the driver has no GPU; the executors do
    on = _gpu_cfg(cfg, master="yarn", on_driver=False, enabled=True, per_executor=4,
                  nccl_env={"NCCL_SOCKET_IFNAME": "eth0"})
    assert js.gpu_conf(on) == {"spark.executor.resource.gpu.amount": "4", "spark.task.resource.gpu.amount": "1",
                               "spark.executor.resource.gpu.discoveryScript": GPU_SCRIPT,
                               "spark.executorEnv.NCCL_SOCKET_IFNAME": "eth0"}
    assert js.gpu_conf(_gpu_cfg(cfg, master="yarn", on_driver=False)) == {}     # auto: the driver cannot tell
    assert js.gpu_conf(_gpu_cfg(cfg, master="spark://m:7077", on_driver=False, enabled=False)) == {}


def test_ranks_on_a_clusters_driver_get_the_drivers_gpus(cfg, nvidia_smi):
    # distributor_local_mode (prod.yaml's default) on a yarn master: TorchDistributor reads the driver's GPUs
    nvidia_smi("0\n")
    assert js.gpu_conf(_gpu_cfg(cfg, master="yarn")) == {"spark.driver.resource.gpu.amount": "1",
                                                         "spark.driver.resource.gpu.discoveryScript": GPU_SCRIPT}


def test_a_broken_discovery_script_is_named(cfg, tmp_path):
    missing = _gpu_cfg(cfg, discovery_script=str(tmp_path / "none.sh"))
    with pytest.raises(js.ConfigError, match="none.sh is missing or not executable"):
        js.gpu_conf(missing)
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/sh\necho oops\n")
    bad.chmod(0o755)
    with pytest.raises(js.ConfigError, match="bad.sh failed or printed"):
        js.gpu_conf(_gpu_cfg(cfg, discovery_script=str(bad)))
