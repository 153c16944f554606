"""Mapping raw string rows onto the contract, driven by a source's config."""
from datetime import datetime

from pyspark.sql import functions as F

from features.source_mapping import map_to_contract
from config import load_config
from tests.compare import assert_rows


def _bronze(spark, header, rows):
    df = spark.createDataFrame(rows, ", ".join(f"`{h}` string" for h in header))
    return df.withColumn("_batch_id", F.lit("b1")).withColumn("_row_id", F.monotonically_increasing_id())


def test_online_retail_mapping_normalises_time_and_marks_cancellations(spark):
    src = load_config(env="local", environ={}).source("online_retail")
    header = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]
    bronze = _bronze(spark, header, [
        # summer time: 10:00 in London is 09:00 UTC
        ("536365", "85123A", "WHITE HANGING HEART T-LIGHT HOLDER", "6", "2011-06-01 10:00:00", "2.55", "17850", "United Kingdom"),
        # winter: London is UTC; a cancellation becomes a return with a positive quantity
        ("C536379", "D", "Discount", "-1", "2010-12-01 09:41:00", "27.50", "14527.0", "United Kingdom"),
        # no customer: anonymous; unparseable quantity flagged, not dropped
        ("536414", "22139", "", "abc", "2010-12-01 11:52:00", "0", "", "United Kingdom"),
    ])
    out = map_to_contract(bronze, src, "online_retail")
    assert_rows(out, [
        ("17850", "85123A", "purchase", 6.0, 2.55, datetime(2011, 6, 1, 9, 0), "536365", False),
        ("14527", "D", "return", 1.0, 27.5, datetime(2010, 12, 1, 9, 41), "C536379", False),
        (None, "22139", "purchase", None, 0.0, datetime(2010, 12, 1, 11, 52), "536414", True),
    ], ["user_id", "item_id", "event_type", "value", "price", "event_time", "session_id", "_bad_value"])
    assert out.filter("title IS NULL").count() == 1  # blank description -> null


def test_event_column_mapping_and_unix_millis(spark):
    src = load_config(env="local", environ={}).source("events_csv")
    bronze = _bronze(spark, ["timestamp", "visitorid", "event", "itemid", "transactionid"], [
        ("1433221332117", "257597", "view", "355908", ""),
        ("1433224214164", "992329", "AddToCart", "248676", ""),
        ("1433221999827", "111016", "transaction", "318965", "4000"),
        ("1433221999827", "111016", "click", "318965", ""),
    ])
    out = map_to_contract(bronze, src, "events_csv")
    assert_rows(out, [
        ("257597", "view", 1.0, datetime(2015, 6, 2, 5, 2, 12, 117000)),
        ("992329", "cart", 1.0, datetime(2015, 6, 2, 5, 50, 14, 164000)),
        ("111016", "purchase", 1.0, datetime(2015, 6, 2, 5, 13, 19, 827000)),
        ("111016", None, 1.0, datetime(2015, 6, 2, 5, 13, 19, 827000)),  # unknown type -> null, quarantined later
    ], ["user_id", "event_type", "value", "event_time"])


def test_ratings_mapping_unix_seconds(spark):
    src = load_config(env="local", environ={}).source("ratings_csv")
    bronze = _bronze(spark, ["user", "item", "rating", "timestamp"], [("1", "1", "5", "874965758"),
                                                                      ("1", "2", "x", "87496575z")])
    out = map_to_contract(bronze, src, "ratings_csv")
    assert_rows(out, [("1", "rating", 5.0, datetime(1997, 9, 22, 22, 2, 38), False, False),
                      ("1", "rating", None, None, True, True)],
                ["user_id", "event_type", "value", "event_time", "_bad_value", "_bad_time"])
