"""The input contract every source is mapped onto (documented in docs/CONTRACT.md).

Interaction events:
    user_id     string   customer id as the source spells it; null = anonymous
    item_id     string   product id as the source spells it (required)
    event_type  string   one of view, cart, purchase, rating, return
    value       double   quantity for cart/purchase/return (positive), rating for rating
    price       double   unit price, null when unknown
    event_time  timestamp (UTC)
    country     string   optional context
    session_id  string   optional context (invoice, basket or session id)

Item catalog:
    item_id, title, category, price, available (bool), first_seen (date)
"""
from __future__ import annotations

from pyspark.sql import types as T

from core.contract import EVENT_TYPES  # noqa: F401 (the vocabulary, written once)

EVENT_SCHEMA = T.StructType([
    T.StructField("user_id", T.StringType(), True),
    T.StructField("item_id", T.StringType(), False),
    T.StructField("event_type", T.StringType(), False),
    T.StructField("value", T.DoubleType(), True),
    T.StructField("price", T.DoubleType(), True),
    T.StructField("event_time", T.TimestampType(), False),
    T.StructField("country", T.StringType(), True),
    T.StructField("session_id", T.StringType(), True),
])

CATALOG_SCHEMA = T.StructType([
    T.StructField("item_id", T.StringType(), False),
    T.StructField("title", T.StringType(), True),
    T.StructField("category", T.StringType(), True),
    T.StructField("price", T.DoubleType(), True),
    T.StructField("available", T.BooleanType(), False),
    T.StructField("first_seen", T.DateType(), True),
])

# Columns that ride along from bronze to every later table, so any row can be
# traced back to the raw line it came from.
LINEAGE_COLUMNS = ("source", "batch_id", "row_id")
