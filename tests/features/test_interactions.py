"""Silver interactions: returns netted against purchases, non-products excluded, strengths graded."""
from pyspark.sql import functions as F

from features.interactions import build_silver
from tests.compare import assert_rows
from tests.features.rows import silver_rows, valid_rows

GRADES = {"view": 0.3, "cart": 0.6, "purchase": 1.0}


def test_returns_net_latest_purchases_first(spark):
    rows = valid_rows(spark, [
        # u1 buys A twice (3 then 2 units) and returns 4: the later purchase (2) is fully
        # cancelled, the earlier one keeps 3 - 2 = 1 unit
        (1, "u1", "A", "purchase", 3, 2.0, "2024-01-01 10:00", "i1"),
        (2, "u1", "A", "purchase", 2, 2.0, "2024-01-05 10:00", "i2"),
        (3, "u1", "A", "return", 4, 2.0, "2024-01-06 10:00", "C1"),
        # u2 returns B without having bought it in the data
        (4, "u2", "B", "return", 1, 5.0, "2024-01-02 10:00", "C2"),
        # an anonymous return cannot be matched to anyone
        (5, None, "B", "return", 1, 5.0, "2024-01-02 11:00", "C3"),
        # postage is not a product
        (6, "u1", "POST", "purchase", 1, 18.0, "2024-01-01 10:00", "i1"),
        # a view and a cart of u2, kept with their grades; an anonymous purchase counts for popularity
        (7, "u2", "A", "view", 1, None, "2024-01-03 09:00", None),
        (8, "u2", "A", "cart", 1, 2.0, "2024-01-03 09:05", None),
        (9, None, "A", "purchase", 1, 2.0, "2024-01-03 09:30", "i9"),
    ])
    silver, excluded = build_silver(rows, ["POST"], GRADES, 5.0)
    assert_rows(silver, [
        (1, "u1", "A", "purchase", 1.0, 1.0, False),
        (7, "u2", "A", "view", 1.0, 0.3, False),
        (8, "u2", "A", "cart", 1.0, 0.6, False),
        (9, None, "A", "purchase", 1.0, 1.0, True),
    ], ["row_id", "user_id", "item_id", "event_type", "value", "strength", "is_anonymous"])
    assert_rows(excluded, [
        (2, "netted_by_return"), (3, "return_netted"), (4, "return_without_purchase"),
        (5, "return_without_purchase"), (6, "non_product_item"),
    ], ["row_id", "rule"])
    # nothing lost, nothing doubled
    assert silver.count() + excluded.count() == rows.count()


def test_ratings_are_graded_by_rank(spark):
    rows = valid_rows(spark, [
        (1, "u1", "m1", "rating", 5, None, "1998-01-01 00:00", None),
        (2, "u1", "m2", "rating", 1, None, "1998-01-01 00:00", None),
        (3, "u1", "m3", "rating", 4, None, "1998-01-01 00:00", None),
    ])
    silver, excluded = build_silver(rows, [], GRADES, 5.0)
    assert excluded.count() == 0
    assert_rows(silver, [("m1", 1.0), ("m2", 0.2), ("m3", 0.8)], ["item_id", "strength"])


def test_event_date_and_time_stay_utc(spark):
    rows = valid_rows(spark, [(1, "u1", "A", "purchase", 1, 1.0, "2024-03-31 23:30", None)])
    silver, _ = build_silver(rows, [], GRADES, 5.0)
    r = silver.first()
    assert str(r["event_date"]) == "2024-03-31" and r["event_time"].hour == 23


def test_open_returns_are_what_the_batch_cannot_net(spark):
    from features.interactions import open_returns
    rows = valid_rows(spark, [
        # u1 bought 2 of A and returns 5: 3 refer to purchases outside the batch
        (1, "u1", "A", "purchase", 2, 2.0, "2024-01-01 10:00", "i1"),
        (2, "u1", "A", "return", 1, 2.0, "2024-01-02 10:00", "C1"),
        (3, "u1", "A", "return", 4, 2.0, "2024-01-03 10:00", "C2"),
        # u2 returns B without a purchase in the batch
        (4, "u2", "B", "return", 1, 5.0, "2024-01-02 10:00", "C3"),
        # anonymous returns and returns of non-products are never open: nobody to match, nothing to net
        (5, None, "B", "return", 1, 5.0, "2024-01-02 11:00", "C4"),
        (6, "u2", "POST", "return", 1, 18.0, "2024-01-02 11:00", "C5"),
        # u3's return is covered by the batch's own purchase
        (7, "u3", "C", "purchase", 2, 1.0, "2024-01-01 10:00", "i7"),
        (8, "u3", "C", "return", 1, 1.0, "2024-01-04 10:00", "C6"),
    ])
    assert_rows(open_returns(rows, ["POST"]).withColumn("event_date", F.col("event_date").cast("string")), [
        ("u1", "A", "return", 3.0, 3, "C2", "2024-01-03"),      # the pair's latest return stands for it
        ("u2", "B", "return", 1.0, 4, "C3", "2024-01-02"),
    ], ["user_id", "item_id", "event_type", "value", "row_id", "session_id", "event_date"])


def test_open_returns_cancel_earlier_batches_latest_purchase_first_within_the_look_back(spark):
    from features.interactions import net_open_returns
    purchases = silver_rows(spark, [
        ("u1", "A", "purchase", 3.0, 2.0, "2024-01-01 10:00", "i1", 1.0),   # 0: keeps 1 unit
        ("u1", "A", "purchase", 2.0, 2.0, "2024-01-05 10:00", "i2", 1.0),   # 1: cancelled whole (latest first)
        ("u1", "A", "purchase", 1.0, 2.0, "2024-01-07 10:00", "i3", 1.0),   # 2: bought after the return: kept
        ("u2", "B", "purchase", 2.0, 5.0, "2023-11-01 10:00", "i4", 1.0),   # 3: before the 30-day look-back
        ("u3", "C", "purchase", 1.0, 1.0, "2024-01-01 10:00", "i5", 1.0),   # 4: no open return
    ])
    returns = silver_rows(spark, [
        ("u1", "A", "return", 1.0, 2.0, "2024-01-06 09:00", "C1", 0.0),     # open returns of two batches
        ("u1", "A", "return", 3.0, 2.0, "2024-01-06 10:00", "C2", 0.0),
        ("u2", "B", "return", 1.0, 5.0, "2024-01-06 10:00", "C3", 0.0),
    ])
    assert_rows(net_open_returns(purchases, returns, lookback_days=30), [
        (0, 2.0), (1, 2.0), (2, 0.0), (3, 0.0), (4, 0.0)], ["row_id", "cancelled"])
