"""`reco forget` (jobs/forget.py) on the small scored lakehouse of conftest.py, published to a real Redis: a
customer planted in every kind of table (bronze's raw column, spelled with blanks too, an unparsed quarantined
line, excluded and quarantined raw JSON, silver, the id map, gold, the lists, the hourly and feedback tables)
and in a published version is found nowhere afterwards, by a scan of every column of every table under the root
and of every Redis key and value; the id map keeps the index under a tombstone; a re-ingest of the same export
does not bring the customer back; the audit row holds no clear id; an unknown customer and a rerun change no
table."""
from __future__ import annotations

import json
import shutil
from datetime import timedelta

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core.errors import ConfigError
from core.pseudonym import KEY_VARIABLE, pseudonym
from features.id_maps import new_id_rows
from jobs.forget import AUDIT_TABLE, forget
from jobs.lakehouse import Lakehouse
from jobs.tables import list_tables
from serving.versions import current_version, read_meta
from tests.serving.test_forget import every_key_and_value

KEY = "forget-test-secret-0123456789"


def plant(lh, table, rows):
    """Append ``rows`` (dicts) to ``table``, cast to its schema (missing columns null); create it if absent."""
    df = lh.spark.createDataFrame(rows)
    if lh.exists(table):
        schema = lh.read(table).schema
        df = df.select(*[(F.col(f.name) if f.name in df.columns else F.lit(None)).cast(f.dataType).alias(f.name)
                         for f in schema.fields])
    df.write.format("delta").mode("append").save(lh.path(table))


def holding(lh, text):
    """{table: rows with ``text`` in any column (complex columns as JSON)}, over every table under the root."""
    found = {}
    for table in list_tables(lh):
        df = lh.read(table)
        cols = [F.to_json(F.col(f"`{f.name}`")) if isinstance(f.dataType, (T.StructType, T.ArrayType, T.MapType))
                else F.col(f"`{f.name}`").cast("string") for f in df.schema.fields]
        cond = F.lit(False)
        for c in cols:
            cond = cond | F.coalesce(c.contains(text), F.lit(False))
        n = df.filter(cond).count()
        if n:
            found[table] = n
    return found


@pytest.fixture(scope="module")
def lake(spark, champion_lake, tmp_path_factory):
    """The scored lakehouse copied (the session's stays as it was), published, with the customer planted."""
    make, run_date = champion_lake
    root = make().lakehouse.root
    copy = str(tmp_path_factory.mktemp("forget") / "lakehouse")
    shutil.copytree(root, copy)
    cfg = make(lakehouse={"root": copy}, redis={"namespace": "forgettest"})
    from jobs.publish import keyspace, publish, redis_client
    from jobs.score import score
    score(spark, cfg, run_date)
    publish(spark, cfg, run_date)
    r, ks = redis_client(cfg), keyspace(cfg)
    gone = read_meta(r, ks, current_version(r, ks))["sample_users"].split(",")[0]   # a customer with a list
    lh = Lakehouse(spark, cfg)
    real = {t: lh.read(t).filter(F.get_json_object("raw", "$.user_id") == gone).count() if lh.exists(t) else 0
            for t in ("quarantine", "excluded")}     # what the synthetic run itself set aside of theirs
    # the same customer in the tables the small run leaves empty or does not make
    plant(lh, "quarantine", [   # one row whose customer column names them, one unparsed line that does
        {"source": "synthetic", "batch_id": "planted", "row_id": 1, "reason": "x", "first_rule": "x",
         "raw": f'{{"user_id":"{gone}","item_id":"I1"}}'},
        {"source": "synthetic", "batch_id": "planted", "row_id": 2, "reason": "malformed", "first_rule": "malformed",
         "raw": f'{{"_corrupt_record":"\\"{gone}\\",I1,purchase,1,oops"}}'},
        {"source": "synthetic", "batch_id": "planted", "row_id": 3, "reason": "x", "first_rule": "x",   # stays
         "raw": '{"user_id":"U999999","item_id":"I1"}'}])
    plant(lh, "excluded", [{"source": "synthetic", "batch_id": "planted", "row_id": 1, "rule": "non_product_item",
                            "raw": f'{{"user_id":" {gone} ","item_id":"POST"}}'}])
    bronze = lh.read("bronze_synthetic")
    bronze.filter(F.col("user_id") == gone).limit(1).withColumn("user_id", F.lit(f" {gone} ")) \
        .write.format("delta").mode("append").save(lh.path("bronze_synthetic"))
    for table in ("hourly_recommendations", "impressions", "feedback"):
        plant(lh, table, [{"user_id": gone, "item_id": "I1", "rank": 1}, {"user_id": "U999999", "item_id": "I1",
                                                                         "rank": 1}])
    # the known answer: rows per table that name the customer, counted here on their own terms
    expected = {t: lh.read(t).filter(F.col("user_id") == gone).count() for t in list_tables(lh)
                if "user_id" in lh.read(t).columns and not t.startswith("bronze_")}
    expected["bronze_synthetic"] = lh.read("bronze_synthetic").filter(F.trim("user_id") == gone).count()
    expected.update(quarantine=real["quarantine"] + 2, excluded=real["excluded"] + 1)
    expected = {t: n for t, n in expected.items() if n}
    counts = {t: lh.read(t).count() for t in list_tables(lh)}
    idx = lh.read("user_index").filter(F.col("user_id") == gone).first()["idx"]
    before = {t: lh.version(t) for t in expected}
    assert holding(lh, gone).keys() == expected.keys()
    assert any(gone in text for text in every_key_and_value(r, "forgettest:*"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_VARIABLE, KEY)
        out = forget(spark, cfg, gone, reason=f"request 17 from {gone} by e-mail")
        after = {t: lh.read(t).count() for t in list_tables(lh)}
        versions = {t: lh.version(t) for t in list_tables(lh)}
        unknown = forget(spark, cfg, "never-a-customer")
        again = forget(spark, cfg, gone)
        idle = {t: lh.version(t) for t in list_tables(lh) if t != AUDIT_TABLE}
        from jobs.ingest import ingest
        reingested = ingest(spark, cfg, "synthetic", run_date, None)   # the same export, the customer still in it
    return dict(cfg=cfg, lh=lh, r=r, gone=gone, out=out, expected=expected, counts=counts, after=after, idx=idx,
                versions=versions, before=before, idle=idle, unknown=unknown, again=again, reingested=reingested)


def test_no_trace_of_the_customer_in_any_table_or_redis_key(lake):
    lh, gone = lake["lh"], lake["gone"]
    assert holding(lh, gone) == {}        # after the re-ingest too
    assert not [text for text in every_key_and_value(lake["r"], "forgettest:*") if gone in text]
    assert lake["out"].redis_keys_removed == 1 and lake["out"].status == "succeeded"


def test_exactly_the_customers_rows_were_removed(lake):
    out, expected = lake["out"], lake["expected"]
    assert out.rows_deleted == expected
    assert {t for t in expected} >= {"bronze_synthetic", "silver_interactions", "user_index", "user_features",
                                     "training_examples", "recommendations", "quarantine", "excluded",
                                     "hourly_recommendations", "impressions", "feedback"}
    for table, n in lake["counts"].items():
        kept = n if table == "user_index" else n - expected.get(table, 0)   # the id map keeps the row
        assert lake["after"][table] == kept, table


def test_the_id_map_keeps_the_index_under_a_tombstone(lake, spark):
    lh, gone, idx = lake["lh"], lake["gone"], lake["idx"]
    key = pseudonym(gone, KEY.encode())
    row = lh.read("user_index").filter(F.col("idx") == idx).collect()
    assert [r["user_id"] for r in row] == [f"forgotten:{key}"]
    # the next features run numbers a newcomer past every index, the tombstone's included
    ids = spark.createDataFrame([("newcomer", None)], "user_id string, first_seen date")
    fresh = new_id_rows(lh.read("user_index"), ids, "user_id").collect()
    assert [r["idx"] for r in fresh] == [lh.read("user_index").agg(F.max("idx")).first()[0] + 1]


def test_a_reingest_of_the_old_export_does_not_bring_them_back(lake):
    res, lh, gone = lake["reingested"], lake["lh"], lake["gone"]
    assert res.input_rows == lake["counts"]["bronze_synthetic"] - lake["expected"]["bronze_synthetic"]
    assert lh.read("silver_interactions").filter(F.col("user_id") == gone).count() == 0


def test_the_audit_row_holds_a_keyed_hash_and_the_exposure_window(lake):
    lh, gone, out = lake["lh"], lake["gone"], lake["out"]
    rows = lh.read(AUDIT_TABLE).filter(F.col("customer_hash") == out.customer_hash).collect()
    assert out.customer_hash == pseudonym(gone, KEY.encode()) and len(rows) == 2      # the request and its rerun
    a = next(r for r in rows if r["tombstoned"])
    assert a["reason"] == "request 17 from [customer] by e-mail" and a["status"] == "succeeded"
    assert a["rows_deleted"] == lake["expected"] and a["tombstoned"] and a["redis_keys_removed"] == 1
    # Delta keeps removed files 504 h (lakehouse.vacuum_retention_hours) and its log 30 days: the longer one
    assert a["exposure_until"] - a["requested_at"] == timedelta(days=30)
    assert not any(gone in str(v) for v in a.asDict().values())


def test_an_unknown_customer_and_a_rerun_change_no_table_but_are_recorded(lake):
    for res in (lake["unknown"], lake["again"]):
        assert res.rows_deleted == {} and not res.tombstoned and res.redis_keys_removed == 0
        assert res.exposure_until is None and res.status == "succeeded"
    assert lake["idle"] == {t: v for t, v in lake["versions"].items() if t != AUDIT_TABLE}
    hashes = {r[0] for r in lake["lh"].read(AUDIT_TABLE).select("customer_hash").collect()}
    assert pseudonym("never-a-customer", KEY.encode()) in hashes


def test_without_the_key_nothing_is_touched(lake, spark, monkeypatch):
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    before = lake["lh"].version(AUDIT_TABLE)
    with pytest.raises(ConfigError, match=KEY_VARIABLE):
        forget(spark, lake["cfg"], "U000001")
    assert lake["lh"].version(AUDIT_TABLE) == before


def test_the_commits_that_removed_the_rows_do_not_name_the_customer(lake):
    # a DELETE with a literal predicate would write the id into the table's history (commitInfo); a MERGE
    # against a one-row source writes only "t.user_id = s.id", and the new files' statistics lack the id.
    # (A remove action may repeat the removed file's statistics: that is the log's part of the exposure window.)
    lh, gone = lake["lh"], lake["gone"]
    for table, first in lake["before"].items():
        assert lake["versions"][table] > first, table
        for v in range(first + 1, lake["versions"][table] + 1):
            with open(f"{lh.path(table)}/_delta_log/{v:020d}.json", encoding="utf-8") as f:
                actions = [json.loads(line) for line in f if line.strip()]
            assert not [a for a in actions if "remove" not in a and gone in json.dumps(a)], (table, v)
