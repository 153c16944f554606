"""The great-expectations suite for a batch of contract rows.

It states the same rules as :mod:`features.row_quality` (which decides, row by
row, what goes to quarantine) as batch-level expectations, so every batch gets
a GX validation result and data docs page with the share of rows breaking
each rule. After quarantine the accepted rows are validated with the same
suite and must pass every expectation.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, List

from features.contract import EVENT_TYPES
from features.row_quality import QualityLimits

if TYPE_CHECKING:
    import great_expectations.expectations as gxe

# great_expectations is imported by the functions that build a suite: importing it costs several seconds
# (6.5 s of a `reco` process's 6.9 s start-up, `python -X importtime`), which every command but ingest and
# validate would pay for nothing, once per Airflow task

REQUIRED_COLUMNS = ["source", "batch_id", "row_id", "user_id", "item_id", "event_type", "value", "price",
                    "event_time", "country", "session_id", "raw"]


def events_expectations(limits: QualityLimits) -> List["gxe.Expectation"]:
    """The expectations of the events suite (a suite needs a GX context; the job builds it)."""
    import great_expectations.expectations as gxe

    fmt = "%Y-%m-%d %H:%M:%S"
    out: List["gxe.Expectation"] = []
    add = out.append
    add(gxe.ExpectTableColumnsToMatchSet(column_set=REQUIRED_COLUMNS, exact_match=False))
    add(gxe.ExpectTableRowCountToBeBetween(min_value=1))
    for col in ("item_id", "event_type", "event_time", "value"):
        add(gxe.ExpectColumnValuesToNotBeNull(column=col))
    if not limits.allow_anonymous:
        add(gxe.ExpectColumnValuesToNotBeNull(column="user_id"))
    add(gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES)))
    add(gxe.ExpectColumnValuesToBeBetween(column="value", min_value=0, strict_min=True,
                                          max_value=max(limits.max_quantity, limits.rating_max)))
    add(gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0, max_value=limits.max_price))
    add(gxe.ExpectColumnValuesToBeBetween(column="event_time", min_value=limits.min_event_time.strftime(fmt),
                                          max_value=limits.max_event_time.strftime(fmt)))
    add(gxe.ExpectColumnValuesToBeBetween(column="_max_len", max_value=limits.max_string_length))
    add(gxe.ExpectColumnValuesToBeInSet(column="_malformed", value_set=[False]))
    add(gxe.ExpectColumnValuesToBeInSet(column="_bad_utf8", value_set=[False]))
    add(gxe.ExpectColumnValuesToBeInSet(column="_bad_time", value_set=[False]))
    add(gxe.ExpectColumnValuesToBeInSet(column="_bad_value", value_set=[False]))
    add(gxe.ExpectColumnValuesToBeInSet(column="_bad_price", value_set=[False]))
    add(gxe.ExpectColumnValuesToBeUnique(column="raw"))
    return out


def silver_day_expectations(strength_max: float = 1.0) -> List["gxe.Expectation"]:
    """The post-ingest suite on one day of ``silver_interactions``: what every accepted row must hold."""
    import great_expectations.expectations as gxe

    out: List["gxe.Expectation"] = [gxe.ExpectTableRowCountToBeBetween(min_value=1)]
    for col in ("item_id", "event_type", "event_time", "event_date", "strength", "batch_id"):
        out.append(gxe.ExpectColumnValuesToNotBeNull(column=col))
    out.append(gxe.ExpectColumnValuesToBeBetween(column="strength", min_value=0, max_value=strength_max))
    out.append(gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES)))
    return out
