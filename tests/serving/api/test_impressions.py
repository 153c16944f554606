"""Impressions (issue 25, point 1; serving.api.impressions): every list the lookup service answers is
one entry of the impressions stream, under the request id the answer carries, written in the
background (a slow or refusing Redis never holds a lookup back; what cannot be kept is counted)."""
from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Iterator

import pytest
from fastapi.testclient import TestClient

from config.feedback import FeedbackConfig, ImpressionsSection
from serving.api import impressions as impressions_module
from serving.api.impressions import stream_entries
from serving.client import AsyncLookupClient
from serving.connection import connect_async
from tests.serving.api.conftest import AUTH, keyed_app
from tests.serving.api.store import VERSION, parse_prometheus

STREAM = "reco:stream:impressions"
FAST = [True, False]


def feedback(**impressions) -> FeedbackConfig:
    return FeedbackConfig(impressions=ImpressionsSection(**impressions))


@pytest.fixture(params=["async", "blocking"])
def reader(request, published, redis_server, ks):
    """The async client (what `python -m serving.api` runs) and the blocking one (on the thread pool)."""
    if request.param == "blocking":
        return published
    return AsyncLookupClient(connect_async(redis_server), ks)


def served(reader, **kw) -> TestClient:
    return TestClient(keyed_app(reader, **kw), headers=AUTH)


def flush(client: TestClient) -> None:
    client.portal.call(client.app.state.impressions.flush)


def entries(r):
    return stream_entries(r.xrange(STREAM))


def counted(metrics, outcome: str) -> float:
    return metrics[("reco_stream_entries_total", frozenset({("outcome", outcome), ("stream", "impressions")}))]


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.mark.parametrize("fast", FAST, ids=["fast_path", "fastapi"])
def test_each_answered_list_is_one_impression_under_the_answers_request_id(r, reader, fast):
    with served(reader, fast_lookups=fast) as api:
        before = time.time() * 1000
        personal = api.get("/v1/users/u1/recommendations", params={"k": 10})
        fallback = api.get("/v1/users/nobody/recommendations", params={"segment": "Germany", "k": 1})
        similar = api.get("/v1/items/A/similar")
        flush(api)
        after = time.time() * 1000
    answers = [personal, fallback, similar]
    assert [a.status_code for a in answers] == [200, 200, 200]
    ids = [a.json()["request_id"] for a in answers]
    assert [a.headers["x-request-id"] for a in answers] == ids
    assert len(set(ids)) == 3 and all(len(i) == 32 for i in ids)
    got = entries(r)
    assert all(before <= int(e.pop("ts")) <= after for e in got)
    assert got == [
        {"request_id": ids[0], "route": "recommendations", "user_id": "u1", "item_id": "", "segment": "",
         "k": "10", "version": VERSION, "variant": "", "source": "personal", "fallback": "0",
         "items": '[["A",1,"model"],["B",2,"model"],["C",3,"buy_again"]]'},
        {"request_id": ids[1], "route": "recommendations", "user_id": "nobody", "item_id": "", "segment": "Germany",
         "k": "1", "version": VERSION, "variant": "", "source": "segment:Germany", "fallback": "1",
         "items": '[["D",1,"trending"]]'},
        {"request_id": ids[2], "route": "similar", "user_id": "", "item_id": "A", "segment": "", "k": "10",
         "version": VERSION, "variant": "", "source": "similar", "fallback": "0",
         "items": '[["B",1,"model"],["D",2,"model"]]'},
    ]


@pytest.mark.parametrize("fast", FAST, ids=["fast_path", "fastapi"])
def test_no_list_answered_no_impression(r, reader, fast):
    with served(reader, fast_lookups=fast) as api:
        assert api.get("/v1/items/ZZZ/similar").status_code == 404          # no similar list
        assert api.get("/v1/users/u1/recommendations?k=0").status_code == 422
        assert api.get("/v1/items/A").status_code == 200                      # details: not a list
        assert api.get("/v1/users/u1/recommendations", headers={"Authorization": "Bearer nope"}).status_code == 401
        flush(api)
        assert r.exists(STREAM) == 0
        assert api.get("/v1/users/u2/recommendations").status_code == 200    # the control: this one counts
        flush(api)
    assert [e["user_id"] for e in entries(r)] == ["u2"]


def test_written_in_the_background_without_an_explicit_flush(r, reader):
    with served(reader, feedback=feedback(flush_ms=5)) as api:
        rid = api.get("/v1/users/u1/recommendations").json()["request_id"]
        deadline = time.monotonic() + 5
        while r.xlen(STREAM) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [e["request_id"] for e in entries(r)] == [rid]
        metrics = parse_prometheus(api.get("/metrics").text)
    assert counted(metrics, "written") == 1.0


def test_what_is_buffered_at_shutdown_is_written(r, reader):
    with served(reader, feedback=feedback(flush_ms=60_000)) as api:       # the writer waits a minute
        for _ in range(3):
            api.get("/v1/users/u1/recommendations")
        assert r.xlen(STREAM) == 0
    assert r.xlen(STREAM) == 3


def test_off_by_config_no_stream_but_the_answer_still_has_its_request_id(r, reader):
    with served(reader, feedback=feedback(enabled=False)) as api:
        res = api.get("/v1/users/u1/recommendations")
        assert res.json()["request_id"] == res.headers["x-request-id"]
        assert api.app.state.impressions is None
    assert r.exists(STREAM) == 0


def test_the_stream_is_trimmed_to_about_maxlen(r, published):
    with served(published, feedback=feedback(maxlen=10, flush_ms=60_000, batch=1000)) as api:
        for _ in range(500):
            assert api.get("/v1/users/u1/recommendations").status_code == 200
        flush(api)
    # MAXLEN ~ trims whole macro nodes (100 entries by default): near 10, never all 500
    assert 10 <= r.xlen(STREAM) <= 200


@pytest.fixture
def stalled_redis(monkeypatch) -> Iterator[list]:
    """Every stream write hangs (a Redis that never answers); yields the batches it was given."""
    given = []

    async def never(r, key, batch, maxlen):
        given.append(batch)
        await asyncio.sleep(3600)
    monkeypatch.setattr(impressions_module, "xadd_many", never)
    monkeypatch.setattr(impressions_module, "SHUTDOWN_WAIT_S", 0.2)
    yield given


@pytest.mark.parametrize("fast", FAST, ids=["fast_path", "fastapi"])
def test_a_stalled_stream_never_holds_a_lookup_back_and_what_overflows_is_counted(r, reader, stalled_redis, fast):
    section = dict(buffer=3, batch=1, flush_ms=0)
    with served(reader, fast_lookups=fast, feedback=feedback(**section)) as api:
        start = time.monotonic()
        answers = [api.get("/v1/users/u1/recommendations") for _ in range(10)]
        took = time.monotonic() - start
        assert len(stalled_redis) == 1        # the one write under way hangs; the rest wait in the buffer
        metrics = parse_prometheus(api.get("/metrics").text)
    assert [a.status_code for a in answers] == [200] * 10 and took < 5
    # 1 in the hung write, 3 buffered, the other 6 dropped at once
    assert counted(metrics, "dropped_buffer_full") == 6.0
    assert counted(metrics, "written") == 0.0
    # at shutdown the app waits SHUTDOWN_WAIT_S at most, then counts the 4 it could not write
    assert counted(parse_prometheus(api.app.state.metrics.render()), "dropped_redis_error") == 4.0


def test_a_refusing_redis_drops_the_batch_and_counts_it(r, published, ks, closed_port):
    from serving.client import LookupClient
    from serving.connection import connect
    down = LookupClient(connect(f"redis://127.0.0.1:{closed_port}/0", socket_timeout=0.2, retries=0), ks)
    app = keyed_app(published, feedback=feedback(flush_ms=60_000))
    with TestClient(app, headers=AUTH) as api:
        api.get("/v1/users/u1/recommendations")
        api.get("/v1/users/u2/recommendations")
        app.state.impressions.get_client = lambda: down        # the stream's Redis is gone
        assert api.portal.call(app.state.impressions.flush) == 0
        metrics = parse_prometheus(api.get("/metrics").text)
    assert counted(metrics, "dropped_redis_error") == 2.0
    assert r.exists(STREAM) == 0


def test_the_items_field_is_json_with_positions_from_one(r, published):
    with served(published) as api:
        api.get("/v1/users/u2/recommendations")
        flush(api)
    assert json.loads(entries(r)[0]["items"]) == [["C", 1, "model"], ["NODETAIL", 2, "explore"]]
