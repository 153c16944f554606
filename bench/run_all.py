"""`make bench`: run every benchmark and write BENCHMARKS.md."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Dict

from bench import gpu, ingest_features, models, pipeline, rehearsal
from bench.serving.report import to_markdown as serving_markdown
from bench.measure import ROOT, machine, run_measured


GPU_HEADING = "## GPU: training and scoring beside the CPU (`python -m bench.gpu`)"
REHEARSAL_HEADING = "## The schedule over days, as a scheduler runs it (`reco rehearse`)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,10000000,50000000",
                    help="synthetic event counts for the ingest + features cost curve")
    ap.add_argument("--skip-retail", action="store_true", help="leave out the UCI Online Retail case")
    ap.add_argument("--merge", action="store_true",
                    help="keep the cases of the previous run (bench/out/ingest_features.json) not re-run now")
    ap.add_argument("--only", choices=["ingest", "models", "serving", "pipeline", "rehearsal", "gpu"],
                    help="run one section; the others keep their stored results (bench/out/*.json)")
    args = ap.parse_args()
    if args.only in (None, "ingest"):
        run_ingest(args)
    if args.only in (None, "models"):
        run_models()
    if args.only in (None, "serving"):
        run_serving()
    if args.only in (None, "pipeline"):
        run_pipeline()
    if args.only in (None, "rehearsal"):
        run_rehearsal()
    if args.only in (None, "gpu"):
        run_gpu(required=args.only == "gpu")
    write_markdown()


def _run_module(module: str, timeout_s: float) -> None:
    """Run one benchmark module in its own process (its Spark session, torch threads, servers), logging to
    bench/out/<name>.log; a failure stops `make bench` with the log's tail."""
    log = ROOT / "bench" / "out" / f"{module.split('.')[-1]}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    m = run_measured([sys.executable, "-m", module], log=log, timeout_s=timeout_s)
    if m.returncode != 0:
        raise SystemExit(f"{module} failed (exit {m.returncode}); see {log}:\n{m.output_tail}")


def run_models() -> None:
    """The model-quality benchmark."""
    _run_module("bench.models", 4 * 3600)


def run_serving() -> None:
    """The serving benchmarks (scoring, publishing, lookups)."""
    _run_module("bench.serving", 3600)


def run_pipeline() -> None:
    """`reco run` (the nightly DAG through Airflow) and two hourly DAG runs."""
    _run_module("bench.pipeline", 4 * 3600)


def run_rehearsal() -> None:
    """`reco rehearse`: 3 days of 6 hourly runs at the default size, a process per task (bench/rehearsal.py)."""
    _run_module("bench.rehearsal", 8 * 3600)


def run_gpu(required: bool) -> None:
    """Training and scoring on the GPU beside the CPU (bench/gpu.py); skipped without CUDA, and the last
    GPU machine's numbers stay in BENCHMARKS.md."""
    import torch
    if not torch.cuda.is_available():
        msg = "no CUDA device here: the GPU section keeps its last measurement (python -m bench.gpu on a GPU machine)"
        if required:
            raise SystemExit(msg)
        print(msg)
        return
    _run_module("bench.gpu", 3600)


def _split(text: str, marker: str) -> Dict[str, str]:
    """``{heading line: its block}`` of ``text`` cut before every line starting with ``marker``; the text
    before the first heading is under ``""``."""
    out, head, block = {}, "", []
    for line in text.splitlines():
        if line.startswith(marker):
            out[head] = "\n".join(block)
            head, block = line, [line]
        else:
            block.append(line)
    out[head] = "\n".join(block)
    return out


def _origin(intro: str) -> str:
    """The run a section's intro names: its "Written by ... machine: ..." paragraph (which may wrap over
    several lines), up to the end of the machine's description."""
    paras = [p for p in intro.split("\n\n") if p.startswith("Written by")]
    para = next((p for p in paras if "machine:" in p), paras[0] if paras else "")
    text = " ".join(para.split())
    at = text.find("machine:")
    if at < 0:
        return text.rstrip(".")
    end = text.find(". ", at)
    return (text if end < 0 else text[:end]).rstrip(".")


def keep_unmeasured(new: str, old: str, fresh: Dict[str, bool]) -> str:
    """``new`` with every ``## `` section whose results are not stored here (``fresh[heading]`` false)
    replaced by that section of ``old``, and the ``### `` parts of a fresh section that ``new`` lacks (an
    ``--only`` run of one part on a machine without the others' results) taken from ``old``: re-rendering
    never drops a measured number because bench/out (not versioned) is missing here."""
    old_top, new_top = _split(old, "## "), _split(new, "## ")
    for head, body in new_top.items():
        if head not in old_top or head not in fresh:
            continue
        if not fresh[head]:
            new_top[head] = old_top[head].rstrip() + "\n"
            continue
        old_sub, new_sub = _split(old_top[head], "### "), _split(body, "### ")
        if any(h not in new_sub for h in old_sub if h):
            # a kept part says which run measured it (the old section's "Written by ..." line)
            origin = _origin(old_sub.get("", ""))

            def kept(h: str) -> str:
                if "\n(Not re-measured" in old_sub[h]:    # kept before: it already names its run
                    return old_sub[h]
                first, _, rest = old_sub[h].partition("\n")
                return f"{first}\n\n(Not re-measured in the latest run; as measured by this earlier one: {origin}.)\n{rest}"
            merged = [new_sub.get("", "")] + [(new_sub[h] if h in new_sub else kept(h)).rstrip() + "\n"
                                              for h in old_sub if h] + [new_sub[h] for h in new_sub
                                                                        if h and h not in old_sub]
            new_top[head] = "\n".join(part.rstrip("\n") + "\n" for part in merged)
    return "\n".join(v.rstrip("\n") + "\n" for v in new_top.values()).rstrip("\n") + "\n"


def run_ingest(args) -> None:
    sizes = [int(float(s)) for s in args.sizes.split(",") if s]
    store = ROOT / "bench" / "out" / "ingest_features.json"
    results = ingest_features.run(sizes, retail=not args.skip_retail)
    if args.merge and store.exists():
        fresh = {r["case"] for r in results}
        results = [r for r in json.loads(store.read_text()) if r["case"] not in fresh] + results
        results.sort(key=lambda r: (r["case"] != "online_retail", int(r["case"].split("_")[-1])
                                    if r["case"].startswith("synthetic_") else 0))
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_text(json.dumps(results, indent=1))


def write_markdown() -> None:
    out = ROOT / "bench" / "out"
    ingest_store, model_store = out / "ingest_features.json", out / "models.json"
    results = json.loads(ingest_store.read_text()) if ingest_store.exists() else []
    model_data = json.loads(model_store.read_text()) if model_store.exists() else {}
    model_text = models.to_markdown(model_data) if model_data else "Not run yet: `python -m bench.run_all --only models`."
    serving_store = out / "serving.json"
    serving_text = (serving_markdown(json.loads(serving_store.read_text())) if serving_store.exists()
                    else "Not run yet: `python -m bench.run_all --only serving`.")
    pipeline_store = out / "pipeline.json"
    pipeline_text = (pipeline.to_markdown(json.loads(pipeline_store.read_text())) if pipeline_store.exists()
                     else "Not run yet: `python -m bench.run_all --only pipeline`.")
    rehearsal_store = out / "rehearsal.json"
    rehearsal_text = (rehearsal.to_markdown(json.loads(rehearsal_store.read_text())) if rehearsal_store.exists()
                      else "Not run yet: `python -m bench.run_all --only rehearsal`.")
    gpu_store = out / "gpu.json"
    gpu_text = (gpu.to_markdown(json.loads(gpu_store.read_text())) if gpu_store.exists()
                else "Not run yet: `python -m bench.gpu` on a machine with a CUDA GPU.")
    ingest_table = ingest_features.to_markdown(results) if results else "Not run yet: `python -m bench.run_all --only ingest`."
    text = f"""# Benchmarks

Written by `make bench` (`python -m bench.run_all`, default sizes 1M, 10M, 50M) on {dt.date.today().isoformat()};
cases can be re-run one at a time and merged: `python -m bench.run_all --sizes 50000000 --skip-retail --merge`.

Machine: {machine()}.

## Ingest + features cost curve

Each case runs `reco ingest` then `reco features --maintain` (OPTIMIZE + VACUUM
included) in fresh processes against its own lakehouse; wall time is the sum
of the two, peak memory the largest RSS of the process tree (driver, JVM,
Python workers). The baseline, measured in the same run, is a plain Spark
copy of the same raw input to Parquet; the ratio is pipeline / baseline.
Synthetic sizes scale users (n/50) and items (n/300, at most 200k).

{ingest_table}

Reading it: the pipeline lands bronze, maps and checks every row, runs the
great-expectations suite on the batch (and again on the accepted rows when
some were quarantined; the rows below were measured when it always ran twice), nets
returns, writes silver, quarantine, excluded and the catalog, then builds id
maps, three gold tables and compacts and vacuums them; the baseline moves the
bytes once. Each `reco` step also pays a JVM start and Delta's jar resolution
(about 15 s). Peak RSS follows the driver heap limit (`RECO__SPARK__DRIVER_MEMORY=12g`
in these runs): the JVM grows its heap towards the limit instead of
collecting early, so it is an upper bound, not the data held.

## Model quality: two-tower against the baselines

Written by `python -m bench.models` (part of `make bench`; alone: `python -m bench.run_all --only models`),
run on {model_data.get("date", "-")}; machine: {model_data.get("machine", "-")}. CPU only (no GPU on this
machine). Metrics are full-ranking over the whole catalog, averaged over test users with at least one
relevant item (definitions in `training/metrics.py`). "fit s" is the model's training wall time
(the two-tower: the refit on train + valid, through petastorm and TorchDistributor with one process;
ALS: Spark MLlib local), "recommend-all s" the time to score and rank every test user against every item.
`served` is the list the product serves, built by the scoring code itself (`training/served.py`: the blend
of personal, buy-again, trending, popular and explore candidates, MMR diversity, rules) with its blend
chosen on validation; the promotion gate compares it with every baseline. `two_tower+buy_again` is the
model's score plus the customer's own repeat-purchase signal (only where repeat purchases count). Every
baseline is tuned on validation (`training.baseline_search`); each case runs with seeds 42, 43 and 44.

{model_text}

## Serving

Written by `python -m bench.serving` (part of `make bench`; alone: `python -m bench.run_all --only serving`;
`python -m bench.serving --quick` for a two-minute check): exact top-K scoring against torch's own matrix
multiply, publishing to Redis against `redis-benchmark`, and lookup latency at a fixed request rate.

{serving_text}

## Pipeline wall time through Airflow (`make run`, hourly DAG)

{pipeline_text}

{REHEARSAL_HEADING}

{rehearsal_text}

{GPU_HEADING}

{gpu_text}
"""
    old = ROOT / "BENCHMARKS.md"
    text = keep_unmeasured(text, old.read_text() if old.exists() else "", {
        "": ingest_store.exists(),      # the preamble names the machine and date of the ingest runs
        "## Ingest + features cost curve": ingest_store.exists(),
        "## Model quality: two-tower against the baselines": model_store.exists(),
        "## Serving": serving_store.exists(),
        "## Pipeline wall time through Airflow (`make run`, hourly DAG)": pipeline_store.exists(),
        REHEARSAL_HEADING: rehearsal_store.exists(),
        GPU_HEADING: gpu_store.exists()})
    old.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
