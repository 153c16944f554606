"""The lookups' fast path (serving.api.fast): the same answers as FastAPI's routes, byte for byte."""
from __future__ import annotations

import pytest

from serving.api.app import create_app
from serving.api.fast import DetailsJson, items_json
from tests.serving.api.store import USERS_ROUTE, parse_prometheus


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
    from serving.client import Lookup
    tails = DetailsJson()
    ok = Lookup(["a"], [1.0], ["model"], "personal", False, "v")
    assert items_json(ok, {}, tails) == ('[{"item_id":"a","rank":1,"score":1.0,"tag":"model",'
                                          '"title":null,"price":null,"category":null}]')
    for odd in (Lookup([1], [1.0], ["model"], "personal", False, "v"),              # an id JSON writes as a number
                Lookup(["a"], [float("nan")], ["model"], "personal", False, "v"),  # the encoder refuses NaN
                Lookup(["a"], [float("inf")], ["model"], "personal", False, "v")):
        assert items_json(odd, {}, tails) is None


def test_details_json_is_written_anew_for_new_details():
    tails = DetailsJson(max_items=2)
    one, other = {"title": "A", "price": 1.0}, {"title": "A", "price": 1}   # equal as dicts, not as JSON
    assert tails.tail("a", one) == '"title":"A","price":1.0,"category":null}'
    assert tails.tail("a", other) == '"title":"A","price":1,"category":null}'
    assert tails.tail("a", None) == '"title":null,"price":null,"category":null}'
    tails.tail("b", one)
    tails.tail("c", one)   # over max_items: forgets everything, answers the same
    assert tails.tail("a", one) == '"title":"A","price":1.0,"category":null}'
