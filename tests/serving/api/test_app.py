"""The HTTP lookup service (serving.api.app) against a real redis-server holding a published version."""
from __future__ import annotations

import logging
import re
import socket
from typing import Iterator, List

import pytest
from fastapi.testclient import TestClient

from serving.api.app import create_app
from serving.api.models import NOTHING_PUBLISHED
from serving.client import AsyncLookupClient, LookupClient
from serving.connection import connect, connect_async
from serving.pipelined import PipelinedGets
from tests.serving.api.conftest import DEMO
from tests.serving.api.store import USERS_ROUTE, VERSION, parse_prometheus, publish_store


def test_startup_objects_are_frozen_out_of_the_gc_while_the_app_runs(published):
    import gc
    assert gc.get_freeze_count() == 0
    with TestClient(create_app(published)) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_freeze_count() > 10_000      # the modules, routes and schemas alive at startup
    assert gc.get_freeze_count() == 0              # stopping the app gives them back


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


@pytest.mark.parametrize("odd", ["a%E2%80%A8b", "a%C2%9Cb", "%C2%A0", "a%E2%80%8Bb"])   # U+2028, U+009C, NBSP, ZWSP
def test_an_id_the_pattern_allows_but_the_store_cannot_hold_is_unknown_never_422(api, odd):
    """The schema's pattern lets these through, so they must not be refused; the store holds
    printable ids only, so nobody has them: answered as an unknown id (issue 27, point 6)."""
    res = api.get(f"/v1/users/{odd}/recommendations", params={"segment": "Germany"})
    assert res.status_code == 200, res.text
    assert (res.json()["source"], res.json()["fallback"]) == ("segment:Germany", True)
    assert api.get(f"/v1/users/nobody/recommendations?segment={odd}").json()["source"] == "global"
    similar = api.get(f"/v1/items/{odd}/similar")
    assert similar.status_code == 404 and similar.json()["detail"].startswith("unknown item")
    assert api.get(f"/v1/items/{odd}").status_code == 404


class Refusing:
    """A client that refuses every request as a bad value (ValueError)."""

    def recommendations(self, user_id, k, segment=None):
        raise ValueError("user_id refused by the client")


def test_a_value_error_from_the_client_is_a_422_shaped_as_the_schema_says():
    with TestClient(create_app(lambda: Refusing())) as api:
        res = api.get("/v1/users/u1/recommendations")
        schema = api.get("/openapi.json").json()
    assert res.status_code == 422
    assert res.json() == {"detail": [{"type": "value_error", "loc": ["request"], "msg": "user_id refused by the client"}]}
    promised = schema["paths"][USERS_ROUTE]["get"]["responses"]["422"]["content"]["application/json"]["schema"]
    assert promised == {"$ref": "#/components/schemas/HTTPValidationError"}
    error = schema["components"]["schemas"]["ValidationError"]
    assert set(error["required"]) <= set(res.json()["detail"][0])


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


# ---------------------------------------------------------------------------- failures


def test_nothing_published_is_503_with_what_to_do(r, ks):
    with TestClient(create_app(LookupClient(r, ks), demo=DEMO)) as api:
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

    app = create_app(factory, demo=DEMO)
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
        with caplog.at_level(logging.ERROR, logger="serving.api"):
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
