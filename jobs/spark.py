"""The one SparkSession factory, used by every job and by the tests' fixture.

Delta comes in through ``configure_spark_with_delta_pip``: on first start Spark
resolves ``io.delta:delta-spark`` from Maven Central into ``~/.ivy2`` and reuses
that cache afterwards. With an ``s3a://`` lakehouse the hadoop-aws package is
added the same way.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Dict, Optional

from jobs.config import Config

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
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
    )
    for key, value in {**cfg.spark.conf, **(extra_conf or {})}.items():
        builder = builder.config(key, value)
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
