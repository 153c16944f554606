"""Lookups: the open-loop load generator (its own process) and the run against python -m serving.api."""
from __future__ import annotations

import asyncio
import gc
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import psutil

from bench.measure import ROOT
from bench.serving.common import DRAIN_S, LIST_K, NAMESPACE, N_SHARDS, P99_TARGET_MS, WARMUP_RATE
from bench.serving.redis_tools import free_port


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
                               "(bench.serving.loadgen._HttpConns) / redis.asyncio, on uvloop, cyclic GC off, open loop, "
                               "at most 256 requests in flight, 2 s warm-up ramping from 200 req/s to the rate; what "
                               "is unanswered 5 s after the last send counts as an error)",
            "path": f"/v1/users/{{id}}/recommendations?k={LIST_K}", "p99_target_ms": P99_TARGET_MS,
            "runs": runs, "holds_at": max(held) if held else None,
            "service_warnings": {"count": len(problems), "first": problems[:5]}}
