"""jobs.spark: the process runs in UTC, so the naive UTC datetimes the jobs hand Spark mean what they say."""
import os
import time
from datetime import datetime

import pytest
from pyspark.sql import functions as F

from jobs.spark import use_utc


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
