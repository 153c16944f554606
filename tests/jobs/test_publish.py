"""`reco publish` from the scored Delta tables into a real Redis: lookups equal Delta, republishing is a
no-op, a new version switches readers and rollback brings the previous one back, Redis down is a clear
error."""
from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from orchestration.cli import main
from jobs.lakehouse import Lakehouse
from jobs.publish import keyspace, publish, redis_client
from jobs.score import score
from serving.client import LookupClient
from serving.connection import RedisUnavailable
from tests.conftest import free_port


@pytest.fixture(scope="module")
def published(spark, champion_lake, redis_server):
    make, run_date = champion_lake
    cfg = make(redis={"namespace": "jobtest"})
    scored = score(spark, cfg, run_date)
    first = publish(spark, cfg, run_date)
    return cfg, run_date, scored, first


def _client(cfg) -> LookupClient:
    return LookupClient(redis_client(cfg), keyspace(cfg))


def test_lookups_answer_exactly_what_delta_holds(spark, published):
    cfg, run_date, scored, first = published
    assert first.version == scored.score_id and not first.skipped
    lh = Lakehouse(spark, cfg)
    recs = lh.read("recommendations").filter(F.col("run_date") == F.lit(run_date)).toPandas()
    assert first.counts["u"] == recs["user_id"].nunique()
    client = _client(cfg)
    for user in sorted(recs["user_id"].unique())[:5]:
        want = recs[recs["user_id"] == user].sort_values("rank")
        got = client.recommendations(user, k=cfg.scoring.k)
        assert got.source == "personal" and not got.fallback and got.version == first.version
        assert got.items == want["item_id"].tolist()
    fb = lh.read("fallback_lists").filter((F.col("run_date") == F.lit(run_date)) & (F.col("list_name") == "global"))
    miss = client.recommendations("never-seen-customer", k=5)
    assert miss.fallback and miss.source == "global"
    assert miss.items == [r["item_id"] for r in fb.orderBy("rank").limit(5).collect()]
    item = recs["item_id"].iloc[0]
    assert client.item_details([item])[item]["title"]
    assert len(client.similar(item, k=3).items) == 3
    assert client.metadata()["model_version"] == scored.model_version


def test_publishing_the_same_run_again_changes_nothing(spark, published):
    cfg, run_date, _, first = published
    again = publish(spark, cfg, run_date)
    assert again.skipped and again.version == first.version and again.previous == first.version


def test_a_new_version_switches_readers_and_rollback_restores_the_old_one(spark, published, tmp_path, capsys):
    cfg, run_date, _, first = published
    client = _client(cfg)
    user = client.metadata()["sample_users"].split(",")[0]
    before = client.recommendations(user, k=cfg.scoring.k).items
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"exclude_items: ['{before[0]}']\n")
    cfg2 = cfg.model_copy(update={"scoring": cfg.scoring.model_copy(update={"rules_path": str(rules)})})
    score(spark, cfg2, run_date)
    second = publish(spark, cfg2, run_date)
    assert second.version != first.version and second.previous == first.version
    now = client.recommendations(user, k=cfg.scoring.k)
    assert now.version == second.version and before[0] not in now.items
    from jobs.publish import rollback
    assert rollback(cfg) == (second.version, first.version)
    back = client.recommendations(user, k=cfg.scoring.k)
    assert back.version == first.version and back.items == before


def test_redis_down_fails_with_a_clear_message_and_no_switch(spark, published):
    cfg, run_date, _, _ = published
    down = cfg.model_copy(update={"redis": cfg.redis.model_copy(update={"url": f"redis://127.0.0.1:{free_port()}/0"})})
    with pytest.raises(RedisUnavailable, match=r"cannot reach redis at redis://127\.0\.0\.1:\d+/0"):
        publish(spark, down, run_date)
    assert _client(cfg).current_version() is not None


def test_cli_rollback_without_an_older_version_is_one_clear_line(published, monkeypatch, capsys, tmp_path):
    cfg, _, _, _ = published
    monkeypatch.setenv("RECO__REDIS__URL", cfg.redis.url)
    monkeypatch.setenv("RECO__REDIS__EMBEDDED", "false")
    monkeypatch.setenv("RECO__REDIS__NAMESPACE", "empty-namespace")
    monkeypatch.setenv("RECO__LAKEHOUSE__ROOT", str(tmp_path / "lh"))
    assert main(["publish", "--rollback"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("error: nothing to roll back") and "Traceback" not in err


def test_the_nightly_replaces_a_patch_past_midnight_and_a_retry_leaves_a_rollback_alone(spark, published):
    """Defect 1: a patch records the day of its hour as run_date, so the 01:10 patch of D+1 (over the
    nightly of D-1) made the nightly of D look like a backfill: it was skipped, and every later one too.
    Defect 5: republishing the date after `reco publish --rollback` (a retried task) brought it back."""
    from datetime import timedelta

    from jobs.publish import rollback
    from serving.publish import publish_version
    from tests.serving.records import chunks, expected
    from tests.serving.test_patch import patch_records
    cfg, run_date, _, _ = published
    cfg = cfg.model_copy(update={"redis": cfg.redis.model_copy(update={"namespace": "jobtest-days"})})
    r, ks = redis_client(cfg), keyspace(cfg)
    before, after = (run_date - timedelta(days=1)).isoformat(), (run_date + timedelta(days=1)).isoformat()
    publish_version(r, ks, "n-before", chunks("n-before"), {"run_date": before, "data_day": before},
                    expected=expected())
    publish_version(r, ks, "n-before.h1", patch_records("h1"), base="n-before",
                    metadata={"run_date": after, "data_day": before, "hour_end": f"{after}T01:00:00+00:00"})
    res = publish(spark, cfg, run_date)     # the date's latest scoring (an earlier test may have rescored it)
    assert (res.skipped, res.held, _client(cfg).current_version()) == (False, "", res.version)
    assert res.version.startswith(f"{run_date:%Y%m%d}-")
    assert rollback(cfg) == (res.version, "n-before.h1")
    retry = publish(spark, cfg, run_date)
    assert retry.skipped and "rolled back" in retry.held and _client(cfg).current_version() == "n-before.h1"
    restored = publish(spark, cfg, run_date, restore=True)
    assert not restored.held and _client(cfg).current_version() == res.version


def test_lists_encoded_by_the_workers_are_the_driver_s_bytes(spark):
    from jobs.publish import ENCODE_IN_DRIVER_MAX, _list_records
    rows = [("u1", 2, "b", 0.5, "personal"), ("u1", 1, "a", 0.9, "personal"), ("u1", 3, "c", None, "popular"),
            ("u2", 1, "c", float("nan"), None), ("u2", 2, "a", 0.25, "buy_again"), ("u3", 1, "z", 1.0, "trending")]
    df = spark.createDataFrame(rows, "user_id string, rank int, item_id string, score float, source string")

    def records(n_keys):
        return sorted(r for chunk in _list_records("u", df, "user_id", "item_id", n_keys) for r in chunk)

    in_driver, by_workers = records(3), records(ENCODE_IN_DRIVER_MAX + 1)
    assert [k for _, k, _ in by_workers] == ["u1", "u2", "u3"]
    assert by_workers == in_driver
