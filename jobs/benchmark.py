"""``reco benchmark``: the whole model on any split, from plain files.

    reco benchmark --train FILE [--valid FILE] --users FILE --k 20 --out recs.csv
                   [--items FILE] [--exclude-seen] [--test FILE] [--value auto|rating|quantity|ignore]

Reads only the files it is given (no lakehouse, no catalog, no MLflow). The
train file goes through the same feature and training code as the nightly
job; the validation file (or, without one, each user's latest 10% of train
events) serves only early stopping and the choices of the history mode and the blend weight; the
model is then refitted on train + valid with the selected number of epochs
and writes the top K (user, item, rank, score) for every user of the users
file, in original ids. With ``--test`` it also prints the full-ranking metrics
of the model and of every baseline, fitted on the same data. See
``docs/BENCHMARK.md`` for the file format and the protocol.
"""
from __future__ import annotations

import csv
import gzip
import io
import logging
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd
import torch
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from config import Config
from core.errors import InputSchemaError
from training.baselines import BuyAgain
from training.data import PAIR_COLUMNS, Catalog, to_interactions
from training.experiment import BLEND, MODEL, ExperimentData, blend_scorer, run_experiment
from training.served import ServedSettings
from training.featurize import user_state
from training.metrics import topk
from training.trainer import EvalSet, score_fn

log = logging.getLogger(__name__)

ALIASES = {
    "user": ("user", "user_id", "userid", "customer", "customer_id", "customerid", "visitorid", "uid"),
    "item": ("item", "item_id", "itemid", "movie", "movie_id", "movieid", "product", "product_id", "productid",
             "sku", "stockcode", "iid"),
    "timestamp": ("timestamp", "time", "ts", "event_time", "datetime", "date", "invoicedate", "unix_time"),
    "value": ("value", "rating", "quantity", "qty", "score", "weight"),
    "title": ("title", "name", "description", "product_name"),
    "category": ("category", "genre", "department", "class"),
    "price": ("price", "unit_price", "unitprice"),
}
POSITIONAL = {1: ["user"], 2: ["user", "item"], 3: ["user", "item", "timestamp"],
              4: ["user", "item", "value", "timestamp"]}


@dataclass
class FileLayout:
    path: str
    delimiter: str
    header: bool
    columns: List[str]          # raw column names (positional names when headerless)
    roles: Dict[str, str]       # role -> raw column


def _first_line(path: str) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            return f.readline().rstrip("\r\n")
    except OSError as e:
        raise InputSchemaError(f"cannot read {path}: {e}") from None


def sniff(path: str, required: Tuple[str, ...]) -> FileLayout:
    """Delimiter, header and column roles of a benchmark file."""
    if not os.path.exists(path):
        raise InputSchemaError(f"no such file: {path}")
    line = _first_line(path)
    if not line:
        raise InputSchemaError(f"{path} is empty: expected a header or rows of {', '.join(required)}")
    delimiter = max(("\t", ",", ";", "|"), key=line.count)
    fields = [c.strip().strip('"') for c in next(csv.reader(io.StringIO(line), delimiter=delimiter))]
    lower = [c.lower() for c in fields]
    roles = {}
    for role, names in ALIASES.items():
        for c, lc in zip(fields, lower):
            if lc in names and role not in roles:
                roles[role] = c
    header = "user" in roles or "item" in roles
    if not header:
        names = POSITIONAL.get(len(fields))
        if names is None:
            raise InputSchemaError(
                f"{path}: {len(fields)} columns and no header; a headerless file must have user,item "
                "[,timestamp] or user,item,value,timestamp; or add a header naming the columns "
                f"(user, item, timestamp, value; first line: {line[:120]!r})")
        roles = {n: f"_c{i}" for i, n in enumerate(names)}
        fields = [f"_c{i}" for i in range(len(fields))]
    missing = [r for r in required if r not in roles]
    if missing:
        raise InputSchemaError(f"{path}: no {' or '.join(missing)} column (header {fields}); name it one of "
                               + "; ".join(f"{r}: {', '.join(ALIASES[r])}" for r in missing))
    return FileLayout(path, delimiter, header, fields, roles)


def read_file(spark: SparkSession, path: str, required=("user", "item")) -> DataFrame:
    """The file as columns named by role (strings), plus ``_row`` (file order)."""
    lay = sniff(path, required)
    df = (spark.read.option("header", str(lay.header).lower()).option("sep", lay.delimiter)
          .option("inferSchema", "false").csv(path))
    if not lay.header:
        df = df.toDF(*lay.columns)
    out = df.select(*[F.col(f"`{raw}`").alias(role) for role, raw in lay.roles.items()])
    return out.withColumn("_row", F.monotonically_increasing_id())


def _events(df: DataFrame, path: str) -> DataFrame:
    """user, item, t (unix seconds; file order when there is no timestamp), v (value or null)."""
    cols = set(df.columns)
    if "timestamp" in cols:
        num = F.expr("try_cast(timestamp as double)")
        parsed = F.unix_timestamp(F.expr("try_to_timestamp(timestamp)")).cast("double")
        t = F.when(num.isNotNull(), F.when(num > 1e11, num / 1000.0).otherwise(num)).otherwise(parsed)
    else:
        t = F.col("_row").cast("double")
    v = F.expr("try_cast(value as double)") if "value" in cols else F.lit(None).cast("double")
    ev = df.select(F.trim("user").alias("user"), F.trim("item").alias("item"), t.alias("t"), v.alias("v"))
    bad = ev.filter(F.col("user").isNull() | (F.col("user") == "") | F.col("item").isNull()
                    | (F.col("item") == "") | F.col("t").isNull())
    n_bad = bad.count()
    if n_bad:
        sample = bad.limit(3).collect()
        raise InputSchemaError(f"{path}: {n_bad} rows without a user, an item or a readable timestamp "
                               f"(e.g. {[tuple(r) for r in sample]}); fix or remove them")
    return ev


def _value_mode(events: DataFrame, mode: str) -> str:
    if mode != "auto":
        return mode
    mx = events.agg(F.max("v")).first()[0]
    if mx is None:
        return "ignore"
    return "rating" if mx <= 10 else "quantity"


def _pairs(events: DataFrame, users: DataFrame, items: DataFrame, value_mode: str, max_value: float) -> DataFrame:
    """Aggregate events to pairs in the shared index space (``training.data.PAIR_COLUMNS``)."""
    if value_mode == "rating":
        weight = F.max(F.greatest(F.col("v"), F.lit(0.0)) / F.lit(max_value))
        count = F.count("*")
    elif value_mode == "quantity":
        weight = F.lit(1.0)
        count = F.greatest(F.sum(F.coalesce("v", F.lit(1.0))), F.lit(1.0))
    else:
        weight, count = F.lit(1.0), F.count("*")
    agg = events.groupBy("user", "item").agg(weight.cast("float").alias("weight"), count.cast("float").alias("count"),
                                            F.min("t").alias("first_time"), F.max("t").alias("time"))
    return (agg.join(users, "user").join(items, "item")
            .select(F.col("user_idx").alias("user"), F.col("item_idx").alias("item"), "weight", "count",
                    "first_time", "time").select(*PAIR_COLUMNS))


def _index(ids: DataFrame, name: str) -> DataFrame:
    """Dense index in sorted id order (deterministic)."""
    return ids.distinct().withColumn(f"{name}_idx", (F.row_number().over(Window.orderBy(name)) - 1).cast("long"))


def _carve_valid(events: DataFrame, fraction: float = 0.1) -> Tuple[DataFrame, DataFrame]:
    """Each user's latest ``fraction`` of events (at least one when the user has 5 or more) as validation."""
    w = Window.partitionBy("user").orderBy(F.col("t").desc(), F.col("item"))
    ranked = (events.withColumn("_r", F.row_number().over(w))
              .withColumn("_n", F.count("*").over(Window.partitionBy("user"))))
    n_valid = F.when(F.col("_n") >= 5, F.greatest(F.lit(1), F.floor(F.col("_n") * fraction))).otherwise(0)
    is_valid = F.col("_r") <= n_valid
    return ranked.filter(~is_valid).drop("_r", "_n"), ranked.filter(is_valid).drop("_r", "_n")


@dataclass
class BenchmarkOutput:
    recs: pd.DataFrame
    metrics: Optional[Dict[str, dict]]
    result: object
    source: str


def benchmark(spark: SparkSession, cfg: Config, train: str, users: str, k: int, out: str,
              valid: Optional[str] = None, items: Optional[str] = None, test: Optional[str] = None,
              exclude_seen: bool = False, value_mode: str = "auto") -> BenchmarkOutput:
    t0 = time.time()
    tr_ev = _events(read_file(spark, train), train).cache()
    if valid:
        va_ev = _events(read_file(spark, valid), valid)
    else:
        tr_ev, va_ev = _carve_valid(tr_ev)
        log.info("no --valid file: each user's latest 10%% of train events (users with 5+) validate")
    te_ev = _events(read_file(spark, test), test) if test else None
    user_list = read_file(spark, users, required=("user",)).select(F.trim("user").alias("user")).distinct()
    catalog_df = read_file(spark, items, required=("item",)) if items else None

    mode = _value_mode(tr_ev, value_mode)
    max_value = float(tr_ev.agg(F.max("v")).first()[0] or 1.0) if mode == "rating" else 1.0
    known_items = tr_ev.select("item").union(va_ev.select("item"))
    if catalog_df is not None:
        known_items = known_items.union(catalog_df.select(F.trim("item").alias("item")))
    # test-only items are indexed too: never trained, they are scored from metadata alone (or not at all
    # by the baselines) and count as misses, not as silently dropped relevant items
    all_items = known_items.union(te_ev.select("item")) if te_ev is not None else known_items
    user_ids = tr_ev.select("user").union(va_ev.select("user")).union(user_list)
    if te_ev is not None:
        user_ids = user_ids.union(te_ev.select("user"))
    uidx = _index(user_ids, "user").cache()
    iidx = _index(all_items, "item").cache()
    n_users, n_items = uidx.count(), iidx.count()
    pairs = {name: _pairs(ev, uidx, iidx, mode, max_value).cache()
             for name, ev in (("train", tr_ev), ("valid", va_ev), ("test", te_ev)) if ev is not None}
    if catalog_df is not None:
        cat = catalog_df.select(F.trim("item").alias("item_id"), *[F.col(c) for c in ("title", "category", "price")
                                                                    if c in catalog_df.columns])
        for c in ("title", "category", "price"):
            if c not in cat.columns:
                cat = cat.withColumn(c, F.lit(None).cast("string"))
        catalog = Catalog.from_spark(iidx.select(F.col("item").alias("item_id"), F.col("item_idx").alias("idx")),
                                     cat.dropDuplicates(["item_id"]))
    else:
        catalog = Catalog.from_spark(iidx.select(F.col("item").alias("item_id"), F.col("item_idx").alias("idx")),
                                     None)
    data = ExperimentData(name="benchmark", n_users=n_users, n_items=n_items, catalog=catalog,
                          train=pairs["train"], valid=pairs["valid"], test=pairs.get("test"),
                          exclude_seen=exclude_seen, served=ServedSettings.from_config(cfg.scoring, cfg.training.served_search),
                          info={"value_mode": mode, "n_users": n_users, "n_items": n_items})
    log.info("benchmark: %d users, %d items, value column as %s", n_users, n_items, mode)
    tcfg = cfg.training
    result = run_experiment(spark, data, tcfg, cfg.training_dir, serve_refit=test is None)

    # recommendations from the final model and the users' state over train + valid
    known = to_interactions(pairs["train"].unionByName(pairs["valid"]), n_users, n_items)
    model = result.serve_model
    cut = float(max(known.time.max(), known.first_times.max())) + 1.0
    hist, feats = user_state(known, cut, result.model_config.history_len)
    with torch.no_grad():
        item_vecs = model.all_item_vectors()
    ev = EvalSet(users=np.arange(n_users), history=hist, feats=feats, truth=known.csr())
    fn = score_fn(model, ev, "cpu", item_vecs)
    source = MODEL
    w = result.valid.blend_weight
    if w and not exclude_seen:
        params = tcfg.baseline_params.get("buy_again", {})
        fn = blend_scorer(fn, BuyAgain(**params).fit(known), w)
        source = f"{BLEND} (w={w:g})"
    ulist = uidx.join(user_list, "user").select("user", "user_idx").toPandas().sort_values("user_idx")
    id_of_item = iidx.toPandas().sort_values("item_idx")["item"].to_numpy()
    exclude = known.csr() if exclude_seen else None
    rows = []
    u = ulist["user_idx"].to_numpy()
    for s in range(0, len(u), 2048):
        block = u[s:s + 2048]
        scores = fn(block)
        top = topk(scores, k, exclude[block] if exclude is not None else None)
        for r, uid in enumerate(ulist["user"].to_numpy()[s:s + 2048]):
            for rank, it in enumerate(top[r], 1):
                if it >= 0:
                    rows.append((uid, id_of_item[it], rank, float(scores[r, it])))
    recs = pd.DataFrame(rows, columns=["user", "item", "rank", "score"])
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    recs.to_csv(tmp, index=False)
    os.replace(tmp, out)           # never a half-written file under the final name
    log.info("benchmark: wrote %d rows for %d users to %s in %.0fs (%s)", len(recs), len(ulist), out,
             time.time() - t0, source)
    metrics = result.test.metrics if result.test is not None else None
    return BenchmarkOutput(recs=recs, metrics=metrics, result=result, source=source)
