"""The HTTP lookup service against a real redis-server holding a published version."""
from __future__ import annotations

import logging
import re
import socket
import time
from typing import Dict, Iterator, List, Tuple

import pytest
from fastapi.testclient import TestClient

from serving.app import NOTHING_PUBLISHED, create_app
from serving.client import AsyncLookupClient, LookupClient, connect_async
from serving.codec import encode_item, encode_list
from serving.connection import connect
from serving.pipelined import PipelinedGets
from serving.publish import publish_version

VERSION = "20261126-test"
USERS_ROUTE = "/v1/users/{user_id}/recommendations"

# A tiny store. Every list is written so each test can say exactly what it must get back.
CATALOGUE = {
    "A": {"title": "Red teapot", "price": 12.5, "category": "kitchen"},
    "B": {"title": "Blue mug", "price": 4.25, "category": "kitchen"},
    "C": {"title": "Paper lantern", "price": 7.0, "category": "decor"},
    "D": {"title": "Jam jar", "price": 2.1, "category": "kitchen"},
    "E": {"title": "Tea towel", "price": 3.5, "category": "textiles"},
    # "NODETAIL" is recommended but has no details: the API must answer nulls for it.
}
USER_LISTS = {
    "u1": (["A", "B", "C"], [0.9, 0.8, 0.7], ["model", "model", "buy_again"]),
    "u2": (["C", "NODETAIL"], [0.5, 0.4], ["model", "explore"]),
}
SIMILAR = {"A": (["B", "D"], [0.95, 0.6], ["model", "model"])}
FALLBACKS = {
    "global": (["E", "D", "A"], [30.0, 20.0, 10.0], ["popular", "popular", "popular"]),
    "segment:Germany": (["D", "C"], [5.0, 4.0], ["trending", "popular"]),
}


def store_records() -> List[Tuple[str, str, bytes]]:
    records = [("i", item, encode_item(details)) for item, details in CATALOGUE.items()]
    records += [("u", user, encode_list(*lst)) for user, lst in USER_LISTS.items()]
    records += [("s", item, encode_list(*lst)) for item, lst in SIMILAR.items()]
    records += [("f", name, encode_list(*lst)) for name, lst in FALLBACKS.items()]
    return records


def publish_store(r, ks, version: str = VERSION) -> None:
    """Publish the tiny store above with the real publisher (also used by the browser test)."""
    publish_version(r, ks, version, [store_records()], metadata={"model_version": "test"})


@pytest.fixture
def published(r, ks) -> LookupClient:
    publish_store(r, ks)
    return LookupClient(r, ks)


@pytest.fixture(params=["async", "blocking"])
def api(request, published, redis_server, ks) -> Iterator[TestClient]:
    """The service on the asyncio client (what `python -m serving.app` runs) and on the
    blocking one (`reco serve`, on the thread pool): every API test runs on both."""
    if request.param == "blocking":
        with TestClient(create_app(published)) as client:
            yield client
        return
    reader = AsyncLookupClient(connect_async(redis_server), ks)
    with TestClient(create_app(reader)) as client:
        yield client
        client.portal.call(reader.aclose)  # its connections belong to the TestClient's event loop


def test_startup_objects_are_frozen_out_of_the_gc_while_the_app_runs(published):
    import gc
    assert gc.get_freeze_count() == 0
    with TestClient(create_app(published)) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_freeze_count() > 10_000      # the modules, routes and schemas alive at startup
    assert gc.get_freeze_count() == 0              # stopping the app gives them back


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
    from serving.app import Metrics
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


def titles(body: dict) -> List:
    return [p["title"] for p in body["items"]]


# ---------------------------------------------------------------------------- lookups


def test_known_user_gets_their_list_with_ranks_and_details(api):
    res = api.get("/v1/users/u1/recommendations", params={"k": 10})
    assert res.status_code == 200, res.text
    body = res.json()
    assert {k: body[k] for k in ("user_id", "k", "source", "fallback", "version")} == {
        "user_id": "u1", "k": 10, "source": "personal", "fallback": False, "version": VERSION}
    assert body["items"] == [
        {"item_id": "A", "rank": 1, "score": 0.9, "tag": "model", "title": "Red teapot", "price": 12.5,
         "category": "kitchen"},
        {"item_id": "B", "rank": 2, "score": 0.8, "tag": "model", "title": "Blue mug", "price": 4.25,
         "category": "kitchen"},
        {"item_id": "C", "rank": 3, "score": 0.7, "tag": "buy_again", "title": "Paper lantern", "price": 7.0,
         "category": "decor"},
    ]


def test_k_cuts_the_list(api):
    body = api.get("/v1/users/u1/recommendations", params={"k": 2}).json()
    assert [p["item_id"] for p in body["items"]] == ["A", "B"]


def test_item_without_details_comes_with_nulls(api):
    body = api.get("/v1/users/u2/recommendations").json()
    assert body["items"][1] == {"item_id": "NODETAIL", "rank": 2, "score": 0.4, "tag": "explore",
                                "title": None, "price": None, "category": None}


def test_unknown_user_gets_the_global_fallback_marked_as_such(api):
    body = api.get("/v1/users/nobody/recommendations").json()
    assert (body["source"], body["fallback"]) == ("global", True)
    assert titles(body) == ["Tea towel", "Jam jar", "Red teapot"]


def test_unknown_user_with_a_segment_gets_the_segment_list(api):
    body = api.get("/v1/users/nobody/recommendations", params={"segment": "Germany"}).json()
    assert (body["source"], body["fallback"]) == ("segment:Germany", True)
    assert [p["item_id"] for p in body["items"]] == ["D", "C"]
    # a segment nobody published falls through to the global list
    body = api.get("/v1/users/nobody/recommendations", params={"segment": "Atlantis"}).json()
    assert body["source"] == "global"


def test_known_user_ignores_the_segment(api):
    body = api.get("/v1/users/u1/recommendations", params={"segment": "Germany"}).json()
    assert (body["source"], body["fallback"]) == ("personal", False)


@pytest.mark.parametrize("k", ["0", "101", "-1", "ten", "2.5"])
def test_k_outside_1_to_100_is_422(api, k):
    res = api.get("/v1/users/u1/recommendations", params={"k": k})
    assert res.status_code == 422, res.text
    assert res.json()["detail"][0]["loc"] == ["query", "k"]


@pytest.mark.parametrize("path", [
    "/v1/users/" + "x" * 257 + "/recommendations",  # longer than 256
    "/v1/users/a%01b/recommendations",               # control character
    "/v1/items/a%7Fb/similar",                       # DEL
    "/v1/items/" + "y" * 257,
])
def test_bad_ids_are_422(api, path):
    res = api.get(path)
    assert res.status_code == 422, res.text
    assert res.json()["detail"][0]["loc"][0] == "path"  # refused by the route, before any lookup


def test_bad_segment_is_422(api):
    assert api.get("/v1/users/u1/recommendations", params={"segment": "a\tb"}).status_code == 422


def test_value_error_from_the_client_is_422_with_its_message(api):
    # U+2028 passes the path pattern but the client refuses non-printable ids.
    res = api.get("/v1/users/a%E2%80%A8b/recommendations")
    assert res.status_code == 422
    assert "non-printable" in res.json()["detail"]


def test_similar_items_of_a_known_item(api):
    res = api.get("/v1/items/A/similar", params={"k": 5})
    assert res.status_code == 200
    body = res.json()
    assert (body["item_id"], body["k"], body["version"]) == ("A", 5, VERSION)
    assert [(p["item_id"], p["rank"], p["title"]) for p in body["items"]] == [("B", 1, "Blue mug"),
                                                                              ("D", 2, "Jam jar")]


def test_similar_items_of_an_unknown_item_is_404(api):
    res = api.get("/v1/items/ZZZ/similar")
    assert res.status_code == 404
    assert res.json() == {"detail": "unknown item 'ZZZ': it has no similar-items list in the published version"}


def test_item_details(api):
    assert api.get("/v1/items/C").json() == {"item_id": "C", "title": "Paper lantern", "price": 7.0,
                                             "category": "decor", "version": VERSION}
    res = api.get("/v1/items/NODETAIL")
    assert res.status_code == 404 and res.json() == {"detail": "unknown item 'NODETAIL'"}


def test_demo_users_come_from_the_current_version(api):
    body = api.get("/v1/demo/users", params={"n": 10}).json()
    assert body["version"] == VERSION
    assert sorted(body["user_ids"]) == ["u1", "u2"]
    assert len(api.get("/v1/demo/users", params={"n": 1}).json()["user_ids"]) == 1


def test_demo_users_ignore_other_versions(r, ks, api):
    # An older version's users must not be offered: they would be answered from the current one.
    # An item id containing "}:u:" makes its similar-items key match the SCAN pattern too: not a user.
    one = encode_list(["A"], [1.0], ["model"])
    publish_version(r, ks, "20261127-next", [[("u", "u9", one), ("s", "x}:u:y", one), ("f", "global", one)]],
                    metadata={})
    assert api.get("/v1/demo/users").json() == {"version": "20261127-next", "user_ids": ["u9"]}


# ---------------------------------------------------------------------------- operations


def test_healthz_ok(api):
    res = api.get("/healthz")
    assert res.status_code == 200
    assert res.json() == {"status": "ok", "version": VERSION, "redis": "ok"}


def test_openapi_documents_the_paths_and_models(api):
    schema = api.get("/openapi.json").json()
    assert {"/v1/users/{user_id}/recommendations", "/v1/items/{item_id}/similar", "/v1/items/{item_id}",
            "/v1/demo/users", "/healthz", "/metrics"} <= set(schema["paths"])
    recs = schema["paths"]["/v1/users/{user_id}/recommendations"]["get"]
    assert recs["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Recommendations"}
    assert {"404", "503"} <= set(schema["paths"]["/v1/items/{item_id}/similar"]["get"]["responses"])
    k = next(p for p in recs["parameters"] if p["name"] == "k")
    assert (k["schema"]["minimum"], k["schema"]["maximum"]) == (1, 100)
    assert set(schema["components"]["schemas"]["Product"]["properties"]) == {
        "item_id", "rank", "score", "tag", "title", "price", "category"}


SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)'
    r'(?:\{(?P<labels>[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*)\})?'
    r' (?P<value>[-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|Inf)|NaN)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"')


def parse_prometheus(text: str) -> Dict[Tuple[str, frozenset], float]:
    """Parse text format 0.0.4 strictly: every line is a HELP, a TYPE or a sample of a typed family."""
    assert text.endswith("\n")
    typed: Dict[str, str] = {}
    samples: Dict[Tuple[str, frozenset], float] = {}
    for line in text.rstrip("\n").split("\n"):
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in {"counter", "gauge", "histogram"}, line
            typed[name] = kind
            continue
        m = SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        name = m["name"]
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in typed else name
        assert family in typed, f"sample {name} has no # TYPE line before it"
        labels = frozenset(LABEL.findall(m["labels"] or ""))
        samples[(name, labels)] = float(m["value"])
    return samples


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
    from serving.app import Metrics
    metrics = Metrics()
    metrics.seen_version('odd"ver\\sion\n')
    parsed = parse_prometheus(metrics.render())
    assert ("reco_published_version_info", frozenset({("version", 'odd\\"ver\\\\sion\\n')})) in parsed


# ---------------------------------------------------------------------------- failures


def test_nothing_published_is_503_with_what_to_do(r, ks):
    with TestClient(create_app(LookupClient(r, ks))) as api:
        for path in ("/v1/users/u1/recommendations", "/v1/items/A/similar", "/v1/items/A", "/v1/demo/users"):
            res = api.get(path)
            assert res.status_code == 503, path
            assert res.json() == {"detail": NOTHING_PUBLISHED, "retry": False}
        health = api.get("/healthz")
        assert health.status_code == 503
        assert health.json() == {"status": "unavailable", "redis": "ok", "detail": NOTHING_PUBLISHED}


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: connecting is refused, and nobody else can take it meanwhile."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.mark.parametrize("kind", ["async", "blocking"])
def test_redis_down_is_503_never_500(ks, closed_port, kind):
    built = []

    def factory():  # called once, lazily: the app starts while redis is down
        built.append(1)
        url = f"redis://127.0.0.1:{closed_port}/0"
        if kind == "async":
            return AsyncLookupClient(connect_async(url, socket_timeout=0.5, retries=0), ks)
        return LookupClient(connect(url, socket_timeout=0.5, retries=0), ks)

    app = create_app(factory)
    with TestClient(app) as api:
        assert built == []
        for path in ("/v1/users/u1/recommendations", "/v1/items/A/similar", "/v1/items/A", "/v1/demo/users"):
            res = api.get(path)
            assert res.status_code == 503, (path, res.text)
            body = res.json()
            assert body["retry"] is True and res.headers["retry-after"] == "1"
            assert body["detail"].startswith("recommendation store unavailable: ")
        health = api.get("/healthz")
        assert health.status_code == 503
        assert health.json()["status"] == "unavailable" and health.json()["redis"] == "down"
        assert built == [1]
        m = parse_prometheus(api.get("/metrics").text)
    assert m[("reco_redis_errors_total", frozenset())] == 5
    assert not any(dict(labels).get("status") == "500" for _, labels in m)


def test_a_stalled_auth_on_the_lookups_connection_is_503_never_500(r, ks, redis_server):
    """The lookups' pipelined connection reaches a server that accepts and never answers its AUTH
    (redis-py's own reads, the pointer among them, go to the real server)."""
    publish_store(r, ks)
    silent = socket.create_server(("127.0.0.1", 0))       # accepts (the kernel's backlog), never answers
    reader = AsyncLookupClient(connect_async(redis_server), ks)
    reader._pipelined = PipelinedGets(port=silent.getsockname()[1], password="s3cret", timeout=0.3)
    try:
        with TestClient(create_app(reader)) as api:
            for path in ("/v1/users/u1/recommendations", "/v1/items/A/similar"):
                res = api.get(path)
                assert res.status_code == 503, (path, res.text)
                assert res.json()["retry"] is True and res.headers["retry-after"] == "1"
                assert "did not answer AUTH within 0.3 s" in res.json()["detail"]
            api.portal.call(reader.aclose)
    finally:
        silent.close()


class Stalling:
    """A client whose wait on Redis ran out as asyncio.wait_for or a socket says it: the built-in
    TimeoutError."""

    def recommendations(self, user_id, k, segment=None):
        raise TimeoutError()


def test_the_builtin_timeout_error_is_503_like_redis_timeouts():
    with TestClient(create_app(lambda: Stalling())) as api:
        res = api.get("/v1/users/u1/recommendations")
        metrics = parse_prometheus(api.get("/metrics").text)
    assert res.status_code == 503 and res.headers["retry-after"] == "1"
    assert res.json() == {"detail": "recommendation store unavailable: TimeoutError", "retry": True}
    assert metrics[("reco_redis_errors_total", frozenset())] == 1


class Exploding:
    """A client with a bug."""

    def recommendations(self, user_id, k, segment=None):
        raise RuntimeError("secret internal state /srv/app/x.py")


def test_unexpected_exception_is_generic_500_and_logged(caplog):
    app = create_app(lambda: Exploding())
    with caplog.at_level(logging.ERROR, logger="serving.app"), TestClient(app) as api:
        res = api.get("/v1/users/u1/recommendations")
        metrics = parse_prometheus(api.get("/metrics").text)
    assert res.status_code == 500
    body = res.json()
    assert set(body) == {"detail", "request_id", "retry"} and body["detail"] == "internal server error"
    assert "secret" not in res.text and "Traceback" not in res.text
    [record] = [rec for rec in caplog.records if rec.levelno == logging.ERROR]
    assert body["request_id"] in record.getMessage() and record.exc_info[0] is RuntimeError
    assert metrics[("reco_http_requests_total",
                    frozenset({("route", USERS_ROUTE), ("method", "GET"), ("status", "500")}))] == 1


CORRUPT, NEWER = b"\x00not json", b'{"v":2,"i":["A"],"s":[1.0],"t":"m"}'   # another writer's bytes; a newer format


@pytest.mark.parametrize("path,key_of,value", [
    ("/v1/users/u1/recommendations", lambda ks: ks.user(VERSION, "u1"), CORRUPT),
    ("/v1/users/u1/recommendations", lambda ks: ks.user(VERSION, "u1"), NEWER),
    ("/v1/users/nobody/recommendations", lambda ks: ks.fallback(VERSION, "global"), NEWER),
    ("/v1/items/A/similar", lambda ks: ks.similar(VERSION, "A"), CORRUPT),
    ("/v1/items/A/similar", lambda ks: ks.similar(VERSION, "A"), NEWER),
    ("/v1/items/B", lambda ks: ks.item(VERSION, "B"), b"{not json"),
    ("/v1/items/B", lambda ks: ks.item(VERSION, "B"), b"[1, 2]"),
])
def test_an_unreadable_stored_value_is_a_500_naming_key_and_version_never_a_422(
        fast_and_full, r, ks, caplog, path, key_of, value):
    key = key_of(ks)
    r.set(key, value)
    for api in fast_and_full:                           # with the fast path and through FastAPI alone
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="serving.app"):
            res = api.get(path)
        assert res.status_code == 500, (path, res.status_code, res.text)   # the store's fault, not the caller's
        body = res.json()
        assert body["retry"] is False and body["request_id"]
        assert body["detail"].startswith("the published recommendations hold a value this service cannot read")
        assert f"the value of {key} (version {VERSION}) cannot be read" in body["detail"]
        [record] = [rec for rec in caplog.records if rec.levelno == logging.ERROR]
        assert key in record.getMessage() and body["request_id"] in record.getMessage()


def test_demo_page_and_its_assets_are_served_locally(api):
    page = api.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert "/static/app.js" in assets and "/static/style.css" in assets
    for asset in assets:
        assert asset.startswith("/"), f"external asset {asset}: the demo must work offline"
        assert api.get(asset).status_code == 200, asset


# ---------------------------------------------------------------------------- the lookups' fast path

# Details and ids that JSON must escape or write in unusual ways, to compare the fast path's bytes
TRICKY_DETAILS = {
    "Q": {"title": 'He said "hi" \\ \u2028 \x01 é', "price": 3, "category": None},
    "R": {"title": "Réveil", "extra": [1, {"a": None}]},        # no price or category; a field the API ignores
    'q"u\\o': {"title": "quoted id", "price": 1e-05, "category": "x"},
}
TRICKY_LISTS = {
    "u3": (["Q", "R", "NODETAIL", 'q"u\\o'], [123456789.0, 0.1, 1e-05, -0.0], ["editorial", "model", "pinned", "x"]),
    'ü "quoted" \\ id ✓': (["A"], [1.0], ["model"]),
}


@pytest.fixture(params=["async", "blocking"])
def fast_and_full(request, r, ks, redis_server) -> Iterator[Tuple[TestClient, TestClient]]:
    """The service with its fast path and without it (every request through FastAPI), on one store."""
    records = store_records() + [("i", item, encode_item(d)) for item, d in TRICKY_DETAILS.items()]
    records += [("u", user, encode_list(*lst)) for user, lst in TRICKY_LISTS.items()]
    records += [("s", 'q"u\\o', encode_list(["Q", "R"], [2.5, 1.0], ["similar", "model"]))]
    publish_version(r, ks, VERSION, [records], metadata={})
    readers = []

    def reader():
        if request.param == "blocking":
            return LookupClient(r, ks)
        readers.append(AsyncLookupClient(connect_async(redis_server), ks))
        return readers[-1]

    with TestClient(create_app(reader())) as fast, TestClient(create_app(reader(), fast_lookups=False)) as full:
        yield fast, full
        for client, reader_ in zip((fast, full), readers):
            client.portal.call(reader_.aclose)


def _route(app, path: str):
    return next(route for route in app.router.routes if getattr(route, "path", None) == path)


ANSWERED_FAST = [
    "/v1/users/u1/recommendations", "/v1/users/u1/recommendations?k=2", "/v1/users/u1/recommendations?k=100",
    "/v1/users/u1/recommendations?k=007", "/v1/users/u2/recommendations", "/v1/users/u3/recommendations?k=10",
    "/v1/users/nobody/recommendations", "/v1/users/nobody/recommendations?segment=Germany&k=1",
    "/v1/users/nobody/recommendations?segment=Atlantis", "/v1/users/nobody/recommendations?k=3&other=x&other=y",
    "/v1/users/%C3%BC%20%22quoted%22%20%5C%20id%20%E2%9C%93/recommendations",
    "/v1/users/u1/recommendations?segment=G%C3%BCtersloh%20%2B%20Umland",
    "/v1/users/" + "x" * 256 + "/recommendations",
    "/v1/items/A/similar", "/v1/items/A/similar?k=1", "/v1/items/ZZZ/similar",
    "/v1/items/q%22u%5Co/similar?segment=ignored",
]


@pytest.mark.parametrize("path", ANSWERED_FAST)
def test_the_fast_path_answers_byte_for_byte_what_fastapi_answers(fast_and_full, path):
    fast, full = fast_and_full
    route = _route(fast.app, "/v1/items/{item_id}/similar" if path.startswith("/v1/items/") else USERS_ROUTE)
    calls = []
    full_app, route.app = route.app, lambda *a: calls.append(a) or full_app(*a)
    try:
        got, want = fast.get(path), full.get(path)
    finally:
        route.app = full_app
    assert calls == [], "FastAPI's route answered a plain lookup: the fast path did not"
    assert (got.status_code, got.content) == (want.status_code, want.content)
    assert {k: got.headers[k] for k in ("content-type", "content-length")} == \
        {k: want.headers[k] for k in ("content-type", "content-length")}


NOT_PLAIN = [  # FastAPI answers these itself, with its own 422 bodies (or whatever it makes of them)
    "/v1/users/u1/recommendations?k=0", "/v1/users/u1/recommendations?k=101", "/v1/users/u1/recommendations?k=-1",
    "/v1/users/u1/recommendations?k=ten", "/v1/users/u1/recommendations?k=2.5", "/v1/users/u1/recommendations?k=",
    "/v1/users/u1/recommendations?k=%205", "/v1/users/u1/recommendations?k=+5", "/v1/users/u1/recommendations?k=1_0",
    "/v1/users/u1/recommendations?k=%D9%A3", "/v1/users/u1/recommendations?k=3&k=4",
    "/v1/users/u1/recommendations?k=99999999999999999999", "/v1/users/u1/recommendations?segment=",
    "/v1/users/u1/recommendations?segment=a%09b", "/v1/users/u1/recommendations?segment=a&segment=b",
    "/v1/users/u1/recommendations?segment=" + "s" * 257,
    "/v1/users/" + "x" * 257 + "/recommendations", "/v1/users/a%01b/recommendations",
    "/v1/users/a%7Fb/recommendations", "/v1/items/a%7Fb/similar", "/v1/items/A/similar?k=0",
]


@pytest.mark.parametrize("path", NOT_PLAIN)
def test_what_the_fast_path_does_not_take_gets_fastapis_own_answer(fast_and_full, path):
    fast, full = fast_and_full
    got, want = fast.get(path), full.get(path)
    assert (got.status_code, got.content) == (want.status_code, want.content)


def test_a_422_from_the_fast_path_is_fastapis_body(api):
    res = api.get("/v1/users/u1/recommendations", params={"k": "0"})
    assert res.status_code == 422
    assert res.json() == {"detail": [{"type": "greater_than_equal", "loc": ["query", "k"],
                                      "msg": "Input should be greater than or equal to 1", "input": "0",
                                      "ctx": {"ge": 1}}]}


def test_other_methods_are_not_taken_by_the_fast_path(fast_and_full):
    fast, full = fast_and_full
    for method in ("POST", "HEAD", "PUT"):
        got, want = (client.request(method, "/v1/users/u1/recommendations") for client in (fast, full))
        assert got.status_code == want.status_code == 405
        assert got.headers["allow"] == want.headers["allow"]


def test_the_fast_path_counts_in_the_metrics_under_the_route(api):
    for _ in range(3):
        assert api.get("/v1/items/A/similar").status_code == 200
    assert api.get("/v1/items/ZZZ/similar").status_code == 404
    m = parse_prometheus(api.get("/metrics").text)
    route = "/v1/items/{item_id}/similar"
    assert m[("reco_http_requests_total", frozenset({("route", route), ("method", "GET"), ("status", "200")}))] == 3
    assert m[("reco_http_requests_total", frozenset({("route", route), ("method", "GET"), ("status", "404")}))] == 1
    assert m[("reco_http_request_duration_seconds_count", frozenset({("route", route)}))] == 4


class OneList:
    """A client that knows one list and no item details."""

    def recommendations(self, user_id, k, segment=None):
        from serving.client import Lookup
        return Lookup(["a", "b"][:k], [2.0, 1.0][:k], ["model", "model"][:k], "personal", False, "v1")

    def item_details(self, item_ids, version=None):
        return {}


def test_a_fast_answer_the_client_hung_up_on_still_counts_and_the_error_reaches_the_server():
    import asyncio
    app = create_app(lambda: OneList())
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/v1/users/u1/recommendations", "raw_path": b"/v1/users/u1/recommendations",
             "query_string": b"k=2", "root_path": "", "headers": [], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 2)}
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message["type"])
        if message["type"] == "http.response.body":
            raise ConnectionResetError("client gone")

    with pytest.raises(ConnectionResetError):
        asyncio.run(app(scope, receive, send))
    assert sent == ["http.response.start", "http.response.body"]      # answered on the fast path
    m = parse_prometheus(app.state.metrics.render())
    assert m[("reco_http_requests_total", frozenset({("route", USERS_ROUTE), ("method", "GET"), ("status", "200")}))] == 1


def test_items_json_leaves_what_it_cannot_write_to_the_encoder():
    from serving.app import _DetailsJson, _items_json
    from serving.client import Lookup
    tails = _DetailsJson()
    ok = Lookup(["a"], [1.0], ["model"], "personal", False, "v")
    assert _items_json(ok, {}, tails) == ('[{"item_id":"a","rank":1,"score":1.0,"tag":"model",'
                                          '"title":null,"price":null,"category":null}]')
    for odd in (Lookup([1], [1.0], ["model"], "personal", False, "v"),              # an id JSON writes as a number
                Lookup(["a"], [float("nan")], ["model"], "personal", False, "v"),  # the encoder refuses NaN
                Lookup(["a"], [float("inf")], ["model"], "personal", False, "v")):
        assert _items_json(odd, {}, tails) is None


def test_details_json_is_written_anew_for_new_details():
    from serving.app import _DetailsJson
    tails = _DetailsJson(max_items=2)
    one, other = {"title": "A", "price": 1.0}, {"title": "A", "price": 1}   # equal as dicts, not as JSON
    assert tails.tail("a", one) == '"title":"A","price":1.0,"category":null}'
    assert tails.tail("a", other) == '"title":"A","price":1,"category":null}'
    assert tails.tail("a", None) == '"title":null,"price":null,"category":null}'
    tails.tail("b", one)
    tails.tail("c", one)   # over max_items: forgets everything, answers the same
    assert tails.tail("a", one) == '"title":"A","price":1.0,"category":null}'


def test_latency_buckets_are_cumulative_and_bounds_inclusive():
    from serving.app import LATENCY_BUCKETS, Metrics
    metrics = Metrics()
    for seconds in (0.0005, 0.001, 0.003, 0.001000001, 10.0):
        metrics.observe_request("/r", "GET", 200, seconds)
    m = parse_prometheus(metrics.render())

    def bucket(le):
        return m[("reco_http_request_duration_seconds_bucket", frozenset({("route", "/r"), ("le", le)}))]

    assert [bucket(repr(b)) for b in LATENCY_BUCKETS[:3]] == [2, 3, 4]   # le=0.001 holds 0.001 itself
    assert bucket(repr(LATENCY_BUCKETS[-1])) == 4 and bucket("+Inf") == 5
    assert m[("reco_http_request_duration_seconds_count", frozenset({("route", "/r")}))] == 5
