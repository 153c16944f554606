"""The ``ingested_files`` table: which files each nightly file batch took, per (source, run date).

One row per file of the latest batch of a (source, run date): its uri, size and ETag, and the batch
id. A nightly batch's files are the ones its path lists that no other run date took
(:func:`jobs.storage.unclaimed`), so an accumulating folder or prefix yields each night only its new
files, and a rerun of a night takes the same files again. The rows of a (source, run date) are
replaced when its batch lands in bronze, whether or not it then passes the quality gate: a bad file
stays with its night (fix it and rerun that night) instead of failing every later one.
"""
from __future__ import annotations

from datetime import date
from typing import Dict, List

from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.lakehouse import Lakehouse
from jobs.storage import Claim, InputFile

TABLE = "ingested_files"

SCHEMA = T.StructType([
    T.StructField("source", T.StringType(), False),
    T.StructField("run_date", T.DateType(), False),
    T.StructField("batch_id", T.StringType(), False),
    T.StructField("uri", T.StringType(), False),
    T.StructField("size", T.LongType(), False),
    T.StructField("etag", T.StringType(), True),
])


def claims(lh: Lakehouse, source: str) -> Dict[str, Claim]:
    """uri -> :class:`Claim` for every file a nightly batch of ``source`` took (one small Spark job)."""
    if not lh.exists(TABLE):
        return {}
    rows = lh.read(TABLE).filter(F.col("source") == source).collect()
    return {r["uri"]: Claim(run_date=r["run_date"], batch_id=r["batch_id"], size=int(r["size"]), etag=r["etag"])
            for r in rows}


def record(lh: Lakehouse, source: str, run_date: date, batch_id: str, files: List[InputFile]) -> None:
    """The files of the (source, run date)'s batch, replacing what an earlier batch of that night took."""
    rows = [(source, run_date, batch_id, f.uri, int(f.size), f.etag) for f in files]
    lh.replace(lh.spark.createDataFrame(rows, SCHEMA), TABLE, {"source": source, "run_date": run_date})
