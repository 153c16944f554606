"""Stable dense integer indices for users and items.

Embeddings are indexed by these numbers, so an id that has an index keeps it
forever: new ids get the next free numbers (in sorted order, so the result is
deterministic) and existing rows are never renumbered.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def new_id_rows(existing: DataFrame, ids: DataFrame, id_col: str, first_seen_col: str = "first_seen") -> DataFrame:
    """Rows to add to an id map.

    Args:
        existing: the current map (``id_col``, ``idx``, ``first_seen``); may be empty.
        ids: candidate ids with the date they were first seen (``id_col``, ``first_seen``).
    Returns:
        (``id_col``, ``idx``, ``first_seen``) for ids not yet in the map, numbered
        from ``max(existing.idx) + 1`` upward in id order.
    """
    start = existing.agg(F.coalesce(F.max("idx"), F.lit(-1)).alias("m")).first()["m"] + 1
    fresh = (ids.filter(F.col(id_col).isNotNull()).groupBy(id_col).agg(F.min(first_seen_col).alias("first_seen"))
             .join(existing.select(id_col), id_col, "left_anti"))
    order = Window.orderBy(id_col)  # single partition by design: numbering must be global
    return fresh.select(id_col, (F.row_number().over(order) - 1 + F.lit(start)).cast("int").alias("idx"),
                        "first_seen")
