"""Cost curve of ingest + features: UCI Online Retail and synthetic data at several sizes.

Each case runs the real CLI in a subprocess against its own lakehouse under
bench/out/, measured for wall time and peak memory. The baseline, measured in
the same run on the same data, is a plain Spark copy of the raw input to
Parquet (read + write, no validation, no features): the ratio says what the
pipeline costs over moving the bytes once.
"""
from __future__ import annotations

import argparse
import json
import shutil
from typing import Dict, List

from bench.measure import ROOT, run_measured

OUT = ROOT / "bench" / "out"
PY = str(ROOT / ".venv" / "bin" / "python")
RETAIL = ROOT.parent / "shared" / "datasets" / "uci-online-retail" / "online_retail.csv.gz"

BASELINE_SNIPPET = """
import sys
from config import load_config
from jobs.spark import build_spark
cfg = load_config()
spark = build_spark(cfg, app_name="bench-baseline")
kind, out = sys.argv[1], sys.argv[2]
if kind == "csv":
    df = spark.read.option("header", "true").csv(sys.argv[3])
else:
    from jobs.sources import synthetic_params
    from features.synthetic import generate_events
    df = generate_events(spark, synthetic_params(cfg))
df.write.mode("overwrite").parquet(out)
print("rows", spark.read.parquet(out).count())
"""


def _env(case: str, extra: Dict[str, str]) -> Dict[str, str]:
    base = OUT / case
    return {"RECO__LAKEHOUSE__ROOT": str(base / "lakehouse"),
            "RECO__LAKEHOUSE__STAGING_DIR": str(base / "staging"),
            "RECO__QUALITY__QUALITY_DIR": str(base / "quality"),
            "RECO__SPARK__DRIVER_MEMORY": "12g",
            **extra}


def _case(name: str, pipeline_cmds: List[List[str]], baseline_args: List[str], extra_env: Dict[str, str]) -> dict:
    shutil.rmtree(OUT / name, ignore_errors=True)
    (OUT / name).mkdir(parents=True)
    env = _env(name, extra_env)
    base = run_measured([PY, "-c", BASELINE_SNIPPET, *baseline_args[:1], str(OUT / name / "baseline.parquet"),
                         *baseline_args[1:]], env, OUT / name / "baseline.log")
    total_wall, peak, steps = 0.0, 0.0, []
    for cmd in pipeline_cmds:
        m = run_measured(cmd, env, OUT / name / f"{cmd[1]}.log")
        if m.returncode != 0:
            raise SystemExit(f"{name}: {' '.join(cmd)} failed (rc {m.returncode}):\n{m.output_tail}")
        total_wall += m.wall_s
        peak = max(peak, m.peak_rss_mb)
        steps.append({"cmd": " ".join(cmd[1:]), "wall_s": round(m.wall_s, 1), "peak_rss_mb": round(m.peak_rss_mb)})
    return {"case": name, "wall_s": round(total_wall, 1), "peak_rss_mb": round(peak),
            "baseline_wall_s": round(base.wall_s, 1), "baseline_peak_rss_mb": round(base.peak_rss_mb),
            "ratio": round(total_wall / base.wall_s, 2), "steps": steps, "env": extra_env}


def run(sizes: List[int], retail: bool = True) -> List[dict]:
    reco = str(ROOT / ".venv" / "bin" / "reco")
    results = []
    if retail and RETAIL.exists():
        results.append(_case("online_retail", [
            [reco, "ingest", "--source", "online_retail", "--date", "2011-12-09"],
            [reco, "features", "--date", "2011-12-09", "--maintain"],
        ], ["csv", str(RETAIL)], {"RECO__SPARK__CONF__spark.sql.shuffle.partitions": "8"}))
    for n in sizes:
        extra = {"RECO__SYNTHETIC__N_EVENTS": str(n),
                 "RECO__SYNTHETIC__N_USERS": str(max(1000, n // 50)),
                 "RECO__SYNTHETIC__N_ITEMS": str(max(500, min(200_000, n // 300))),
                 "RECO__SPARK__CONF__spark.sql.shuffle.partitions": str(max(8, n // 500_000))}
        results.append(_case(f"synthetic_{n}", [
            [reco, "ingest", "--source", "synthetic"],
            [reco, "features", "--source", "synthetic", "--maintain"],
        ], ["synthetic"], extra))
    return results


def to_markdown(results: List[dict]) -> str:
    lines = ["| case | ingest + features wall (s) | peak RSS (MB) | baseline: raw copy to Parquet (s) | "
             "ratio pipeline / baseline | steps |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        steps = "; ".join(f"{s['cmd'].split()[0]} {s['wall_s']}s / {s['peak_rss_mb']} MB" for s in r["steps"])
        lines.append(f"| {r['case']} | {r['wall_s']} | {r['peak_rss_mb']} | {r['baseline_wall_s']} | "
                     f"{r['ratio']} | {steps} |")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,10000000,50000000")
    args = ap.parse_args()
    res = run([int(float(s)) for s in args.sizes.split(",") if s])
    print(json.dumps(res, indent=1))
    print(to_markdown(res))
