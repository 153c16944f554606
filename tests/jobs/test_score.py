"""`reco score` on a tiny synthetic lakehouse with a champion: every list complete and rule-abiding,
reruns identical, clear errors."""
from __future__ import annotations

import pytest
import yaml
from pyspark.sql import functions as F

from jobs.lakehouse import Lakehouse
from jobs.score import score, score_id_for
from jobs.tables import content_checksum
from training.rules import RulesError

SOURCES = {"personal", "buy_again", "trending", "popular", "explore", "pinned", "backfill"}


@pytest.fixture(scope="module")
def ruled(spark, champion_lake, tmp_path_factory):
    """Scored under a rules file that excludes the two most popular items and a category, and pins an
    item first for German customers."""
    make, run_date = champion_lake
    cfg = make()
    lh = Lakehouse(spark, cfg)
    feats = lh.read("item_features").filter(F.col("as_of_date") == F.lit(run_date)).toPandas()
    feats = feats.sort_values(["popularity", "item_id"], ascending=[False, True])
    banned = feats["item_id"].iloc[:2].tolist()
    rest = feats.iloc[2:]
    banned_cat = rest["category"].value_counts().index[-1]        # the rarest category
    pin = rest[rest["category"] != banned_cat]["item_id"].iloc[-1]  # an unpopular item, never otherwise first
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump({"exclude_items": banned, "exclude_categories": [banned_cat],
                                    "boosts": [{"segment": "Germany", "items": [pin], "pin": 1}],
                                    "max_per_category": 6}))
    cfg = make(scoring={"rules_path": str(path)})
    result = score(spark, cfg, run_date)
    return cfg, run_date, result, {"items": set(banned), "category": banned_cat, "pin": pin}


def test_every_list_is_complete_ranked_and_obeys_the_rules(spark, ruled):
    cfg, run_date, result, rules = ruled
    lh = Lakehouse(spark, cfg)
    cats = lh.read("items").select("item_id", "category").toPandas().set_index("item_id")["category"]
    recs = lh.read("recommendations").filter(F.col("run_date") == F.lit(run_date)).toPandas()
    k = cfg.scoring.k
    assert result.counts["k"] == k and result.counts["users"] == recs["user_id"].nunique() > 200
    per_user = recs.groupby("user_id")
    assert (per_user.size() == k).all()
    assert per_user["rank"].apply(lambda r: sorted(r) == list(range(1, k + 1))).all()
    assert (per_user["item_id"].nunique() == k).all()
    assert not set(recs["item_id"]) & rules["items"]
    assert (recs["item_id"].map(cats) != rules["category"]).all()
    assert (recs.assign(c=recs["item_id"].map(cats)).groupby(["user_id", "c"]).size() <= 6).all()
    assert set(recs["source"]) <= SOURCES and "personal" in set(recs["source"])
    assert set(recs["model_version"]) == {result.model_version} and set(recs["score_id"]) == {result.score_id}
    # the pin: first for German customers, and only for them
    seg = lh.read("user_features").filter(F.col("as_of_date") == F.lit(run_date)).toPandas()
    german = set(seg.loc[seg["country"] == "Germany", "user_id"]) & set(recs["user_id"])
    first = recs[recs["rank"] == 1].set_index("user_id")["item_id"]
    assert german and (first[list(german)] == rules["pin"]).all()
    assert (recs.loc[recs["user_id"].isin(german) & (recs["rank"] == 1), "source"] == "pinned").all()
    others = set(first.index) - german
    assert (first[list(others)] != rules["pin"]).mean() > 0.9

    sim = lh.read("similar_items").filter(F.col("run_date") == F.lit(run_date)).toPandas()
    assert (sim["item_id"] != sim["similar_item_id"]).all()
    assert (sim.groupby("item_id").size() == cfg.scoring.lists.similar_k).all()
    assert not set(sim["similar_item_id"]) & rules["items"]
    assert set(sim["source"]) <= {"embedding", "co_purchase", "backfill"}

    fb = lh.read("fallback_lists").filter(F.col("run_date") == F.lit(run_date)).toPandas()
    served = fb[(fb["list_name"] == "global") | fb["list_name"].str.startswith("segment:")]
    assert "global" in set(served["list_name"]) and "segment:Germany" in set(served["list_name"])
    assert (served.groupby("list_name").size() == k).all()
    assert not set(served["item_id"]) & rules["items"]
    germany = served[served["list_name"] == "segment:Germany"].set_index("rank")["item_id"]
    assert germany[1] == rules["pin"]
    assert {"popular:global", "trending:global"} <= set(fb["list_name"])


def test_diversity_is_reported_before_and_after(ruled):
    div = ruled[2].diversity
    for key in ("intra_list_diversity", "category_diversity", "coverage"):
        assert 0.0 <= div[f"{key}_before"] <= 1.0 + 1e-9 and 0.0 <= div[f"{key}_after"] <= 1.0 + 1e-9


def test_a_rerun_for_the_date_gives_identical_tables(spark, ruled):
    cfg, run_date, result, _ = ruled
    lh = Lakehouse(spark, cfg)
    tables = ("recommendations", "similar_items", "fallback_lists")
    before = {t: content_checksum(lh.read(t).filter(F.col("run_date") == F.lit(run_date))) for t in tables}
    again = score(spark, cfg, run_date)
    after = {t: content_checksum(lh.read(t).filter(F.col("run_date") == F.lit(run_date))) for t in tables}
    assert again.score_id == result.score_id and after == before


def test_scoring_in_the_driver_gives_the_lists_spark_gives(spark, ruled):
    """The tiny lakehouse's users are scored in the driver (under scoring.driver_max_users); through Spark's
    cogrouped buckets the same tables come out."""
    cfg, run_date, result, _ = ruled
    assert result.counts["users"] <= cfg.scoring.driver_max_users
    lh = Lakehouse(spark, cfg)
    tables = ("recommendations", "similar_items", "fallback_lists")
    def tables_now():
        return {t: content_checksum(lh.read(t).filter(F.col("run_date") == F.lit(run_date))) for t in tables}

    driver = tables_now()
    spark_cfg = cfg.model_copy(update={"scoring": cfg.scoring.model_copy(update={"driver_max_users": 0})})
    again = score(spark, spark_cfg, run_date)
    through_spark = tables_now()
    # same content, same content key: how users are scored is not part of it
    assert through_spark == driver and again.diversity == result.diversity and again.score_id == result.score_id
    score(spark, cfg, run_date)   # leave the fixture's tables as they were


def test_bad_rules_fail_before_any_work(spark, champion_lake, tmp_path):
    make, run_date = champion_lake
    path = tmp_path / "rules.yaml"
    path.write_text("exclude_itemz: [A]\n")
    with pytest.raises(RulesError, match=r"exclude_itemz"):
        score(spark, make(scoring={"rules_path": str(path)}), run_date)


def test_without_a_champion_the_lists_come_from_the_other_sources(spark, champion_lake, tmp_path, caplog):
    make, run_date = champion_lake
    cfg = make(mlflow={"tracking_uri": f"sqlite:///{tmp_path}/empty.db", "artifact_root": str(tmp_path / "a")})
    with caplog.at_level("WARNING", logger="jobs.score"):
        result = score(spark, cfg, run_date)
    assert "no champion" in caplog.text and "reco train" in caplog.text
    recs = (Lakehouse(spark, cfg).read("recommendations").filter(F.col("run_date") == F.lit(run_date)).toPandas())
    assert result.model_version == "none" and set(recs["model_version"]) == {"none"}
    assert (recs.groupby("user_id").size() == cfg.scoring.k).all()
    assert "personal" not in set(recs["source"]) and "explore" not in set(recs["source"])
    assert {"buy_again", "trending"} <= set(recs["source"])


def test_the_score_id_is_the_rules_content_not_where_the_file_lies(cfg, tmp_path):
    from datetime import date
    from pathlib import Path
    from types import SimpleNamespace
    text = Path(cfg.scoring.rules_path).read_text()
    here, there = tmp_path / "a" / "rules.yaml", tmp_path / "b" / "rules.yaml"
    for path in (here, there):
        path.parent.mkdir()
        path.write_text(text)
    ctx = SimpleNamespace(model_version="3")

    def key(path, **changes):
        scoring = cfg.scoring.model_copy(update={"rules_path": str(path), **changes})
        return score_id_for(cfg.model_copy(update={"scoring": scoring}), date(2026, 10, 28), ctx)

    assert key(here) == key(there)                              # another checkout, the same file
    assert key(here, driver_max_users=0) == key(here)           # how users are grouped is not content
    there.write_text(text + "\n# a comment is a change of file\n")
    assert key(there) != key(here)                              # another rules file
    assert key(here, k=cfg.scoring.k + 1) != key(here)          # another setting


def test_the_score_id_changes_with_the_day_s_inputs_not_their_order(spark):
    """A corrected export of a day already scored must give a new version (readers get the corrected lists);
    the same rows in another order (a rerun) the same one."""
    from jobs.score import inputs_digest
    rows = [("u1", "a", 1.0), ("u1", "b", 0.3), ("u2", "a", 0.6)]
    schema = "user_id string, item_id string, strength double"
    same = inputs_digest(spark.createDataFrame(rows, schema))
    assert inputs_digest(spark.createDataFrame(rows[::-1], schema).repartition(2)) == same
    corrected = [("u1", "a", 1.0), ("u1", "b", 0.6), ("u2", "a", 0.6)]
    assert inputs_digest(spark.createDataFrame(corrected, schema)) != same
