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
    args = ap.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",") if s]
    results = ingest_features.run(sizes)
    (ROOT / "bench" / "out").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "out" / "ingest_features.json").write_text(json.dumps(results, indent=1))
    text = f"""# Benchmarks

Written by `make bench` (`python -m bench.run_all --sizes {args.sizes}`) on {dt.date.today().isoformat()}.

Machine: {machine()}.

## Ingest + features cost curve

Each case runs `reco ingest` then `reco features --maintain` (OPTIMIZE + VACUUM
included) in fresh processes against its own lakehouse; wall time is the sum
of the two, peak memory the largest RSS of the process tree (driver, JVM,
Python workers). The baseline, measured in the same run, is a plain Spark
copy of the same raw input to Parquet; the ratio is pipeline / baseline.
Synthetic sizes scale users (n/50) and items (n/300, at most 200k).

{ingest_features.to_markdown(results)}
"""
    (ROOT / "BENCHMARKS.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
