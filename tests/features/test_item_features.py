"""item_features: popularity windows and trend, catalog items without events included."""
from datetime import date

from features.item_features import item_features
from tests.compare import assert_rows
from tests.features.rows import silver_rows

AS_OF = date(2024, 3, 31)


def test_popularity_windows_and_trend(spark):
    silver = silver_rows(spark, [
        # A: 2 purchases in the last 7 days, 1 view 20 days ago -> pop7 = 2, pop30 = 2.3
        ("u1", "A", "purchase", 1, 5.0, "2024-03-30 10:00", "i1", 1.0),
        (None, "A", "purchase", 1, 5.0, "2024-03-28 10:00", "i2", 1.0),
        ("u2", "A", "view", 1, None, "2024-03-11 10:00", None, 0.3),
        # B: only old activity -> trend null
        ("u1", "B", "cart", 1, 2.0, "2023-01-01 10:00", None, 0.6),
        # future event ignored
        ("u1", "B", "purchase", 1, 2.0, "2024-04-02 10:00", "i9", 1.0),
    ])
    items = spark.createDataFrame([
        ("A", "Mug", "kitchen", 5.0, True, date(2023, 1, 1)),
        ("B", "Rake", "garden", 2.0, True, date(2022, 6, 1)),
        ("N", "New lamp", "home", 30.0, True, date(2024, 3, 30)),      # new, no events yet
        ("F", "Future", "home", 1.0, True, date(2024, 5, 1)),          # not yet in the catalog on AS_OF
    ], "item_id string, title string, category string, price double, available boolean, first_seen date")
    out = item_features(silver, items, AS_OF, 7, 30)
    assert_rows(out, [
        ("A", 3, 2, 2.3, 2.0, 2.3, (2.0 / 7) / (2.3 / 30)),
        ("B", 1, 1, 0.6, 0.0, 0.0, None),
        ("N", 0, 0, 0.0, 0.0, 0.0, None),
    ], ["item_id", "n_events", "n_users", "popularity", "popularity_7d", "popularity_30d", "trend"])
