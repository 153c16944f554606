"""`make bench`: run every benchmark and write BENCHMARKS.md."""
from __future__ import annotations

import argparse
import datetime as dt
import json

from bench import ingest_features
from bench.measure import ROOT, machine


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,10000000,50000000",
                    help="synthetic event counts for the ingest + features cost curve")
    ap.add_argument("--skip-retail", action="store_true", help="leave out the UCI Online Retail case")
    ap.add_argument("--merge", action="store_true",
                    help="keep the cases of the previous run (bench/out/ingest_features.json) not re-run now")
    args = ap.parse_args()
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

{ingest_features.to_markdown(results)}

Reading it: the pipeline lands bronze, maps and checks every row, runs the
great-expectations suite twice (the batch, then the accepted rows), nets
returns, writes silver, quarantine, excluded and the catalog, then builds id
maps, three gold tables and compacts and vacuums them; the baseline moves the
bytes once. Each `reco` step also pays a JVM start and Delta's jar resolution
(about 15 s). Peak RSS follows the driver heap limit (`RECO__SPARK__DRIVER_MEMORY=12g`
in these runs): the JVM grows its heap towards the limit instead of
collecting early, so it is an upper bound, not the data held.
"""
    (ROOT / "BENCHMARKS.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
