"""The service's Prometheus metrics, kept by ``prometheus_client`` (``/metrics``, text format 0.0.4).

Every app has its own :class:`prometheus_client.CollectorRegistry` (a process, the tests above all,
may build many apps; the library's global registry is never touched). The families:

* ``reco_http_requests_total{route,method,status}`` and the latency histogram
  ``reco_http_request_duration_seconds{route}`` (buckets :data:`LATENCY_BUCKETS`); routes are path
  templates ("/v1/users/{user_id}/recommendations"), never raw paths, so the number of series stays
  bounded whatever clients send;
* ``reco_fallback_answers_total{list}``, ``reco_redis_errors_total``;
* ``reco_gc_collections_total``, ``reco_gc_pause_seconds_total``, ``reco_gc_pause_max_seconds``
  (each by ``generation``, all three listed from the start) and ``reco_event_loop_stalls_total``,
  ``reco_event_loop_lag_max_seconds``: our own pauses told apart from a starved process;
* ``reco_published_version_info{version}``: 1 for the version last answered from.

With several uvicorn workers (``python -m serving.api --workers N``) each worker is a process of
its own: the library's multiprocess mode then keeps every value in a file per process under
``PROMETHEUS_MULTIPROC_DIR`` (the CLI makes that directory; the variable must be set before the
process imports ``prometheus_client``), and ``/metrics`` adds up all workers' files whichever worker
answers it: counters and histograms summed, the ``*_max`` gauges the largest of any worker, and a
version listed with 1 while any worker last answered from it (0 once none does: the library cannot
drop a series in that mode). Only one app per process in that mode.

The garbage collector's hook never calls the library: it runs inside whatever allocation triggered
the collection, possibly while that same thread holds one of the library's (non-reentrant) locks.
It updates plain lists, which :meth:`Metrics.flush_gc` adds to the metrics from the event loop (every
loop check, and before every ``/metrics`` answer).
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Dict, Iterable, List, Optional, Tuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

# Seconds. Lookups are one Redis round trip, so most land in the first buckets.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LOOP_CHECK_S = 0.01     # the event-loop monitor's sleep
STALL_S = 0.02          # a wake-up later than this counts as a stall

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
GENERATIONS = (0, 1, 2)   # CPython's


class _WithoutCreated(Collector):
    """A registry's families less their ``_created`` samples: the library adds one per counter and
    histogram series in a single process (never in multiprocess mode); the service never wrote them,
    and the two modes answer the same families this way."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        for family in self.registry.collect():     # fresh objects on every collect
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


class Metrics:
    """The service's metrics on a registry of their own (``self.registry``); :meth:`render` writes them.

    Args:
        buckets: the latency histogram's upper bounds, in seconds (inclusive, as Prometheus's).
        multiprocess_dir: where the workers' values are (multiprocess mode); by default the
            ``PROMETHEUS_MULTIPROC_DIR`` the library itself went by, None in a single process.
    """

    def __init__(self, buckets: Tuple[float, ...] = LATENCY_BUCKETS,
                 multiprocess_dir: Optional[str] = None) -> None:
        self.buckets = buckets
        self.multiprocess_dir = multiprocess_dir or os.environ.get(MULTIPROC_ENV) or None
        self.registry = r = CollectorRegistry()
        self.requests = Counter("reco_http_requests_total", "HTTP requests by route template, method and status.",
                                ("route", "method", "status"), registry=r)
        self.duration = Histogram("reco_http_request_duration_seconds",
                                  "Time from request to response, by route template.", ("route",),
                                  buckets=buckets, registry=r)
        self.fallbacks = Counter("reco_fallback_answers_total", "Recommendation answers served from a fallback "
                                 "list, by list kind (segment, global).", ("list",), registry=r)
        self.redis_errors = Counter("reco_redis_errors_total", "Requests that failed on a Redis error.", registry=r)
        self.gc_collections = Counter("reco_gc_collections_total", "Python garbage collections, by generation.",
                                      ("generation",), registry=r)
        self.gc_pause = Counter("reco_gc_pause_seconds_total", "Time every request in flight stood still for "
                                "garbage collection, by generation.", ("generation",), registry=r)
        self.gc_pause_max = Gauge("reco_gc_pause_max_seconds", "The longest garbage collection, by generation.",
                                  ("generation",), registry=r, multiprocess_mode="max")
        self.loop_stalls = Counter("reco_event_loop_stalls_total",
                                   f"Times the event loop answered its {LOOP_CHECK_S * 1000:g} ms check more than "
                                   f"{STALL_S * 1000:g} ms late (a blocked loop or a starved process).", registry=r)
        self.loop_lag_max = Gauge("reco_event_loop_lag_max_seconds", "The longest such delay since start.",
                                  registry=r, multiprocess_mode="max")
        self.version_info = Gauge("reco_published_version_info", "The published version last answered from "
                                  "(1; with several workers, every version some worker last answered from, "
                                  "and 0 for one none is on any more).", ("version",), registry=r,
                                  multiprocess_mode="max")
        self._exposed = CollectorRegistry(auto_describe=False)
        self._exposed.register(_WithoutCreated(r))

        self._lock = threading.Lock()
        self._version: Optional[str] = None
        # the children of the series every request touches, so a request skips labels()' lookup
        self._request_series: Dict[Tuple[str, str, int], Counter] = {}
        self._duration_series: Dict[str, Histogram] = {}
        # generation -> [collections, seconds in all, longest], written by the gc hook only (in place:
        # it may run while anything else reads them); _gc_flushed: what flush_gc already added
        self._gc: Dict[int, List[float]] = {g: [0, 0.0, 0.0] for g in GENERATIONS}
        self._gc_flushed: Dict[int, List[float]] = {g: [0, 0.0, 0.0] for g in GENERATIONS}
        self._gc_started: Optional[float] = None
        self._flush_lock = threading.Lock()
        self._lag_max = 0.0
        for g in GENERATIONS:       # every generation is listed from the start
            for family in (self.gc_collections, self.gc_pause, self.gc_pause_max):
                family.labels(str(g))

    # ---- per request --------------------------------------------------------------------

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        counter = self._request_series.get(key)
        if counter is None:
            counter = self._request_series[key] = self.requests.labels(route, method, str(status))
        counter.inc()
        hist = self._duration_series.get(route)
        if hist is None:
            hist = self._duration_series[route] = self.duration.labels(route)
        hist.observe(seconds)

    def fallback(self, source: str) -> None:
        # "segment:Germany" -> "segment": segment names are data, keep the label set small.
        self.fallbacks.labels(source.split(":", 1)[0]).inc()

    def redis_error(self) -> None:
        self.redis_errors.inc()

    def seen_version(self, version: Optional[str]) -> None:
        if not version or version == self._version:
            return
        with self._lock:
            if version == self._version:
                return
            if self._version is not None:
                if self.multiprocess_dir:
                    self.version_info.labels(self._version).set(0)   # no removal in multiprocess mode
                else:
                    self.version_info.remove(self._version)
            self.version_info.labels(version).set(1)
            self._version = version

    # ---- pauses -------------------------------------------------------------------------

    def on_gc(self, phase: str, info: Dict[str, int]) -> None:
        """A ``gc.callbacks`` hook: times every collection (the interpreter stops while it runs).
        Plain lists only (see the module's docstring); :meth:`flush_gc` hands them to the metrics."""
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        if self._gc_started is None:
            return
        spent, self._gc_started = time.perf_counter() - self._gc_started, None
        g = self._gc.get(info.get("generation", -1))
        if g is None:             # CPython has generations 0-2 only
            return
        g[0] += 1
        g[1] += spent
        g[2] = max(g[2], spent)

    def flush_gc(self) -> None:
        """Add the collections timed since the last flush to the metrics."""
        with self._flush_lock:
            for gen in GENERATIONS:
                n, spent, longest = self._gc[gen]
                done = self._gc_flushed[gen]
                label = str(gen)
                if n > done[0]:
                    self.gc_collections.labels(label).inc(n - done[0])
                if spent > done[1]:
                    self.gc_pause.labels(label).inc(spent - done[1])
                if longest > done[2]:
                    self.gc_pause_max.labels(label).set(longest)
                self._gc_flushed[gen] = [n, spent, longest]

    def loop_lag(self, seconds: float) -> None:
        """How much later than asked the event-loop monitor woke up (see :func:`watch_loop`)."""
        if seconds > STALL_S:
            self.loop_stalls.inc()
        if seconds > self._lag_max:
            self._lag_max = seconds
            self.loop_lag_max.set(seconds)

    # ---- /metrics -----------------------------------------------------------------------

    def render(self) -> str:
        """The text exposition (format 0.0.4) of this process, or of every worker in multiprocess mode."""
        self.flush_gc()
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)
            return generate_latest(registry).decode("utf-8")
        return generate_latest(self._exposed).decode("utf-8")


async def watch_loop(metrics: Metrics) -> None:
    """Sleep ``LOOP_CHECK_S`` again and again and record how late each wake-up is: a request that
    arrives during a late wake-up waits as long, so the maximum bounds the stalls behind a p99.
    Each wake-up also hands the garbage collector's timings to the metrics."""
    while True:
        t0 = time.perf_counter()
        await asyncio.sleep(LOOP_CHECK_S)
        metrics.loop_lag(max(0.0, time.perf_counter() - t0 - LOOP_CHECK_S))
        metrics.flush_gc()
