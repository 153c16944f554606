"""run_suite: GX's pandas engine (small batches) and its Spark engine give the same verdicts."""
import json
from datetime import date
from pathlib import Path

from pyspark.sql import functions as F

from features.expectations import events_expectations, silver_day_expectations
from features.row_quality import QualityLimits
from jobs.validate import PANDAS, SPARK, _pick_engine, run_suite
from tests.features.rows import silver_rows, valid_rows

LIMITS = QualityLimits.for_run(date(2024, 1, 31), "2000-01-01", 24, 20, 1000, 500.0, 5.0, allow_anonymous=False)
GOOD = ("u", "A", "purchase", 1.0, 2.0, "2024-01-10 08:00", "s")
NAN = float("nan")


def _events(spark, rows, malformed=(), long=(), raw_of=None):
    """Contract rows (``valid_rows``) with the parse flags the mapping adds; ``raw_of`` {row_id: raw} overrides
    the raw line (duplicates), ``malformed`` / ``long`` are row ids flagged as such."""
    df = valid_rows(spark, [(rid, *row) for rid, row in enumerate(rows, start=1)])
    for rid, raw in (raw_of or {}).items():
        df = df.withColumn("raw", F.when(F.col("row_id") == rid, F.lit(raw)).otherwise(F.col("raw")))
    rid = F.col("row_id")
    return (df.withColumn("_malformed", rid.isin(*malformed) if malformed else F.lit(False))
            .withColumn("_max_len", F.when(rid.isin(*long), F.lit(100)).otherwise(F.lit(5)) if long else F.lit(5))
            .withColumn("_bad_utf8", F.lit(False)).withColumn("_bad_time", F.lit(False))
            .withColumn("_bad_value", F.lit(False)).withColumn("_bad_price", F.lit(False)))


def _both(cfg, df, suite, expectations, stage="batch"):
    """The summaries of the Spark engine (pandas_max_rows=0) and the pandas one, in one GX context."""
    out = {}
    for engine, limit in ((SPARK, 0), (PANDAS, 1000)):
        out[engine] = run_suite(df, suite, expectations, quality_dir=cfg.quality.quality_dir, source="src",
                                batch_id=f"b-{engine}", stage=stage, pandas_max_rows=limit)
    return out[SPARK], out[PANDAS]


def _failed(summary):
    return sorted((f["expectation"], f["column"], f["unexpected_percent"], str(f["observed"]))
                  for f in summary.failed)


def test_bad_batch_fails_the_same_expectations_on_both_engines(spark, cfg):
    df = _events(spark, [
        GOOD,
        ("u", None, "purchase", 1.0, 2.0, "2024-01-10 08:00", "s"),       # 2: null item_id
        ("u", "A", "browse", 1.0, 2.0, "2024-01-10 08:00", "s"),          # 3: event type outside the set
        ("u", "A", "purchase", 0.0, 2.0, "2024-01-10 08:00", "s"),        # 4: value <= 0
        GOOD,                                                             # 5: duplicate raw of row 1
        ("u", "A", "purchase", 1.0, 2.0, "2024-02-03 00:00", "s"),        # 6: event_time after the window
        GOOD,                                                             # 7: malformed line
        ("u", "A", "purchase", NAN, None, "2024-01-10 08:00", "s"),       # 8: NaN value (not null in Spark)
        (None, "A", "purchase", 1.0, 2.0, "1999-12-31 23:59", "s"),       # 9: no user, before the window
        GOOD,                                                             # 10: a field too long
    ], malformed=[7], long=[10], raw_of={5: "raw1"})
    spark_run, pandas_run = _both(cfg, df, "src_events", events_expectations(LIMITS))

    assert spark_run.success is pandas_run.success is False
    assert _failed(spark_run) == _failed(pandas_run)
    assert spark_run.evaluated == pandas_run.evaluated
    pct = {(f["expectation"], f["column"]): f["unexpected_percent"] for f in pandas_run.failed}
    assert pct == {
        ("expect_column_values_to_not_be_null", "item_id"): 10.0,
        ("expect_column_values_to_not_be_null", "user_id"): 10.0,
        ("expect_column_values_to_be_in_set", "event_type"): 10.0,
        ("expect_column_values_to_be_between", "value"): 20.0,          # 0.0 and NaN
        ("expect_column_values_to_be_between", "event_time"): 20.0,
        ("expect_column_values_to_be_between", "_max_len"): 10.0,
        ("expect_column_values_to_be_in_set", "_malformed"): 10.0,
        ("expect_column_values_to_be_unique", "raw"): 20.0,             # both copies count
    }
    # each engine saved its own result JSON
    for run in (spark_run, pandas_run):
        assert json.loads(Path(run.result_path).read_text())["success"] is False


def test_clean_batch_passes_on_both_engines(spark, cfg):
    df = _events(spark, [GOOD, ("v", "B", "rating", 4.0, None, "2024-02-01 23:30", None),
                         ("w", "C", "view", 1.0, 3.0, "2000-01-01 00:00", "t")])
    spark_run, pandas_run = _both(cfg, df, "src_events", events_expectations(LIMITS))
    assert spark_run.success and pandas_run.success
    assert spark_run.failed == pandas_run.failed == []
    assert spark_run.evaluated == pandas_run.evaluated == len(events_expectations(LIMITS))


def test_missing_column_and_silver_suite_agree(spark, cfg):
    df = _events(spark, [GOOD]).drop("country")
    spark_run, pandas_run = _both(cfg, df, "src_events", events_expectations(LIMITS))
    assert _failed(spark_run) == _failed(pandas_run)
    assert [f["expectation"] for f in pandas_run.failed] == ["expect_table_columns_to_match_set"]

    silver = silver_rows(spark, [
        ("u", "A", "purchase", 1.0, 2.0, "2024-01-10 08:00", "s", 1.0),
        ("u", None, "purchase", 1.0, 2.0, "2024-01-10 08:00", "s", 1.0),  # null item_id
        ("u", "A", "refund", 1.0, 2.0, "2024-01-10 08:00", "s", 1.5),     # unknown type, strength > 1
        ("u", "A", "view", 1.0, 2.0, "2024-01-10 08:00", "s", NAN),       # NaN strength
    ])
    spark_run, pandas_run = _both(cfg, silver, "src_silver_day", silver_day_expectations(), stage="silver")
    assert not spark_run.success and not pandas_run.success
    assert _failed(spark_run) == _failed(pandas_run)
    assert {(f["column"], f["unexpected_percent"]) for f in pandas_run.failed} == {
        ("item_id", 25.0), ("event_type", 25.0), ("strength", 50.0)}


def test_engine_is_picked_by_row_count(spark):
    df = spark.range(5)
    assert _pick_engine(df, 0) == (SPARK, df)
    assert _pick_engine(df, 4) == (SPARK, df)
    engine, batch = _pick_engine(df, 5)
    assert engine == PANDAS and sorted(batch["id"]) == [0, 1, 2, 3, 4]


def test_check_follows_the_latest_ingest_of_the_day(spark, tmp_path):
    """Defect 3c: ``reco check`` judges the day's latest nightly ingest, so a good export after one that failed
    the quality gate passes, and a bad export after a good one fails."""
    import gzip

    import pytest

    from core.errors import QualityGateError
    from jobs.ingest import ingest
    from jobs.validate import check_ingested
    from tests.conftest import make_config

    cfg = make_config(tmp_path, sources={"online_retail": {"timezone": "UTC"}})
    header = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
    good = [f"73000{i},A{i},THING,{1 + i},2011-12-09 0{i}:00:00,2.00,1700{i},United Kingdom" for i in range(4)]
    bad = [line.replace(",2.00,", ",-2.00,") for line in good]           # every price negative: quarantined

    def export(name, lines):
        path = tmp_path / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(path, "wt") as f:
            f.write(header + "\n".join(lines) + "\n")
        return str(path)

    day = date(2011, 12, 9)
    with pytest.raises(QualityGateError):
        ingest(spark, cfg, "online_retail", day, path=export("bad.csv.gz", bad))
    with pytest.raises(QualityGateError, match="failed_quality_gate"):
        check_ingested(spark, cfg, "online_retail", day)
    ingest(spark, cfg, "online_retail", day, path=export("fixed.csv.gz", good))
    assert check_ingested(spark, cfg, "online_retail", day)["events_on_day"] == 4
    # a later export that fails the gate: the day's latest ingest failed, whatever silver still holds
    with pytest.raises(QualityGateError):
        ingest(spark, cfg, "online_retail", day, path=export("worse.csv.gz", bad))
    with pytest.raises(QualityGateError, match="failed_quality_gate"):
        check_ingested(spark, cfg, "online_retail", day)
