"""Row-level data-quality rules: every rule has a name, and a bad row carries
the names of all rules it broke. The same rule set is expressed as a
great-expectations suite (:mod:`features.expectations`) for the batch report;
this module decides which rows go to quarantine.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import List, Tuple

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from features.contract import EVENT_TYPES


@dataclass(frozen=True)
class QualityLimits:
    """Bounds a row must respect; built by the job from ``cfg.quality``."""
    min_event_time: datetime
    max_event_time: datetime          # run date end + future tolerance
    max_string_length: int
    max_quantity: float
    max_price: float
    rating_max: float
    allow_anonymous: bool

    @staticmethod
    def for_run(run_date: date, min_event_time: str, future_tolerance_hours: int, max_string_length: int,
                max_quantity: float, max_price: float, rating_max: float, allow_anonymous: bool) -> "QualityLimits":
        # aware UTC datetimes: PySpark would read naive ones in the Python process's local zone
        end_of_run_date = datetime.combine(run_date + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc)
        return QualityLimits(
            min_event_time=datetime.fromisoformat(min_event_time).replace(tzinfo=timezone.utc),
            max_event_time=end_of_run_date + timedelta(hours=future_tolerance_hours),
            max_string_length=max_string_length, max_quantity=max_quantity, max_price=max_price,
            rating_max=rating_max, allow_anonymous=allow_anonymous)


def rules(limits: QualityLimits) -> List[Tuple[str, Column]]:
    """(reason, condition that marks a row bad). Order is the order reasons are listed in."""
    et, v = F.col("event_type"), F.col("value")
    qty_event = et.isin("view", "cart", "purchase", "return")
    out = [
        ("malformed_row: wrong number of fields or broken quoting", F.col("_malformed")),
        ("invalid_utf8: bytes that are not UTF-8", F.col("_bad_utf8")),
        (f"value_too_long: a field exceeds {limits.max_string_length} characters",
         F.col("_max_len") > limits.max_string_length),
        ("missing_item_id", F.col("item_id").isNull()),
        ("missing_event_time", F.col("event_time").isNull() & ~F.col("_bad_time")),
        ("unparseable_event_time", F.col("_bad_time")),
        (f"event_time_too_old: before {limits.min_event_time:%Y-%m-%d}",
         F.col("event_time") < F.lit(limits.min_event_time)),
        (f"event_time_in_future: after {limits.max_event_time:%Y-%m-%d %H:%M} UTC",
         F.col("event_time") > F.lit(limits.max_event_time)),
        ("unknown_event_type: not one of " + "/".join(EVENT_TYPES) + " after mapping",
         et.isNull() | ~et.isin(*EVENT_TYPES)),
        ("unparseable_value", F.col("_bad_value")),
        ("missing_value", v.isNull() & ~F.col("_bad_value")),
        ("non_positive_quantity", qty_event & (v <= 0)),
        (f"quantity_too_large: above {limits.max_quantity:g}", qty_event & (v > limits.max_quantity)),
        (f"rating_out_of_range: outside (0, {limits.rating_max:g}]",
         (et == "rating") & ((v <= 0) | (v > limits.rating_max))),
        ("unparseable_price", F.col("_bad_price")),
        ("negative_price", F.col("price") < 0),
        (f"price_too_large: above {limits.max_price:g}", F.col("price") > limits.max_price),
    ]
    if not limits.allow_anonymous:
        out.append(("missing_user_id: this source does not allow anonymous rows", F.col("user_id").isNull()))
    return out


def with_reasons(mapped: DataFrame, limits: QualityLimits) -> DataFrame:
    """Add ``reasons`` (array of rule names, empty when the row is good).

    Exact duplicates of an earlier raw line in the same batch get the reason
    ``duplicate_row`` (the first occurrence, by row id, is kept).
    """
    checks = [F.when(F.coalesce(cond, F.lit(False)), F.lit(name)) for name, cond in rules(limits)]
    first = Window.partitionBy("raw").orderBy("row_id")
    dup = F.when(F.row_number().over(first) > 1, F.lit("duplicate_row: same raw line seen earlier in the batch"))
    return mapped.withColumn("reasons", F.filter(F.array(*checks, dup), lambda x: x.isNotNull()))


def split_good_bad(checked: DataFrame) -> Tuple[DataFrame, DataFrame]:
    good = checked.filter(F.size("reasons") == 0)
    bad = checked.filter(F.size("reasons") > 0)
    return good, bad


def quarantine_rows(bad: DataFrame, run_date: date) -> DataFrame:
    """Shape bad rows for the ``quarantine`` table: source, batch, the raw row and the reason."""
    return bad.select(
        "source", "batch_id", F.lit(run_date).alias("run_date"), "row_id", "raw",
        F.array_join("reasons", "; ").alias("reason"),
        F.element_at("reasons", 1).alias("first_rule"),
    )
