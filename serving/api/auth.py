"""Who may call what: API keys with scopes, checked on every request ahead of everything else, and a
per-key rate limit (issue 27, point 1; docs/SECURITY.md).

A key travels as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. The service keeps only
each key's SHA-256: the digest of what a request sends is compared with every configured digest
with :func:`hmac.compare_digest`, always all of them, so the time taken says neither how much of a
key matched nor which key it was. Scopes, by path (:func:`required_scope`):

* none: ``/healthz``, ``/openapi.json`` (the contract is public), the demo page's ``/`` and
  ``/static/`` (demo mode only, which runs without keys);
* ``admin``: ``/metrics``;
* ``events``: ``/v1/events...`` (the web app's clicks, add-to-cart and purchases: :mod:`serving.api.events`);
* ``lookup``: every other path (the lookups, ``/v1/demo/users``, and unknown paths: a caller
  without a key cannot even learn which paths exist).

No key or an unknown key -> 401 with ``WWW-Authenticate``; a key without the scope -> 403; a key
over its rate -> 429 with ``Retry-After``. The check costs a few microseconds (one SHA-256 of a
short string, a handful of ``compare_digest``), so the lookups' fast path (:mod:`serving.api.fast`)
runs it too: it is what makes the fast path safe to keep.

The rate limit is a token bucket per key **in each worker process** (with ``--workers N`` a key may
make N times its rate in all), unless ``serving.auth.shared_limit`` is on: then each key's requests
are counted in Redis, one budget for every process and pod (:mod:`serving.api.rate_limit`), and the
per-process bucket decides only while Redis cannot (docs/SECURITY.md says why it falls back rather
than refuses). :meth:`Auth.check` is a coroutine for that one Redis round trip.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from config.serving import AuthSection
from core.errors import ConfigError
from serving.api.rate_limit import SharedLimit

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/openapi.json", "/"})
MIN_KEY_LENGTH = 16
REALM = 'Bearer realm="reco"'
CHECKED = "reco.api_key"   # the ASGI scope's entry naming the key a request passed with

Headers = List[Tuple[bytes, bytes]]


def required_scope(path: str) -> Optional[str]:
    """The scope a request of ``path`` needs; None: open to anyone."""
    if path in OPEN_PATHS or path.startswith("/static/"):
        return None
    if path == "/metrics":
        return "admin"
    if path.startswith("/v1/events"):
        return "events"
    return "lookup"


def digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` kept. In this process only (see the module's doc)."""

    __slots__ = ("rate", "burst", "tokens", "at")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, float(burst), float(burst), now

    def take(self, now: float) -> float:
        """Take a token: 0.0 when there was one, else the seconds until there is one (nothing taken)."""
        tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / self.rate


@dataclass
class ApiKey:
    name: str
    digest: bytes
    scopes: FrozenSet[str]
    bucket: TokenBucket = field(repr=False)
    rate: float = 0.0
    limit_name: str = ""       # its budget's name in the shared limit: rotated keys (lookup#1, #2) share one


@dataclass(frozen=True)
class Refusal:
    status: int
    body: bytes
    headers: Headers

    def asgi_headers(self) -> Headers:
        return [(b"content-type", b"application/json"),
                (b"content-length", str(len(self.body)).encode("latin-1"))] + self.headers

    async def send(self, send: Callable) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.asgi_headers()})
        await send({"type": "http.response.body", "body": self.body})


def _refusal(status: int, detail: str, retry: bool = False, **headers: str) -> Refusal:
    body = json.dumps({"detail": detail, "retry": retry}, separators=(",", ":")).encode("utf-8")
    return Refusal(status, body, [(k.lower().replace("_", "-").encode("latin-1"), v.encode("latin-1"))
                                  for k, v in headers.items()])


MISSING = _refusal(401, "an API key is needed: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                   www_authenticate=REALM)
UNKNOWN = _refusal(401, "unknown API key", www_authenticate=f'{REALM}, error="invalid_token"')
_FORBIDDEN = {scope: _refusal(403, f"this API key lacks the scope '{scope}' that this path needs",
                              www_authenticate=f'{REALM}, error="insufficient_scope", scope="{scope}"')
              for scope in ("lookup", "events", "admin")}


def _too_many(wait: float, shared: bool = False) -> Refusal:
    where = "shared by every worker" if shared else "per worker process"
    return _refusal(429, f"rate limit of this API key reached ({where}); retry after the seconds in "
                         "Retry-After", retry=True, retry_after=str(max(1, math.ceil(wait))))


def _sent_key(headers: Headers) -> Optional[bytes]:
    """The key a request sends: the bearer token, else X-API-Key (None: neither)."""
    token = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, rest = value.partition(b" ")
            if scheme.lower() == b"bearer" and rest.strip():
                return rest.strip()
        elif name == b"x-api-key" and value.strip():
            token = value.strip()
    return token


class Auth:
    """The configured keys, and :meth:`check` of a request against them.

    Args:
        keys: ``(name, key or "sha256:<hex>", scopes, rate_per_s, burst)`` each; only digests are kept.
        clock: seconds, monotonic (tests pass their own).
        shared: count each key's rate in Redis across processes (:class:`SharedLimit`; the app binds
            it to its lookup client's Redis); None: per process only.
    """

    def __init__(self, keys: Sequence[Tuple[str, str, Sequence[str], float, int]],
                 clock: Callable[[], float] = time.monotonic, shared: Optional[SharedLimit] = None) -> None:
        self.clock = clock
        self.shared = shared
        now = clock()
        self.keys: List[ApiKey] = []
        for name, secret, scopes, rate, burst in keys:
            self.keys.append(ApiKey(name, _digest_of(secret, name), frozenset(scopes), TokenBucket(rate, burst, now),
                                    rate, name.split("#", 1)[0]))
        if not self.keys:
            raise ConfigError("API keys are on but no key is configured")
        names: Dict[bytes, str] = {}
        for key in self.keys:
            if key.digest in names:
                raise ConfigError(f"API keys '{names[key.digest]}' and '{key.name}' are the same key: give each client "
                                  "a key of its own (a key may have several scopes)")
            names[key.digest] = key.name

    @classmethod
    def from_config(cls, section: AuthSection, environ: Mapping[str, str],
                    clock: Callable[[], float] = time.monotonic) -> Optional["Auth"]:
        """The keys of ``section`` read from ``environ``; None when ``section.enabled`` is false.

        Raises:
            ConfigError: keys are on and none of their variables is set, or a value is not a key
                (the message names the variable, never its value).
        """
        if not section.enabled:
            return None
        keys, unset = [], []
        for name, spec in section.keys.items():
            raw = environ.get(spec.env, "")
            parts = [p.strip() for p in raw.split(",") if p.strip()]
            if not parts:
                unset.append(spec.env)
            for i, part in enumerate(parts):
                keys.append((name if len(parts) == 1 else f"{name}#{i + 1}", part, spec.scopes,
                             spec.rate_per_s, spec.burst))
        if not keys:
            raise ConfigError(f"serving.auth.enabled is true but none of {sorted(unset)} is set: give each client's "
                              "API key in its environment variable (docs/SECURITY.md), or set "
                              "serving.auth.enabled: false on a loopback host")
        if unset:
            log.warning("no API key in %s: the scopes of those keys are refused to everyone", ", ".join(unset))
        limit = section.shared_limit
        return cls(keys, clock, SharedLimit(limit.window_s, limit.fallback_s) if limit.enabled else None)

    async def check(self, scope: dict) -> Optional[Refusal]:
        """None when the request may go on (then ``scope[CHECKED]`` names its key), else the answer
        refusing it. Checks a request once: a second call (the fast path declined it and FastAPI's
        middleware sees it) passes it without taking another token. With a shared limit, one Redis
        round trip; the per-process bucket when Redis cannot answer."""
        need = required_scope(scope["path"])
        if need is None or CHECKED in scope:
            return None
        sent = _sent_key(scope["headers"])
        if sent is None:
            return MISSING
        d = digest(sent)
        found = None
        for key in self.keys:            # every key, always: the time says nothing of which one matched
            if hmac.compare_digest(d, key.digest):
                found = key
        if found is None:
            return UNKNOWN
        if need not in found.scopes:
            return _FORBIDDEN[need]
        wait = await self.shared.take(found.limit_name, found.rate) if self.shared is not None else None
        if wait is None:
            wait = found.bucket.take(self.clock())
        elif wait:
            return _too_many(wait, shared=True)
        if wait:
            return _too_many(wait)
        scope[CHECKED] = found.name
        return None


_HEX_DIGEST = re.compile(r"sha256:[0-9a-fA-F]{64}")


def _digest_of(secret: str, name: str) -> bytes:
    if secret.startswith("sha256:"):
        if not _HEX_DIGEST.fullmatch(secret):
            raise ConfigError(f"API key '{name}': 'sha256:' must be followed by 64 hex digits")
        return bytes.fromhex(secret[len("sha256:"):])
    if len(secret) < MIN_KEY_LENGTH or not secret.isascii() or not secret.isprintable() or " " in secret:
        raise ConfigError(f"API key '{name}' must be at least {MIN_KEY_LENGTH} printable ASCII characters without "
                          "spaces (make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return digest(secret.encode("ascii"))


class AuthMiddleware:
    """:meth:`Auth.check` on every request FastAPI answers (the fast path checks its own). A refusal is
    labelled with the route it was for, so the metrics count it there."""

    def __init__(self, app, auth: Auth, routes: Callable[[], Sequence]) -> None:
        self.app, self.auth, self.routes = app, auth, routes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refusal = await self.auth.check(scope)
            if refusal is not None:
                from starlette.routing import Match
                for route in self.routes():
                    if route.matches(scope)[0] is Match.FULL:
                        scope["route"] = route
                        break
                await refusal.send(send)
                return
        await self.app(scope, receive, send)


def check_exposure(host: str, auth: Optional[Auth]) -> None:
    """Refuse to serve without keys on anything but a loopback host.

    Raises:
        ConfigError: ``auth`` is None and ``host`` is not loopback."""
    if auth is not None:
        return
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(f"refusing to serve on {host} without API keys: anyone who reaches it could read every "
                          "customer's list. Set serving.auth.enabled: true and the keys' environment variables "
                          "(docs/SECURITY.md), or bind 127.0.0.1")


def openapi_security(app, secured_paths: Callable[[str], bool], responses: Dict[str, Dict]) -> None:
    """Declare the two ways of sending a key in the app's OpenAPI schema, and on every operation
    that needs one, with ``responses`` (its 401/403/429 answers), so clients and schemathesis see them."""
    original = app.openapi

    def openapi() -> Dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
        for path, ops in schema.get("paths", {}).items():
            if secured_paths(path):
                for op in ops.values():
                    op["security"] = [{"bearer": []}, {"apiKey": []}]
                    op.setdefault("responses", {}).update(responses)
        return schema

    app.openapi = openapi
