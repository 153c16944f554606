"""Drift measures of the nightly's monitoring (``jobs/monitor.py`` writes them to ``monitoring``).

Inputs of the day against a reference window (the days before it: the data the champion was trained
on), and the day's served lists against yesterday's:

* :func:`psi`, the population stability index of two distributions given as counts per bin
  (event types, price bins, events-per-customer bins): ``sum((c - r) * ln(c / r))`` over the bins'
  shares, each share floored so an empty bin costs a finite amount. Usual reading: under 0.1 stable,
  0.1-0.25 a shift worth a look, over 0.25 a different population;
* :func:`volume_ratio`: the day's events over the reference's median day;
* :func:`new_share`: share of the day's ids (customers, items) the reference never saw;
* :func:`list_overlap`: per customer listed both days, the share of today's list also in
  yesterday's, averaged;
* :func:`coverage`: distinct items in the lists over the catalog's items;
* :func:`judge`: a value against its warning / critical limits.

The pure functions work on plain numbers (known-answer tests without Spark); the ``*_frame`` /
``counts_by`` helpers reduce DataFrames to those numbers. No config, no paths, no clock.
"""
from __future__ import annotations

import math
import statistics
from typing import Dict, Hashable, List, Mapping, Optional, Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

OK, WARNING, CRITICAL, NO_DATA = "ok", "warning", "critical", "no_data"
PSI_FLOOR = 1e-4     # the smallest share a bin counts with (an empty bin on one side only)


# ------------------------------------------------------------------ pure


def psi(reference: Mapping[Hashable, float], current: Mapping[Hashable, float],
        floor: float = PSI_FLOOR) -> Optional[float]:
    """Population stability index of ``current`` against ``reference`` (counts per bin; a bin missing
    from one side counts 0 there). None when either side is empty."""
    r_total, c_total = sum(reference.values()), sum(current.values())
    if r_total <= 0 or c_total <= 0:
        return None
    out = 0.0
    for key in set(reference) | set(current):
        r = max(reference.get(key, 0) / r_total, floor)
        c = max(current.get(key, 0) / c_total, floor)
        out += (c - r) * math.log(c / r)
    return out


def volume_ratio(day_count: int, reference_counts: Sequence[int]) -> Optional[float]:
    """The day's events over the median of the reference days' (every day of the window, a day without
    events as 0). None without reference days or when their median is 0."""
    if not reference_counts:
        return None
    median = statistics.median(reference_counts)
    return day_count / median if median > 0 else None


def judge(value: Optional[float], bound: str, warning: Optional[float], critical: Optional[float]) -> str:
    """``critical``, ``warning`` or ``ok`` for ``value`` against its limits (``bound: max`` breaches
    above a limit, ``min`` below); ``no_data`` when there is no value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NO_DATA

    def beyond(limit: Optional[float]) -> bool:
        return limit is not None and (value > limit if bound == "max" else value < limit)

    return CRITICAL if beyond(critical) else WARNING if beyond(warning) else OK


def limit_used(status: str, warning: Optional[float], critical: Optional[float]) -> Optional[float]:
    """The limit a status was decided by: the critical one when critical, else the warning one (or the
    critical one when there is no warning limit)."""
    if status == CRITICAL:
        return critical
    return warning if warning is not None else critical


# ------------------------------------------------------------------ DataFrames to numbers


def counts_by(df: DataFrame, column: str) -> Dict[object, int]:
    """Rows per value of ``column`` (nulls left out)."""
    return {r[0]: r[1] for r in df.filter(F.col(column).isNotNull()).groupBy(column).count().collect()}


def daily_counts(events: DataFrame, days: Sequence, day_column: str = "event_date") -> List[int]:
    """Events on each of ``days`` (a day without events: 0), in the order given."""
    got = counts_by(events.filter(F.col(day_column).isin(list(days))), day_column)
    return [got.get(d, 0) for d in days]


def quantile_edges(reference: DataFrame, column: str, bins: int, relative_error: float = 0.001) -> List[float]:
    """The inner edges of ``bins`` quantile bins of ``column`` over the reference (repeated edges merged,
    so a column with few values gets fewer bins)."""
    probs = [i / bins for i in range(1, bins)]
    edges = reference.filter(F.col(column).isNotNull()).approxQuantile(column, probs, relative_error)
    return sorted(set(edges))


def bucket_counts(df: DataFrame, column: str, edges: Sequence[float]) -> Dict[int, int]:
    """Rows per bin of ``column``: bin i holds the values with i edges at or below them (0: under the
    first edge; len(edges): at or above the last). Nulls left out."""
    if not edges:
        return {0: df.filter(F.col(column).isNotNull()).count()}
    index = sum((F.when(F.col(column) >= F.lit(float(e)), 1).otherwise(0) for e in edges), F.lit(0))
    return counts_by(df.filter(F.col(column).isNotNull()).select(index.alias("bin")), "bin")


def numeric_psi(reference: DataFrame, current: DataFrame, column: str, bins: int) -> Optional[float]:
    """PSI of a numeric column, binned on the reference's quantiles."""
    edges = quantile_edges(reference, column, bins)
    return psi(bucket_counts(reference, column, edges), bucket_counts(current, column, edges))


def per_user_day(events: DataFrame) -> DataFrame:
    """Events per known customer and day (``user_id, event_date, n``): the activity distribution."""
    return events.filter(F.col("user_id").isNotNull()).groupBy("user_id", "event_date").agg(F.count("*").alias("n"))


def new_share(current: DataFrame, reference: DataFrame, column: str) -> Optional[float]:
    """Share of the distinct ``column`` values of ``current`` absent from ``reference`` (nulls left out).
    None when ``current`` has none."""
    ids = current.select(column).where(F.col(column).isNotNull()).distinct()
    known = reference.select(column).where(F.col(column).isNotNull()).distinct()
    row = (ids.join(known.withColumn("_known", F.lit(1)), column, "left")
           .agg(F.count("*").alias("n"), F.sum(F.when(F.col("_known").isNull(), 1).otherwise(0)).alias("new"))
           .first())
    return None if not row["n"] else row["new"] / row["n"]


def list_overlap(today: DataFrame, yesterday: DataFrame) -> Optional[float]:
    """Mean over the customers listed both days of (items of today's list also in yesterday's) / (items
    of today's list). Frames of ``user_id, item_id`` rows. None when no customer is in both."""
    t = today.select("user_id", "item_id").distinct()
    y = yesterday.select("user_id", "item_id").distinct().withColumn("_kept", F.lit(1))
    both = t.join(yesterday.select("user_id").distinct(), "user_id")
    per_user = (both.join(y, ["user_id", "item_id"], "left").groupBy("user_id")
                .agg((F.count("_kept") / F.count("*")).alias("share")))
    row = per_user.agg(F.avg("share").alias("mean"), F.count("*").alias("users")).first()
    return None if not row["users"] else float(row["mean"])


def coverage(lists: DataFrame, n_catalog: int) -> Optional[float]:
    """Distinct items in ``lists`` over ``n_catalog`` items (None for an empty catalog)."""
    if n_catalog <= 0:
        return None
    return lists.select("item_id").distinct().count() / n_catalog
