"""POST /v1/events (issue 25, point 2; serving.api.events): valid events land on the feedback stream
before the answer; bad ones get a 4xx and store nothing."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Iterator

import pytest
from fastapi.testclient import TestClient

from serving.api.app import create_app
from serving.api.auth import Auth
from serving.api.impressions import stream_entries
from serving.client import LookupClient
from serving.keys import KeySpace
from tests.serving.api.store import publish_store

STREAM = "reco:stream:feedback"
EVENTS_KEY = "test-key-for-the-event-intake"
LOOKUP_KEY = "test-key-for-lookups-only-here"
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)


def stamp(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


@pytest.fixture
def api(published, monkeypatch) -> Iterator[TestClient]:
    """The service with keys on: EVENTS_KEY has the events scope (and lookup), LOOKUP_KEY only lookup.
    The events route's clock is NOW."""
    import serving.api.events as events
    monkeypatch.setattr(events, "_now", lambda: NOW.timestamp())
    auth = Auth([("web", EVENTS_KEY, ["events", "lookup"], 1e9, 10**9), ("reader", LOOKUP_KEY, ["lookup"], 1e9, 10**9)])
    with TestClient(create_app(published, auth=auth), headers={"X-API-Key": EVENTS_KEY}) as client:
        yield client


def entries(r):
    return stream_entries(r.xrange(STREAM))


def test_a_click_on_a_recommended_item_is_queued_with_the_lookups_request_id(api, r):
    rid = api.get("/v1/users/u1/recommendations").json()["request_id"]
    at = NOW - timedelta(seconds=3)
    res = api.post("/v1/events", json={"type": "click", "user_id": "u1", "item_id": "B", "request_id": rid,
                                       "time": stamp(at)})
    assert res.status_code == 202, res.text
    event_id = res.json()["event_id"]
    assert len(event_id) == 32
    assert entries(r) == [{"event_id": event_id, "type": "click", "user_id": "u1", "item_id": "B", "request_id": rid,
                           "ts": str(int(at.timestamp() * 1000)), "received_ts": str(int(NOW.timestamp() * 1000)),
                           "quantity": "", "price": ""}]


def test_a_purchase_without_a_recommendation_with_its_own_id_quantity_and_price(api, r):
    res = api.post("/v1/events", json={"type": "purchase", "user_id": "u9", "item_id": "A", "event_id": "web-42",
                                       "quantity": 2, "price": 12.5, "time": "2026-12-07T13:00:00+01:00"})
    assert (res.status_code, res.json()) == (202, {"event_id": "web-42"})
    [entry] = entries(r)
    assert {k: entry[k] for k in ("event_id", "type", "request_id", "quantity", "price", "ts")} == {
        "event_id": "web-42", "type": "purchase", "request_id": "", "quantity": "2", "price": "12.5",
        "ts": str(int(NOW.timestamp() * 1000))}          # 13:00+01:00 is NOW (12:00 UTC)


def test_an_event_without_a_time_takes_the_servers(api, r):
    assert api.post("/v1/events", json={"type": "add_to_cart", "user_id": "u1", "item_id": "C"}).status_code == 202
    assert entries(r)[0]["ts"] == str(int(NOW.timestamp() * 1000))


def test_both_streams_follow_the_lookup_clients_namespace(r, monkeypatch):
    """A service reading namespace shop2 logs into shop2:stream:*, never into the default namespace's
    streams (where another deployment sharing the Redis logs)."""
    import serving.api.events as events
    monkeypatch.setattr(events, "_now", lambda: NOW.timestamp())
    ks = KeySpace("shop2", n_shards=16)
    publish_store(r, ks)
    with TestClient(create_app(LookupClient(r, ks))) as api:
        rid = api.get("/v1/users/u1/recommendations").json()["request_id"]
        assert api.post("/v1/events", json={"type": "click", "user_id": "u1", "item_id": "B",
                                            "request_id": rid}).status_code == 202
        api.portal.call(api.app.state.impressions.flush)
    assert [e["request_id"] for e in stream_entries(r.xrange("shop2:stream:impressions"))] == [rid]
    assert [e["request_id"] for e in stream_entries(r.xrange("shop2:stream:feedback"))] == [rid]
    assert sorted(k.decode() for k in r.keys("*stream*")) == ["shop2:stream:feedback", "shop2:stream:impressions"]


def test_the_events_scope_is_needed(api, r):
    body = {"type": "click", "user_id": "u1", "item_id": "B"}
    assert api.post("/v1/events", json=body, headers={"X-API-Key": LOOKUP_KEY}).status_code == 403
    assert api.post("/v1/events", json=body, headers={"X-API-Key": ""}).status_code == 401
    assert r.exists(STREAM) == 0
    assert api.post("/v1/events", json=body).status_code == 202


GOOD = {"type": "click", "user_id": "u1", "item_id": "B", "time": stamp(NOW)}
BAD = {  # name: (body as bytes, expected status, the field or text the answer must name)
    "unknown type": (json.dumps({**GOOD, "type": "view"}), 422, "type"),
    "missing customer": (json.dumps({k: v for k, v in GOOD.items() if k != "user_id"}), 422, "user_id"),
    "empty customer": (json.dumps({**GOOD, "user_id": ""}), 422, "user_id"),
    "control character in item": (json.dumps({**GOOD, "item_id": "a\u0001b"}), 422, "item_id"),
    "malformed JSON": ('{"type": "click", "user_id": "u1",', 422, "json_invalid"),
    "not an object": (json.dumps([GOOD]), 422, "body"),
    "time far in the future": (json.dumps({**GOOD, "time": stamp(NOW + timedelta(days=2))}), 422, "ahead"),
    "time long ago": (json.dumps({**GOOD, "time": stamp(NOW - timedelta(days=30))}), 422, "old"),
    "time without a zone": (json.dumps({**GOOD, "time": "2026-12-07T12:00:00"}), 422, "time"),
    "unknown field": (json.dumps({**GOOD, "coupon": "FREE"}), 422, "coupon"),
    "negative price": (json.dumps({**GOOD, "type": "purchase", "price": -1}), 422, "price"),
    "zero quantity": (json.dumps({**GOOD, "type": "purchase", "quantity": 0}), 422, "quantity"),
    "request id with spaces": (json.dumps({**GOOD, "request_id": "a b"}), 422, "request_id"),
    "oversized body": (json.dumps({**GOOD, "item_id": "x" * 200, "pad": "p" * 5000}), 413, "larger than 4096"),
    "empty body": ("", 422, "body"),
    "not UTF-8": (b"{\"type\": \"\x80\"}", 400, "parsing the body"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_events_get_a_4xx_and_store_nothing(api, r, name):
    assert api.post("/v1/events", json=GOOD).status_code == 202           # the stream holds one event
    before = r.xrange(STREAM)
    body, status, named = BAD[name]
    res = api.post("/v1/events", content=body if isinstance(body, bytes) else body.encode("utf-8"),
                   headers={"Content-Type": "application/json"})
    assert res.status_code == status, res.text
    assert named in res.text
    assert r.xrange(STREAM) == before


def test_an_oversized_chunked_body_is_refused_without_a_content_length(api, r):
    def chunks():                       # no Content-Length: the body arrives in pieces
        yield b'{"type": "click", "user_id": "u1", "item_id": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'
    res = api.post("/v1/events", content=chunks(), headers={"Content-Type": "application/json"})
    assert res.status_code == 413 and "larger than 4096" in res.text
    assert r.exists(STREAM) == 0


def test_a_chunked_body_within_the_limit_is_taken(api, r):
    def chunks():
        yield b'{"type": "click", "user_id": "u1", '
        yield b'"item_id": "B"}'
    assert api.post("/v1/events", content=chunks(), headers={"Content-Type": "application/json"}).status_code == 202
    assert entries(r)[0]["item_id"] == "B"


def test_redis_down_is_503_so_the_web_app_retries(published, ks, monkeypatch):
    import socket

    from serving.client import LookupClient
    from serving.connection import connect
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = LookupClient(connect(f"redis://127.0.0.1:{s.getsockname()[1]}/0", socket_timeout=0.2, retries=0), ks)
        with TestClient(create_app(down)) as client:
            res = client.post("/v1/events", json={"type": "click", "user_id": "u1", "item_id": "B"})
    assert res.status_code == 503 and res.json()["retry"] is True
