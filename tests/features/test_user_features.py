"""user_features as of a run date: known answers on a handful of events."""
from datetime import date

from features.user_features import user_features
from tests.compare import assert_rows
from tests.features.rows import silver_rows

AS_OF = date(2024, 3, 31)


def test_counts_windows_baskets_and_segments(spark):
    silver = silver_rows(spark, [
        # u1: two baskets in the last week (i1: 2x5 + 1x10 = 20, i2: 1x4 = 4) and an old view
        ("u1", "A", "purchase", 2, 5.0, "2024-03-30 10:00", "i1", 1.0),
        ("u1", "B", "purchase", 1, 10.0, "2024-03-30 10:00", "i1", 1.0),
        ("u1", "A", "purchase", 1, 4.0, "2024-03-25 10:00", "i2", 1.0),
        ("u1", "C", "view", 1, None, "2023-12-01 10:00", None, 0.3),
        # u2: one purchase 20 days ago, first seen 100 days ago -> lapsing
        ("u2", "A", "purchase", 1, 3.0, "2024-03-11 10:00", "i3", 1.0),
        ("u2", "A", "view", 1, None, "2023-12-22 10:00", None, 0.3),
        # u3: new customer this month, only a view
        ("u3", "B", "view", 1, None, "2024-03-20 10:00", None, 0.3),
        # events after the run date and anonymous rows are ignored
        ("u3", "B", "purchase", 1, 10.0, "2024-04-01 10:00", "i4", 1.0),
        (None, "A", "purchase", 1, 5.0, "2024-03-30 10:00", "i5", 1.0),
    ])
    out = user_features(silver, AS_OF, 7, 30)
    assert_rows(out, [
        ("u1", 4, 3, 3, 3, 3, 20.0 / 2 + 4.0 / 2, 1, "active"),
        ("u2", 2, 1, 1, 0, 1, 3.0, 20, "lapsing"),
        ("u3", 1, 1, 0, 0, 0, None, 11, "new"),
    ], ["user_id", "n_interactions", "n_distinct_items", "n_purchases", "purchases_7d", "purchases_30d",
        "avg_basket_value", "recency_days", "activity_segment"])
    assert {r.as_of_date for r in out.collect()} == {AS_OF}
