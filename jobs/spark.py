"""The one SparkSession factory, used by every job and by the tests' fixture.

Delta comes in through ``configure_spark_with_delta_pip``: on first start Spark
resolves ``io.delta:delta-spark`` from Maven Central into ``~/.ivy2`` and reuses
that cache afterwards. With an ``s3a://`` lakehouse the hadoop-aws package is
added the same way.

A local driver JVM starts from a class archive (AppCDS) when one was built for
it: ``python -m jobs.spark class-archive`` runs a small Delta workload in a JVM
that dumps the classes it loaded at exit (``-XX:ArchiveClassesAtExit``), and
later drivers map them (``-XX:SharedArchiveFile``) instead of loading and
verifying some 18,000 classes one by one. On the 2-core dev machine that took
about 3.7 s (20%) off a start plus the first Delta query. The archive's name
is a hash of the JVM, the jars and the driver's settings, so another JDK,
Spark or heap size simply finds none and starts as before. ``make`` builds it
once, after the install.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from config import PROJECT_ROOT, Config
from core.errors import ConfigError

log = logging.getLogger(__name__)

_HADOOP_AWS = "org.apache.hadoop:hadoop-aws:3.4.1"


def use_utc() -> None:
    """Run this process (and what it starts: the JVM, Spark's Python workers) in UTC.

    The pipeline hands Spark naive datetimes that mean UTC wall time (windows, cut-offs, audit rows),
    and Spark's session time zone is UTC. PySpark, however, converts a naive ``datetime`` to and from a
    timestamp with the *process's* local zone (``time.mktime`` / ``datetime.fromtimestamp``): under
    ``TZ=America/New_York`` a ``F.lit(datetime(2026, 10, 29, 2))`` is 06:00 UTC, and an hourly run would
    read the wrong hour. Pinning the process to UTC makes both sides agree wherever the job runs.
    """
    if os.environ.get("TZ") != "UTC":
        os.environ["TZ"] = "UTC"
        time.tzset()


def session_conf(cfg: Config, extra_conf: Optional[Dict[str, str]] = None, submitted: bool = False) -> Dict[str, str]:
    """``cfg.spark.conf`` and ``extra_conf`` over the defaults and the GPU settings (:func:`gpu_conf`), with
    the driver JVM's class archive option.

    A driver this process launches (not ``submitted``) maps the class archive when it exists; the class
    archive builder's warm-up process (``RECO_CLASS_ARCHIVE_DUMP`` set) writes one at exit instead.
    """
    conf = {"spark.driver.extraJavaOptions": "-Duser.timezone=UTC", **gpu_conf(cfg), **cfg.spark.conf,
            **(extra_conf or {})}
    opts = conf["spark.driver.extraJavaOptions"]
    if submitted:
        return conf
    if os.environ.get(_DUMP_ENV):
        conf["spark.driver.extraJavaOptions"] = f"{opts} -XX:ArchiveClassesAtExit={os.environ[_DUMP_ENV]}"
    elif cfg.spark.class_archive:
        archive = class_archive_path(cfg)
        if archive.is_file():
            conf["spark.driver.extraJavaOptions"] = f"{opts} -XX:SharedArchiveFile={archive}"
        else:
            log.info("no class archive at %s: the driver JVM loads its classes one by one, about 4 s slower "
                     "(`python -m jobs.spark class-archive` builds it)", archive)
    return conf


def discover_gpus(script: str, timeout_s: float = 30.0) -> List[str]:
    """The GPU addresses Spark's discovery ``script`` reports on this machine (its JSON's ``addresses``)."""
    if not os.access(script, os.X_OK):
        raise ConfigError(f"training.gpu.discovery_script {script} is missing or not executable "
                          f"(chmod +x it, or point the setting at one that prints "
                          f'{{"name": "gpu", "addresses": [...]}})')
    try:
        out = subprocess.run([script], capture_output=True, text=True, timeout=timeout_s, check=True).stdout
        found = json.loads(out)
        addresses = [str(a) for a in found["addresses"]]
    except (subprocess.SubprocessError, OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"the GPU discovery script {script} failed or printed something other than "
                          f'{{"name": "gpu", "addresses": [...]}}: {e}') from None
    if found.get("name") != "gpu":
        raise ConfigError(f"the GPU discovery script {script} names the resource {found.get('name')!r}, not 'gpu'")
    return addresses


def gpu_conf(cfg: Config, master: Optional[str] = None) -> Dict[str, str]:
    """The Spark resource settings GPU training through TorchDistributor needs (``training.gpu``); empty
    when GPUs are off.

    Ranks on the driver (a local master, or ``training.distributor_local_mode``, the default):
    ``spark.driver.resource.gpu.amount`` (every GPU the discovery script finds: TorchDistributor's local
    mode runs one process per driver GPU) and the driver's discovery script; ``enabled: auto`` finding none
    adds nothing, ``enabled: true`` finding none is an error. No task amount: a local master schedules no
    task resources (a task asking for one there never runs).
    Ranks on the executors (``distributor_local_mode: false`` on a cluster master; ``enabled: true`` only,
    since the driver cannot see the executors' GPUs): GPUs per executor, one per task (a training
    process), and the executors' discovery script. Every Spark task of the session then needs a GPU, so
    an executor runs as many tasks at once as it has GPUs. ``training.gpu.nccl_env`` goes to the executors'
    environment (``spark.executorEnv.*``); ranks on the driver inherit its environment (:func:`build_spark`).
    ``spark.conf`` entries of the same names win over these.
    """
    gpu = cfg.training.gpu
    if gpu.enabled is False:
        return {}
    script = gpu.discovery_script
    script = script if os.path.isabs(script) else str(PROJECT_ROOT / script)
    if (master or cfg.spark.master or "local").startswith("local") or cfg.training.distributor_local_mode:
        found = discover_gpus(script)
        if not found:
            if gpu.enabled is True:
                raise ConfigError(f"training.gpu.enabled is true but {script} finds no GPU on this machine "
                                  "(nvidia-smi missing or listing none, or CUDA_VISIBLE_DEVICES empty); set "
                                  "training.gpu.enabled to auto or false to train on the CPU")
            return {}
        return {"spark.driver.resource.gpu.amount": str(len(found)),
                "spark.driver.resource.gpu.discoveryScript": script}
    if gpu.enabled == "auto":
        log.info("training.gpu.enabled is auto with the ranks on a cluster's executors: no GPUs requested (the "
                 "driver cannot see the executors'); set it to true to train on the executors' GPUs")
        return {}
    return {"spark.executor.resource.gpu.amount": str(gpu.per_executor),
            "spark.task.resource.gpu.amount": str(gpu.per_process),
            "spark.executor.resource.gpu.discoveryScript": script,
            **{f"spark.executorEnv.{k}": v for k, v in gpu.nccl_env.items()}}


def build_spark(cfg: Config, app_name: Optional[str] = None, extra_conf: Optional[Dict[str, str]] = None):
    """Return a SparkSession with Delta enabled, configured from ``cfg.spark``; the process runs in UTC
    from here on (:func:`use_utc`)."""
    from delta import configure_spark_with_delta_pip
    from pyspark.sql import SparkSession

    use_utc()
    # Python workers must run the same interpreter as the driver (the venv's).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

    # Under spark-submit (the Airflow DAGs' spark_submit executor) the JVM is already up, with the master,
    # deploy mode, memory and packages spark-submit was given: those win over the config's.
    submitted = bool(os.environ.get("PYSPARK_GATEWAY_PORT"))
    builder = SparkSession.builder if submitted else SparkSession.builder.master(cfg.spark.master)
    builder = (
        builder
        .appName(app_name or cfg.spark.app_name)
        .config("spark.driver.memory", cfg.spark.driver_memory)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.databricks.delta.retentionDurationCheck.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
    )
    conf = session_conf(cfg, extra_conf, submitted)
    for key, value in conf.items():
        builder = builder.config(key, value)
    if "spark.driver.resource.gpu.amount" in conf:
        # local mode: TorchDistributor's processes are this process's children and inherit its environment
        for key, value in cfg.training.gpu.nccl_env.items():
            os.environ.setdefault(key, value)
        log.info("Spark driver GPUs: %s (training.gpu.enabled: %s)", conf["spark.driver.resource.gpu.amount"],
                 cfg.training.gpu.enabled)
    extra_packages = []
    if cfg.lakehouse.root.startswith("s3a://"):
        extra_packages.append(_HADOOP_AWS)
        if cfg.s3.endpoint_url:
            builder = (builder.config("spark.hadoop.fs.s3a.endpoint", cfg.s3.endpoint_url)
                       .config("spark.hadoop.fs.s3a.path.style.access", "true"))
    if submitted:   # spark-submit resolved the packages (orchestration.spark_submit.packages)
        spark = builder.getOrCreate()
    else:
        spark = configure_spark_with_delta_pip(builder, extra_packages=extra_packages).getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


# ---------------------------------------------------------------------------------------------
# The driver JVM's class archive (AppCDS)

_DUMP_ENV = "RECO_CLASS_ARCHIVE_DUMP"   # set in the builder's warm-up process: where its JVM dumps
KEEP_ARCHIVES = 3                        # a new archive (about 190 MB) replaces the oldest beyond these


def _prune(folder: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest archives in ``folder`` (other JDKs, jars or settings)."""
    archives = sorted(folder.glob("spark-*.jsa"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in archives[keep:]:
        old.unlink(missing_ok=True)


def _java() -> Optional[Path]:
    """The ``java`` spark-submit runs: ``$JAVA_HOME/bin/java``, else the one on PATH (links resolved)."""
    home = os.environ.get("JAVA_HOME")
    found = os.path.join(home, "bin", "java") if home else shutil.which("java")
    return Path(found).resolve() if found and os.path.exists(found) else None


def _spark_jars() -> Path:
    """The folder of the jars a local driver JVM puts on its class path (pyspark's own)."""
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def class_archive_path(cfg: Config) -> Path:
    """Where the class archive of this JVM, these jars and this driver's settings is (or would be).

    The key covers what the JVM checks before it maps an archive (the JDK build, the class path: the
    jars' folder and names) and what changes the heap layout (the driver's memory and options): a
    change of any of them names another file, so a stale archive is never offered to a JVM that would
    refuse it. Two checkouts with their own virtual environments share the archive folder but not
    the jars' folder, so each gets its own archive.
    """
    from importlib.metadata import version

    import pyspark

    java = _java()
    jvm_files = [java, *(java.parent.parent / "lib" / "server").glob("libjvm.*")] if java else []
    jars = _spark_jars()
    key = {
        "jvm": [(str(f), f.stat().st_size, int(f.stat().st_mtime)) for f in jvm_files],
        "spark": pyspark.__version__,
        "jars_dir": str(jars.resolve()),
        "jars": sorted(p.name for p in jars.glob("*.jar")),
        "delta": version("delta-spark"),
        "memory": cfg.spark.driver_memory,
        "options": {k: v for k, v in cfg.spark.conf.items() if "extraJavaOptions" in k or "extraClassPath" in k},
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cfg.spark.class_archive_dir).expanduser()
    if not folder.is_absolute():
        folder = PROJECT_ROOT / folder
    return folder / f"spark-{pyspark.__version__}-{digest}.jsa"


def _warm_up(spark, folder: Path) -> None:
    """What a pipeline run makes the driver load: Delta writes, reads, replaceWhere, MERGE, DELETE,
    joins, windows, aggregates, pandas in and out, a pandas UDF."""
    import pandas as pd
    from delta.tables import DeltaTable
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    path = str(folder / "warm_up")
    events = (spark.range(2000).withColumn("user", F.col("id") % 37).withColumn("item", F.col("id") % 101)
              .withColumn("event_time", F.timestamp_seconds(F.lit(1_790_000_000) + F.col("id") * 60))
              .withColumn("event_date", F.to_date("event_time")).withColumn("weight", F.rand(7).cast("float")))
    events.write.format("delta").partitionBy("event_date").mode("overwrite").save(path)
    day = events.select(F.min("event_date")).first()[0]
    (events.filter(F.col("event_date") == F.lit(day)).write.format("delta").mode("overwrite")
     .option("replaceWhere", f"event_date = '{day}'").save(path))
    table = spark.read.format("delta").load(path)
    ranked = (table.groupBy("item").agg(F.count("*").alias("n"), F.max("event_time").alias("last"))
              .withColumn("rank", F.row_number().over(Window.orderBy(F.desc("n"), "item"))))
    table.join(ranked, "item").filter(F.col("rank") <= 10).toPandas()
    updates = spark.createDataFrame(pd.DataFrame({"id": [1, 5000], "user": [1, 2], "item": [3, 4]}))
    (DeltaTable.forPath(spark, path).alias("t").merge(updates.alias("s"), "t.id = s.id")
     .whenMatchedUpdate(set={"item": "s.item"}).whenNotMatchedInsert(values={"id": "s.id", "user": "s.user",
                                                                              "item": "s.item"}).execute())
    DeltaTable.forPath(spark, path).delete("user = 2")

    def double(batches):
        for b in batches:
            yield b.assign(weight=b["weight"] * 2)
    table.select("id", "weight").mapInPandas(double, "id long, weight float").agg(F.sum("weight")).first()
    DeltaTable.forPath(spark, path).history(5).collect()


def _dump(cfg: Config) -> int:
    """The warm-up process: its driver JVM dumps the classes it loaded when it exits."""
    with tempfile.TemporaryDirectory(prefix="reco-class-archive-") as tmp:
        spark = build_spark(cfg, app_name="retailreco-class-archive")
        jvm = spark.sparkContext._gateway.proc   # the spark-submit JVM PySpark started (stdin: a pipe)
        try:
            _warm_up(spark, Path(tmp))
        finally:
            # on EOF the gateway exits and writes the dump: wait for it, even when the warm-up failed, so
            # that no JVM is still writing the file when the builder looks at (or removes) it
            spark.stop()
            jvm.stdin.close()
            code = jvm.wait(timeout=600)
        return code


def build_class_archive(cfg: Config, force: bool = False) -> Optional[Path]:
    """Build the class archive for ``cfg``'s driver unless it exists; returns its path (None: not built).

    The warm-up runs in a child process whose JVM writes to a temporary file next to the archive; only a
    complete dump from a JVM that exited cleanly is renamed into place, so a reader never maps half a file.
    """
    target = class_archive_path(cfg)
    if target.is_file() and not force:
        print(f"class archive: {target} (exists)")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    t0 = time.time()
    env = {**os.environ, _DUMP_ENV: str(tmp)}
    proc = subprocess.run([sys.executable, "-m", "jobs.spark", "_dump"], env=env, cwd=str(PROJECT_ROOT),
                          capture_output=True, text=True)
    ok = proc.returncode == 0 and tmp.is_file() and tmp.stat().st_size > 0
    if not ok:
        tmp.unlink(missing_ok=True)
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        print(f"class archive NOT built (exit code {proc.returncode}); Spark starts without one, about 4 s "
              f"slower. The warm-up's output:\n{tail}", file=sys.stderr)
        return None
    os.replace(tmp, target)
    _prune(target.parent, keep=KEEP_ARCHIVES)
    print(f"class archive: {target} ({target.stat().st_size / 2**20:.0f} MiB, built in {time.time() - t0:.0f} s)")
    return target


def main(argv: Optional[List[str]] = None) -> int:
    from config import load_config

    p = argparse.ArgumentParser(prog="python -m jobs.spark", description="the local Spark driver's class archive")
    sub = p.add_subparsers(dest="action", required=True)
    sp = sub.add_parser("class-archive", help="build the class archive of this JVM and config (once)")
    sp.add_argument("--force", action="store_true", help="rebuild it even if it exists")
    sub.add_parser("_dump")   # internal: the warm-up process
    args = p.parse_args(argv)
    cfg = load_config()
    if args.action == "_dump":
        return _dump(cfg)
    if not cfg.spark.class_archive:
        print("spark.class_archive is off: nothing to build")
        return 0
    return 0 if build_class_archive(cfg, force=args.force) else 1


if __name__ == "__main__":
    sys.exit(main())
