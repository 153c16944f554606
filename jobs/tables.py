"""Find the lakehouse's Delta tables (local folder or s3a://) and count them."""
from __future__ import annotations

from typing import List, Tuple

from jobs.lakehouse import Lakehouse


def list_tables(lh: Lakehouse) -> List[str]:
    """Names of the Delta tables directly under the lakehouse root, sorted."""
    jvm = lh.spark._jvm
    root = jvm.org.apache.hadoop.fs.Path(lh.root)
    fs = root.getFileSystem(lh.spark._jsc.hadoopConfiguration())
    if not fs.exists(root):
        return []
    names = []
    for status in fs.listStatus(root):
        name = status.getPath().getName()
        if status.isDirectory() and not name.startswith(("_", ".")) and \
                fs.exists(jvm.org.apache.hadoop.fs.Path(status.getPath(), "_delta_log")):
            names.append(name)
    return sorted(names)


def table_summary(lh: Lakehouse) -> List[Tuple[str, int, str]]:
    return [(name, lh.read(name).count(), lh.path(name)) for name in list_tables(lh)]


def content_checksum(df, exclude=()) -> Tuple[int, int]:
    """(row count, order-insensitive checksum of every column's values)."""
    from pyspark.sql import functions as F
    cols = [c for c in df.columns if c not in set(exclude)]
    row = df.select(F.xxhash64(*[F.col(f"`{c}`") for c in cols]).alias("h")).agg(
        F.count("*").alias("n"), F.coalesce(F.sum(F.col("h").cast("decimal(38,0)")), F.lit(0)).alias("s")).first()
    return int(row["n"]), int(row["s"])
