"""Find the lakehouse's Delta tables (local folder or s3a://), count them and maintain them."""
from __future__ import annotations

import logging
import time
from typing import Dict, List, Optional, Sequence, Tuple

from jobs.lakehouse import Lakehouse

log = logging.getLogger(__name__)


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


def maintain_tables(lh: Lakehouse, names: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """OPTIMIZE and VACUUM (``Lakehouse.maintain``) each named table, default every table under the root
    (bronze, quarantine, the hourly tables and the audit tables too: those gather one small file per
    batch). Returns the seconds spent per table."""
    known = list_tables(lh)
    names = list(names) if names else known
    missing = sorted(set(names) - set(known))
    if missing:
        raise ValueError(f"no Delta table {missing} under {lh.root}; the tables there are {known}")
    seconds: Dict[str, float] = {}
    for i, name in enumerate(names, 1):
        t0 = time.time()
        lh.maintain(name)
        seconds[name] = round(time.time() - t0, 1)
        log.info("[maintain] %d/%d %s: OPTIMIZE + VACUUM in %.1fs", i, len(names), name, seconds[name])
    return seconds


def table_summary(lh: Lakehouse) -> List[Tuple[str, int, str]]:
    return [(name, lh.read(name).count(), lh.path(name)) for name in list_tables(lh)]


def content_checksum(df, exclude=()) -> Tuple[int, int]:
    """(row count, order-insensitive checksum of every column's values)."""
    from pyspark.sql import functions as F
    cols = [c for c in df.columns if c not in set(exclude)]
    row = df.select(F.xxhash64(*[F.col(f"`{c}`") for c in cols]).alias("h")).agg(
        F.count("*").alias("n"), F.coalesce(F.sum(F.col("h").cast("decimal(38,0)")), F.lit(0)).alias("s")).first()
    return int(row["n"]), int(row["s"])
