"""Lakehouse writes: replaceWhere slices, insert-only MERGE, the few-rows upsert, and hygiene that keeps
pinned versions."""
import pytest

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


def test_few_rows_upsert_appends_new_keys_and_merges_known_ones(spark, cfg):
    lh = Lakehouse(spark, cfg)
    schema = "step string, key string, status string"
    lh.merge(spark.createDataFrame([("ingest", "b1", "failed")], schema), "runs", ["step", "key"], few=True)
    lh.merge(spark.createDataFrame([("ingest", "b2", "succeeded")], schema), "runs", ["step", "key"], few=True)
    lh.merge(spark.createDataFrame([("ingest", None, "succeeded")], schema), "runs", ["step", "key"], few=True)
    # a retry of b1 and of the null key: their rows are replaced, not added (keys match null-safely)
    lh.merge(spark.createDataFrame([("ingest", "b1", "succeeded")], schema), "runs", ["step", "key"], few=True)
    lh.merge(spark.createDataFrame([("ingest", None, "empty")], schema), "runs", ["step", "key"], few=True)
    assert_rows(lh.read("runs"), [("ingest", "b1", "succeeded"), ("ingest", "b2", "succeeded"),
                                  ("ingest", None, "empty")], ["step", "key", "status"])
    ops = [r.operation for r in spark.sql(f"DESCRIBE HISTORY delta.`{lh.path('runs')}`").orderBy("version").collect()]
    assert ops == ["WRITE", "WRITE", "WRITE", "MERGE", "MERGE"]   # new keys appended, known keys merged


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


def test_maintain_sets_the_retention_once(spark, cfg):
    lh = Lakehouse(spark, cfg)
    for i in range(2):
        lh.overwrite(spark.createDataFrame([(i,)], "v int"), "once")
    lh.maintain("once")
    lh.maintain("once")
    ops = [r.operation for r in spark.sql(f"DESCRIBE HISTORY delta.`{lh.path('once')}`").orderBy("version").collect()]
    # the property change is one commit, not one per maintenance; nothing left to compact the second time
    assert ops.count("SET TBLPROPERTIES") == 1


def test_maintain_tables_covers_every_table_and_refuses_unknown_names(spark, cfg):
    from jobs.tables import list_tables, maintain_tables
    lh = Lakehouse(spark, cfg)
    for name in ("m_a", "m_b"):
        for i in range(2):    # two small files: OPTIMIZE compacts them into one
            spark.createDataFrame([(i,)], "v int").write.format("delta").mode("append").save(lh.path(name))
    seconds = maintain_tables(lh, ["m_a", "m_b"])
    assert sorted(seconds) == ["m_a", "m_b"]
    for name in ("m_a", "m_b"):
        ops = [r.operation for r in spark.sql(f"DESCRIBE HISTORY delta.`{lh.path(name)}`").collect()]
        assert "OPTIMIZE" in ops
        assert sorted(r.v for r in lh.read(name).collect()) == [0, 1]
    assert sorted(maintain_tables(lh)) == list_tables(lh)      # default: every table under the root
    with pytest.raises(ValueError, match="no Delta table \\['nope'\\]"):
        maintain_tables(lh, ["m_a", "nope"])
