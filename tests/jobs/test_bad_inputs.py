"""The bad-input corpus: every kind of broken input ends in a clear error or in
quarantined rows with a reason; never a bare stack trace, never a silent drop.

File-level faults (missing column, empty file, header only, truncated gzip,
wrong delimiter, mixed headers, too many bad rows) must raise a specific error
whose message names the file or source and says what to do; a few go through
the ``reco`` CLI to check the user sees ``error: ...`` and no traceback.

Row-level faults are grouped, one bad row per kind, into one file per source
layout (``online_retail``, ``events_csv``, ``ratings_csv``), so each layout
costs one ingest. Each bad row is found in ``quarantine`` by a distinctive
value and its reason is checked rule by rule; the good rows of the same file
must reach ``silver_interactions``, and every input row must land in exactly
one of silver, excluded or quarantine.

The last tests are regressions of bugs this corpus found (huge epoch values,
a rating of 0, a CSV source run without a date, a later export with an extra
column).
"""
from __future__ import annotations

import gzip
import json
import logging
from datetime import date
from pathlib import Path
from typing import Dict, List

import pytest
from pyspark.sql import functions as F

from orchestration import cli
from core.errors import EmptyInputError, InputSchemaError, QualityGateError
from jobs.ingest import ingest
from jobs.lakehouse import Lakehouse
from jobs.storage import InputError
from tests.conftest import make_config

RETAIL_HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
RETAIL_DATE = date(2011, 12, 10)       # run date of the online_retail batches
EVENTS_HEADER = "timestamp,visitorid,event,itemid"
RUN_DATE_2015 = date(2015, 9, 18)


# ---------------------------------------------------------------- helpers

def write_lines(path: Path, lines: List[bytes | str], *, compress: bool = False) -> Path:
    """Write ``lines`` joined by newlines (str as UTF-8, bytes as they are)."""
    data = b"\n".join(x if isinstance(x, bytes) else x.encode("utf-8") for x in lines) + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def retail(invoice: str, item: str, qty: str = "2", when: str = "2011-12-01 10:00:00", price: str = "1.25",
           user: str = "17850", desc: str = "WHITE MUG", country: str = "United Kingdom") -> str:
    """One online_retail line in the UCI column order."""
    return ",".join([invoice, item, desc, qty, when, price, user, country])


def batch_rows(lh: Lakehouse, table: str, source: str, batch_id: str) -> List[dict]:
    if not lh.exists(table):
        return []
    df = lh.read(table).filter((F.col("source") == source) & (F.col("batch_id") == batch_id))
    return [r.asDict() for r in df.collect()]


def bronze_row_ids(lh: Lakehouse, source: str, batch_id: str) -> List[int]:
    return [r[0] for r in lh.read(f"bronze_{source}").filter(F.col("_batch_id") == batch_id)
            .select("_row_id").collect()]


def rules_of(reason: str) -> List[str]:
    """'a: text; b' -> ['a', 'b']: the rule names of a quarantine reason."""
    return [part.split(":")[0].strip() for part in reason.split("; ")]


def quarantine_by_marker(rows: List[dict], markers: List[str]) -> Dict[str, List[dict]]:
    """The quarantine rows whose raw line contains each marker."""
    return {m: [r for r in rows if m in r["raw"]] for m in markers}


def assert_every_row_accounted_for(lh: Lakehouse, source: str, batch_id: str, data_lines: int) -> Dict[str, list]:
    """input rows == silver + excluded + quarantine, with each bronze row id in exactly one of them."""
    bronze = bronze_row_ids(lh, source, batch_id)
    places = {t: batch_rows(lh, t, source, batch_id) for t in ("silver_interactions", "excluded", "quarantine")}
    ids = {t: [r["row_id"] for r in rows] for t, rows in places.items()}
    assert len(bronze) == data_lines, "Spark read a different number of rows than the file has lines"
    assert len(bronze) == sum(len(v) for v in ids.values()), {t: len(v) for t, v in ids.items()}
    landed = [i for v in ids.values() for i in v]
    assert sorted(landed) == sorted(bronze), "a row is missing or lands in two places"
    return places


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """Run ``reco`` with a given config; returns (exit code, stderr). Restores the root
    logger, which ``cli.main`` configures on a stderr that capsys replaces."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def run(cfg, *argv: str):
        monkeypatch.setattr(cli, "load_config", lambda: cfg)
        code = cli.main(list(argv))
        return code, capsys.readouterr().err

    yield run
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def assert_clean_cli_error(code: int, err: str, *fragments: str) -> None:
    assert code != 0
    assert "error:" in err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


# ---------------------------------------------------------------- file-level faults

def test_missing_column_names_it_and_the_mapping(spark, tmp_path, run_cli):
    cfg = make_config(tmp_path)
    # the export lost UnitPrice
    f = write_lines(tmp_path / "in" / "no_price.csv", [
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,CustomerID,Country",
        "536365,85123A,WHITE MUG,6,2011-12-01 08:26:00,17850,United Kingdom"])

    with pytest.raises(InputSchemaError) as err:
        ingest(spark, cfg, "online_retail", RETAIL_DATE, path=str(f))
    msg = str(err.value)
    for fragment in ("source 'online_retail'", str(f), "missing column(s) ['UnitPrice']",
                     "sources.online_retail.columns", "Fix the export or the mapping"):
        assert fragment in msg, msg

    code, stderr = run_cli(cfg, "ingest", "--source", "online_retail", "--date", "2011-12-10", "--path", str(f))
    assert code == InputSchemaError.exit_code
    assert_clean_cli_error(code, stderr, "UnitPrice", str(f))


def test_empty_file_is_refused_before_spark_reads_it(spark, tmp_path, run_cli):
    cfg = make_config(tmp_path)
    f = tmp_path / "in" / "empty.csv"
    f.parent.mkdir()
    f.write_bytes(b"")

    with pytest.raises(InputError) as err:
        ingest(spark, cfg, "online_retail", RETAIL_DATE, path=str(f))
    assert f"input file {f} is empty (0 bytes)" in str(err.value)
    assert "re-export or re-upload it" in str(err.value)

    code, stderr = run_cli(cfg, "ingest", "--source", "online_retail", "--date", "2011-12-10", "--path", str(f))
    assert code == 2
    assert_clean_cli_error(code, stderr, str(f), "empty (0 bytes)")


def test_header_only_file_has_no_data_rows(spark, tmp_path):
    cfg = make_config(tmp_path)
    f = write_lines(tmp_path / "in" / "header_only.csv", [RETAIL_HEADER])

    with pytest.raises(EmptyInputError) as err:
        ingest(spark, cfg, "online_retail", RETAIL_DATE, path=str(f))
    msg = str(err.value)
    for fragment in ("source 'online_retail'", str(f), "has no data rows", "check the export"):
        assert fragment in msg, msg


def test_truncated_gzip_is_refused(spark, tmp_path, run_cli):
    cfg = make_config(tmp_path)
    whole = tmp_path / "whole.csv.gz"
    write_lines(whole, [RETAIL_HEADER] + [retail("536365", f"I{i:04d}") for i in range(200)], compress=True)
    f = tmp_path / "in" / "cut.csv.gz"
    f.parent.mkdir()
    f.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])   # the upload stopped half way

    with pytest.raises(InputError) as err:
        ingest(spark, cfg, "online_retail", RETAIL_DATE, path=str(f))
    assert f"gzip file {f} is truncated" in str(err.value)
    assert "re-export or re-upload it" in str(err.value)

    code, stderr = run_cli(cfg, "ingest", "--source", "online_retail", "--date", "2011-12-10", "--path", str(f))
    assert code == 2
    assert_clean_cli_error(code, stderr, str(f), "truncated")


def test_wrong_delimiter_suggests_the_right_one(spark, tmp_path):
    cfg = make_config(tmp_path)
    # a continental export: ';' between fields, ',' as the decimal mark
    f = write_lines(tmp_path / "in" / "semicolon.csv", [
        RETAIL_HEADER.replace(",", ";"),
        "536365;85123A;WHITE MUG;6;2011-12-01 08:26:00;2,55;17850;United Kingdom"])

    with pytest.raises(InputSchemaError) as err:
        ingest(spark, cfg, "online_retail", RETAIL_DATE, path=str(f))
    msg = str(err.value)
    for fragment in ("source 'online_retail'", str(f), "the file looks ';'-delimited",
                     "set sources.online_retail.delimiter to ';'"):
        assert fragment in msg, msg


def test_files_with_different_headers_in_one_batch(spark, tmp_path):
    cfg = make_config(tmp_path)
    folder = tmp_path / "in"
    a = write_lines(folder / "part-1.csv", [RETAIL_HEADER, retail("536365", "85123A")])
    # same columns, but the second export swapped two of them
    swapped = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,Country,CustomerID"
    b = write_lines(folder / "part-2.csv", [swapped, "536366,22633,HAND WARMER,6,2011-12-01 08:28:00,1.85,"
                                                    "United Kingdom,17850"])

    with pytest.raises(InputSchemaError) as err:
        ingest(spark, cfg, "online_retail", RETAIL_DATE, path=str(folder))
    msg = str(err.value)
    for fragment in ("source 'online_retail'", "different headers", str(a), str(b),
                     "split them into separate batches or fix the export"):
        assert fragment in msg, msg


def test_bad_row_share_above_threshold_fails_but_keeps_quarantine(spark, tmp_path):
    cfg = make_config(tmp_path)      # default quality.max_bad_row_share: 5%
    assert cfg.quality.max_bad_row_share == 0.05
    f = write_lines(tmp_path / "in" / "mostly_bad.csv", [
        RETAIL_HEADER,
        retail("536365", "GATE_OK"),                      # good
        retail("536366", "GATE_QTY", qty="lots"),         # unparseable quantity
        retail("536367", "GATE_TS", when="soon"),         # unparseable time
    ])

    with pytest.raises(QualityGateError) as err:
        ingest(spark, cfg, "online_retail", RETAIL_DATE, path=str(f))
    msg = str(err.value)
    lh = Lakehouse(spark, cfg)
    for fragment in ("source 'online_retail'", "2 of 3 rows (66.7%) failed validation",
                     "quality.max_bad_row_share=5.0%", "unparseable_value: 1", "unparseable_event_time: 1",
                     lh.path("quarantine"), "RECO__QUALITY__MAX_BAD_ROW_SHARE"):
        assert fragment in msg, msg

    batch_id = msg.split("batch ")[1].split(":")[0]
    quarantined = quarantine_by_marker(batch_rows(lh, "quarantine", "online_retail", batch_id),
                                       ["GATE_QTY", "GATE_TS", "GATE_OK"])
    assert [rules_of(r["reason"]) for r in quarantined["GATE_QTY"]] == [["unparseable_value"]]
    assert [rules_of(r["reason"]) for r in quarantined["GATE_TS"]] == [["unparseable_event_time"]]
    assert quarantined["GATE_OK"] == []
    assert batch_rows(lh, "silver_interactions", "online_retail", batch_id) == []   # nothing published
    runs = lh.read("pipeline_runs").filter(F.col("batch_id") == batch_id).collect()
    assert [(r.status, r.input_rows, r.quarantined_rows) for r in runs] == [("failed_quality_gate", 3, 2)]


# ---------------------------------------------------------------- row-level faults

def test_retail_rows_quarantined_with_reasons_and_good_rows_kept(spark, tmp_path):
    # 13 bad rows of 32: well above the default 5%; the gate has its own test
    cfg = make_config(tmp_path, quality={"max_bad_row_share": 0.5})
    good = [retail(f"5364{i:02d}", f"GOOD{i:02d}", user=str(12000 + i)) for i in range(14)]
    lines = [RETAIL_HEADER, *good,
             retail("536470", "ANON01", user=""),                       # anonymous: allowed for this source
             retail("536471", "POST", desc="POSTAGE", price="18.00"),   # non-product -> excluded
             retail("536472", "RET01", qty="5", when="2011-12-01 09:00:00"),
             retail("C536473", "RET01", qty="-2", when="2011-12-02 09:00:00"),  # cancellation: netted, excluded
             retail("536474", "DUP01"),                                 # first copy: kept
             retail("536474", "DUP01"),                                 # exact duplicate: quarantined
             retail("536475", "BAD_QTY", qty="abc"),                    # wrong type: quantity
             retail("536476", "BAD_PRICE", price="x"),                  # wrong type: price
             retail("536477", "BAD_TS", when="01/12/2011 10:00"),       # timestamp in another format
             retail("536478", "BAD_FUTURE", when="2012-06-01 10:00:00"),  # after the run date (+24h)
             retail("536479", "BAD_OLD", when="1994-12-31 23:00:00"),   # before quality.min_event_time
             retail("536480", "BAD_ZERO", qty="0"),                     # zero quantity
             retail("536481", "BAD_NEG", qty="-3"),                     # negative, not a cancellation (no C)
             retail("536482", "BAD_LONG", desc="x" * 1500),             # > quality.max_string_length (1000)
             b"536483,BAD_UTF8,BAD \xff\xfe BYTES,2,2011-12-01 10:00:00,1.25,17850,United Kingdom",  # not UTF-8
             retail("536484", "", desc="NO_ITEM_ID_ROW"),               # null item id
             retail("536485", "BAD_EXTRA") + ",EXTRA FIELD",            # one field too many
             '536486,BAD_QUOTE,"BROKEN QUOTE,2,2011-12-01 10:00:00,1.25,17850,United Kingdom',  # unbalanced "
             ]
    f = write_lines(tmp_path / "in" / "retail.csv", lines)

    result = ingest(spark, cfg, "online_retail", RETAIL_DATE, path=str(f))

    lh = Lakehouse(spark, cfg)
    places = assert_every_row_accounted_for(lh, "online_retail", result.batch_id, len(lines) - 1)
    expected = {            # marker -> rule names of its one quarantine row
        "DUP01": ["duplicate_row"],
        "BAD_QTY": ["unparseable_value"],
        "BAD_PRICE": ["unparseable_price"],
        "BAD_TS": ["unparseable_event_time"],
        "BAD_FUTURE": ["event_time_in_future"],
        "BAD_OLD": ["event_time_too_old"],
        "BAD_ZERO": ["non_positive_quantity"],
        "BAD_NEG": ["non_positive_quantity"],
        "BAD_LONG": ["value_too_long"],
        "BAD_UTF8": ["invalid_utf8"],
        "NO_ITEM_ID_ROW": ["missing_item_id"],
        "BAD_EXTRA": ["malformed_row"],
        # the open quote swallows the rest of the line, so time and quantity are missing too
        "BAD_QUOTE": ["malformed_row", "missing_event_time", "missing_value"],
    }
    found = quarantine_by_marker(places["quarantine"], list(expected))
    assert {m: [rules_of(r["reason"]) for r in rows] for m, rows in found.items()} == \
        {m: [rules] for m, rules in expected.items()}
    assert "event_time_in_future: after 2011-12-12 00:00 UTC" in found["BAD_FUTURE"][0]["reason"]
    assert "event_time_too_old: before 1995-01-01" in found["BAD_OLD"][0]["reason"]
    assert "value_too_long: a field exceeds 1000 characters" in found["BAD_LONG"][0]["reason"]
    assert len(places["quarantine"]) == len(expected)

    silver_items = sorted(r["item_id"] for r in places["silver_interactions"])
    assert silver_items == sorted([f"GOOD{i:02d}" for i in range(14)] + ["ANON01", "RET01", "DUP01"])
    assert sorted((json.loads(r["raw"])["StockCode"], r["rule"]) for r in places["excluded"]) == \
        [("POST", "non_product_item"), ("RET01", "return_netted")]
    assert (result.input_rows, result.accepted_rows, result.excluded_rows, result.quarantined_rows) == \
        (len(lines) - 1, 17, 2, 13)
    assert result.quarantined_by_rule["non_positive_quantity"] == 2


def test_events_rows_unknown_type_and_missing_user(spark, tmp_path):
    cfg = make_config(tmp_path, quality={"max_bad_row_share": 0.5})
    assert cfg.source("events_csv").allow_anonymous is False
    ms = 1442000000000                       # 2015-09-11 19:33:20 UTC
    lines = [EVENTS_HEADER,
             f"{ms},101,view,EV_GOOD1",
             f"{ms + 1},101,addtocart,EV_GOOD1",
             f"{ms + 2},101,transaction,EV_GOOD1",
             f"{ms + 3},102, VIEW ,EV_GOOD2",          # case and blanks around the type are fine
             f"{ms + 4},103,view,EV_GOOD3",
             f"{ms + 5},104,view,EV_GOOD4",
             f"{ms + 6},105,click,EV_CLICK",           # not in the source's event mapping
             f"{ms + 7},,view,EV_NOUSER",              # no visitor id, and this source needs one
             "yesterday,106,view,EV_BADTS",             # not unix millis
             f"{ms + 86400000 * 30},107,view,EV_FUTURE",  # a month after the run date
             ]
    f = write_lines(tmp_path / "in" / "events.csv", lines)

    result = ingest(spark, cfg, "events_csv", RUN_DATE_2015, path=str(f))

    lh = Lakehouse(spark, cfg)
    places = assert_every_row_accounted_for(lh, "events_csv", result.batch_id, len(lines) - 1)
    expected = {"EV_CLICK": ["unknown_event_type"], "EV_NOUSER": ["missing_user_id"],
                "EV_BADTS": ["unparseable_event_time"], "EV_FUTURE": ["event_time_in_future"]}
    found = quarantine_by_marker(places["quarantine"], list(expected))
    assert {m: [rules_of(r["reason"]) for r in rows] for m, rows in found.items()} == \
        {m: [rules] for m, rules in expected.items()}
    assert len(places["quarantine"]) == len(expected)
    assert sorted((r["item_id"], r["event_type"]) for r in places["silver_interactions"]) == [
        ("EV_GOOD1", "cart"), ("EV_GOOD1", "purchase"), ("EV_GOOD1", "view"), ("EV_GOOD2", "view"),
        ("EV_GOOD3", "view"), ("EV_GOOD4", "view")]
    assert places["excluded"] == []


def test_ratings_rows_out_of_range(spark, tmp_path):
    cfg = make_config(tmp_path, quality={"max_bad_row_share": 0.5})
    assert cfg.source("ratings_csv").allow_anonymous is False
    sec = 1442000000                         # 2015-09-11 19:33:20 UTC
    lines = [f"1\t1001\t5\t{sec}", f"1\t1002\t3\t{sec + 1}", f"2\t1003\t1\t{sec + 2}",
             f"2\t1004\t4\t{sec + 3}", f"3\t1005\t2.5\t{sec + 4}", f"3\t1006\t4\t{sec + 5}",
             f"4\t9001\t7\t{sec}",            # above interactions.rating_max (5)
             f"4\t9002\t-1\t{sec}",           # below 0
             f"4\t9003\tfive\t{sec}",         # not a number
             f"\t9004\t4\t{sec}",             # no user id, and this source needs one
             "4\t9005\t3",                    # a field short (no timestamp)
             ]
    f = write_lines(tmp_path / "in" / "u.data", lines)

    result = ingest(spark, cfg, "ratings_csv", RUN_DATE_2015, path=str(f))

    lh = Lakehouse(spark, cfg)
    places = assert_every_row_accounted_for(lh, "ratings_csv", result.batch_id, len(lines))
    expected = {'"item":"9001"': ["rating_out_of_range"], '"item":"9002"': ["rating_out_of_range"],
                '"item":"9003"': ["unparseable_value"], '"item":"9004"': ["missing_user_id"],
                '"item":"9005"': ["malformed_row", "missing_event_time"]}
    found = quarantine_by_marker(places["quarantine"], list(expected))
    assert {m: [rules_of(r["reason"]) for r in rows] for m, rows in found.items()} == \
        {m: [rules] for m, rules in expected.items()}
    assert "rating_out_of_range: outside (0, 5]" in found['"item":"9001"'][0]["reason"]
    assert len(places["quarantine"]) == len(expected)
    assert sorted((r["item_id"], r["value"], r["strength"]) for r in places["silver_interactions"]) == [
        ("1001", 5.0, 1.0), ("1002", 3.0, 0.6), ("1003", 1.0, 0.2), ("1004", 4.0, 0.8), ("1005", 2.5, 0.5),
        ("1006", 4.0, 0.8)]


# ---------------------------------------------------------------- regressions of bugs found by this corpus

def test_huge_epoch_timestamp_is_quarantined_not_a_crash(spark, tmp_path):
    cfg = make_config(tmp_path, quality={"max_bad_row_share": 0.5})
    lines = [EVENTS_HEADER, "1442000000000,101,view,EV_OK1", "1442000000001,102,view,EV_OK2",
             "99999999999999999,103,view,EV_HUGE_TS"]        # 1e17 ms: overflows microseconds
    f = write_lines(tmp_path / "in" / "events.csv", lines)

    result = ingest(spark, cfg, "events_csv", RUN_DATE_2015, path=str(f))

    places = assert_every_row_accounted_for(Lakehouse(spark, cfg), "events_csv", result.batch_id, 3)
    assert [r["raw"] for r in places["quarantine"] if "EV_HUGE_TS" in r["raw"]] != []


def test_rating_zero_lands_in_one_place_without_crash(spark, tmp_path):
    cfg = make_config(tmp_path, quality={"max_bad_row_share": 0.5})
    lines = ["1\t1001\t5\t1442000000", "1\t1002\t0\t1442000001"]   # ratings run 1..5: 0 is out of range
    f = write_lines(tmp_path / "in" / "u.data", lines)

    result = ingest(spark, cfg, "ratings_csv", RUN_DATE_2015, path=str(f))

    places = assert_every_row_accounted_for(Lakehouse(spark, cfg), "ratings_csv", result.batch_id, 2)
    assert [r["reason"].split(":")[0] for r in places["quarantine"]] == ["rating_out_of_range"]


def test_cli_csv_source_without_date_is_a_clean_error(spark, tmp_path, run_cli):
    cfg = make_config(tmp_path)
    f = write_lines(tmp_path / "in" / "retail.csv", [RETAIL_HEADER, retail("536365", "85123A")])

    code, stderr = run_cli(cfg, "ingest", "--source", "online_retail", "--path", str(f))

    assert_clean_cli_error(code, stderr, "--date")


def test_extra_unmapped_column_in_a_later_batch_is_not_a_crash(spark, tmp_path):
    cfg = make_config(tmp_path)
    # header-only files keep this cheap: each batch stops at "no data rows" once bronze is written
    first = write_lines(tmp_path / "in" / "day1.csv", [RETAIL_HEADER])
    later = write_lines(tmp_path / "in" / "day2.csv", [RETAIL_HEADER + ",Notes"])   # the export grew a column
    with pytest.raises(EmptyInputError):
        ingest(spark, cfg, "online_retail", RETAIL_DATE, path=str(first))

    with pytest.raises(EmptyInputError):
        ingest(spark, cfg, "online_retail", RETAIL_DATE, path=str(later))
