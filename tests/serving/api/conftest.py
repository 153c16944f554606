"""The service on the test redis-server (tests/serving/conftest.py) holding the tiny store, with
API keys on (every client sends :data:`KEY`, which has the lookup and admin scopes) and demo mode on
(demo ids u0..u2: the tiny store's customers u1 and u2 among them)."""
from __future__ import annotations

import itertools
from typing import Callable, Iterator, Tuple

import pytest
from fastapi.testclient import TestClient

from serving.api.app import create_app
from serving.api.auth import Auth
from serving.api.sampler import DemoIds
from serving.client import AsyncLookupClient, LookupClient
from serving.connection import connect_async
from serving.publish import publish_version
from tests.serving.api.store import VERSION, publish_store, tricky_records


KEY = "test-key-for-lookups-and-metrics"
AUTH = {"Authorization": f"Bearer {KEY}"}
DEMO = DemoIds(count=3, prefix="u", min_width=1)   # u0, u1, u2


def keys(rate: float = 1e9, burst: int = 10**9) -> Auth:
    """The tests' one key (lookup and admin), unlimited unless told."""
    return Auth([("tests", KEY, ["lookup", "admin"], rate, burst)])


def counted_ids() -> Callable[[], str]:
    """Request ids 000...1, 000...2, ...: two apps given one each answer the same requests with the same ids."""
    count = itertools.count(1)
    return lambda: f"{next(count):032x}"


def keyed_app(client, **kw):
    """create_app with the tests' key and demo mode (the fixtures' app)."""
    kw.setdefault("auth", keys())
    kw.setdefault("demo", DEMO)
    return create_app(client, **kw)


@pytest.fixture
def published(r, ks) -> LookupClient:
    publish_store(r, ks)
    return LookupClient(r, ks)


@pytest.fixture(params=["async", "blocking"])
def api(request, published, redis_server, ks) -> Iterator[TestClient]:
    """The service on the asyncio client (what `python -m serving.api` runs) and on the
    blocking one (on the thread pool): every API test runs on both."""
    if request.param == "blocking":
        with TestClient(keyed_app(published), headers=AUTH) as client:
            yield client
        return
    reader = AsyncLookupClient(connect_async(redis_server), ks)
    with TestClient(keyed_app(reader), headers=AUTH) as client:
        yield client
        client.portal.call(reader.aclose)  # its connections belong to the TestClient's event loop


@pytest.fixture(params=["async", "blocking"])
def fast_and_full(request, r, ks, redis_server) -> Iterator[Tuple[TestClient, TestClient]]:
    """The service with its fast path and without it (every request through FastAPI), on one store."""
    publish_version(r, ks, VERSION, [tricky_records()], metadata={})
    readers = []

    def reader():
        if request.param == "blocking":
            return LookupClient(r, ks)
        readers.append(AsyncLookupClient(connect_async(redis_server), ks))
        return readers[-1]

    with TestClient(keyed_app(reader(), request_ids=counted_ids()), headers=AUTH) as fast, \
            TestClient(keyed_app(reader(), fast_lookups=False, request_ids=counted_ids()), headers=AUTH) as full:
        yield fast, full
        for client, reader_ in zip((fast, full), readers):
            client.portal.call(reader_.aclose)
