"""Returns net against purchases of earlier batches (issue 22, defect 7), and every write stays idempotent."""
import gzip
from datetime import date, datetime, timezone

from pyspark.sql import functions as F

from jobs.ingest import ingest
from jobs.lakehouse import Lakehouse
from jobs.return_netting import TABLE
from jobs.tables import content_checksum
from tests.compare import assert_rows
from tests.conftest import make_config

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
DAY = date(2011, 12, 9)


def _write(tmp_path, name, lines):
    path = tmp_path / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        f.write(HEADER + "\n".join(lines) + "\n")
    return str(path)


def _hour(spark, cfg, h):
    """The hourly batch of [h:00, h+1:00) on DAY, as jobs.hourly names it."""
    lo = datetime(2011, 12, 9, h, tzinfo=timezone.utc)
    hi = datetime(2011, 12, 9, h + 1, tzinfo=timezone.utc)
    return ingest(spark, cfg, "online_retail", DAY, window=(lo, hi), batch_id=f"hourly-20111209T{h + 1:02d}00")


def _state(lh):
    return {t: content_checksum(lh.read(t)) for t in ("silver_interactions", "excluded", TABLE)}


def test_a_return_in_the_next_hour_nets_against_its_purchase(spark, tmp_path):
    path = _write(tmp_path, "day.csv.gz", [
        "800001,A1,RED MUG,6,2011-12-09 01:30:00,2.50,17001,United Kingdom",     # hour 1: bought 6
        "800002,A2,TEA SET,1,2011-12-09 01:40:00,9.95,17002,United Kingdom",     # hour 1: another customer
        "C800003,A1,RED MUG,-2,2011-12-09 02:30:00,2.50,17001,United Kingdom",   # hour 2: 2 of the 6 back
    ])
    cfg = make_config(tmp_path, sources={"online_retail": {"path": path, "timezone": "UTC"}})
    lh = Lakehouse(spark, cfg)
    _hour(spark, cfg, 1)
    second = _hour(spark, cfg, 2)

    silver = lh.read("silver_interactions")
    assert_rows(silver, [("800001", 4.0, 1.0), ("800002", 1.0, 1.0)], ["session_id", "value", "strength"])
    # the return was matched, not dropped as a return without purchase; nothing quarantined
    excluded = lh.read("excluded").filter(F.col("batch_id") == second.batch_id)
    assert [r["rule"] for r in excluded.collect()] == ["return_netted"]
    assert second.quarantined_rows == 0 and second.excluded_by_rule == {"return_netted": 1}
    state = _state(lh)

    _hour(spark, cfg, 2)             # the return's hour again: the same tables
    assert _state(lh) == state
    _hour(spark, cfg, 1)             # the purchase's hour again: the full quantity does not come back
    assert _state(lh) == state

    # the day's nightly holds the purchase and the return: it nets them itself, and what the hours
    # recorded goes with the hourly batches it supersedes
    nightly = ingest(spark, cfg, "online_retail", DAY)
    silver = lh.read("silver_interactions")
    assert_rows(silver, [(nightly.batch_id, "800001", 4.0), (nightly.batch_id, "800002", 1.0)],
                ["batch_id", "session_id", "value"])
    assert lh.read(TABLE).count() == 0


def test_a_return_cancels_a_purchase_of_an_earlier_night_whole_and_a_correction_brings_it_back(spark, tmp_path):
    cfg = make_config(tmp_path, sources={"online_retail": {"timezone": "UTC"}})
    lh = Lakehouse(spark, cfg)
    monday = _write(tmp_path, "2011-12-08.csv.gz", [
        "810001,B1,LAMP,3,2011-12-08 10:00:00,5.00,17001,United Kingdom",
        "810002,B2,VASE,1,2011-12-08 11:00:00,7.00,17001,United Kingdom"])
    ingest(spark, cfg, "online_retail", date(2011, 12, 8), path=monday)
    tuesday = _write(tmp_path, "2011-12-09.csv.gz", [
        "C810003,B1,LAMP,-3,2011-12-09 09:00:00,5.00,17001,United Kingdom",     # all three lamps back
        "810004,B2,VASE,2,2011-12-09 12:00:00,7.00,17001,United Kingdom"])
    ingest(spark, cfg, "online_retail", DAY, path=tuesday)
    assert_rows(lh.read("silver_interactions"), [("810002", 1.0), ("810004", 2.0)], ["session_id", "value"])

    # Monday's export ingested again: the lamps stay returned
    ingest(spark, cfg, "online_retail", date(2011, 12, 8), path=monday)
    assert_rows(lh.read("silver_interactions"), [("810002", 1.0), ("810004", 2.0)], ["session_id", "value"])

    # Tuesday's export corrected: only one lamp came back
    fixed = _write(tmp_path, "2011-12-09-fixed.csv.gz", [
        "C810003,B1,LAMP,-1,2011-12-09 09:00:00,5.00,17001,United Kingdom",
        "810004,B2,VASE,2,2011-12-09 12:00:00,7.00,17001,United Kingdom"])
    ingest(spark, cfg, "online_retail", DAY, path=fixed)
    assert_rows(lh.read("silver_interactions"), [("810001", 2.0), ("810002", 1.0), ("810004", 2.0)],
                ["session_id", "value"])
