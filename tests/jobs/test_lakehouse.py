"""Lakehouse writes: replaceWhere slices, insert-only MERGE, and hygiene that keeps pinned versions."""
from jobs.lakehouse import Lakehouse
from tests.compare import assert_rows


def test_replace_touches_only_its_slice_and_merge_never_updates(spark, cfg):
    lh = Lakehouse(spark, cfg)
    lh.replace(spark.createDataFrame([("a", 1), ("a", 2)], "batch string, v int"), "t", {"batch": "a"})
    lh.replace(spark.createDataFrame([("b", 3)], "batch string, v int"), "t", {"batch": "b"})
    lh.replace(spark.createDataFrame([("a", 9)], "batch string, v int"), "t", {"batch": "a"})
    assert_rows(lh.read("t"), [("a", 9), ("b", 3)], ["batch", "v"])
    lh.merge(spark.createDataFrame([("x", 0)], "id string, idx int"), "m", ["id"], update=False)
    lh.merge(spark.createDataFrame([("x", 5), ("y", 1)], "id string, idx int"), "m", ["id"], update=False)
    assert_rows(lh.read("m"), [("x", 0), ("y", 1)], ["id", "idx"])


def test_maintain_compacts_and_keeps_versions_inside_the_retention(spark, cfg):
    lh = Lakehouse(spark, cfg)
    for i in range(3):
        lh.overwrite(spark.createDataFrame([(i,)], "v int"), "h")
    lh.maintain("h")
    props = spark.sql(f"SHOW TBLPROPERTIES delta.`{lh.path('h')}`").collect()
    assert {r.key: r.value for r in props}["delta.deletedFileRetentionDuration"] == \
        f"interval {cfg.lakehouse.vacuum_retention_hours} hours"
    # a version training might have pinned is still readable after VACUUM
    assert [r.v for r in lh.read("h", version=0).collect()] == [0]
    assert [r.v for r in lh.read("h").collect()] == [2]
