"""training_examples: time split windows and the seeded random split."""
from datetime import date

from pyspark.sql import functions as F

from features.training_examples import random_split, time_split, training_examples
from tests.compare import assert_rows
from tests.features.rows import silver_rows

AS_OF = date(2024, 3, 31)


def test_time_split_windows(spark):
    silver = silver_rows(spark, [
        ("u1", "A", "purchase", 1, 1.0, "2024-03-31 23:59", "i1", 1.0),   # day 0 -> test
        ("u1", "A", "purchase", 1, 1.0, "2024-03-02 00:00", "i2", 1.0),   # 29 days back -> test
        ("u1", "B", "view", 1, None, "2024-03-01 12:00", None, 0.3),      # 30 days back -> valid
        ("u1", "B", "cart", 1, 1.0, "2024-01-31 12:00", None, 0.6),       # 60 days back -> train
        ("u1", "C", "purchase", 1, 1.0, "2024-01-30 12:00", "i3", 1.0),   # 61 -> train
        ("u1", "C", "return", 1, 1.0, "2024-01-30 13:00", "C1", 0.0),     # returns never train
        (None, "C", "purchase", 1, 1.0, "2024-03-30 12:00", "i4", 1.0),   # anonymous never trains
        ("u1", "D", "purchase", 1, 1.0, "2024-04-01 00:00", "i5", 1.0),   # after the run date
    ])
    out = time_split(silver, AS_OF, valid_days=30, test_days=30)
    assert_rows(out, [("test", "A", 1.0, 2), ("valid", "B", 0.3, 1), ("train", "B", 0.6, 1),
                      ("train", "C", 1.0, 1)], ["split", "item_id", "strength", "n_events"])


def test_random_split_is_seeded_and_per_user(spark):
    rows = [(f"u{u}", f"I{i}", "purchase", 1, 1.0, "2024-03-01 10:00", None, 1.0) for u in range(6) for i in range(10)]
    rows.append(("solo", "I1", "purchase", 1, 1.0, "2024-03-01 10:00", None, 1.0))
    silver = silver_rows(spark, rows)
    a = random_split(silver, AS_OF, 0.2, seed=42)
    b = random_split(silver, AS_OF, 0.2, seed=42)
    c = random_split(silver, AS_OF, 0.2, seed=7)
    per_user = {r.user_id: r.n for r in a.filter("split = 'test'").groupBy("user_id").agg(F.count("*").alias("n")).collect()}
    assert per_user == {f"u{u}": 2 for u in range(6)}          # floor(10 * 0.2) each; solo keeps its only pair
    key = lambda df: sorted((r.user_id, r.item_id, r.split) for r in df.collect())
    assert key(a) == key(b) and key(a) != key(c)


def test_examples_carry_stable_indices_and_lose_no_pair(spark):
    silver = silver_rows(spark, [("u1", "A", "purchase", 1, 1.0, "2024-03-30 10:00", None, 1.0),
                                 ("u2", "B", "view", 1, None, "2023-03-30 10:00", None, 0.3)])
    users = spark.createDataFrame([("u1", 0, None), ("u2", 1, None)], "user_id string, idx int, first_seen date")
    items = spark.createDataFrame([("A", 5, None), ("B", 2, None)], "item_id string, idx int, first_seen date")
    out = training_examples(silver, users, items, AS_OF, 30, 30, 0.5, 1)
    assert_rows(out, [("time", "test", 0, 5), ("time", "train", 1, 2), ("random", "train", 0, 5),
                      ("random", "train", 1, 2)], ["protocol", "split", "user_idx", "item_idx"])
