"""Inline contract rows for feature tests."""
from datetime import datetime

from pyspark.sql import functions as F

VALID_COLUMNS = "source string, batch_id string, row_id long, user_id string, item_id string, event_type string, " \
                "value double, price double, event_time timestamp, country string, session_id string, raw string"


def valid_rows(spark, rows):
    """rows: (row_id, user, item, event_type, value, price, 'YYYY-MM-DD HH:MM', session)."""
    data = [("src", "b1", rid, u, i, et, float(v), None if p is None else float(p),
             datetime.fromisoformat(t), "UK", s, f"raw{rid}") for rid, u, i, et, v, p, t, s in rows]
    return spark.createDataFrame(data, VALID_COLUMNS)


def silver_rows(spark, rows):
    """rows: (user, item, event_type, value, price, 'YYYY-MM-DD HH:MM', session, strength)."""
    data = [("src", "b1", n, u, i, et, float(v), None if p is None else float(p), datetime.fromisoformat(t),
             "UK", s, u is None, float(st)) for n, (u, i, et, v, p, t, s, st) in enumerate(rows)]
    df = spark.createDataFrame(data, "source string, batch_id string, row_id long, user_id string, item_id string, "
                                     "event_type string, value double, price double, event_time timestamp, "
                                     "country string, session_id string, is_anonymous boolean, strength double")
    return df.withColumn("event_date", F.to_date("event_time"))
