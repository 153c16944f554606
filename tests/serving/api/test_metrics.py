"""The service's Prometheus metrics (serving.api.metrics), alone and through the app's /metrics."""
from __future__ import annotations

import time

from fastapi.testclient import TestClient

from serving.api.app import create_app
from serving.api.metrics import LATENCY_BUCKETS, Metrics
from tests.serving.api.store import USERS_ROUTE, VERSION, parse_prometheus


def test_metrics_time_gc_pauses_and_event_loop_stalls_while_the_app_runs(published):
    import gc
    callbacks = list(gc.callbacks)
    with TestClient(create_app(published)) as client:
        gc.collect()                                # a full collection, timed by the app's hook
        # block the app's event loop for 60 ms: its watcher must see a stall of about that length
        client.portal.call(lambda: time.sleep(0.06))
        time.sleep(0.05)                            # let the watcher wake up late and record it
        m = parse_prometheus(client.get("/metrics").text)
        assert len(gc.callbacks) == len(callbacks) + 1
    assert gc.callbacks == callbacks                # stopping the app removes its hook
    gen2 = frozenset({("generation", "2")})
    assert m[("reco_gc_collections_total", gen2)] >= 1
    assert 0 < m[("reco_gc_pause_max_seconds", gen2)] <= m[("reco_gc_pause_seconds_total", gen2)]
    assert m[("reco_event_loop_stalls_total", frozenset())] >= 1
    assert 0.04 <= m[("reco_event_loop_lag_max_seconds", frozenset())] < 5


def test_gc_hook_times_start_to_stop_per_generation():
    metrics = Metrics()
    metrics.on_gc("stop", {"generation": 0})        # a stop without its start (hook added mid-collection)
    metrics.on_gc("start", {"generation": 1})
    time.sleep(0.01)
    metrics.on_gc("stop", {"generation": 1})
    metrics.loop_lag(0.001)                         # under the stall threshold: only the maximum moves
    m = parse_prometheus(metrics.render())
    g1 = frozenset({("generation", "1")})
    assert m[("reco_gc_collections_total", g1)] == 1
    assert 0.01 <= m[("reco_gc_pause_seconds_total", g1)] == m[("reco_gc_pause_max_seconds", g1)] < 1
    assert m[("reco_gc_collections_total", frozenset({("generation", "0")}))] == 0   # the stop without a start
    assert m[("reco_gc_collections_total", frozenset({("generation", "2")}))] == 0   # every generation is listed
    assert m[("reco_event_loop_stalls_total", frozenset())] == 0
    assert m[("reco_event_loop_lag_max_seconds", frozenset())] == 0.001


def test_metrics_count_requests_fallbacks_and_latency(api):
    for path in ("/v1/users/u1/recommendations", "/v1/users/u2/recommendations", "/v1/users/nobody/recommendations",
                 "/v1/users/nobody/recommendations?segment=Germany", "/v1/items/ZZZ/similar",
                 "/v1/users/u1/recommendations?k=0"):
        api.get(path)
    res = api.get("/metrics")
    assert res.status_code == 200
    assert res.headers["content-type"].startswith("text/plain; version=0.0.4")
    m = parse_prometheus(res.text)

    def req(route, status):
        return m.get(("reco_http_requests_total",
                      frozenset({("route", route), ("method", "GET"), ("status", str(status))})))

    assert req(USERS_ROUTE, 200) == 4
    assert req(USERS_ROUTE, 422) == 1
    assert req("/v1/items/{item_id}/similar", 404) == 1
    assert "u1" not in res.text  # routes are templates, not raw paths
    assert m[("reco_fallback_answers_total", frozenset({("list", "global")}))] == 1
    assert m[("reco_fallback_answers_total", frozenset({("list", "segment")}))] == 1
    assert m[("reco_redis_errors_total", frozenset())] == 0
    assert m[("reco_published_version_info", frozenset({("version", VERSION)}))] == 1

    route = ("route", USERS_ROUTE)
    buckets = sorted(((float(dict(labels)["le"]), v) for (name, labels), v in m.items()
                      if name == "reco_http_request_duration_seconds_bucket" and route in labels))
    counts = [v for _, v in buckets]
    assert buckets[-1][0] == float("inf") and counts == sorted(counts), buckets  # cumulative
    assert counts[-1] == m[("reco_http_request_duration_seconds_count", frozenset({route}))] == 5
    assert 0 < m[("reco_http_request_duration_seconds_sum", frozenset({route}))] < 5


def test_metrics_label_values_are_escaped():
    metrics = Metrics()
    metrics.seen_version('odd"ver\\sion\n')
    parsed = parse_prometheus(metrics.render())
    assert ("reco_published_version_info", frozenset({("version", 'odd\\"ver\\\\sion\\n')})) in parsed


def test_latency_buckets_are_cumulative_and_bounds_inclusive():
    metrics = Metrics()
    for seconds in (0.0005, 0.001, 0.003, 0.001000001, 10.0):
        metrics.observe_request("/r", "GET", 200, seconds)
    m = parse_prometheus(metrics.render())

    def bucket(le):
        return m[("reco_http_request_duration_seconds_bucket", frozenset({("route", "/r"), ("le", le)}))]

    assert [bucket(repr(b)) for b in LATENCY_BUCKETS[:3]] == [2, 3, 4]   # le=0.001 holds 0.001 itself
    assert bucket(repr(LATENCY_BUCKETS[-1])) == 4 and bucket("+Inf") == 5
    assert m[("reco_http_request_duration_seconds_count", frozenset({("route", "/r")}))] == 5


def test_each_app_keeps_its_metrics_in_a_registry_of_its_own(published):
    from prometheus_client import REGISTRY, generate_latest
    with TestClient(create_app(published)) as one, TestClient(create_app(published)) as other:
        for _ in range(3):
            assert one.get("/healthz").status_code == 200
        assert other.get("/healthz").status_code == 200
        m_one, m_other = (parse_prometheus(api.get("/metrics").text) for api in (one, other))
    health = frozenset({("route", "/healthz"), ("method", "GET"), ("status", "200")})
    assert (m_one[("reco_http_requests_total", health)], m_other[("reco_http_requests_total", health)]) == (3, 1)
    assert b"reco_" not in generate_latest(REGISTRY)       # the library's global registry is left alone


def test_only_the_version_last_answered_from_is_listed():
    metrics = Metrics()
    for version in ("v1", "v1", "v2"):
        metrics.seen_version(version)
    versions = {labels: v for (name, labels), v in parse_prometheus(metrics.render()).items()
                if name == "reco_published_version_info"}
    assert versions == {frozenset({("version", "v2")}): 1}


def test_a_collection_is_counted_once_however_often_the_metrics_are_read():
    metrics = Metrics()
    metrics.on_gc("start", {"generation": 0})
    metrics.on_gc("stop", {"generation": 0})
    first = parse_prometheus(metrics.render())
    metrics.flush_gc()                              # what the event-loop watcher does every 10 ms
    again = parse_prometheus(metrics.render())
    g0 = frozenset({("generation", "0")})
    for name in ("reco_gc_collections_total", "reco_gc_pause_seconds_total", "reco_gc_pause_max_seconds"):
        assert first[(name, g0)] == again[(name, g0)], name
    assert again[("reco_gc_collections_total", g0)] == 1
    # no _created series: the same families as ever, and the same in multiprocess mode
    assert not any(name.endswith("_created") for name, _ in again)


WORKER = """
import sys
from serving.api.metrics import Metrics
metrics = Metrics()
n, versions, lag = int(sys.argv[1]), sys.argv[2].split(","), float(sys.argv[3])
for _ in range(n):
    metrics.observe_request("/r", "GET", 200, 0.003)
for version in versions:
    metrics.seen_version(version)
metrics.loop_lag(lag)
if len(sys.argv) > 4:
    print(metrics.render(), end="")
"""


def test_in_multiprocess_mode_every_process_is_counted(tmp_path):
    """Three processes sharing one PROMETHEUS_MULTIPROC_DIR, as --workers' do: the third's render
    sums the counters of all, takes the largest of the *_max gauges, and lists every version some
    process last answered from (1), and a version none is on any more as 0."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}

    def process(*args: str) -> str:
        return subprocess.run([sys.executable, "-c", WORKER, *args], cwd=root, env=env, check=True,
                              capture_output=True, text=True, timeout=60).stdout

    process("2", "v0,v1", "0.5")
    process("3", "v0,v2", "0.001")
    m = parse_prometheus(process("4", "v2", "0.03", "render"))
    r = frozenset({("route", "/r")})
    assert m[("reco_http_requests_total", frozenset({("route", "/r"), ("method", "GET"), ("status", "200")}))] == 9
    assert m[("reco_http_request_duration_seconds_count", r)] == 9
    assert m[("reco_http_request_duration_seconds_bucket", frozenset({("route", "/r"), ("le", "0.005")}))] == 9
    assert m[("reco_event_loop_stalls_total", frozenset())] == 2       # 0.5 and 0.03 s
    assert m[("reco_event_loop_lag_max_seconds", frozenset())] == 0.5
    versions = {dict(labels)["version"]: v for (name, labels), v in m.items() if name == "reco_published_version_info"}
    assert versions == {"v0": 0, "v1": 1, "v2": 1}      # v1: the first process is still on it
