"""PipelinedGets against a real redis-server: answers in order under concurrency, and each failure
(refused, lost, silent, wrong password, error reply) as the caller of the redis-py client saw it."""
import asyncio
import time

import pytest
import redis
import redis.asyncio as aredis

from serving.connection import connect_async
from serving.embedded import EmbeddedRedis
from serving.pipelined import PipelinedGets, pack_gets
from tests.serving.conftest import free_port


def _reader(url: str, **kw) -> PipelinedGets:
    return PipelinedGets.for_client(connect_async(url, **kw))


def run(coro):
    return asyncio.run(coro)


def test_pack_gets_is_what_redis_py_sends():
    keys = ["a", "ü:{7}", "reco:v1:u:{12}:x y"]
    assert pack_gets(keys) == b"".join(b"".join(redis.Connection().pack_command("GET", k)) for k in keys)


def test_concurrent_lookups_each_get_their_own_replies(r, redis_server):
    r.mset({f"k{i}": f"value-{i}" for i in range(300)})

    async def lookups():
        g = _reader(redis_server)
        try:
            # 300 lookups of 1..3 keys in flight together on one connection, some keys missing
            asks = [[f"k{i}", f"missing{i}", f"k{(i * 7) % 300}"][: 1 + i % 3] for i in range(300)]
            return asks, await asyncio.gather(*[g.get_many(keys) for keys in asks])
        finally:
            await g.aclose()

    asks, answers = run(lookups())
    assert len(answers) == 300
    for keys, values in zip(asks, answers):
        assert values == [None if k.startswith("missing") else f"value-{k[1:]}".encode() for k in keys]


def test_no_keys_no_round_trip():
    assert run(PipelinedGets(port=free_port()).get_many([])) == []     # nothing listens there: not contacted


def test_a_cancelled_lookup_leaves_the_connection_in_step(r, redis_server):
    r.set("slow", "x" * 2_000_000)          # a large reply: still arriving when the lookup is cancelled
    r.set("small", "s")

    async def lookups():
        g = _reader(redis_server)
        try:
            task = asyncio.ensure_future(g.get_many(["slow"]))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return await g.get_many(["small", "nothing"])
        finally:
            await g.aclose()

    assert run(lookups()) == [b"s", None]


def test_an_error_reply_returns_none_and_the_next_lookup_is_answered(r, redis_server):
    r.rpush("a-list", "x")
    r.set("fine", "1")

    async def lookups():
        g = _reader(redis_server)
        try:
            return await g.get_many(["fine", "a-list"]), await g.get_many(["fine"])
        finally:
            await g.aclose()

    assert run(lookups()) == (None, [b"1"])


def test_password_and_database_from_the_url(tmp_path):
    server = EmbeddedRedis(str(tmp_path / "redis"), free_port(), password="s3cret").start()
    try:
        redis.Redis(port=server.port, password="s3cret", db=2).set("k", "in db 2")

        async def lookup(url):
            g = _reader(url)
            try:
                return await g.get_many(["k"])
            finally:
                await g.aclose()

        assert run(lookup(f"redis://:s3cret@127.0.0.1:{server.port}/2")) == [b"in db 2"]
        assert run(lookup(f"redis://:s3cret@127.0.0.1:{server.port}/0")) == [None]
        with pytest.raises(redis.AuthenticationError, match=f"127.0.0.1:{server.port} refused the credentials"):
            run(lookup(f"redis://:wrong@127.0.0.1:{server.port}/2"))
        with pytest.raises(redis.ConnectionError):       # AuthenticationError is one: the service's 503
            run(lookup(f"redis://127.0.0.1:{server.port}/2"))
    finally:
        server.stop(save=False)


def test_redis_down_is_a_connection_error_at_once_naming_the_server():
    port = free_port()

    async def lookup():
        g = _reader(f"redis://127.0.0.1:{port}/0", socket_timeout=5.0)
        try:
            t0 = time.perf_counter()
            with pytest.raises(redis.ConnectionError, match=f"cannot connect to Redis at 127.0.0.1:{port}"):
                await g.get_many(["k"])
            return time.perf_counter() - t0
        finally:
            await g.aclose()

    assert run(lookup()) < 2.0


def test_a_lost_connection_is_retried_once_and_a_stopped_server_fails_until_it_is_back(spare_server):
    spare_server.start()
    plain = redis.Redis(port=spare_server.port)
    plain.set("k", "v")

    async def lookups():
        g = _reader(spare_server.url)
        try:
            assert await g.get_many(["k"]) == [b"v"]
            plain.client_kill_filter(_type="normal", skipme=True)   # the server drops the idle connection
            await asyncio.sleep(0.1)
            assert await g.get_many(["k"]) == [b"v"]               # sent again on a new connection
            spare_server.stop(save=True)
            with pytest.raises(redis.ConnectionError, match=f"127.0.0.1:{spare_server.port}"):
                await g.get_many(["k"])
            spare_server.start()
            return await g.get_many(["k"])                         # back: the next lookup reconnects
        finally:
            await g.aclose()

    assert run(lookups()) == [b"v"]


def test_a_server_that_does_not_answer_times_out_every_waiting_lookup():
    async def lookups():
        async def silent(reader, writer):                          # accepts, reads, never replies
            await reader.read(1 << 20)
            await asyncio.sleep(10)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        g = _reader(f"redis://127.0.0.1:{port}/0", socket_timeout=0.3)
        try:
            t0 = time.perf_counter()
            results = await asyncio.gather(*[g.get_many([f"k{i}"]) for i in range(5)], return_exceptions=True)
            return results, time.perf_counter() - t0
        finally:
            await g.aclose()
            server.close()

    results, took = run(lookups())
    assert all(isinstance(e, redis.TimeoutError) for e in results), results
    assert "did not answer within 0.3 s" in str(results[0])
    assert 0.3 <= took < 1.5


async def _silent_server():
    """A TCP server on 127.0.0.1 that accepts, reads and never answers: (server, port)."""
    async def silent(reader, writer):
        await reader.read(1 << 20)
        await asyncio.sleep(10)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("url,command", [("redis://:s3cret@127.0.0.1:{port}/0", "AUTH"),
                                         ("redis://127.0.0.1:{port}/2", "SELECT")])
def test_a_stalled_auth_or_select_is_a_redis_timeout_naming_the_server(url, command):
    async def lookup():
        server, port = await _silent_server()
        g = _reader(url.format(port=port), socket_timeout=0.3)
        try:
            t0 = time.perf_counter()
            with pytest.raises(redis.TimeoutError) as err:   # the service's 503, as every redis.TimeoutError
                await g.get_many(["k"])
            return port, err.value, time.perf_counter() - t0
        finally:
            await g.aclose()
            server.close()

    port, error, took = run(lookup())
    assert f"Redis at 127.0.0.1:{port} did not answer {command} within 0.3 s" in str(error)
    assert 0.3 <= took < 1.5


@pytest.mark.parametrize("client", [
    lambda url: aredis.Redis.from_url(url.replace("redis://", "rediss://")),      # TLS: redis-py's own
    lambda url: aredis.Redis(unix_socket_path="/tmp/redis.sock"),
    lambda url: aredis.Redis.from_url(url, protocol=3),
    lambda url: object(),
])
def test_clients_it_cannot_stand_in_for_keep_redis_py(client, redis_server):
    assert PipelinedGets.for_client(client(redis_server)) is None


def test_the_url_becomes_the_readers_server():
    g = PipelinedGets.for_client(connect_async("redis://user:pw@10.1.2.3:6400/5", socket_timeout=0.7))
    assert (g.host, g.port, g.db, g.username, g.password, g.timeout) == ("10.1.2.3", 6400, 5, "user", "pw", 0.7)
