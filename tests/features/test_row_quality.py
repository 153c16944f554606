"""Row rules: each bad row carries the names of the rules it broke."""
from datetime import date

from pyspark.sql import functions as F

from features.row_quality import QualityLimits, quarantine_rows, split_good_bad, with_reasons

LIMITS = QualityLimits.for_run(date(2024, 1, 31), "2000-01-01", 24, 20, 1000, 500.0, 5.0, allow_anonymous=False)

COLS = ("row_id long, user_id string, item_id string, event_type string, value double, price double, "
        "event_time timestamp, raw string, _bad_value boolean, _bad_price boolean, _bad_time boolean, "
        "_malformed boolean, _max_len int, _bad_utf8 boolean")


def _mapped(spark, rows):
    from datetime import datetime
    data = []
    for rid, user, item, et, v, p, t, raw, flags in rows:
        data.append((rid, user, item, et, v, p, datetime.fromisoformat(t) if t else None, raw,
                     "value" in flags, "price" in flags, "time" in flags, "malformed" in flags,
                     100 if "long" in flags else 5, "utf8" in flags))
    return (spark.createDataFrame(data, COLS).withColumn("source", F.lit("s")).withColumn("batch_id", F.lit("b")))


def test_each_rule_names_its_reason(spark):
    df = _mapped(spark, [
        (1, "u", "A", "purchase", 1.0, 1.0, "2024-01-10 00:00", "ok", ""),              # good
        (2, "u", None, "purchase", 1.0, 1.0, "2024-01-10 00:00", "r2", ""),             # missing item
        (3, "u", "A", "purchase", 1.0, 1.0, "2024-02-02 00:01", "r3", ""),              # > run date end + 24h
        (4, "u", "A", "purchase", 1.0, 1.0, "1999-12-31 00:00", "r4", ""),              # too old
        (5, "u", "A", None, 1.0, 1.0, "2024-01-10 00:00", "r5", ""),                    # unknown type
        (6, "u", "A", "purchase", 0.0, 1.0, "2024-01-10 00:00", "r6", ""),              # zero quantity
        (7, "u", "A", "cart", -2.0, 1.0, "2024-01-10 00:00", "r7", ""),                 # negative quantity
        (8, "u", "A", "rating", 6.0, None, "2024-01-10 00:00", "r8", ""),               # rating > 5
        (9, "u", "A", "purchase", None, 1.0, "2024-01-10 00:00", "r9", "value"),        # unparseable value
        (10, "u", "A", "purchase", 1.0, -1.0, "2024-01-10 00:00", "r10", ""),           # negative price
        (11, None, "A", "purchase", 1.0, 1.0, "2024-01-10 00:00", "r11", ""),           # anonymous not allowed
        (12, "u", "A", "purchase", 1.0, 1.0, None, "r12", "time"),                      # unparseable time
        (13, "u", "A", "purchase", 1.0, 1.0, "2024-01-10 00:00", "r13", "long utf8"),   # two reasons
        (14, "u", "A", "purchase", 1.0, 1.0, "2024-01-10 00:00", "ok", ""),             # duplicate of row 1
        (15, "u", "A", "purchase", 2000.0, 1.0, "2024-01-10 00:00", "r15", ""),         # quantity too large
        (16, "u", "A", "purchase", 1.0, 1.0, "2024-01-10 00:00", "r16", "malformed"),   # malformed line
    ])
    good, bad = split_good_bad(with_reasons(df, LIMITS))
    assert [r.row_id for r in good.collect()] == [1]
    reasons = {r.row_id: [x.split(":")[0] for x in r.reasons] for r in bad.collect()}
    assert reasons == {
        2: ["missing_item_id"], 3: ["event_time_in_future"], 4: ["event_time_too_old"],
        5: ["unknown_event_type"], 6: ["non_positive_quantity"], 7: ["non_positive_quantity"],
        8: ["rating_out_of_range"], 9: ["unparseable_value"], 10: ["negative_price"],
        11: ["missing_user_id"], 12: ["unparseable_event_time"], 13: ["invalid_utf8", "value_too_long"],
        14: ["duplicate_row"], 15: ["quantity_too_large"], 16: ["malformed_row"],
    }
    q = quarantine_rows(bad, date(2024, 1, 31)).filter("row_id = 13").first()
    assert q.reason.startswith("invalid_utf8") and "; value_too_long" in q.reason and q.first_rule.startswith("invalid")
