"""Redis helpers: a free port, redis-benchmark (the raw write ceiling), INFO commandstats."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
from typing import Any, Dict
from bench.serving.common import BENCH_CLIENTS, BENCH_PIPELINE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_benchmark_binary() -> str:
    """``redis-benchmark`` (Debian's redis-tools), installed with apt-get when missing and allowed."""
    exe = shutil.which("redis-benchmark")
    if exe:
        return exe
    sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if sudo is None or not shutil.which("apt-get"):
        raise SystemExit("redis-benchmark is needed for the publishing baseline: install Debian's redis-tools "
                         "(apt-get install redis-tools) or your system's redis package, then rerun")
    print("installing Debian's redis-tools for redis-benchmark", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (sudo + ["apt-get", "update", "-qq"], sudo + ["apt-get", "install", "-y", "-qq", "redis-tools"]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"`{' '.join(cmd)}` failed ({proc.stderr.strip()[-300:]}); install redis-tools by "
                             "hand and rerun")
    exe = shutil.which("redis-benchmark")
    if not exe:
        raise SystemExit("redis-tools installed but redis-benchmark is not on PATH")
    return exe


def redis_benchmark(port: int, n: int, size: int, db: int = 0) -> Dict[str, Any]:
    """SET throughput of ``redis-benchmark`` with ``n`` random keys of ``size`` bytes."""
    cmd = [redis_benchmark_binary(), "-h", "127.0.0.1", "-p", str(port), "-t", "set", "-n", str(n), "-r", str(n),
           "-d", str(size), "-P", str(BENCH_PIPELINE), "-c", str(BENCH_CLIENTS), "--dbnum", str(db), "--csv"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    row = [line for line in proc.stdout.splitlines() if line.startswith('"SET"')][0]
    rps = float(row.split(",")[1].strip('"'))
    return {"command": " ".join(["redis-benchmark"] + cmd[1:]), "keys_per_s": round(rps),
            "mb_per_s": round(rps * size / 1e6, 1)}


def _commandstats(r) -> Dict[str, Dict[str, float]]:
    return {k.replace("cmdstat_", ""): v for k, v in r.info("commandstats").items()}
