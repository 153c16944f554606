"""The service on the test redis-server (tests/serving/conftest.py) holding the tiny store."""
from __future__ import annotations

from typing import Iterator, Tuple

import pytest
from fastapi.testclient import TestClient

from serving.api.app import create_app
from serving.client import AsyncLookupClient, LookupClient, connect_async
from serving.publish import publish_version
from tests.serving.api.store import VERSION, publish_store, tricky_records


@pytest.fixture
def published(r, ks) -> LookupClient:
    publish_store(r, ks)
    return LookupClient(r, ks)


@pytest.fixture(params=["async", "blocking"])
def api(request, published, redis_server, ks) -> Iterator[TestClient]:
    """The service on the asyncio client (what `python -m serving.api` runs) and on the
    blocking one (on the thread pool): every API test runs on both."""
    if request.param == "blocking":
        with TestClient(create_app(published)) as client:
            yield client
        return
    reader = AsyncLookupClient(connect_async(redis_server), ks)
    with TestClient(create_app(reader)) as client:
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

    with TestClient(create_app(reader())) as fast, TestClient(create_app(reader(), fast_lookups=False)) as full:
        yield fast, full
        for client, reader_ in zip((fast, full), readers):
            client.portal.call(reader_.aclose)
