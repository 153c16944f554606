"""Publishing and reading on a real Redis Cluster of three masters, started here (issue 28 point 3).

Three ``redis-server --cluster-enabled yes`` on free ports, joined by ``redis-cli --cluster create``
(no replicas), so the 16384 hash slots are split three ways and a version's keys land on every node.
A multi-key command (MSETNX, MGET, UNLINK, a transaction) whose keys span two slots is refused by
the server (CROSSSLOT), so every step below passing says each path keeps to one slot per command.

The lookups go through the service as ``reco serve`` builds it: the app given a factory of an
:class:`serving.client.AsyncLookupClient` on :func:`serving.connection.connect_async` (see
:mod:`serving.api.clients`), the url and the cluster flag from ``redis:`` settings, with the feedback
streams on: every list answered is logged as an impression and the events route takes a click, both
written to the cluster and read back (serving/api/streams.py).

A cluster whose nodes are down: the service answers 503 (both paths, the events route, /healthz) and
a publish whose cluster went away fails with the project's PublishError naming the url, not redis-py's
RedisClusterException (no RedisError) as a 500 or a traceback.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
import redis
from fastapi.testclient import TestClient

from config.storage import RedisConfig
from core.errors import RecoError
from serving.api.app import create_app
from serving.api.impressions import stream_entries
from serving.api.models import UNAVAILABLE
from serving.client import AsyncLookupClient, LookupClient
from serving.codec import encode_item, encode_list
from serving.connection import connect, connect_async, describe, ping_or_raise
from serving.keys import KeySpace
from serving.publish import PublishError, list_versions, publish_version, rollback
from serving.publish_lock import PublishLock
from serving.versions import current_version
from tests.conftest import free_port
from tests.serving.records import chunks, expected

N_USERS, N_ITEMS = 60, 20
META = {"model_version": "7", "run_id": "run-c", "run_date": "2026-12-01"}


def _redis_server() -> str:
    for exe in ("/usr/bin/redis-server", shutil.which("redis-server")):
        if exe and Path(exe).exists():
            return exe
    pytest.fail("no redis-server (Debian's 7.x: apt-get install redis-server) at /usr/bin or on PATH")


def _redis_cli() -> str:
    exe = shutil.which("redis-cli") or "/usr/bin/redis-cli"
    if not Path(exe).exists():
        pytest.fail("no redis-cli (it comes with Debian's redis-tools / redis-server)")
    return exe


def _free(port: int) -> bool:
    if port > 65535:
        return False
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_until(check, what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout_s:.0f} s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Dict[str, object]]:
    """A three-master cluster on free ports: {"ports": [...], "url": "redis+cluster://127.0.0.1:P1"}."""
    exe, cli = _redis_server(), _redis_cli()
    ports: List[int] = []
    while len(ports) < 3:
        port = free_port()
        if port not in ports and _free(port + 10000):     # a node also listens on port + 10000 (its cluster bus)
            ports.append(port)
    procs = []
    try:
        for port in ports:
            d = tmp_path_factory.mktemp(f"cluster-{port}")
            procs.append(subprocess.Popen(
                [exe, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", str(d / "nodes.conf"), "--cluster-node-timeout", "5000",
                 "--appendonly", "no", "--save", "", "--dir", str(d)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        for port, proc in zip(ports, procs):
            def up(port=port, proc=proc) -> bool:
                if proc.poll() is not None:
                    out = proc.stdout.read().decode(errors="replace")
                    if "cluster-enabled" in out or "Bad directive" in out:
                        pytest.skip(f"{exe} has no Redis Cluster support: {out.strip()[-300:]}")
                    pytest.fail(f"redis-server on port {port} exited: {out[-2000:]}")
                try:
                    return redis.Redis(port=port, socket_timeout=1).ping()
                except redis.ConnectionError:
                    return False
            _wait_until(up, f"redis-server on port {port} did not answer")
        created = subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                                  "--cluster-replicas", "0", "--cluster-yes"],
                                 capture_output=True, text=True, timeout=60)
        assert created.returncode == 0, created.stdout + created.stderr

        def ok() -> bool:
            return all(redis.Redis(port=p).cluster("info").get("cluster_state") == "ok" for p in ports)
        _wait_until(ok, "the cluster did not reach cluster_state:ok on every node")
        yield {"ports": ports, "url": f"redis+cluster://127.0.0.1:{ports[0]}"}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def r(cluster) -> Iterator[redis.RedisCluster]:
    """The publisher's client from ``redis:`` settings (``redis.cluster: true``), every node flushed."""
    cfg = RedisConfig(url=f"redis://127.0.0.1:{cluster['ports'][1]}/0", cluster=True)
    client = connect(cfg.url, **cfg.client_options("publisher", {}))
    for node in client.get_primaries():
        node.redis_connection.flushall()
    yield client
    client.close()


@pytest.fixture
def ks() -> KeySpace:
    return KeySpace("reco", n_shards=32)


def keys_per_node(r: redis.RedisCluster, pattern: str) -> Dict[str, int]:
    return {node.name: sum(1 for _ in node.redis_connection.scan_iter(match=pattern, count=1000))
            for node in r.get_primaries()}


def version_keys(r: redis.RedisCluster, ks: KeySpace, version: str) -> int:
    return sum(keys_per_node(r, ks.version_pattern(version)).values())


def patch_records():
    """u1's list and a new item changed since v1; the fallbacks published again, as the hourly job does."""
    return [[("u", "u1", encode_list(["i-new", "i1"], [0.9, 0.8], ["explore", "model"])),
             ("i", "i-new", encode_item({"title": "New lamp", "price": 20.0, "category": "decor"})),
             ("f", "global", encode_list(["p1-g0", "p1-g1"], [1.0, 0.9], ["popular", "popular"]))]]


def test_the_url_and_the_setting_both_give_a_cluster_client(cluster):
    by_url = connect(cluster["url"], socket_timeout=1.0)
    assert isinstance(by_url, redis.RedisCluster) and len(by_url.get_primaries()) == 3
    ping_or_raise(by_url, cluster["url"])
    assert describe(by_url) == cluster["url"]
    assert isinstance(connect_async(cluster["url"]), redis.asyncio.RedisCluster)
    by_url.close()


def test_publish_lookup_patch_rollback_prune_on_a_three_master_cluster(cluster, r, ks):
    answered: List[str] = []        # the request id of every list answered: one impression each, in order

    def app_get(api: TestClient, path: str, **params) -> dict:
        got = api.get(path, params=params)
        assert got.status_code == 200, got.text
        if "request_id" in got.json():
            answered.append(got.json()["request_id"])
        return got.json()

    # the service as `reco serve` builds it: a factory of the async client on the reader's settings
    reader_cfg = RedisConfig(url=cluster["url"])            # here the url says cluster
    readers: List[AsyncLookupClient] = []

    def build() -> AsyncLookupClient:
        readers.append(AsyncLookupClient(connect_async(reader_cfg.url, socket_timeout=2.0,
                                                       **reader_cfg.client_options("reader", {})), ks))
        return readers[-1]

    with TestClient(create_app(build)) as api:
        # 1. a full version: loaded over all three nodes, then switched to
        v1 = publish_version(r, ks, "v1", chunks("v1", N_USERS, N_ITEMS), META, expected=expected(N_USERS, N_ITEMS),
                             keep=2)
        assert (v1.keys_written, v1.skipped) == (N_USERS + 2 * N_ITEMS + 2, False)
        spread = keys_per_node(r, ks.version_pattern("v1"))
        assert sum(spread.values()) == N_USERS + 2 * N_ITEMS + 2 + 1 and all(spread.values()), spread
        body = app_get(api, "/v1/users/u3/recommendations", k=3)
        assert (body["version"], body["source"], [p["item_id"] for p in body["items"]]) == \
            ("v1", "personal", ["v1-u3-i0", "v1-u3-i1", "v1-u3-i2"])
        fallback = app_get(api, "/v1/users/nobody/recommendations", k=2, segment="DE")
        assert (fallback["source"], [p["item_id"] for p in fallback["items"]]) == \
            ("segment:DE", ["v1-DE-i0", "v1-DE-i1"])
        item = app_get(api, "/v1/items/i4")
        assert (item["title"], item["version"]) == ("item 4 (v1)", "v1")
        # the blocking client (jobs, the CLI) answers the same, item details of every slot in one call
        blocking = LookupClient(r, ks)
        assert blocking.recommendations("u3", 3).items == ["v1-u3-i0", "v1-u3-i1", "v1-u3-i2"]
        details = blocking.item_details([f"i{n}" for n in range(N_ITEMS)] + ["unknown"])
        assert list(details) == [f"i{n}" for n in range(N_ITEMS)] and details["i7"]["title"] == "item 7 (v1)"
        assert [i for i in blocking.similar("i2", 2).items] == ["v1-s2-i0", "v1-s2-i1"]

        # 2. a patch over v1: u1 and the new item from the patch, everyone else from v1
        publish_version(r, ks, "p1", patch_records(), META, base="v1", keep=2)
        patched = app_get(api, "/v1/users/u1/recommendations", k=5)
        assert (patched["version"], [(p["item_id"], p["title"]) for p in patched["items"]]) == \
            ("p1", [("i-new", "New lamp"), ("i1", "item 1 (v1)")])
        other = app_get(api, "/v1/users/u7/recommendations", k=1)
        assert (other["version"], other["items"][0]["item_id"]) == ("p1", "v1-u7-i0")
        assert [p["item_id"] for p in app_get(api, "/v1/users/nobody/recommendations", k=2)["items"]] == \
            ["p1-g0", "p1-g1"]
        assert app_get(api, "/v1/items/i-new")["title"] == "New lamp"

        # 3. a second full version: readers move to it; keep=2 keeps p1 and, as its base, v1
        v2 = publish_version(r, ks, "v2", chunks("v2", N_USERS, N_ITEMS), META, expected=expected(N_USERS, N_ITEMS),
                             keep=2)
        assert (v2.previous_version, v2.deleted_versions) == ("p1", [])
        assert app_get(api, "/v1/users/u1/recommendations", k=1)["items"][0]["item_id"] == "v2-u1-i0"
        assert [v["version"] for v in list_versions(r, ks)] == ["v2", "p1", "v1"]

        # 4. rollback: back on the patch, which still reads its base
        assert rollback(r, ks) == ("v2", "p1")
        back = app_get(api, "/v1/users/u1/recommendations", k=1)
        assert (back["version"], back["items"][0]["item_id"]) == ("p1", "i-new")
        assert app_get(api, "/v1/users/u7/recommendations", k=1)["items"][0]["item_id"] == "v1-u7-i0"

        # 5. prune: the next publish (keep=2) deletes the rolled-back v2 from every node, keeps p1 and v1
        v3 = publish_version(r, ks, "v3", chunks("v3", N_USERS, N_ITEMS), META, expected=expected(N_USERS, N_ITEMS),
                             keep=2)
        assert sorted(v3.deleted_versions) == ["v2"]
        assert version_keys(r, ks, "v2") == 0 and version_keys(r, ks, "v1") > 0 and version_keys(r, ks, "p1") > 0
        assert app_get(api, "/v1/users/u3/recommendations", k=1)["items"][0]["item_id"] == "v3-u3-i0"
        # ... and once nothing kept sits on them, p1 and v1 go too (keep=1)
        v4 = publish_version(r, ks, "v4", chunks("v4", N_USERS, N_ITEMS), META, expected=expected(N_USERS, N_ITEMS),
                             keep=1)
        assert sorted(v4.deleted_versions) == ["p1", "v1", "v3"]
        assert [version_keys(r, ks, v) for v in ("v1", "p1", "v2", "v3")] == [0, 0, 0, 0]
        assert current_version(r, ks) == "v4"
        assert app_get(api, "/v1/users/u3/recommendations", k=1)["items"][0]["item_id"] == "v4-u3-i0"
        # republishing v4 with the same content is a no-op, as on one server
        assert publish_version(r, ks, "v4", chunks("v4", N_USERS, N_ITEMS), META, keep=1).skipped

        # 6. the feedback streams on the cluster: a click on the last list answered, then every impression
        event = api.post("/v1/events", json={"type": "click", "user_id": "u3", "item_id": "v4-u3-i0",
                                             "request_id": answered[-1]})
        assert event.status_code == 202, event.text
        api.portal.call(api.app.state.impressions.flush)
        for reader in readers:
            api.portal.call(reader.aclose)
    assert len(readers) == 1          # the factory ran once, on the first request
    impressions = stream_entries(r.xrange(ks.stream("impressions")))
    assert len(answered) == 10 and [e["request_id"] for e in impressions] == answered
    assert [(e["route"], e["user_id"], e["version"]) for e in impressions[-2:]] == \
        [("recommendations", "u3", "v3"), ("recommendations", "u3", "v4")]
    [click] = stream_entries(r.xrange(ks.stream("feedback")))
    assert (click["event_id"], click["type"], click["item_id"], click["request_id"]) == \
        (event.json()["event_id"], "click", "v4-u3-i0", answered[-1])


def test_the_blocking_client_writes_the_streams_on_a_cluster_too(r, ks):
    """The app given a blocking LookupClient on the cluster (its pipeline runs on the thread pool)."""
    publish_version(r, ks, "v1", chunks("v1", N_USERS, N_ITEMS), META, expected=expected(N_USERS, N_ITEMS))
    with TestClient(create_app(LookupClient(r, ks))) as api:
        rids = [api.get(path).json()["request_id"] for path in
                ("/v1/users/u5/recommendations", "/v1/items/i2/similar")]
        assert api.post("/v1/events", json={"type": "add_to_cart", "user_id": "u5", "item_id": "v1-u5-i0",
                                            "request_id": rids[0]}).status_code == 202
        api.portal.call(api.app.state.impressions.flush)
    assert [(e["request_id"], e["route"]) for e in stream_entries(r.xrange(ks.stream("impressions")))] == \
        [(rids[0], "recommendations"), (rids[1], "similar")]
    assert [(e["type"], e["request_id"]) for e in stream_entries(r.xrange(ks.stream("feedback")))] == \
        [("add_to_cart", rids[0])]


def test_the_publish_lock_and_its_heartbeat_work_on_a_cluster(r, ks):
    lock = PublishLock(r, ks, "test", ttl=0.3)
    with lock:
        time.sleep(0.5)               # past the ttl: only the heartbeat (on the same cluster client) kept it
        assert lock.lost is None and r.get(ks.publish_lock) == lock.value.encode()
        lock.refresh()
    assert r.get(ks.publish_lock) is None


def _down_url(password: str = "") -> str:
    """A cluster url naming a node that is not there (a free port), with a password to be kept out of messages."""
    return f"redis+cluster://{':' + password + '@' if password else ''}127.0.0.1:{free_port()}"


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "fastapi"])
def test_a_cluster_that_is_down_answers_503_like_one_unreachable_server(ks, fast):
    url = _down_url("pw-in-the-url-1234")
    readers: List[AsyncLookupClient] = []

    def build() -> AsyncLookupClient:
        readers.append(AsyncLookupClient(connect_async(url, socket_timeout=0.5, retries=0), ks))
        return readers[-1]

    with TestClient(create_app(build, fast_lookups=fast), raise_server_exceptions=False) as api:
        for path in ("/v1/users/u1/recommendations", "/v1/items/i1/similar", "/v1/items/i1"):
            got = api.get(path)
            assert (got.status_code, got.headers.get("retry-after"), got.json()["retry"]) == (503, "1", True), got.text
            assert got.json()["detail"].startswith(f"{UNAVAILABLE}: Redis Cluster cannot be connected")
            assert "pw-in-the-url" not in got.text
        event = api.post("/v1/events", json={"type": "click", "user_id": "u1", "item_id": "i1"})
        assert (event.status_code, event.json()["retry"]) == (503, True), event.text
        health = api.get("/healthz")
        assert (health.status_code, health.json()["status"], health.json()["redis"]) == (503, "unavailable", "down")
        metrics = api.get("/metrics").text
        assert "reco_redis_errors_total 5.0" in metrics      # each of the five answers above counted once
        for reader in readers:
            api.portal.call(reader.aclose)


@pytest.fixture
def one_node_cluster(tmp_path) -> Iterator[Dict[str, object]]:
    """A cluster of one master holding every slot (CLUSTER ADDSLOTSRANGE), with a password; stopped by the test."""
    port, password = free_port(), "cluster-pw-5e1d"
    while not _free(port + 10000):        # its cluster bus port too
        port = free_port()
    proc = subprocess.Popen(
        [_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
         "--cluster-config-file", str(tmp_path / "nodes.conf"), "--requirepass", password,
         "--appendonly", "no", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    admin = redis.Redis(port=port, password=password, socket_timeout=1)
    try:
        def up() -> bool:
            assert proc.poll() is None, f"redis-server on port {port} exited ({proc.returncode})"
            try:
                return admin.ping()
            except redis.ConnectionError:
                return False
        _wait_until(up, f"redis-server on port {port} did not answer")
        admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        _wait_until(lambda: admin.cluster("info").get("cluster_state") == "ok", "cluster_state:ok")
        yield {"proc": proc, "port": port, "password": password,
               "url": f"redis+cluster://:{password}@127.0.0.1:{port}"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_publish_whose_cluster_went_down_is_a_publish_error_naming_the_url(one_node_cluster, ks):
    r = connect(one_node_cluster["url"], socket_timeout=1.0, retries=0)     # reads the slot map: the node is up
    assert r.set(ks.current, "v0")
    one_node_cluster["proc"].terminate()
    one_node_cluster["proc"].wait(timeout=10)
    with pytest.raises(PublishError) as err:
        publish_version(r, ks, "v1", chunks("v1", N_USERS, N_ITEMS), META)
    msg = str(err.value)
    assert isinstance(err.value, RecoError) and one_node_cluster["password"] not in msg
    assert msg.startswith(f"publish of version v1 to redis+cluster://127.0.0.1:{one_node_cluster['port']} failed "
                          "after 0 of its keys were written: the Redis Cluster at redis+cluster://127.0.0.1:"
                          f"{one_node_cluster['port']} could not be reached"), msg
    assert "RedisClusterException: Redis Cluster cannot be connected" in msg
    assert msg.endswith("Readers are still on version (none): reco:current was not touched. Check that the "
                        "cluster's nodes are up (`redis-cli -h HOST -p PORT cluster info` on each says "
                        "cluster_state:ok) and that redis.url names one of them and rerun: publishing is "
                        "idempotent and deletes the partial version first"), msg
