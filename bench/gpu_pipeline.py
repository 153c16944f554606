"""``reco train`` end to end on the GPUs, through the pipeline: the case ``python -m bench.gpu --only pipeline``
runs (bench/gpu.py records it in gpu.json and renders it into BENCHMARKS.md's GPU section).

    python -m bench.gpu --only pipeline [--quick] [--merge bench/out/gpu.json]

In a fresh folder (``--out``/pipeline_work: its own lakehouse and MLflow), on the synthetic data set:
``reco ingest``, ``reco features``, then ``reco train`` with ``training.gpu.enabled: true`` and
``training.processes: auto``: jobs/spark.py gives the driver every GPU ``conf/gpu_discovery.sh`` finds, and
TorchDistributor runs one NCCL process per GPU (training/fit.py). What the run recorded in MLflow is read
back: the device tag, the processes param, and the kept validation fit's examples per second per epoch
(``epoch.examples_per_s``; the first epoch, with its warm-up, left out of the mean).

Needs what ``reco train`` needs (``make venv``: pyspark, Delta, petastorm, MLflow; Java 17; Delta's jar from
Maven Central or a warm ~/.ivy2) plus torch with CUDA. ``--allow-cpu`` runs it without a GPU (gpu.enabled
auto): a smoke run of the wiring, recorded as such.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

COMMAND = "python -m bench.gpu --only pipeline"
QUICK = {"RECO__SYNTHETIC__N_EVENTS": "100000", "RECO__SYNTHETIC__N_USERS": "4000",
         "RECO__SYNTHETIC__N_ITEMS": "800", "RECO__TRAINING__OPTIM__MAX_EPOCHS": "3"}


def missing_prerequisites(allow_cpu: bool) -> List[str]:
    """What this machine lacks for the case, each with what to do; empty when it can run."""
    import importlib.util
    missing = [f"the Python package {m} (make venv)" for m in ("pyspark", "delta", "petastorm", "mlflow")
               if importlib.util.find_spec(m) is None]
    java_home = os.environ.get("JAVA_HOME")
    if not (java_home and os.path.exists(os.path.join(java_home, "bin", "java"))) and not shutil.which("java"):
        missing.append("Java (a JDK 17 on PATH or JAVA_HOME)")
    if not allow_cpu:
        import torch
        if torch.cuda.device_count() == 0:
            missing.append("a CUDA GPU torch can see (or --allow-cpu for a smoke run of the wiring)")
        if not shutil.which("nvidia-smi"):
            missing.append("nvidia-smi, which conf/gpu_discovery.sh asks for the GPUs")
    return missing


def _env(work: Path, quick: bool, allow_cpu: bool) -> Dict[str, str]:
    env = {"RECO__LAKEHOUSE__ROOT": str(work / "lakehouse"), "RECO__LAKEHOUSE__STAGING_DIR": str(work / "staging"),
           "RECO__QUALITY__QUALITY_DIR": str(work / "quality"),
           "RECO__MLFLOW__TRACKING_URI": f"sqlite:///{work}/mlflow.db",
           "RECO__MLFLOW__ARTIFACT_ROOT": str(work / "mlartifacts"),
           "RECO__TRAINING__GPU__ENABLED": "auto" if allow_cpu else "true",
           "RECO__TRAINING__PROCESSES": "auto"}
    return {**env, **(QUICK if quick else {})}


def _recorded(env: Dict[str, str]) -> Dict[str, Any]:
    """Device, processes and examples/s of the newest training run in the case's MLflow."""
    from mlflow.tracking import MlflowClient

    from config import load_config
    from training.tracking import metric_key
    cfg = load_config(environ={**os.environ, **env})
    client = MlflowClient(tracking_uri=cfg.mlflow.tracking_uri)
    exp = client.get_experiment_by_name(cfg.mlflow.experiment)
    run = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]
    rates = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "epoch.examples_per_s"),
                                     key=lambda m: m.step)]
    ndcg = run.data.metrics.get(metric_key("valid", "ndcg@10", "two_tower"))
    return {"mlflow_run_id": run.info.run_id, "device": run.data.tags.get("device"),
            "processes": int(run.data.params.get("processes", 0)), "epochs": len(rates),
            "examples_per_s": round(float(np.mean(rates[1:] or rates))) if rates else None,
            "valid_ndcg@10": round(ndcg, 4) if ndcg is not None else None}


def run_case(out_dir: Path, quick: bool, allow_cpu: bool, timeout_s: float) -> Dict[str, Any]:
    """Ingest, features and ``reco train`` in a fresh folder; what the training run recorded, and each step's
    wall time. A failed step is recorded with its log's tail."""
    import torch

    from bench.measure import run_measured
    work = Path(out_dir) / "pipeline_work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = _env(work, quick, allow_cpu)
    reco = str(Path(sys.prefix) / "bin" / "reco")
    case: Dict[str, Any] = {"case": "reco train (TorchDistributor)", "command": COMMAND + (" --quick" if quick else ""),
                            "gpus_visible": torch.cuda.device_count(), "quick": quick, "smoke_on_cpu": allow_cpu,
                            "date": time.strftime("%Y-%m-%d")}
    if torch.cuda.is_available():
        case["gpu"] = torch.cuda.get_device_properties(0).name
    for step, args in (("ingest", ["ingest"]), ("features", ["features"]), ("train", ["train"])):
        print(f"[pipeline] reco {' '.join(args)}", flush=True)
        m = run_measured([reco, *args], env=env, log=work / f"{step}.log", timeout_s=timeout_s)
        case[f"{step}_s"] = round(m.wall_s, 1)
        if m.returncode != 0:
            return {**case, "error": f"reco {step} exit {m.returncode}", "log_tail": m.output_tail[-2000:]}
    case.update(_recorded(env))
    if not allow_cpu and case["device"] != "cuda":
        case["error"] = f"trained on {case['device']}, not the GPU"
    print(f"[pipeline] {case}", flush=True)
    return case


def to_markdown(case: Dict[str, Any] | None) -> str:
    """The paragraph BENCHMARKS.md's GPU section shows for the case: when it last ran on a GPU and what it
    measured, or that it has not."""
    if not case or case.get("smoke_on_cpu") or case.get("device") != "cuda":
        why = f" (last try {case['date']}: {case.get('error', 'on the CPU')})" if case else ""
        return ("**`reco train` through the pipeline on GPUs** (`" + COMMAND + "`: synthetic lakehouse, "
                "TorchDistributor with `training.gpu.enabled: true`, one NCCL process per GPU): **not run on a GPU "
                "yet**" + why + ". Its wiring is tested on the CPU (tests/training/test_fit.py, "
                "tests/jobs/test_spark.py); the GPU machine lent so far has torch but no Java or Spark.")
    status = f"failed: {case['error']}" if "error" in case else "ran"       # e.g. a GPU run that failed its gate
    return (f"**`reco train` through the pipeline on GPUs** (`{case['command']}`): last run on a GPU on "
            f"**{case['date']}** ({status}), {case.get('gpu', '?')} x {case['gpus_visible']}: "
            f"{case['processes']} TorchDistributor process(es) on {case['device']}, "
            f"{case['examples_per_s']:,} examples/s (kept validation fit, {case['epochs']} epochs, first left out), "
            f"valid ndcg@10 {case['valid_ndcg@10']}; `reco train` {case['train_s']} s "
            f"(ingest {case['ingest_s']} s, features {case['features_s']} s).")


if __name__ == "__main__":
    from bench.gpu import main
    main(["--only", "pipeline", *sys.argv[1:]])
