"""API keys, scopes, the rate limit and CORS (serving.api.auth), on the fast path and through FastAPI."""
from __future__ import annotations

import asyncio
import hashlib
import hmac

import pytest
from fastapi.testclient import TestClient

from config import load_config
from config.serving import AuthSection
from core.errors import ConfigError
from serving.api.app import create_app
from serving.api.auth import Auth, check_exposure
from serving.api.main import configured_app
from tests.serving.api.conftest import DEMO, KEY
from tests.serving.api.store import USERS_ROUTE, VERSION, parse_prometheus

LOOKUP_KEY, ADMIN_KEY = "lookup-key-0123456789abcdef", "admin-key-0123456789abcdef"
PROTECTED = ["/v1/users/u1/recommendations", "/v1/items/A/similar", "/v1/items/A", "/v1/demo/users", "/metrics",
             "/no/such/path"]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def two_keys(clock=None, rate=1e9, burst=10**9) -> Auth:
    keys = [("lookup", LOOKUP_KEY, ["lookup"], rate, burst), ("admin", ADMIN_KEY, ["admin"], rate, burst)]
    return Auth(keys, clock) if clock else Auth(keys)


@pytest.fixture(params=[True, False], ids=["fast", "full"])
def app(request, published):
    """The service with two keys, with the fast path and without it."""
    with TestClient(create_app(published, auth=two_keys(), demo=DEMO, fast_lookups=request.param)) as client:
        yield client


@pytest.mark.parametrize("path", PROTECTED)
def test_no_key_is_401_with_www_authenticate(app, path):
    res = app.get(path)
    assert res.status_code == 401, res.text
    assert res.headers["www-authenticate"] == 'Bearer realm="reco"'
    assert res.json()["detail"].startswith("an API key is needed")


@pytest.mark.parametrize("headers", [{"Authorization": "Bearer not-a-key-at-all-0000"},
                                     {"X-API-Key": LOOKUP_KEY + "x"}, {"Authorization": f"Bearer {LOOKUP_KEY[:-1]}"}])
def test_an_unknown_key_is_401(app, headers):
    res = app.get("/v1/users/u1/recommendations", headers=headers)
    assert res.status_code == 401
    assert res.headers["www-authenticate"] == 'Bearer realm="reco", error="invalid_token"'


def test_a_key_in_another_scheme_is_not_taken(app):
    assert app.get("/v1/items/A", headers={"Authorization": f"Basic {LOOKUP_KEY}"}).status_code == 401


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {LOOKUP_KEY}"}, {"X-API-Key": LOOKUP_KEY},
                                     {"authorization": f"bearer  {LOOKUP_KEY} "}])
def test_a_lookup_key_reads_the_lists(app, headers):
    res = app.get("/v1/users/u1/recommendations", headers=headers)
    assert res.status_code == 200 and res.json()["version"] == VERSION
    assert app.get("/v1/items/A/similar", headers=headers).status_code == 200
    assert app.get("/v1/demo/users", headers=headers).status_code == 200


def test_the_wrong_scope_is_403(app):
    res = app.get("/metrics", headers={"X-API-Key": LOOKUP_KEY})
    assert res.status_code == 403
    assert res.headers["www-authenticate"] == 'Bearer realm="reco", error="insufficient_scope", scope="admin"'
    assert "lacks the scope 'admin'" in res.json()["detail"]
    for path in ("/v1/users/u1/recommendations", "/v1/items/A/similar", "/v1/items/A"):
        assert app.get(path, headers={"X-API-Key": ADMIN_KEY}).status_code == 403, path
    assert app.get("/metrics", headers={"X-API-Key": ADMIN_KEY}).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/openapi.json", "/", "/static/app.js"])
def test_health_the_schema_and_the_demo_page_stay_open(app, path):
    assert app.get(path).status_code == 200


def test_the_fast_path_refuses_without_a_key_itself_and_counts_it(published):
    with TestClient(create_app(published, auth=two_keys())) as api:
        route = next(r for r in api.app.router.routes if getattr(r, "path", None) == USERS_ROUTE)
        calls = []
        full_app, route.app = route.app, lambda *a: calls.append(a) or full_app(*a)
        try:
            refused = api.get("/v1/users/u1/recommendations")
            answered = api.get("/v1/users/u1/recommendations", headers={"X-API-Key": LOOKUP_KEY})
        finally:
            route.app = full_app
        m = parse_prometheus(api.get("/metrics", headers={"X-API-Key": ADMIN_KEY}).text)
    assert calls == [], "FastAPI's route answered: the fast path did not"
    assert (refused.status_code, answered.status_code) == (401, 200)
    assert m[("reco_http_requests_total", frozenset({("route", USERS_ROUTE), ("method", "GET"), ("status", "401")}))] == 1


def test_a_refusal_through_fastapi_is_counted_under_its_route(published):
    with TestClient(create_app(published, auth=two_keys(), fast_lookups=False)) as api:
        assert api.get("/v1/items/A").status_code == 401
        assert api.get("/metrics", headers={"X-API-Key": LOOKUP_KEY}).status_code == 403
        m = parse_prometheus(api.get("/metrics", headers={"X-API-Key": ADMIN_KEY}).text)
    assert m[("reco_http_requests_total", frozenset({("route", "/v1/items/{item_id}"), ("method", "GET"),
                                                     ("status", "401")}))] == 1
    assert m[("reco_http_requests_total", frozenset({("route", "/metrics"), ("method", "GET"), ("status", "403")}))] == 1


@pytest.mark.parametrize("fast", [True, False])
def test_over_its_rate_a_key_gets_429_with_retry_after(published, fast):
    clock = Clock()
    auth = two_keys(clock, rate=0.5, burst=2)      # 2 at once, then one every 2 s
    with TestClient(create_app(published, auth=auth, fast_lookups=fast), headers={"X-API-Key": LOOKUP_KEY}) as api:
        assert [api.get("/v1/users/u1/recommendations").status_code for _ in range(2)] == [200, 200]
        res = api.get("/v1/users/u1/recommendations")
        assert res.status_code == 429 and res.headers["retry-after"] == "2"
        assert res.json()["retry"] is True
        # the other key has its own bucket
        assert api.get("/metrics", headers={"X-API-Key": ADMIN_KEY}).status_code == 200
        clock.now += 1.0
        assert api.get("/v1/items/A").headers["retry-after"] == "1"   # half a token: a second to go
        clock.now += 1.0
        assert api.get("/v1/items/A").status_code == 200
        assert api.get("/v1/items/A").status_code == 429


def test_only_digests_are_kept_and_every_key_is_compared(monkeypatch):
    auth = Auth([("a", LOOKUP_KEY, ["lookup"], 1e9, 10), ("b", ADMIN_KEY, ["admin"], 1e9, 10),
                 ("c", "sha256:" + hashlib.sha256(b"third-key-0123456789").hexdigest(), ["lookup"], 1e9, 10)])
    assert [k.digest for k in auth.keys][:2] == [hashlib.sha256(LOOKUP_KEY.encode()).digest(),
                                                 hashlib.sha256(ADMIN_KEY.encode()).digest()]
    assert LOOKUP_KEY not in repr(auth.keys) and LOOKUP_KEY.encode() not in b"".join(k.digest for k in auth.keys)
    compared = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append(b) or real(a, b))
    for key in (LOOKUP_KEY, "third-key-0123456789", "nobody-0123456789abc"):   # the first, the last, none
        compared.clear()
        scope = {"path": "/v1/items/A", "headers": [(b"x-api-key", key.encode())]}
        asyncio.run(auth.check(scope))
        assert compared == [k.digest for k in auth.keys], key
    assert scope.get("reco.api_key") is None


def test_keys_come_from_the_environment_and_mistakes_name_the_variable_not_the_value():
    section = AuthSection()
    auth = Auth.from_config(section, {"RECO_API_KEY_LOOKUP": f"{LOOKUP_KEY}, {KEY}", "RECO_API_KEY_ADMIN": ADMIN_KEY})
    assert sorted((k.name, sorted(k.scopes)) for k in auth.keys) == [
        ("admin", ["admin"]), ("lookup#1", ["lookup"]), ("lookup#2", ["lookup"])]   # two keys: rotation
    assert Auth.from_config(AuthSection(enabled=False), {}) is None
    with pytest.raises(ConfigError) as err:
        Auth.from_config(section, {})
    assert "RECO_API_KEY_LOOKUP" in str(err.value) and "RECO_API_KEY_ADMIN" in str(err.value)
    with pytest.raises(ConfigError) as err:
        Auth.from_config(section, {"RECO_API_KEY_LOOKUP": "hunter2"})
    assert "at least 16" in str(err.value) and "hunter2" not in str(err.value)
    with pytest.raises(ConfigError, match="'lookup' and 'admin' are the same key"):
        Auth.from_config(section, {"RECO_API_KEY_LOOKUP": LOOKUP_KEY, "RECO_API_KEY_ADMIN": LOOKUP_KEY})
    with pytest.raises(ConfigError, match="64 hex digits"):
        Auth.from_config(section, {"RECO_API_KEY_ADMIN": "sha256:abc"})


@pytest.mark.parametrize("host,ok", [("127.0.0.1", True), ("localhost", True), ("::1", True), ("127.0.0.2", True),
                                     ("0.0.0.0", False), ("10.1.2.3", False), ("shop.example.com", False)])
def test_without_keys_only_a_loopback_host_is_served(host, ok):
    if ok:
        check_exposure(host, None)
    else:
        with pytest.raises(ConfigError, match="without API keys"):
            check_exposure(host, None)
    check_exposure(host, two_keys())    # with keys any host


def test_reco_serve_app_local_is_the_open_demo_and_prod_needs_keys(published):
    local = load_config(env="local", environ={})
    with TestClient(configured_app(local.serving, published, host="127.0.0.1", demo_users=3, environ={})) as api:
        assert api.get("/v1/users/u1/recommendations").status_code == 200   # no key on the local demo
        assert api.get("/").status_code == 200 and api.get("/v1/demo/users").status_code == 200
    with pytest.raises(ConfigError, match="without API keys"):
        configured_app(local.serving, published, host="0.0.0.0", demo_users=3, environ={})

    prod = load_config(env="prod", environ={})
    with pytest.raises(ConfigError, match="RECO_API_KEY_LOOKUP"):
        configured_app(prod.serving, published, host="0.0.0.0", demo_users=3, environ={})
    env = {"RECO_API_KEY_LOOKUP": LOOKUP_KEY}
    with pytest.raises(ConfigError, match="demo page runs without API keys"):
        configured_app(prod.serving, published, host="0.0.0.0", demo_users=3, demo=True, environ=env)
    with TestClient(configured_app(prod.serving, published, host="0.0.0.0", demo_users=3, environ=env)) as api:
        assert api.get("/v1/users/u1/recommendations").status_code == 401
        assert api.get("/v1/users/u1/recommendations", headers={"X-API-Key": LOOKUP_KEY}).status_code == 200
        assert api.get("/").status_code == 404
        assert api.get("/v1/demo/users", headers={"X-API-Key": LOOKUP_KEY}).status_code == 404


ORIGIN = "https://shop.example.com"


@pytest.mark.parametrize("fast", [True, False])
def test_cors_allows_only_the_configured_origins(published, fast):
    with TestClient(create_app(published, auth=two_keys(), cors_origins=[ORIGIN], fast_lookups=fast)) as api:
        pre = api.options("/v1/users/u1/recommendations", headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == ORIGIN   # no key needed
        res = api.get("/v1/users/u1/recommendations", headers={"Origin": ORIGIN, "X-API-Key": LOOKUP_KEY})
        assert res.status_code == 200 and res.headers["access-control-allow-origin"] == ORIGIN
        refused = api.get("/v1/users/u1/recommendations", headers={"Origin": ORIGIN})
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN
        other = api.get("/v1/users/u1/recommendations", headers={"Origin": "https://evil.example",
                                                                 "X-API-Key": LOOKUP_KEY})
        assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
    with TestClient(create_app(published, fast_lookups=fast)) as api:     # none configured: no CORS at all
        res = api.get("/v1/users/u1/recommendations", headers={"Origin": ORIGIN})
        assert res.status_code == 200 and "access-control-allow-origin" not in res.headers
