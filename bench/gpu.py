"""GPU paths: two-tower training under torchrun (NCCL) and exact top-K scoring, each beside the CPU of
the same machine in the same run.

    python -m bench.gpu [--out DIR] [--quick]

Needs torch with CUDA and nothing else from the pipeline (no Spark, no Java, no MLflow): the
training data are synthetic retail-like examples built here with numpy (power-law popularity,
customers with a favourite category, histories drawn from the same taste), so the run fits the GPU
machine this project is lent now and then, where only torch is installed. The real pipeline feeds
the same ``training.trainer.train`` from petastorm; only the source differs.

* **Training:** ``torchrun --nproc_per_node=1 -m training.torchrun_main`` on the GPU (one rank in
  an NCCL group, DDP-wrapped: ``training.trainer``), against ``--nproc_per_node=P`` gloo ranks on the
  machine's CPU cores, same examples, same model, same batch size; examples per second from the
  trainer's own per-epoch log (the first epoch, with its warm-up, left out).
* **Scoring:** ``training.scoring.top_k`` (blocked multiply + top-K, users handed over from host
  memory, results back in host memory) against the same-shape dense multiply on the same device
  (``training.scoring.matmul_rate``), the issue's ratio; on the GPU and on the CPU.

* **Through the pipeline** (``--only pipeline``, bench/gpu_pipeline.py): ``reco ingest``, ``reco features``
  and ``reco train`` on the synthetic lakehouse with ``training.gpu.enabled: true``: TorchDistributor with
  one NCCL process per visible GPU; examples per second as the run recorded them in MLflow. Needs the
  project's environment and Java besides torch with CUDA; a machine without them is told what is missing.

Writes ``gpu.json`` into ``--out`` (default bench/out); `make bench` renders it into BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from bench import gpu_pipeline

ROOT = Path(__file__).resolve().parent.parent
N_CATEGORIES = 64


# ============================================================================ synthetic examples

def _zipf_sampler(weights: np.ndarray, rng: np.random.Generator):
    cdf = np.cumsum(weights / weights.sum())

    def draw(n: int) -> np.ndarray:
        return np.minimum(np.searchsorted(cdf, rng.random(n)), len(cdf) - 1)
    return draw


def synthetic_examples(n_users: int, n_items: int, n_examples: int, history_len: int, seed: int = 0
                       ) -> Dict[str, np.ndarray]:
    """Retail-like training examples: item popularity follows a power law; every customer has a favourite
    category that 60% of their events come from; a history holds earlier draws of the same customer."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    rng.shuffle(popularity)
    item_cat = rng.integers(0, N_CATEGORIES, n_items)
    user_cat = rng.integers(0, N_CATEGORIES, n_users)
    by_cat = [np.flatnonzero(item_cat == c) for c in range(N_CATEGORIES)]
    draw_global = _zipf_sampler(popularity, rng)
    draw_cat = [_zipf_sampler(popularity[ids], rng) for ids in by_cat]

    def draw(users: np.ndarray) -> np.ndarray:
        out = draw_global(len(users))
        own = rng.random(len(users)) < 0.6
        cats = user_cat[users]
        for c in range(N_CATEGORIES):
            sel = own & (cats == c)
            if sel.any():
                out[sel] = by_cat[c][draw_cat[c](int(sel.sum()))]
        return out

    users = np.sort(rng.integers(0, n_users, n_examples))
    items = draw(users)
    depth = rng.integers(0, history_len + 1, n_examples)           # events before this one
    hist = np.zeros((n_examples, history_len), np.int64)
    for j in range(history_len):
        has = depth > j
        hist[has, j] = draw(users[has]) + 1                         # item index + 1, 0 = padding
    from training.featurize import N_USER_FEATURES
    feats = np.zeros((n_examples, N_USER_FEATURES), np.float32)
    feats[:, -1] = np.log1p(depth)                                  # last feature: log events so far (> 0: known)
    return {"user": users.astype(np.int64), "item": items.astype(np.int64),
            "weight": np.ones(n_examples, np.float32), "hist": hist, "feats": feats,
            "_item_cat": item_cat, "_popularity": popularity, "_draw_users": user_cat}


def make_spec(n_users: int, n_items: int, n_examples: int, batch_size: int, epochs: int, use_gpu: bool,
              cpu_threads: int, seed: int = 0):
    """A TrainSpec over synthetic examples (ArraySource) with a validation set of 2,000 customers."""
    import scipy.sparse as sp
    from training.featurize import ItemMeta, popularity_buckets
    from training.loader import ArraySource
    from training.model import ModelConfig
    from training.trainer import EvalSet, TrainParams, TrainSpec
    cfg = ModelConfig(n_users=n_users, n_items=n_items)
    ex = synthetic_examples(n_users, n_items, n_examples, cfg.history_len, seed)
    counts = np.bincount(ex["item"], minlength=n_items).astype(np.float64)
    rng = np.random.default_rng(seed + 1)
    meta = ItemMeta(category=ex["_item_cat"].astype(np.int64) + 1,
                    price=rng.integers(1, cfg.n_price_buckets, n_items).astype(np.int64),
                    popularity=popularity_buckets(counts, cfg.n_popularity_buckets),
                    title=rng.integers(1, cfg.n_title_buckets, (n_items, cfg.max_title_tokens)).astype(np.int64))
    log_q = np.log(np.maximum(counts, 1.0) / counts.sum()).astype(np.float32)
    # validation: each customer's last example is their truth, its history and features score them
    last = np.r_[np.flatnonzero(np.diff(ex["user"])), len(ex["user"]) - 1][:2000]
    vu = ex["user"][last]
    hist = np.zeros((n_users, cfg.history_len), np.int64)
    feats = np.zeros((n_users, ex["feats"].shape[1]), np.float32)
    hist[vu], feats[vu] = ex["hist"][last], ex["feats"][last]
    truth = sp.csr_matrix((np.ones(len(vu)), (vu, ex["item"][last])), shape=(n_users, n_items))
    keep = np.ones(len(ex["user"]), bool)
    keep[last] = False
    source = ArraySource({k: v[keep] for k, v in ex.items() if not k.startswith("_")})
    params = TrainParams(batch_size=batch_size, max_epochs=epochs, patience=epochs, use_gpu=use_gpu,
                         cpu_threads=cpu_threads, seed=42)
    return TrainSpec(model=cfg, meta=meta, params=params, log_q=log_q, source=source,
                     valid=EvalSet(users=vu, history=hist, feats=feats, truth=truth),
                     info={"examples": int(keep.sum())})


def train_case(name: str, spec, procs: int, work: Path, timeout_s: float) -> Dict[str, Any]:
    """One torchrun launch of training.torchrun_main; the trainer's result and wall time."""
    import torch
    from training.torchrun_main import save_spec
    spec_path, result_path = work / f"{name}.pkl", work / f"{name}.pt"
    save_spec(spec, str(spec_path))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
           "-m", "training.torchrun_main", str(spec_path), str(result_path)]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.time() - t0
    print(proc.stdout[-3000:] + proc.stderr[-3000:], flush=True)
    if proc.returncode != 0:
        return {"case": name, "error": f"exit {proc.returncode}", "log_tail": (proc.stdout + proc.stderr)[-2000:]}
    res = torch.load(result_path, weights_only=False)
    hist = res["history"]
    steady = hist[1:] or hist
    return {"case": name, "processes": procs, "device": res["device"], "world_size": res["world_size"],
            "examples": spec.info["examples"], "batch_size": spec.params.batch_size, "epochs": len(hist),
            "examples_per_s": round(float(np.mean([h["examples_per_s"] for h in steady]))),
            "first_epoch_s": round(hist[0]["epoch_s"], 2),
            "epoch_s": round(float(np.mean([h["epoch_s"] for h in steady])), 2),
            "valid_ndcg@10": [round(h.get("valid_ndcg@10", float("nan")), 4) for h in hist],
            "train_loss": [round(h["train_loss"], 4) for h in hist], "launch_wall_s": round(wall, 1)}


# ============================================================================ scoring

# GPU variants of top_k measured side by side: (training.scoring.GPU_COPY_STREAM, GROUPS_PER_K)
GPU_VARIANTS = {"one stream": (False, 4), "copy stream": (True, 4), "copy stream, 8 groups per k": (True, 8)}


def scoring_case(device: str, n_users: int, n_items: int, dim: int, k: int, rounds: int = 3,
                 block_users: int = 4096, variant: Optional[str] = None) -> Dict[str, Any]:
    from training import scoring
    saved = scoring.GPU_COPY_STREAM, scoring.GROUPS_PER_K
    if variant is not None:
        scoring.GPU_COPY_STREAM, scoring.GROUPS_PER_K = GPU_VARIANTS[variant]
    try:
        return _scoring_case(device, n_users, n_items, dim, k, rounds, block_users, variant)
    finally:
        scoring.GPU_COPY_STREAM, scoring.GROUPS_PER_K = saved


def _scoring_case(device: str, n_users: int, n_items: int, dim: int, k: int, rounds: int, block_users: int,
                  variant: Optional[str]) -> Dict[str, Any]:
    import torch
    from bench.serving.scoring import _plain_top_k, _synthetic_vectors
    from training import scoring
    users, items = _synthetic_vectors(n_users, n_items, dim)       # with a popularity direction
    top_k = functools.partial(scoring.top_k, block_users=block_users, device=device)
    top_k(users[:block_users], items, k)                           # warm-up (CUDA context, kernels)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        top_k(users, items, k)
        best = min(best, time.perf_counter() - t0)
    # the same lists as ranking whole rows with torch.topk (the selection is exact, ties included)
    n_check = min(n_users, 20_000)
    got, _ = top_k(users[:n_check], items, k)
    with torch.inference_mode():
        want = _plain_top_k(users[:n_check].to(device), items.to(device), k)
    macs = float(n_users) * n_items * dim
    rate_users = min(n_users, (4 << 30) // (4 * n_items))           # at most 4 GiB of dense output
    same = scoring.matmul_rate(rate_users, n_items, dim, device=device, repeats=rounds)
    return {"device": device, "variant": variant or "cpu", "block_users": block_users, "users": n_users, "items": n_items, "dim": dim, "k": k,
            "top_k_s": round(best, 3), "users_per_s": round(n_users / best),
            "top_k_gmacs": round(macs / best / 1e9, 1), "matmul_same_shape_gmacs": round(same / 1e9, 1),
            "ratio_vs_same_shape": round(macs / best / same, 2), "meets_half": macs / best >= 0.5 * same,
            "identical_to_plain_topk": bool(np.array_equal(got, want)), "checked_users": n_check}


# ============================================================================ main

def machine_info() -> Dict[str, Any]:
    import torch
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu_cores": os.cpu_count(),
            "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update({"gpu": p.name, "gpu_memory_gib": round(p.total_memory / 2**30, 1),
                     "multiprocessors": p.multi_processor_count, "cuda_version": torch.version.cuda,
                     "nccl": ".".join(map(str, torch.cuda.nccl.version()))})
    return info


def run(quick: bool, cpu_procs: int, timeout_s: float, only: Optional[str] = None,
        blocks: Sequence[int] = (4096, 16384, 65536)) -> Dict[str, Any]:
    import torch
    out: Dict[str, Any] = {"machine": machine_info(), "date": time.strftime("%Y-%m-%d"), "training": [],
                           "scoring": []}
    print(json.dumps(out["machine"]), flush=True)
    gpu = torch.cuda.is_available()
    n_users, n_items, n_examples = (20_000, 5_000, 200_000) if quick else (200_000, 50_000, 2_000_000)
    threads = max(1, (os.cpu_count() or 2) // cpu_procs)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for batch in ((1024,) if quick else (1024, 8192)) if only in (None, "training") else ():
            if gpu:
                spec = make_spec(n_users, n_items, n_examples, batch, 3, True, 0)
                out["training"].append(train_case(f"gpu_b{batch}", spec, 1, work, timeout_s))
            cpu_examples = n_examples if quick else n_examples // 4   # the CPU's epochs take minutes
            spec = make_spec(n_users, n_items, cpu_examples, batch, 2, False, threads)
            out["training"].append(train_case(f"cpu{cpu_procs}x{threads}_b{batch}", spec, cpu_procs, work,
                                              timeout_s))
            print(json.dumps(out["training"][-2:]), flush=True)
    shapes = [(100_000, 20_000, 64, 200)] if quick else [(1_000_000, 50_000, 64, 200), (1_000_000, 200_000, 64, 200)]
    for shape in shapes if only in (None, "scoring", "scoring-gpu") else ():
        for block in (blocks if gpu else ()):
            for variant in GPU_VARIANTS:
                out["scoring"].append(scoring_case("cuda", *shape, block_users=block, variant=variant))
                print(json.dumps(out["scoring"][-1]), flush=True)
        if only == "scoring-gpu":
            continue
        torch.set_num_threads(os.cpu_count() or 1)
        cpu_shape = (shape[0] // 10,) + shape[1:]                      # the CPU scores a tenth of the users
        out["scoring"].append(scoring_case("cpu", *cpu_shape, rounds=1))
        print(json.dumps(out["scoring"][-1]), flush=True)
    return out


def _variant(case: Dict[str, Any]) -> str:
    """A scoring case's top_k variant; cases measured before variants were recorded ran "one stream"."""
    return case.get("variant", "one stream" if case["device"] == "cuda" else "cpu")


def merge(old: Dict[str, Any], new: Dict[str, Any]) -> Dict[str, Any]:
    """``new`` plus the cases of ``old`` it did not re-run (training by case name, scoring by device and
    shape); each case keeps the date it was measured on."""
    def key(section: str, c: Dict[str, Any]):
        return (c["case"] if section == "training" else
                (c["device"], _variant(c),
                 c.get("block_users", 4096), c["users"], c["items"], c["dim"], c["k"]))
    out = dict(new)
    for section in ("training", "scoring"):
        fresh = {key(section, c) for c in new[section]}
        kept = [dict(c, measured=c.get("measured", old["date"])) for c in old[section]
                if key(section, c) not in fresh]
        out[section] = kept + [dict(c, measured=new["date"]) for c in new[section]]
    if "pipeline" not in new and "pipeline" in old:
        out["pipeline"] = old["pipeline"]
    return out


def _same(s: Dict[str, Any]) -> str:
    if "identical_to_plain_topk" not in s:
        return "not checked"
    return f"{'yes' if s['identical_to_plain_topk'] else 'NO'} ({s['checked_users']:,} users)"


def to_markdown(data: Dict[str, Any]) -> str:
    m = data["machine"]
    lines = [f"Measured on {data['date']} with `python -m bench.gpu` on the lent GPU machine: "
             f"{m.get('gpu', 'no GPU')} ({m.get('gpu_memory_gib', '-')} GiB, CUDA {m.get('cuda_version', '-')}, "
             f"NCCL {m.get('nccl', '-')}), {m['cpu_cores']} CPU cores, torch {m['torch']}, Python {m['python']}. "
             "That machine has torch and no Spark or Java, so the examples are synthetic (bench/gpu.py) and the "
             "trainer is launched by torchrun; the pipeline feeds the same `train` from petastorm under "
             "TorchDistributor.", "",
             "| training case | device | ranks | examples | batch | epochs | examples/s | epoch s (first) | valid ndcg@10 per epoch |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t in data["training"]:
        if "error" in t:
            lines.append(f"| {t['case']} | failed: {t['error']} | | | | | | | |")
            continue
        case = t["case"] + (f" ({t['measured']})" if t.get("measured", data["date"]) != data["date"] else "")
        lines.append(f"| {case} | {t['device']} | {t['world_size']} | {t['examples']:,} | {t['batch_size']} | "
                     f"{t['epochs']} | {t['examples_per_s']:,} | {t['epoch_s']} ({t['first_epoch_s']}) | "
                     f"{', '.join(str(x) for x in t['valid_ndcg@10'])} |")
    by = {(t.get("device"), t.get("batch_size")): t for t in data["training"] if "error" not in t}
    for (dev, batch), t in sorted(by.items(), key=lambda kv: str(kv[0])):
        cpu = by.get(("cpu", batch))
        if dev == "cuda" and cpu:
            lines.append(f"\nBatch {batch}: GPU / CPU examples per second = **{t['examples_per_s'] / cpu['examples_per_s']:.1f}x**.")
    lines += ["", gpu_pipeline.to_markdown(data.get("pipeline"))]
    lines += ["", "| scoring | top_k variant | block | users | items | dim | fetch k | top-K s | users/s | top-K GMAC/s | same-shape matmul GMAC/s | ratio | at least half | same lists as whole-row topk |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in data["scoring"]:
        block = "cache-sized" if s["device"] == "cpu" else f"{s.get('block_users', 4096):,}"
        variant = _variant(s)
        if s.get("measured", data["date"]) != data["date"]:
            variant += f" ({s['measured']})"
        lines.append(f"| {s['device']} | {variant} | {block} | {s['users']:,} | {s['items']:,} | {s['dim']} | {s['k']} | {s['top_k_s']} | "
                     f"{s['users_per_s']:,} | {s['top_k_gmacs']} | {s['matmul_same_shape_gmacs']} | "
                     f"{s['top_k_gmacs'] / s['matmul_same_shape_gmacs']:.3f} | {'yes' if s['meets_half'] else 'no'} | "
                     f"{_same(s)} |")
    lines += ["", READING]
    return "\n".join(lines)


READING = """Reading it:
- **Training.** One H200 rank (NCCL group, DDP) against two gloo ranks of 8 threads each on the same
  machine's 16 cores, same model (dim 64, history 20, title EmbeddingBag), same examples per batch.
  The GPU's lead grows with the batch: at 1,024 a step is too small to fill the GPU (kernel launches
  and the Python loop dominate). The validation NDCG per epoch shows both learn the same task; the
  batch-8192 runs' temperature and learning rate were not re-tuned. The shard moves to GPU memory
  once (`training/trainer.py`), so a step copies nothing from the host. Not shown here: NCCL
  between several GPUs (the machine has one) and TorchDistributor on the GPU (the machine has no
  Spark or Java); both use the same `train` as this torchrun launch.
- **Scoring.** The ratio is the issue's: `top_k`'s multiply-adds per second over the same-shape
  dense multiply on the same device. `top_k` includes taking the users from host memory and
  returning 1M x 200 items and scores (2.4 GB) to host memory, which the bare multiply does not.
  With the default blocks (sized from free memory: 65,536 users here) it reaches half the
  multiply rate at 200k items and about a third at 50k, where the top-200 selection per row weighs
  more against a shorter multiply. The lists equal ranking whole rows with `torch.topk` (checked
  on 20,000 users per case). The CPU rows are the same machine's 16 cores with the CPU path
  (cache-sized blocks).
- **Where the GPU time goes** (torch.profiler, 2 blocks of 65,536 users x 50k items, 2026-11-28):
  the multiply is 35% of the GPU time; the rest is the selection (top-k kernels 13%, the leaf
  maxima 11%, gathers 15%, nonzero, compares and row counts 11%) and the copies (host-to-device users 8%,
  device-to-host results 8%). The GPU is busy throughout (the host waits at each `nonzero`).
  Variants measured side by side: copying the results to host memory on a side stream, beside the
  next block's multiply (`scoring.GPU_COPY_STREAM`, now the default), was 2-5% faster in this
  run, no more than the spread between runs (one stream, 200k items: 1.447 s in an earlier run
  today, 1.533 s in this one); a finer threshold (8 groups per k instead of 4) gains nothing. Contiguous leaves (8 adjacent columns per
  leaf instead of strided ones) were 1.7x slower in an earlier run the same day (the reduction over
  an inner dimension of 8 alone took 6x as long) and were dropped. Closing the rest of the gap at
  50k items needs a fused multiply + selection kernel, which `top_k` does not have."""


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"))
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run on a CPU-only machine)")
    ap.add_argument("--cpu-procs", type=int, default=2, help="gloo ranks for the CPU training baseline")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per training launch")
    ap.add_argument("--only", choices=["training", "scoring", "scoring-gpu", "pipeline"],
                    help="pipeline: `reco train` end to end on the GPUs (bench/gpu_pipeline.py)")
    ap.add_argument("--allow-cpu", action="store_true", help="pipeline without a GPU: a smoke run of the wiring")
    ap.add_argument("--blocks", default="4096,16384,65536", help="GPU scoring: users per block, tried in turn")
    ap.add_argument("--merge", help="a previous gpu.json: its cases not re-run now are kept")
    args = ap.parse_args(argv)
    if args.only == "pipeline":
        missing = gpu_pipeline.missing_prerequisites(args.allow_cpu)
        if missing:
            raise SystemExit("the pipeline case cannot run here; missing: " + "; ".join(missing))
        data = {"machine": machine_info(), "date": time.strftime("%Y-%m-%d"), "training": [], "scoring": [],
                "pipeline": gpu_pipeline.run_case(Path(args.out), args.quick, args.allow_cpu, args.timeout)}
    else:
        data = run(args.quick, args.cpu_procs, args.timeout, args.only, [int(b) for b in args.blocks.split(",")])
    if args.merge:
        data = merge(json.loads(Path(args.merge).read_text()), data)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu.json").write_text(json.dumps(data, indent=1))
    print(to_markdown(data))


if __name__ == "__main__":
    main()
