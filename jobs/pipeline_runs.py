"""The ``pipeline_runs`` audit table: one row per (step, source, batch, run date).

A rerun of the same step for the same batch and date replaces its row (MERGE; a first
run's row is appended, which is cheaper and ends the same), so a retried run leaves the
table as a single successful run would.
"""
from __future__ import annotations

import json
from datetime import date
from typing import Dict

from pyspark.sql import types as T

from jobs.lakehouse import Lakehouse

SCHEMA = T.StructType([
    T.StructField("step", T.StringType(), False),
    T.StructField("source", T.StringType(), False),
    T.StructField("batch_id", T.StringType(), False),
    T.StructField("run_date", T.DateType(), False),
    T.StructField("status", T.StringType(), False),
    T.StructField("input_rows", T.LongType(), True),
    T.StructField("accepted_rows", T.LongType(), True),
    T.StructField("excluded_rows", T.LongType(), True),
    T.StructField("quarantined_rows", T.LongType(), True),
    T.StructField("details", T.StringType(), True),
    T.StructField("duration_s", T.DoubleType(), True),
])


def record_run(lh: Lakehouse, step: str, source: str, batch_id: str, run_date: date, status: str,
               counts: Dict[str, object], duration_s: float) -> None:
    details = {k: v for k, v in counts.items()
               if k not in ("input_rows", "accepted_rows", "excluded_rows", "quarantined_rows")}
    row = (step, source, batch_id, run_date, status,
           _int(counts.get("input_rows")), _int(counts.get("accepted_rows")),
           _int(counts.get("excluded_rows")), _int(counts.get("quarantined_rows")),
           json.dumps(details, sort_keys=True, default=str), round(float(duration_s), 1))
    df = lh.spark.createDataFrame([row], SCHEMA)
    lh.merge(df, "pipeline_runs", keys=["step", "source", "batch_id", "run_date"], few=True)


def _int(v):
    return None if v is None else int(v)
