"""Build the gold feature tables as of a run date (never ``now()``).

1. extend the stable id maps ``user_index`` / ``item_index`` (MERGE, insert only);
2. ``user_features``, ``item_features`` and ``training_examples`` for the
   run date, each replacing only its ``as_of_date`` slice;
3. Delta hygiene (OPTIMIZE + VACUUM) when asked.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date
from typing import Dict

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from features.id_maps import new_id_rows
from features.item_features import item_features
from features.training_examples import training_examples
from features.user_features import user_features
from config import Config
from core.errors import EmptyInputError
from jobs.lakehouse import Lakehouse
from jobs.pipeline_runs import record_run
from jobs.tables import maintain_tables

log = logging.getLogger(__name__)

GOLD_TABLES = ("user_index", "item_index", "user_features", "item_features", "training_examples")


@dataclass
class FeaturesResult:
    run_date: str
    rows: Dict[str, int]
    silver_version: int


def _extend_index(lh: Lakehouse, table: str, id_col: str, ids) -> int:
    if lh.exists(table):
        existing = lh.read(table)
    else:
        existing = lh.spark.createDataFrame([], f"{id_col} string, idx int, first_seen date")
    fresh = new_id_rows(existing, ids, id_col).cache()
    n = fresh.count()
    if n or not lh.exists(table):
        lh.merge(fresh, table, keys=[id_col], update=False)
    fresh.unpersist()
    return n


def build_features(spark: SparkSession, cfg: Config, run_date: date, maintain: bool = False) -> FeaturesResult:
    lh = Lakehouse(spark, cfg)
    t0 = time.time()
    if not lh.exists("silver_interactions"):
        raise EmptyInputError(f"no silver_interactions table under {lh.root}: run `reco ingest` first")
    silver_version = lh.version("silver_interactions")
    silver = lh.read("silver_interactions", version=silver_version)
    items = lh.read("items")
    d = F.lit(run_date).cast("date")
    log.info("[features %s] 1/4 id maps (silver version %d)", run_date, silver_version)
    known = silver.filter(F.col("event_date") <= d)
    new_users = _extend_index(lh, "user_index", "user_id",
                              known.filter(~F.col("is_anonymous")).select("user_id", F.col("event_date").alias("first_seen")))
    item_ids = known.select("item_id", F.col("event_date").alias("first_seen")).unionByName(
        items.filter(F.col("first_seen").isNull() | (F.col("first_seen") <= d)).select("item_id", "first_seen"))
    new_items = _extend_index(lh, "item_index", "item_id", item_ids)
    log.info("[features %s] %d new users, %d new items indexed", run_date, new_users, new_items)

    f = cfg.features
    log.info("[features %s] 2/4 user_features", run_date)
    lh.replace(user_features(silver, run_date, f.short_window_days, f.long_window_days), "user_features",
               {"as_of_date": run_date}, partition_by=["as_of_date"])
    log.info("[features %s] 3/4 item_features", run_date)
    lh.replace(item_features(silver, items, run_date, f.short_window_days, f.long_window_days), "item_features",
               {"as_of_date": run_date}, partition_by=["as_of_date"])
    log.info("[features %s] 4/4 training_examples", run_date)
    s = cfg.splits
    examples = training_examples(silver, lh.read("user_index"), lh.read("item_index"), run_date,
                                 s.valid_days, s.test_days, s.random_test_fraction, s.random_seed)
    lh.replace(examples, "training_examples", {"as_of_date": run_date}, partition_by=["as_of_date"])
    if maintain:
        maintain_tables(lh, ("silver_interactions",) + GOLD_TABLES)
    rows = {t: (lh.read(t).filter(F.col("as_of_date") == d).count() if t not in ("user_index", "item_index")
                else lh.read(t).count()) for t in GOLD_TABLES}
    # the key is the run date alone, so a rerun replaces its row; the silver version read
    # is logged (and recorded with each model by training)
    record_run(lh, "features", "all", f"as-of-{run_date.isoformat()}", run_date, "succeeded",
               {"rows": rows}, time.time() - t0)
    log.info("[features %s] done in %.1fs: %s", run_date, time.time() - t0, rows)
    return FeaturesResult(run_date=run_date.isoformat(), rows=rows, silver_version=silver_version)
