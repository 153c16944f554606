"""The hourly path's pure parts, its ingest and its publish: windows, the watermark, new pairs, superseding, the
patch."""
from datetime import datetime, timedelta, timezone

import pytest
from pyspark.sql import functions as F

from jobs.hourly import HOURLY_LISTS, HOURLY_RECS, new_pairs, user_ids
from jobs.hourly_window import WATERMARKS, WindowError, batch_id, ingest_hour, parse_window, plan_window
from jobs.ingest import ingest
from jobs.lakehouse import Lakehouse
from tests.conftest import make_config
from tests.jobs.test_ingest import HEADER

UTC = timezone.utc


def test_parse_window_reads_iso_and_names_what_is_wrong():
    lo, hi = parse_window("2026-10-29T01:00:00", "2026-10-29T03:00:00+01:00")
    assert lo == datetime(2026, 10, 29, 1, tzinfo=UTC) and hi == datetime(2026, 10, 29, 2, tzinfo=UTC)
    with pytest.raises(WindowError, match="--start must be an ISO timestamp"):
        parse_window("yesterday", "2026-10-29T01:00:00")
    with pytest.raises(WindowError, match="is not before"):
        parse_window("2026-10-29T01:00:00", "2026-10-29T01:00:00")
    with pytest.raises(WindowError, match="longer than 24 h"):
        parse_window("2026-10-27T00:00:00", "2026-10-29T01:00:00")


def _marks(spark, lh, rows):
    df = spark.createDataFrame([(s, b, lo.replace(tzinfo=None), hi.replace(tzinfo=None), 1, hi.replace(tzinfo=None))
                                for s, b, lo, hi in rows],
                               "source string, batch_id string, low timestamp, high timestamp, rows long, "
                               "ingested_at timestamp")
    lh.overwrite(df, WATERMARKS)


def test_plan_window_catches_up_missed_hours_and_reruns_keep_their_bounds(spark, cfg):
    lh = Lakehouse(spark, cfg)
    h = lambda n: datetime(2026, 10, 29, tzinfo=UTC) + timedelta(hours=n)  # noqa: E731
    assert plan_window(lh, "s", h(5), h(6)) == (h(5), h(6))                  # no watermark yet
    _marks(spark, lh, [("s", batch_id(h(2)), h(1), h(2)), ("other", batch_id(h(4)), h(3), h(4))])
    assert plan_window(lh, "s", h(5), h(6)) == (h(2), h(6))                  # hours 2-5 were missed
    assert plan_window(lh, "s", h(1), h(2)) == (h(1), h(2))                  # a rerun: its own bounds
    assert plan_window(lh, "s", h(30), h(31)) == (h(30), h(31))              # more than 24 h behind: start
    assert plan_window(lh, "other", h(4), h(5)) == (h(4), h(5))              # per source


def test_plan_window_never_reaches_into_days_a_nightly_holds(spark, cfg):
    """Defect 6: a catch-up window started at the last watermark even when the nightly had ingested those
    hours since, so they were ingested again (twice in silver)."""
    from jobs.pipeline_runs import record_run
    lh = Lakehouse(spark, cfg)
    h = lambda n: datetime(2026, 10, 29, tzinfo=UTC) + timedelta(hours=n)  # noqa: E731
    _marks(spark, lh, [("s", batch_id(h(-2)), h(-3), h(-2))])              # 21:00-22:00 of the 28th, then none
    assert plan_window(lh, "s", h(2), h(3)) == (h(-2), h(3))               # no nightly yet: catch up from 22:00
    record_run(lh, "ingest", "s", "export-1028", datetime(2026, 10, 28).date(), "succeeded", {}, 1.0)
    record_run(lh, "ingest", "s", batch_id(h(1)), datetime(2026, 10, 29).date(), "succeeded", {}, 1.0)
    assert plan_window(lh, "s", h(2), h(3)) == (h(0), h(3))                # the 28th is the nightly's
    assert plan_window(lh, "s", h(-3), h(-2)) == (h(-2), h(-2))            # a retried hour of the 28th: empty
    # no mark since the nightly's day (the first hours after it were missed): from its midnight on
    assert plan_window(lh, "other", h(3), h(4)) == (h(3), h(4))            # no nightly of 'other'
    record_run(lh, "ingest", "other", "export-1028", datetime(2026, 10, 28).date(), "succeeded", {}, 1.0)
    assert plan_window(lh, "other", h(5), h(6)) == (h(0), h(6))            # hours 0-4 were missed


def test_new_pairs_and_new_customers_get_indices_after_the_known_ones(spark):
    t = lambda m: datetime(2026, 10, 29, 1, m)  # noqa: E731
    events = spark.createDataFrame([
        ("u1", "a", "view", 0.3, t(0), False), ("u1", "a", "purchase", 1.0, t(5), False),
        ("new2", "b", "cart", 0.6, t(1), False), ("new1", "a", "view", 0.3, t(2), False),
        ("u1", "zz", "view", 0.3, t(3), False),                       # item without an index: skipped
        (None, "a", "view", 0.3, t(4), True), ("u1", "b", "return", 1.0, t(6), False)],
        "user_id string, item_id string, event_type string, strength double, event_time timestamp, "
        "is_anonymous boolean")
    user_index = spark.createDataFrame([("u0", 0), ("u1", 1)], "user_id string, idx int")
    item_index = spark.createDataFrame([("a", 0), ("b", 1)], "item_id string, idx int")
    ids = user_ids(user_index, events)
    assert sorted(map(tuple, ids.collect())) == [("new1", 2), ("new2", 3), ("u0", 0), ("u1", 1)]
    pairs = {(r["user"], r["item"]): (r["weight"], r["count"], r["first_time"], r["time"])
             for r in new_pairs(events, ids, item_index).collect()}
    ts = lambda m: t(m).replace(tzinfo=UTC).timestamp()  # noqa: E731
    assert pairs == {(1, 0): (1.0, 2.0, ts(0), ts(5)), (3, 1): (pytest.approx(0.6), 1.0, ts(1), ts(1)),
                     (2, 0): (pytest.approx(0.3), 1.0, ts(2), ts(2))}


ROWS = [  # InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country (UK time = UTC in Dec)
    "600001,A1,RED MUG,2,2011-12-08 09:10:00,2.50,17000,United Kingdom",
    "600002,A2,BLUE MUG,1,2011-12-09 10:05:00,2.50,17001,United Kingdom",
    "600003,A3,TEA SET,1,2011-12-09 10:40:00,9.95,17002,United Kingdom",
    "600004,A1,RED MUG,3,2011-12-09 11:15:00,2.50,17003,United Kingdom",
]


def test_an_hour_keeps_its_window_and_the_nightly_supersedes_its_day(spark, tmp_path):
    path = tmp_path / "live.csv"
    path.write_text(HEADER + "\n".join(ROWS) + "\n")
    cfg = make_config(tmp_path, sources={"online_retail": {"path": str(path), "hourly_path": str(path),
                                                          "timezone": "UTC"}})
    lh = Lakehouse(spark, cfg)
    start = datetime(2011, 12, 9, 10, tzinfo=UTC)
    res = ingest_hour(spark, cfg, "online_retail", start, start + timedelta(hours=1))
    assert (res.input_rows, res.accepted_rows, res.batch_id) == (2, 2, "hourly-20111209T1100")
    silver = lh.read("silver_interactions")
    assert sorted(r[0] for r in silver.select("session_id").collect()) == ["600002", "600003"]
    mark = lh.read(WATERMARKS).first()
    assert (mark["low"], mark["high"]) == (datetime(2011, 12, 9, 10), datetime(2011, 12, 9, 11))

    # the same hour again: the same rows, not twice
    ingest_hour(spark, cfg, "online_retail", start, start + timedelta(hours=1))
    assert lh.read("silver_interactions").count() == 2

    # the nightly batch of 2011-12-09 holds those events too: the hourly batch of the day goes, in one commit
    ingest(spark, cfg, "online_retail", datetime(2011, 12, 9).date(), str(path))
    silver = lh.read("silver_interactions")
    assert silver.filter(F.col("batch_id").startswith("hourly-")).count() == 0
    assert sorted(r[0] for r in silver.select("session_id").collect()) == ["600001", "600002", "600003", "600004"]

    # the hour retried after its day's nightly (defect 6): nothing is ingested again, the task succeeds
    again = ingest_hour(spark, cfg, "online_retail", start, start + timedelta(hours=1))
    assert (again.input_rows, again.accepted_rows) == (0, 0) and lh.read("silver_interactions").count() == 4


# ---------------------------------------------------------------- publish

def _hour(h):
    return datetime(2026, 10, 29) + timedelta(hours=h)      # naive UTC, as the tables hold it


def _hourly_tables(spark, lh):
    """hourly_recommendations: u1 scored in the hours ending 01:00 and 02:00 (its latest list is 02:00's),
    u2 at 01:00 only, u3 at 02:00 only; rows before the base's data ended (00:00) and after the hour (03:00)
    do not belong to the patch. hourly_lists: the 02:00 hour's lists; items: new and old ones."""
    recs = []
    for hour, user, items, score_id in [(-1, "u1", ["old", "x"], "s0"), (1, "u1", ["a", "b"], "s1"),
                                        (1, "u2", ["c", "i-new"], "s1"), (2, "u1", ["b", "d"], "s2"),
                                        (2, "u3", ["a", "c"], "s2"), (3, "u2", ["z", "y"], "s3")]:
        for rank, item in enumerate(items, 1):
            recs.append((_hour(hour), user, rank, item, 1.0 / rank, "model", "1", "run", score_id,
                         datetime(2026, 10, 28).date()))
    lh.overwrite(spark.createDataFrame(recs, "hour_end timestamp, user_id string, rank int, item_id string, "
                                             "score float, source string, model_version string, run_id string, "
                                             "score_id string, base_date date"), HOURLY_RECS)
    lists = [(_hour(2), name, rank, item, score, src, "1")
             for name, items, src in [("global", ["a", "i-new"], "popular"), ("segment:DE", ["c", "b"], "popular"),
                                      ("popular:global", ["i-unlisted"], "popular")]
             for rank, (item, score) in enumerate(zip(items, [0.5, None]), 1)]
    lh.overwrite(spark.createDataFrame(lists, "hour_end timestamp, list_name string, rank int, item_id string, "
                                              "score float, source string, model_version string"), HOURLY_LISTS)
    d = lambda s: datetime.fromisoformat(s).date()  # noqa: E731
    items = [("a", "A", "kitchen", 1.5, True, d("2025-01-01")), ("i-new", "NEW", "toys", 2.99, True, d("2026-10-29")),
             ("i-unlisted", "U", "toys", 3.0, True, d("2026-10-29"))]
    lh.overwrite(spark.createDataFrame(items, "item_id string, title string, category string, price double, "
                                              "available boolean, first_seen date"), "items")


def _reference_records(lh, cutoff, end):
    """The patch's records as publish_hour built them with one Spark job per count (kept as the reference)."""
    from jobs.publish import item_records, ranked, records
    hourly = lh.read(HOURLY_RECS).filter((F.col("hour_end") > F.lit(cutoff)) & (F.col("hour_end") <= F.lit(end)))
    latest = hourly.groupBy("user_id").agg(F.max("hour_end").alias("hour_end"))
    users = hourly.join(latest, ["user_id", "hour_end"])
    fallback = (lh.read(HOURLY_LISTS).filter(F.col("hour_end") == F.lit(end))
                .filter((F.col("list_name") == "global") | F.col("list_name").startswith("segment:")))
    listed = users.select("item_id").union(fallback.select("item_id")).distinct()
    items = (lh.read("items").filter(F.col("first_seen") >= F.lit(cutoff)).join(listed, "item_id")
             .select("item_id", "title", "category", F.col("price").cast("double")))
    chunks = [*records("f", ranked(fallback, "list_name", "item_id"), "list_name"), *item_records(items),
              *records("u", ranked(users, "user_id", "item_id"), "user_id")]
    score_ids = sorted(r[0] for r in hourly.select("score_id").distinct().collect())
    return sorted(rec for chunk in chunks for rec in chunk), score_ids


def test_publish_hour_patches_the_latest_list_of_every_user(spark, tmp_path, redis_server, monkeypatch):
    """The same records as the one-query-per-count implementation (the reference), the same version id."""
    import serving.publish
    from core.errors import EmptyInputError
    from jobs.hourly import _patch_id, publish_hour
    from jobs.publish import keyspace, redis_client
    from serving.client import LookupClient
    from serving.codec import encode_list
    from serving.versions import current_version, read_meta

    cfg = make_config(tmp_path, redis={"url": redis_server, "embedded": False, "namespace": "hourlypub"})
    lh = Lakehouse(spark, cfg)
    _hourly_tables(spark, lh)
    r, ks = redis_client(cfg), keyspace(cfg)
    serving.publish.publish_version(r, ks, "v1", [[("u", "u9", encode_list(["old"], [1.0], ["model"])),
                                                  ("f", "global", encode_list(["old"], [1.0], ["popular"]))]],
                                    {"run_date": "2026-10-28"})
    written, publish = [], serving.publish.publish_version

    def capture(r_, ks_, version, records, **kw):
        chunks = [list(c) for c in records]
        written.append(sorted(rec for c in chunks for rec in c))
        return publish(r_, ks_, version, chunks, **kw)
    monkeypatch.setattr(serving.publish, "publish_version", capture)
    start, end = datetime(2026, 10, 29, 1, tzinfo=UTC), datetime(2026, 10, 29, 2, tzinfo=UTC)
    res = publish_hour(spark, cfg, start, end)

    want, score_ids = _reference_records(lh, _hour(0), _hour(2))
    assert written[0] == want
    assert score_ids == ["s1", "s2"] and res.version == _patch_id("v1", end, score_ids)
    assert (res.counts, res.skipped, res.base) == ({"u": 3, "f": 2, "i": 1}, False, "v1")
    assert read_meta(r, ks, res.version)["score_ids"] == "s1,s2" and current_version(r, ks) == res.version
    client = LookupClient(r, ks)
    assert client.recommendations("u1", 5).items == ["b", "d"]        # its latest hour's list
    assert client.recommendations("u2", 5).items == ["c", "i-new"]    # not rescored since 01:00
    assert client.recommendations("u9", 5).items == ["old"]           # from the base
    assert client.item_details(["i-new"])["i-new"]["title"] == "NEW"

    again = publish_hour(spark, cfg, start, end)
    assert again.skipped and again.version == res.version and written[1] == written[0]
    with pytest.raises(EmptyInputError, match="no hourly lists for the hour ending 2026-10-29T04:00"):
        publish_hour(spark, cfg, end, end + timedelta(hours=2))
    # a quiet hour: scored with no active customer (no rows), published as a patch of the earlier hours' lists
    from jobs.pipeline_runs import record_run
    quiet = end + timedelta(hours=5)
    record_run(lh, "hourly_score", "all", batch_id(quiet), quiet.date(), "succeeded", {"users": 0}, 1.0)
    res = publish_hour(spark, cfg, quiet - timedelta(hours=1), quiet)
    assert not res.skipped and res.counts["u"] == 3 and current_version(r, ks) == res.version
    assert client.recommendations("u2", 5).items == ["z", "y"]         # its 03:00 list, the latest
    # an hour the base already covers (retried after the nightly): skipped, readers stay, the task succeeds
    covered = publish_hour(spark, cfg, start - timedelta(hours=3), end - timedelta(hours=3))
    assert covered.skipped and "already covers" in covered.held and current_version(r, ks) == res.version
    # an older hour than the one readers are on: held, readers stay (defect 5)
    older = publish_hour(spark, cfg, start - timedelta(hours=1), end - timedelta(hours=1))
    assert older.skipped and "later than" in older.held and current_version(r, ks) == res.version


def test_a_nightly_past_the_built_in_data_ingests_the_live_day_once(spark, tmp_path):
    """Defect 8: `reco run --date` past the synthetic data's last day re-ingested the whole built-in batch and
    then failed ("no 'synthetic' events dated ..."): no nightly could follow the hourly live feed. Now the
    nightly of such a day ingests that day's live events as one batch, superseding the day's hourly batches."""
    from jobs.sources import default_run_date, live_synthetic_events
    cfg = make_config(tmp_path, synthetic={"n_events": 3000, "n_users": 120, "n_items": 40, "days": 10})
    lh = Lakehouse(spark, cfg)
    last = default_run_date(cfg, "synthetic")
    ingest(spark, cfg, "synthetic", last)
    day = last + timedelta(days=1)
    t0 = datetime(day.year, day.month, day.day, tzinfo=UTC)
    hour = ingest_hour(spark, cfg, "synthetic", t0 + timedelta(hours=10), t0 + timedelta(hours=11))
    assert hour.batch_id == batch_id(t0 + timedelta(hours=11))
    night = ingest(spark, cfg, "synthetic", day)
    assert night.batch_id == f"synthetic-live-{day:%Y%m%d}" and night.accepted_rows > 0
    silver = lh.read("silver_interactions")
    of_day = silver.filter(F.col("event_date") == F.lit(day))
    assert {r[0] for r in of_day.select("batch_id").distinct().collect()} == {night.batch_id}
    assert {r[0] for r in silver.filter(F.col("batch_id") == night.batch_id).select("event_date").distinct()
            .collect()} == {day}
    key = ["user_id", "item_id", "event_type", "event_time", "session_id"]
    generated = live_synthetic_events(spark, cfg, (t0, t0 + timedelta(days=1))).filter(
        (F.col("event_time") >= F.lit(t0.replace(tzinfo=None)))
        & (F.col("event_time") < F.lit((t0 + timedelta(days=1)).replace(tzinfo=None))))
    as_keys = lambda df: df.select(*[F.col(c).cast("string") for c in key])  # noqa: E731
    assert as_keys(of_day).exceptAll(as_keys(generated)).count() == 0          # nothing twice, nothing foreign
    views = lambda df: as_keys(df.filter(F.col("event_type").isin("view", "cart")))  # noqa: E731
    assert views(generated).exceptAll(views(of_day)).count() == 0              # every view and cart is there
