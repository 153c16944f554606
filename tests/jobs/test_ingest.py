"""The ingest and features jobs on real files: idempotency and row accounting."""
import gzip
from datetime import date, datetime, timedelta, timezone

import pytest
from pyspark.sql import functions as F

from jobs.build_features import build_features
from jobs.ingest import ingest
from jobs.lakehouse import Lakehouse
from jobs.tables import content_checksum, list_tables
from tests.conftest import SHARED, make_config
from tests.jobs.test_storage import bucket, endpoint, s3  # noqa: F401  (moto S3 server fixtures)

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
LINES = [
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2011-11-01 08:26:00,2.55,17850,United Kingdom",
    "536365,71053,WHITE METAL LANTERN,6,2011-11-01 08:26:00,3.39,17850,United Kingdom",
    "536366,22633,HAND WARMER UNION JACK,6,2011-11-20 08:28:00,1.85,17850,United Kingdom",
    "536367,84879,ASSORTED COLOUR BIRD ORNAMENT,32,2011-12-01 08:34:00,1.69,13047,United Kingdom",
    "536367,22745,POPPY'S PLAYHOUSE BEDROOM ,6,2011-12-01 08:34:00,2.10,13047,United Kingdom",
    "C536379,22633,HAND WARMER UNION JACK,-6,2011-12-02 09:41:00,1.85,17850,United Kingdom",
    "536380,POST,POSTAGE,3,2011-12-02 09:41:00,18.00,12583,France",
    "536381,22139,RETROSPOT TEA SET CERAMIC 11 PC ,1,2011-12-03 11:52:00,4.95,,United Kingdom",
    "536382,22139,RETROSPOT TEA SET CERAMIC 11 PC ,0,2011-12-03 11:52:00,4.95,12583,France",
]
RUN_DATE = date(2011, 12, 9)


def _write(tmp_path, lines, name="retail.csv.gz"):
    path = tmp_path / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        f.write(HEADER + "\n".join(lines) + "\n")
    return str(path)


def _snapshot(lh: Lakehouse):
    return {t: content_checksum(lh.read(t), exclude=("duration_s",)) for t in list_tables(lh)}


def _count_suites(monkeypatch):
    """Record the stage of every GX suite run the ingest makes."""
    import jobs.ingest
    stages, real = [], jobs.ingest.run_suite

    def counting(*args, **kwargs):
        stages.append(kwargs["stage"])
        return real(*args, **kwargs)

    monkeypatch.setattr(jobs.ingest, "run_suite", counting)
    return stages


def test_ingest_and_features_twice_leave_identical_tables(spark, cfg, tmp_path, monkeypatch):
    cfg = cfg.model_copy(update={"quality": cfg.quality.model_copy(update={"max_bad_row_share": 0.2})})
    path = _write(tmp_path, LINES)
    lh = Lakehouse(spark, cfg)
    stages = _count_suites(monkeypatch)
    first = ingest(spark, cfg, "online_retail", RUN_DATE, path=path)
    # a row was quarantined: the accepted rows are checked again on their own
    assert stages == ["batch", "accepted"]
    build_features(spark, cfg, RUN_DATE)
    before = _snapshot(lh)
    second = ingest(spark, cfg, "online_retail", RUN_DATE, path=path)
    build_features(spark, cfg, RUN_DATE)
    assert _snapshot(lh) == before
    assert first.batch_id == second.batch_id
    # known accounting for the inline batch
    assert (first.input_rows, first.accepted_rows, first.excluded_rows, first.quarantined_rows) == (9, 5, 3, 1)
    assert first.excluded_by_rule == {"non_product_item": 1, "netted_by_return": 1, "return_netted": 1}
    assert first.quarantined_by_rule == {"non_positive_quantity": 1}
    assert {"bronze_online_retail", "silver_interactions", "quarantine", "excluded", "items", "user_index",
            "item_index", "user_features", "item_features", "training_examples", "pipeline_runs"} <= set(before)
    # bronze keeps the original values, as strings
    raw = lh.read("bronze_online_retail").filter(F.col("InvoiceNo") == "C536379").first()
    assert raw["Quantity"] == "-6" and raw["CustomerID"] == "17850"


def test_new_batch_extends_id_maps_without_renumbering(spark, cfg, tmp_path, monkeypatch):
    cfg = cfg.model_copy(update={"quality": cfg.quality.model_copy(update={"max_bad_row_share": 0.2})})
    lh = Lakehouse(spark, cfg)
    stages = _count_suites(monkeypatch)
    clean = ingest(spark, cfg, "online_retail", RUN_DATE, path=_write(tmp_path, LINES[:4], "a.csv.gz"))
    # nothing quarantined: the accepted rows are the batch, validated once
    assert clean.quarantined_rows == 0 and clean.gx_success and stages == ["batch"]
    build_features(spark, cfg, RUN_DATE)
    users_before = {r.user_id: r.idx for r in lh.read("user_index").collect()}
    items_before = {r.item_id: r.idx for r in lh.read("item_index").collect()}
    new_lines = ["536390,99999,NEW THING,1,2011-12-08 10:00:00,1.00,10001,Spain",
                 "536391,85123A,WHITE HANGING HEART T-LIGHT HOLDER,1,2011-12-08 10:00:00,2.55,00001,Spain"]
    # the next night's export (the same night's would replace a.csv.gz's batch: a corrected export)
    ingest(spark, cfg, "online_retail", RUN_DATE + timedelta(days=1), path=_write(tmp_path, new_lines, "b.csv.gz"))
    build_features(spark, cfg, RUN_DATE)
    users = {r.user_id: r.idx for r in lh.read("user_index").collect()}
    items = {r.item_id: r.idx for r in lh.read("item_index").collect()}
    assert {u: users[u] for u in users_before} == users_before
    assert {i: items[i] for i in items_before} == items_before
    assert users["00001"] == len(users_before) and users["10001"] == len(users_before) + 1
    assert sorted(users.values()) == list(range(len(users)))
    assert items["99999"] == len(items_before)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "uci-online-retail" / "online_retail.csv.gz").exists(),
                    reason="the shared UCI Online Retail file is not on this machine")
def test_uci_online_retail_every_row_accounted_for(spark, cfg):
    """The real file, through configuration alone: in = accepted + excluded + quarantined."""
    lh = Lakehouse(spark, cfg)
    res = ingest(spark, cfg, "online_retail", RUN_DATE)
    assert res.input_rows == 541_909
    silver = lh.read("silver_interactions").filter(F.col("batch_id") == res.batch_id).count()
    excluded = lh.read("excluded").filter(F.col("batch_id") == res.batch_id).count()
    quarantined = lh.read("quarantine").filter(F.col("batch_id") == res.batch_id).count()
    assert silver + excluded + quarantined == 541_909
    assert (silver, excluded, quarantined) == (res.accepted_rows, res.excluded_rows, res.quarantined_rows)
    # every cancellation line (9,288) is a return: netted or unmatched, never a training event
    assert lh.read("silver_interactions").filter("event_type = 'return'").count() == 0
    returns = sum(v for k, v in res.excluded_by_rule.items() if k.startswith("return"))
    cancel = F.col("raw").contains('"InvoiceNo":"C')
    quarantined_cancellations = lh.read("quarantine").filter(cancel).count()
    non_product_cancellations = lh.read("excluded").filter(cancel & (F.col("rule") == "non_product_item")).count()
    assert returns + quarantined_cancellations + non_product_cancellations == 9_288
    # 135,080 rows without a customer stay for popularity, as anonymous rows
    anon = lh.read("silver_interactions").filter("is_anonymous").count()
    assert 0 < anon <= 135_080
    assert res.excluded_by_rule["non_product_item"] > 0 and res.quarantined_by_rule["duplicate_row"] > 0


def test_ingest_from_s3_prefix_through_a_moto_server(spark, cfg, tmp_path, endpoint, s3, bucket):
    """An s3:// source path: boto3 lists and stages the batch's objects, Spark reads them."""
    cfg = cfg.model_copy(update={"s3": cfg.s3.model_copy(update={"endpoint_url": endpoint}),
                                 "quality": cfg.quality.model_copy(update={"max_bad_row_share": 0.2})})
    local = _write(tmp_path, LINES)
    with open(local, "rb") as f:
        s3.put_object(Bucket=bucket, Key="online_retail/2011-12-09/part-0.csv.gz", Body=f.read())
    s3.put_object(Bucket=bucket, Key="online_retail/2011-12-09/_SUCCESS", Body=b"")
    res = ingest(spark, cfg, "online_retail", RUN_DATE, path=f"s3://{bucket}/online_retail/2011-12-09/")
    assert res.files == [f"s3://{bucket}/online_retail/2011-12-09/part-0.csv.gz"]
    assert (res.input_rows, res.accepted_rows, res.excluded_rows, res.quarantined_rows) == (9, 5, 3, 1)


def test_ratings_with_a_catalog_file_onboarded_by_configuration(spark, cfg, tmp_path):
    """A MovieLens-style source: ratings file + '|'-separated latin-1 item file, mapped in config alone."""
    ratings = tmp_path / "in" / "u.data"
    ratings.parent.mkdir(parents=True)
    ratings.write_text("1\t10\t5\t881250949\n1\t20\t3\t881250950\n2\t10\t4\t881250951\n2\t30\t2\t881250952\n")
    items = tmp_path / "in" / "u.item"
    items.write_bytes("10|Toy Story (1995)|01-Jan-1995\n20|Caf\xe9 au lait (1993)|01-Jan-1993\n"
                      "|no id|01-Jan-1990\n".encode("latin-1"))
    source = {"kind": "csv", "path": str(ratings), "header": False, "delimiter": "\t",
              "names": ["user", "item", "rating", "timestamp"], "timestamp_format": "unix_seconds",
              "columns": {"user_id": "user", "item_id": "item", "value": "rating", "event_time": "timestamp"},
              "event_type": {"constant": "rating"},
              "catalog": {"path": str(items), "header": False, "delimiter": "|", "encoding": "ISO-8859-1",
                          "names": ["movie_id", "title", "release"], "columns": {"item_id": "movie_id",
                                                                                 "title": "title"}}}
    cfg = cfg.model_copy(update={"sources": {**cfg.sources, "shop": type(cfg.sources["ratings_csv"])(**source)}})
    res = ingest(spark, cfg, "shop", date(1998, 4, 22))
    assert (res.input_rows, res.accepted_rows) == (4, 4)
    lh = Lakehouse(spark, cfg)
    titles = {r.item_id: (r.title, str(r.first_seen)) for r in lh.read("items").collect()}
    assert titles == {"10": ("Toy Story (1995)", "1997-12-04"), "20": ("Café au lait (1993)", "1997-12-04"),
                      "30": (None, "1997-12-04")}
    bad = lh.read("quarantine").filter(F.col("source") == "shop:catalog").collect()
    assert [r.first_rule for r in bad] == ["missing_item_id"] and "no id" in bad[0].raw


# ---------------------------------------------------------------- issue 22: nightly batches per (source, run date)

DAY = date(2011, 12, 9)
UTC_SOURCE = {"online_retail": {"timezone": "UTC"}}


def _line(invoice, item, qty, when, customer, price="2.00"):
    return f"{invoice},{item},THING {item},{qty},{when},{price},{customer},United Kingdom"


def _sessions(lh):
    """Silver's session ids (invoices) with how often each is there."""
    rows = lh.read("silver_interactions").groupBy("session_id").count().collect()
    return sorted((r[0], r[1]) for r in rows)


def test_nightly_supersedes_the_hourly_batches_of_the_days_it_covers_without_hourly_path(spark, tmp_path):
    """Defect 2: the hourly path reads ``path`` when a source has no ``hourly_path``; the nightly batch then
    holds the same events and must replace the hourly batches of every day it covers (its run date, and a
    late event's day), or silver counts them twice."""
    path = _write(tmp_path, [
        _line("700001", "A1", 1, "2011-12-08 23:30:00", "17001"),    # late: the 8th's, in the 9th's export
        _line("700002", "A2", 2, "2011-12-09 10:15:00", "17002"),    # in the hourly window below
        _line("700003", "A3", 1, "2011-12-09 12:00:00", "17003"),    # only the nightly has it
    ], "day.csv.gz")
    cfg = make_config(tmp_path, sources={"online_retail": {"path": path, "timezone": "UTC"}})   # no hourly_path
    lh = Lakehouse(spark, cfg)
    for lo, hi, bid in ((datetime(2011, 12, 8, 23), datetime(2011, 12, 9, 0), "hourly-20111209T0000"),
                        (datetime(2011, 12, 9, 10), datetime(2011, 12, 9, 11), "hourly-20111209T1100")):
        ingest(spark, cfg, "online_retail", (hi - timedelta(microseconds=1)).date(),
               window=(lo.replace(tzinfo=timezone.utc), hi.replace(tzinfo=timezone.utc)), batch_id=bid)
    assert _sessions(lh) == [("700001", 1), ("700002", 1)]

    nightly = ingest(spark, cfg, "online_retail", DAY)
    assert _sessions(lh) == [("700001", 1), ("700002", 1), ("700003", 1)]
    batches = {r[0] for r in lh.read("silver_interactions").select("batch_id").distinct().collect()}
    assert batches == {nightly.batch_id}


def test_a_corrected_export_replaces_the_days_batch_in_one_commit(spark, tmp_path):
    """Defect 3a: a corrected export of a day already ingested (rewritten in place, or given by another path)
    is a new batch; it replaces the day's earlier nightly batch instead of adding to it."""
    cfg = make_config(tmp_path, sources=UTC_SOURCE)
    lh = Lakehouse(spark, cfg)
    day = [_line("710001", "A1", 1, "2011-12-09 09:00:00", "17001"),
           _line("710002", "A2", 5, "2011-12-09 10:00:00", "17002")]
    path = _write(tmp_path, day, "export.csv.gz")
    first = ingest(spark, cfg, "online_retail", DAY, path=path)
    version = lh.version("silver_interactions")

    # the export is fixed in place: 710002 had 50 units, and a line was missing
    fixed = [day[0], _line("710002", "A2", 50, "2011-12-09 10:00:00", "17002"),
             _line("710003", "A3", 1, "2011-12-09 11:00:00", "17003")]
    _write(tmp_path, fixed, "export.csv.gz")
    second = ingest(spark, cfg, "online_retail", DAY, path=path)
    assert second.batch_id != first.batch_id
    assert _sessions(lh) == [("710001", 1), ("710002", 1), ("710003", 1)]
    assert lh.read("silver_interactions").filter(F.col("session_id") == "710002").first()["value"] == 50.0
    # one commit: the version after the first batch holds it alone, the next one the corrected batch alone
    assert lh.version("silver_interactions") == version + 1

    # a second correction delivered under another name (--path) replaces it too
    third = ingest(spark, cfg, "online_retail", DAY, path=_write(tmp_path, fixed[:2], "export-v3.csv.gz"))
    assert _sessions(lh) == [("710001", 1), ("710002", 1)]
    assert {r[0] for r in lh.read("silver_interactions").select("batch_id").distinct().collect()} == {third.batch_id}


def test_an_accumulating_prefix_ingests_only_its_new_files(spark, tmp_path):
    """Defect 3b: a folder to which each night's export is added. A file belongs to the run date whose batch
    first took it: a night's batch is the files no other run date took, and a rerun takes its own again."""
    cfg = make_config(tmp_path, sources=UTC_SOURCE)
    lh = Lakehouse(spark, cfg)
    folder = tmp_path / "in" / "exports"
    _write(tmp_path, [_line("720001", "A1", 1, "2011-12-08 09:00:00", "17001")], "exports/2011-12-08.csv.gz")
    first = ingest(spark, cfg, "online_retail", DAY - timedelta(days=1), path=str(folder))
    _write(tmp_path, [_line("720002", "A2", 1, "2011-12-09 09:00:00", "17002"),
                      _line("720003", "A3", 1, "2011-12-09 10:00:00", "17003")], "exports/2011-12-09.csv.gz")
    second = ingest(spark, cfg, "online_retail", DAY, path=str(folder))
    assert [f.rsplit("/", 1)[1] for f in second.files] == ["2011-12-09.csv.gz"]
    assert second.input_rows == 2
    assert _sessions(lh) == [("720001", 1), ("720002", 1), ("720003", 1)]
    before = _snapshot(lh)

    # reruns of either night: the same batches, the same tables
    assert ingest(spark, cfg, "online_retail", DAY, path=str(folder)).batch_id == second.batch_id
    assert ingest(spark, cfg, "online_retail", DAY - timedelta(days=1), path=str(folder)).batch_id == first.batch_id
    assert _sessions(lh) == [("720001", 1), ("720002", 1), ("720003", 1)]
    after = _snapshot(lh)
    assert {t: v for t, v in after.items() if t != "pipeline_runs"} == \
        {t: v for t, v in before.items() if t != "pipeline_runs"}

    # a night with nothing new: an empty batch, nothing added. The 8th's file rewritten in place is a
    # correction of the 8th, not a new file of the 10th: the 8th's rerun takes it
    _write(tmp_path, [_line("720001", "A1", 4, "2011-12-08 09:00:00", "17001")], "exports/2011-12-08.csv.gz")
    empty = ingest(spark, cfg, "online_retail", DAY + timedelta(days=1), path=str(folder))
    assert (empty.input_rows, empty.files) == (0, [])
    assert _sessions(lh) == [("720001", 1), ("720002", 1), ("720003", 1)]
    ingest(spark, cfg, "online_retail", DAY - timedelta(days=1), path=str(folder))
    assert _sessions(lh) == [("720001", 1), ("720002", 1), ("720003", 1)]
    assert lh.read("silver_interactions").filter(F.col("session_id") == "720001").first()["value"] == 4.0
