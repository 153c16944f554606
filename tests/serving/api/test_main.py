"""``python -m serving.api`` (serving.api.main): the real server, started as an operator would."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict

from prometheus_client.multiprocess import MultiProcessCollector

from tests.conftest import free_port
from tests.serving.api.store import USERS_ROUTE, parse_prometheus, publish_store

ROOT = Path(__file__).resolve().parents[3]
LOOKUPS_200 = frozenset({("route", USERS_ROUTE), ("method", "GET"), ("status", "200")})


def _get(url: str) -> bytes:
    """A GET on a connection of its own (urllib closes it after the answer)."""
    with urllib.request.urlopen(url, timeout=10.0) as resp:
        assert resp.status == 200, url
        return resp.read()


def _wait_until_up(url: str, server: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"the server exited ({server.returncode}):\n{log.read_text()}"
        try:
            _get(url)
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"the server did not answer {url} within {timeout:.0f} s:\n{log.read_text()}")


def lookups_per_worker(metrics_dir: Path) -> Dict[str, float]:
    """Lookups answered 200 by each worker, from its own file (counter_<pid>.db) alone."""
    out = {}
    for path in sorted(metrics_dir.glob("counter_*.db")):
        out[path.stem.split("_", 1)[1]] = sum(
            s.value for family in MultiProcessCollector.merge([str(path)]) for s in family.samples
            if s.name == "reco_http_requests_total" and frozenset(s.labels.items()) == LOOKUPS_200)
    return out


def counted_lookups(metrics_dir: Path, sent: int, timeout: float = 10.0) -> Dict[str, float]:
    """:func:`lookups_per_worker` once every answered lookup is counted: a worker counts a request
    just after it sent the answer, so the last few may still be on their way."""
    deadline = time.monotonic() + timeout
    per_worker = lookups_per_worker(metrics_dir)
    while sum(per_worker.values()) < sent and time.monotonic() < deadline:
        time.sleep(0.05)
        per_worker = lookups_per_worker(metrics_dir)
    return per_worker


def test_with_two_workers_metrics_add_up_both_workers(r, ks, redis_server, tmp_path):
    publish_store(r, ks)
    port, tmp, log = free_port(), tmp_path / "tmp", tmp_path / "server.log"
    tmp.mkdir()   # the server's TMPDIR: where it makes its metrics directory, so the test can look inside
    cmd = [sys.executable, "-m", "serving.api", "--redis-url", redis_server, "--namespace", ks.namespace,
           "--n-shards", str(ks.n_shards), "--port", str(port), "--workers", "2"]
    with open(log, "w") as out:
        server = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp)}, stdout=out,
                                  stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(f"{base}/healthz", server, log)   # one worker is up
        [metrics_dir] = tmp.glob("reco-metrics-*")
        deadline = time.monotonic() + 90                   # the other may still be starting (its app makes its file)
        while len(list(metrics_dir.glob("counter_*.db"))) < 2:
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        # Lookups on fresh connections, 8 at a time, until each worker has answered some: only then
        # does a sum over both differ from what either worker counted alone.
        sent, per_worker = 0, {}
        deadline = time.monotonic() + 60
        with ThreadPoolExecutor(8) as pool:
            while time.monotonic() < deadline:
                list(pool.map(lambda _: _get(f"{base}/v1/users/u1/recommendations?k=2"), range(16)))
                sent += 16
                per_worker = counted_lookups(metrics_dir, sent)
                if len(per_worker) == 2 and all(per_worker.values()):
                    break
        assert len(per_worker) == 2 and all(per_worker.values()), (sent, per_worker)
        assert sum(per_worker.values()) == sent
        for _ in range(3):   # whichever worker answers /metrics counts both
            m = parse_prometheus(_get(f"{base}/metrics").decode())
            assert m[("reco_http_requests_total", LOOKUPS_200)] == sent > max(per_worker.values())
            assert m[("reco_http_request_duration_seconds_count", frozenset({("route", USERS_ROUTE)}))] == sent
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            raise AssertionError(f"the server did not stop on SIGTERM within 30 s:\n{log.read_text()}")
    assert server.returncode == 0, log.read_text()
    assert list(tmp.iterdir()) == []          # the metrics directory went with the server
