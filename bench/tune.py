"""Hyperparameter search on UCI Online Retail *validation* (never test).

The defaults in ``conf/base.yaml`` ``training.optim`` (batch size, uniform
negatives, repeat weight) were chosen with this grid: each setting trains the
two-tower on the time protocol's train split and is scored on its valid split
(the 30 days before the test window), all items, full ranking, the same
trainer as the product (in one process, examples held in memory instead of
petastorm, which does not change the examples or the model). ALS on the same
split is the reference. Test data is never read.

Run: ``python -m bench.tune`` (about 5 minutes per setting on 2 CPU cores;
reuses the bench lakehouse of ``bench.models`` under
``bench/out/models_work/uci``, building it when missing; ``--setting LABEL``
runs one row, ``--threads 1`` lets two runs share the cores). Rows are merged
into ``bench/out/tune.json`` (a rerun of a row replaces it), which
``bench.models`` renders into BENCHMARKS.md's model section.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Dict, List

import numpy as np

from bench.measure import machine
from bench.models import OUT, _config

log = logging.getLogger("bench.tune")

# (label, optim overrides); each row changes one thing from the row before it where it can
GRID: List[tuple] = [
    ("before tuning: batch 1024, no uniform negatives, repeat weight 1",
     {"batch_size": 1024, "uniform_negatives": 0, "repeat_weight": 1.0}),
    ("temperature 0.1", {"batch_size": 1024, "uniform_negatives": 0, "repeat_weight": 1.0, "temperature": 0.1}),
    ("batch 512 + 512 uniform negatives", {"batch_size": 512, "uniform_negatives": 512, "repeat_weight": 1.0}),
    ("same + repeat weight 3", {"batch_size": 512, "uniform_negatives": 512, "repeat_weight": 3.0}),
    ("same + repeat weight 8", {"batch_size": 512, "uniform_negatives": 512, "repeat_weight": 8.0}),
    # the model's shape, from the tuned optimiser settings (``model.`` keys go to ModelConfig)
    ("tuned + history of 50 items",
     {"batch_size": 512, "uniform_negatives": 512, "repeat_weight": 3.0, "model.history_len": 50}),
    ("tuned + history of 50 items + dim 128",
     {"batch_size": 512, "uniform_negatives": 512, "repeat_weight": 3.0, "model.history_len": 50, "model.dim": 128}),
    ("tuned, 40 epochs, patience 5", {"batch_size": 512, "uniform_negatives": 512, "repeat_weight": 3.0,
                                      "max_epochs": 40, "patience": 5}),
    ("same + weight average (EMA 0.999)", {"batch_size": 512, "uniform_negatives": 512, "repeat_weight": 3.0,
                                           "max_epochs": 40, "patience": 5, "ema_decay": 0.999}),
]


def run(work: Path, labels: List[str] = (), out_file: Path = OUT / "tune.json", threads: int = 0) -> Dict[str, object]:
    from jobs.build_features import build_features
    from jobs.ingest import ingest
    from jobs.lakehouse import Lakehouse
    from jobs.spark import build_spark
    from jobs.train import load_experiment_data
    from training.baselines import build
    from training.data import log_sampling_prob, to_interactions
    from training.experiment import _eval_set, model_config, train_params
    from training.featurize import sequence_examples
    from training.loader import ArraySource
    from training.metrics import evaluate
    from training.trainer import TrainSpec, evaluate_model, load_model, train

    cfg = _config(work)
    run_date = date(2011, 12, 9)
    spark = build_spark(cfg, app_name="bench-tune")
    if not (work / "lakehouse" / "training_examples").exists():
        ingest(spark, cfg, "online_retail", run_date, None)
        build_features(spark, cfg, run_date)
    data = load_experiment_data(Lakehouse(spark, cfg), cfg, run_date)
    fit = to_interactions(data.train, data.n_users, data.n_items)
    valid = to_interactions(data.valid, data.n_users, data.n_items)
    tcfg = cfg.training
    base_mc = model_config(tcfg, fit.n_users, fit.n_items)
    counts = np.bincount(fit.item, minlength=fit.n_items).astype(np.float64)
    meta = data.catalog.item_meta(fit.n_items, counts, base_mc)
    ev = _eval_set(fit, valid, base_mc.history_len, exclude_seen=False)
    als = build("als", spark=spark, **tcfg.baseline_params.get("als", {})).fit(fit)
    ref = evaluate(als.score, ev.users, ev.truth, ks=(10, 20))
    spark.stop()
    rows = []
    for label, over in GRID:
        if labels and label not in labels:
            continue
        mc = replace(base_mc, **{k[6:]: v for k, v in over.items() if k.startswith("model.")})
        p = train_params(tcfg, others_share=0.0, cpu_threads=threads, **{k: v for k, v in over.items() if not k.startswith("model.")})
        ex = sequence_examples(fit, mc.history_len, 0.0, p.seed, p.repeat_weight)
        ev_mc = ev if mc.history_len == base_mc.history_len else _eval_set(fit, valid, mc.history_len, False)
        spec = TrainSpec(model=mc, meta=meta, params=p, log_q=log_sampling_prob(counts), source=ArraySource(ex),
                         valid=ev_mc)
        t0 = time.time()
        r = train(spec)
        m = evaluate_model(load_model(mc, meta, r["state_dict"]), ev_mc, ks=(10, 20))
        rows.append({"setting": label, "overrides": over, "epochs": r["best_epoch"],
                     "ndcg@10": float(m["ndcg@10"]), "recall@20": float(m["recall@20"]),
                     "seconds": round(time.time() - t0, 1)})
        log.info("%s: ndcg@10 %.4f recall@20 %.4f (%d epochs)", label, m["ndcg@10"], m["recall@20"],
                 r["best_epoch"])
    earlier = json.loads(out_file.read_text())["rows"] if out_file.exists() else []
    done = {r["setting"] for r in rows}
    order = {label: i for i, (label, _) in enumerate(GRID)}
    rows = sorted([r for r in earlier if r["setting"] not in done] + rows,
                  key=lambda r: order.get(r["setting"], len(order)))
    out = {"date": date.today().isoformat(), "machine": machine(), "valid_users": int(len(ev.users)),
           "als": {"ndcg@10": float(ref["ndcg@10"]), "recall@20": float(ref["recall@20"])}, "rows": rows}
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(out, indent=1))
    return out


def to_markdown(data: Dict[str, object]) -> str:
    lines = [f"UCI Online Retail, all items, validation split ({data['valid_users']} users), "
             f"`python -m bench.tune`, {data['date']}. ALS on the same split: ndcg@10 "
             f"{data['als']['ndcg@10']:.4f}, recall@20 {data['als']['recall@20']:.4f}.\n",
             "(\"train s\" is wall time; rows run two at a time, single-threaded, take longer than a row run alone.)\n",
             "| setting | epochs | valid ndcg@10 | valid recall@20 | train s |", "|---|---|---|---|---|"]
    for r in data["rows"]:
        lines.append(f"| {r['setting']} | {r['epochs']} | {r['ndcg@10']:.4f} | {r['recall@20']:.4f} | "
                     f"{r['seconds']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=str(OUT / "models_work" / "uci"))
    ap.add_argument("--setting", action="append", default=[], help="run only this grid row (by label)")
    ap.add_argument("--out", default=str(OUT / "tune.json"))
    ap.add_argument("--threads", type=int, default=0, help="torch threads per fit (0: every core; 1 lets two runs share the cores)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    for noisy in ("py4j", "great_expectations", "urllib3", "botocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    print(to_markdown(run(Path(args.work), args.setting, Path(args.out), args.threads)))


if __name__ == "__main__":
    main()
