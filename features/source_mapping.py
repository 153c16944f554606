"""Map a source's raw rows (all strings, as landed in bronze) onto the contract.

Nothing is dropped here: a value that does not parse becomes null and its
``_bad_<field>`` flag is set, so :mod:`features.row_quality` can quarantine the
row with a reason. Which raw column feeds which contract field, the timestamp
format and zone, the event-type vocabulary and the cancellation marker come
from the source's mapping (``conf/base.yaml`` -> ``sources``), never from code.
"""
from __future__ import annotations

from typing import Any, List

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F


# bronze bookkeeping columns (not part of the raw record)
CORRUPT = "_corrupt_record"
_MAX_EPOCH_S = 253402300799  # 9999-12-31 23:59:59 UTC

BRONZE_META = ("_batch_id", "_run_date", "_row_id", "_source_file", "_corrupt_record")


def raw_columns(bronze: DataFrame) -> List[str]:
    return [c for c in bronze.columns if c not in BRONZE_META]


def parse_timestamp(col: Column, fmt: str, timezone: str) -> Column:
    """Parse a string column into a UTC timestamp; null when it does not parse."""
    text = F.trim(col)
    if fmt in ("unix_seconds", "unix_millis"):
        # out-of-range epochs (past year 9999) would overflow: they become null -> unparseable
        n = text.try_cast("long")
        scale = 1 if fmt == "unix_seconds" else 1000
        n = F.when(n.between(-_MAX_EPOCH_S * scale, _MAX_EPOCH_S * scale), n)
        ts = F.timestamp_seconds(n) if fmt == "unix_seconds" else F.timestamp_millis(n)
    else:
        ts = F.try_to_timestamp(text, F.lit(fmt))
    if timezone.upper() != "UTC":
        ts = F.to_utc_timestamp(ts, timezone)
    return ts


def _field(mapping: Any, name: str) -> Column:
    src = mapping.columns.get(name)
    if src is None:
        return F.lit(None).cast("string")
    return F.col(f"`{src}`")


def _blank_to_null(col: Column) -> Column:
    return F.when(F.trim(col) == "", None).otherwise(F.trim(col))


def map_to_contract(bronze: DataFrame, mapping: Any, source: str) -> DataFrame:
    """Return contract columns + lineage + parse flags for every bronze row.

    Args:
        bronze: one batch of a source's bronze table (raw string columns plus
            ``_batch_id``, ``_row_id`` and optionally ``_corrupt_record``).
        mapping: the source's mapping (``SourceConfig``): ``columns``,
            ``event_type``, ``timestamp_format``, ``timezone``, ``cancellation``.
        source: the source's name, stored on every row.
    """
    raw = raw_columns(bronze)
    missing = sorted({c for c in mapping.columns.values()} - set(raw))
    if missing:
        raise KeyError(missing)  # the job turns this into a SchemaError with context

    user = _blank_to_null(_field(mapping, "user_id"))
    # ids written as numbers by spreadsheets ("17850.0") keep their integer spelling
    user = F.regexp_replace(user, r"^(\d+)\.0+$", "$1")
    item = _blank_to_null(_field(mapping, "item_id"))
    value_text = _blank_to_null(_field(mapping, "value"))
    price_text = _blank_to_null(_field(mapping, "price"))
    time_text = _blank_to_null(_field(mapping, "event_time"))

    et = mapping.event_type
    if et.constant is not None:
        event_type = F.lit(et.constant)
        event_raw = F.lit(et.constant)
    else:
        event_raw = F.lower(F.trim(F.col(f"`{et.column}`")))
        lookup = F.create_map(*[x for k, v in sorted(et.values.items()) for x in (F.lit(k.lower()), F.lit(v))])
        event_type = lookup[event_raw]
    if mapping.cancellation is not None:
        is_cancel = F.coalesce(
            F.trim(F.col(f"`{mapping.cancellation.column}`")).startswith(mapping.cancellation.prefix), F.lit(False))
        event_type = F.when(is_cancel, F.lit("return")).otherwise(event_type)
    else:
        is_cancel = F.lit(False)

    value = value_text.try_cast("double")
    price = price_text.try_cast("double")
    event_time = parse_timestamp(time_text, mapping.timestamp_format, mapping.timezone)

    out = bronze.select(
        F.lit(source).alias("source"),
        F.col("_batch_id").alias("batch_id"),
        F.col("_row_id").alias("row_id"),
        user.alias("user_id"),
        item.alias("item_id"),
        event_type.alias("event_type"),
        # a cancellation line carries a negative quantity; as a return it is positive
        (F.when(is_cancel, F.abs(value)).otherwise(value) if "value" in mapping.columns
         else F.lit(1.0)).alias("value"),  # no quantity column: each row is one unit
        price.alias("price"),
        event_time.alias("event_time"),
        _blank_to_null(_field(mapping, "country")).alias("country"),
        _blank_to_null(_field(mapping, "session_id")).alias("session_id"),
        _blank_to_null(_field(mapping, "title")).alias("title"),
        _blank_to_null(_field(mapping, "category")).alias("category"),
        # the original values; a malformed line also keeps its original text
        F.to_json(F.struct(*[F.col(f"`{c}`") for c in raw],
                           *([F.col(CORRUPT)] if CORRUPT in bronze.columns else []))).alias("raw"),
        # parse flags: a value was present but did not parse
        (value_text.isNotNull() & value.isNull()).alias("_bad_value"),
        (price_text.isNotNull() & price.isNull()).alias("_bad_price"),
        (time_text.isNotNull() & event_time.isNull()).alias("_bad_time"),
        event_raw.alias("_event_raw"),
        (F.col("_corrupt_record").isNotNull() if "_corrupt_record" in bronze.columns else F.lit(False))
        .alias("_malformed"),
        F.greatest(*[F.coalesce(F.length(F.col(f"`{c}`")), F.lit(0)) for c in raw]).alias("_max_len"),
        F.concat_ws("", *[F.col(f"`{c}`") for c in raw]).contains("\ufffd").alias("_bad_utf8"),
    )
    return out

