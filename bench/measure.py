"""Run a command in a subprocess and measure its wall time and peak memory.

Peak memory is the largest sum of RSS over the process tree (the Python
driver, the Spark JVM and its Python workers), sampled every 0.2 s.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import psutil

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Measurement:
    wall_s: float
    peak_rss_mb: float
    returncode: int
    output_tail: str


def run_measured(cmd: List[str], env: Optional[Dict[str, str]] = None, log: Optional[Path] = None,
                 timeout_s: float = 7200) -> Measurement:
    full_env = {**os.environ, **(env or {})}
    out = open(log, "w") if log else subprocess.DEVNULL
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=full_env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    peak = 0.0
    stop = threading.Event()

    def sample():
        nonlocal peak
        p = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                procs = [p] + p.children(recursive=True)
                rss = sum(x.memory_info().rss for x in procs if x.is_running())
                peak = max(peak, rss / 2**20)
            except psutil.Error:
                pass
            time.sleep(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = -9
    stop.set()
    th.join()
    wall = time.time() - t0
    if log:
        out.close()
    tail = Path(log).read_text()[-3000:] if log else ""
    return Measurement(wall_s=wall, peak_rss_mb=peak, returncode=rc, output_tail=tail)


def machine() -> str:
    mem = psutil.virtual_memory().total / 2**30
    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = cpu
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    return (f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB RAM, {platform.system()} {platform.release()}, "
            f"Python {sys.version.split()[0]}, {java}")
