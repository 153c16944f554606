"""Silver interactions: returns netted against purchases, non-products excluded, strengths graded."""
from features.interactions import build_silver
from tests.compare import assert_rows
from tests.features.rows import valid_rows

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
