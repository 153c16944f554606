"""A/B variants on the lookup service (serving.api.variants, feedback.experiments): the customer's variant
decides which list answers, is named in the X-Variant header and recorded in the impression, on the fast
path and through FastAPI alike; no customer: control; similar items and days outside the experiment: no variant."""
from __future__ import annotations

from datetime import date
from urllib.parse import quote

import pytest
import redis.asyncio as aredis
from fastapi.testclient import TestClient

from config.experiments import Experiment
from config.feedback import FeedbackConfig
from serving.api.impressions import stream_entries
from serving.client import AsyncLookupClient
from tests.serving.api.conftest import AUTH, keyed_app
from tests.serving.api.store import FALLBACKS, USER_LISTS

# salt0 puts u1 at 0.778 (popular) and u2 at 0.147 (champion); tests/config/test_experiments.py tests the hash
POPULAR_TEST = dict(name="popular-test", salt="salt0", control="champion", start=date(2026, 1, 1),
                    variants=[dict(name="champion", share=0.5, serves="personal"),
                              dict(name="popular", share=0.5, serves="fallback")])


def feedback(**kw) -> FeedbackConfig:
    return FeedbackConfig(experiments=[Experiment.model_validate({**POPULAR_TEST, **kw})])


@pytest.fixture(params=["blocking", "async"])
def reader(request, published, redis_server, ks):
    if request.param == "blocking":
        yield published
        return
    yield AsyncLookupClient(aredis.Redis.from_url(redis_server), ks)


def served(reader, **kw) -> TestClient:
    return TestClient(keyed_app(reader, **kw), headers=AUTH)


def impressions(api: TestClient, r):
    api.portal.call(api.app.state.impressions.flush)
    return {e["request_id"]: e for e in stream_entries(r.xrange("reco:stream:impressions"))}


def items(answer) -> list:
    return [p["item_id"] for p in answer.json()["items"]]


@pytest.mark.parametrize("fast", [True, False], ids=["fast_path", "fastapi"])
def test_the_variant_decides_the_list_and_is_answered_and_recorded(r, reader, fast):
    with served(reader, fast_lookups=fast, feedback=feedback()) as api:
        popular = api.get("/v1/users/u1/recommendations", params={"k": 10})
        again = api.get("/v1/users/u1/recommendations", params={"k": 10})              # sticky
        in_segment = api.get("/v1/users/u1/recommendations", params={"segment": "Germany"})
        champion = api.get("/v1/users/u2/recommendations", params={"k": 10})
        similar = api.get("/v1/items/A/similar")
        logged = impressions(api, r)
    # u1 is in the popular variant: the global list (the segment's when given), never their own
    assert items(popular) == items(again) == FALLBACKS["global"][0] != USER_LISTS["u1"][0]
    assert (popular.json()["source"], popular.json()["fallback"]) == ("global", True)
    assert items(in_segment) == FALLBACKS["segment:Germany"][0]
    # u2 is in control: their own list, as without the experiment
    assert items(champion) == USER_LISTS["u2"][0] and champion.json()["source"] == "personal"
    assert [a.headers.get("x-variant") for a in (popular, again, in_segment, champion, similar)] == \
        ["popular-test:popular"] * 3 + ["popular-test:champion", None]
    assert [(logged[a.json()["request_id"]]["variant"], logged[a.json()["request_id"]]["source"])
            for a in (popular, in_segment, champion, similar)] == [
        ("popular-test:popular", "global"), ("popular-test:popular", "segment:Germany"),
        ("popular-test:champion", "personal"), ("", "similar")]      # similar items: no customer, no variant


def test_a_request_without_a_usable_customer_id_gets_control(r, published):
    # U+2028 passes the route's id pattern but cannot be stored: nobody's id (FastAPI answers it)
    with served(published, feedback=feedback(control="popular")) as api:
        answer = api.get("/v1/users/" + quote("a\u2028b") + "/recommendations")
        logged = impressions(api, r)
    assert answer.status_code == 200 and answer.headers["x-variant"] == "popular-test:popular"
    assert logged[answer.json()["request_id"]]["variant"] == "popular-test:popular"


@pytest.mark.parametrize("fast", [True, False], ids=["fast_path", "fastapi"])
def test_no_experiment_running_no_variant(r, published, fast):
    ended = feedback(start=date(2026, 1, 1), end=date(2026, 1, 2))
    with served(published, fast_lookups=fast, feedback=ended) as api, \
            served(published, fast_lookups=fast) as plain:
        answers = [api.get("/v1/users/u1/recommendations"), plain.get("/v1/users/u1/recommendations")]
        logged = {**impressions(plain, r), **impressions(api, r)}
    for answer in answers:
        assert "x-variant" not in answer.headers and items(answer) == USER_LISTS["u1"][0]
        assert logged[answer.json()["request_id"]]["variant"] == ""


def test_the_header_is_in_the_schema_and_exposed_to_browsers(published):
    with TestClient(keyed_app(published, feedback=feedback(), cors_origins=["https://shop.example.com"]),
                    headers=AUTH) as api:
        schema = api.get("/openapi.json").json()
        answer = api.get("/v1/users/u1/recommendations", headers={"Origin": "https://shop.example.com"})
    headers = schema["paths"]["/v1/users/{user_id}/recommendations"]["get"]["responses"]["200"]["headers"]
    assert "X-Variant" in headers
    assert "x-variant" in answer.headers["access-control-expose-headers"].lower()
