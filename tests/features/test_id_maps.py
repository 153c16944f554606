"""Stable id maps: new ids get the next numbers, existing ids never move."""
from datetime import date

from features.id_maps import new_id_rows
from tests.compare import assert_rows


def test_new_ids_numbered_after_existing_in_id_order(spark):
    existing = spark.createDataFrame([("b", 0, date(2024, 1, 1)), ("z", 1, date(2024, 1, 2))],
                                     "user_id string, idx int, first_seen date")
    ids = spark.createDataFrame([("z", date(2024, 2, 1)), ("c", date(2024, 2, 3)), ("a", date(2024, 2, 2)),
                                 ("a", date(2024, 2, 1)), (None, date(2024, 2, 1))], "user_id string, first_seen date")
    assert_rows(new_id_rows(existing, ids, "user_id"),
                [("a", 2, date(2024, 2, 1)), ("c", 3, date(2024, 2, 3))], ["user_id", "idx", "first_seen"])


def test_empty_map_starts_at_zero(spark):
    existing = spark.createDataFrame([], "item_id string, idx int, first_seen date")
    ids = spark.createDataFrame([("y", date(2024, 1, 1)), ("x", date(2024, 1, 1))], "item_id string, first_seen date")
    assert_rows(new_id_rows(existing, ids, "item_id"), [("x", 0), ("y", 1)], ["item_id", "idx"])
