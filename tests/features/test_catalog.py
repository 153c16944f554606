"""Catalog derived from event rows, and merged with the existing catalog."""
from datetime import date, datetime

from features.catalog import catalog_from_events, merge_catalog
from tests.compare import assert_rows

COLS = "item_id string, title string, category string, price double, event_time timestamp"


def test_catalog_from_events_takes_common_title_median_price_and_last_word(spark):
    ev = spark.createDataFrame([
        ("85123A", "WHITE HANGING HEART T-LIGHT HOLDER", None, 2.55, datetime(2011, 1, 2)),
        ("85123A", "WHITE HANGING HEART T-LIGHT HOLDER", None, 2.95, datetime(2011, 1, 1)),
        ("85123A", "CREAM HANGING HEART T-LIGHT HOLDER", None, 3.20, datetime(2011, 1, 3)),
        ("22139", None, None, 0.0, datetime(2011, 2, 1)),   # no title, zero price
    ], COLS)
    out = catalog_from_events(ev, "title_last_word")
    assert_rows(out, [("85123A", "WHITE HANGING HEART T-LIGHT HOLDER", "HOLDER", 2.95, date(2011, 1, 1)),
                      ("22139", None, "unknown", None, date(2011, 2, 1))],
                ["item_id", "title", "category", "price", "first_seen"])


def test_merge_keeps_earliest_first_seen_and_newest_values(spark):
    cols = "item_id string, title string, category string, price double, available boolean, first_seen date"
    cur = spark.createDataFrame([("A", "old", "cups", 1.0, True, date(2020, 1, 1)),
                                 ("B", "b", "bags", 2.0, True, date(2020, 1, 1))], cols)
    new = spark.createDataFrame([("A", "new", "unknown", 1.5, False, date(2021, 1, 1)),
                                 ("C", "c", "toys", 3.0, True, date(2021, 1, 1))], cols)
    assert_rows(merge_catalog(cur, new), [("A", "new", "cups", 1.5, False, date(2020, 1, 1)),
                                          ("B", "b", "bags", 2.0, True, date(2020, 1, 1)),
                                          ("C", "c", "toys", 3.0, True, date(2021, 1, 1))],
                ["item_id", "title", "category", "price", "available", "first_seen"])


def test_catalog_file_rows_are_mapped_and_bad_lines_named(spark):
    from features.catalog import catalog_from_file
    raw = spark.createDataFrame([
        (1, "r1", "A1", "Red Mug", "kitchen", "4.50", "yes"),     # good
        (2, "r2", "", "No id", "kitchen", "1.00", "1"),          # missing item id
        (3, "r3", "A3", "Lamp", None, "cheap", "0"),             # unparseable price
        (4, "r4", "A1", "Red Mug again", "kitchen", "4.0", ""),  # duplicate of row 1
        (5, "r5", "A5", "Rake", "garden", "2", "maybe"),         # unparseable availability
        (6, "r6", "A6", "WHITE METAL LANTERN", None, None, "no"),  # good: category from title, not available
    ], "row_id long, raw string, sku string, name string, cat string, price string, stock string")
    cols = {"item_id": "sku", "title": "name", "category": "cat", "price": "price", "available": "stock"}
    out = catalog_from_file(raw, cols, "title_last_word")
    got = {r.row_id: (r.item_id, r.category, r.price, r.available, [x.split(":")[0] for x in r.reasons])
           for r in out.collect()}
    assert got == {
        1: ("A1", "kitchen", 4.5, True, []), 2: (None, "kitchen", 1.0, True, ["missing_item_id"]),
        3: ("A3", "LAMP", None, False, ["unparseable_price"]),
        4: ("A1", "kitchen", 4.0, True, ["duplicate_item_id"]),
        5: ("A5", "garden", 2.0, None, ["unparseable_available"]),
        6: ("A6", "LANTERN", None, False, []),
    }
