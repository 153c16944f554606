"""HTTP lookup service over the published recommendations, plus a demo store front.

The service only reads: the nightly job publishes a version to Redis
(``serving.publish``) and every request here is one Redis round trip (two
for an item's details, more on the first lookup after a publish) through an
injected client. Nothing in this module reads config files;
``reco serve`` builds the client from config, and
``python -m serving.app --redis-url URL`` does the same from arguments.

The endpoints are ``async``: with :class:`serving.client.AsyncLookupClient`
(what ``python -m serving.app`` uses) a request never leaves the event loop;
a blocking :class:`serving.client.LookupClient` still works, each of its Redis
calls then running on the thread pool. Item details come from the client's
per-version cache, so a recommendation answer is usually one pipeline (the
pointer and the lists, see :mod:`serving.client`).

The two lookup routes (a customer's recommendations, an item's similar items)
have a fast path (:class:`_FastLookups`): a plain request (valid ids, ``k`` as
plain digits) is answered without FastAPI's request handling and its JSON is
written directly, the same bytes as the route's; anything else, every 422
included, goes through FastAPI. Both routes stay in ``/openapi.json``, and the
metrics count both paths alike. This halves the CPU per lookup, which is what
bounds the request rate one process holds.

Errors map to status codes a caller can act on:

* Redis unreachable or slow -> 503 ``{detail, retry: true}`` (with Retry-After); a
  ``redis.TimeoutError`` or the built-in ``TimeoutError`` alike
* nothing published yet     -> 503 ``{detail, retry: false}``
* bad ``k`` or id           -> 422
* unknown item              -> 404
* a stored value it cannot read (corrupt, or a newer format) -> 500 naming the key and
  version, logged (the stored data is at fault, not the request; see :class:`StoredValueError`)
* anything else             -> 500 with a generic body; the traceback is logged,
  never returned.

``/metrics`` is the Prometheus text format, written by hand (no client library):
request counts by route and status, a latency histogram by route, fallback
answers, Redis errors and the published version as an info gauge.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import inspect
import json
import logging
import math
import os
import re
import sys
import threading
import time
import uuid
from bisect import bisect_left
from pathlib import Path as FsPath
from typing import Callable, Dict, List, Optional, Tuple, Union
from urllib.parse import parse_qsl

import redis
import redis.asyncio as aredis
from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from starlette.routing import Match
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from serving.codec import StoredValueError, maybe_decode_str
from serving.client import AsyncLookupClient, Lookup, LookupClient, NoPublishedVersion, connect_async
from serving.keys import KeySpace, glob_escape

log = logging.getLogger(__name__)

STATIC_DIR = FsPath(__file__).resolve().parent / "static"

# Ids are opaque strings from the catalogue; refuse only what cannot be one.
ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
ID_MAX = 256
K_MAX = 100
DEMO_USERS_MAX = 50

# Seconds. Lookups are one Redis round trip, so most land in the first buckets.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LOOP_CHECK_S = 0.01     # the event-loop monitor's sleep
STALL_S = 0.02          # a wake-up later than this counts as a stall

UNAVAILABLE = "recommendation store unavailable"
NOTHING_PUBLISHED = "no recommendations published yet; run `reco publish`"
STORED_VALUE_UNREADABLE = ("the published recommendations hold a value this service cannot read (corrupt, or "
                           "written in a newer format); republish the version, or upgrade the service")


# --------------------------------------------------------------------------- response models


class Product(BaseModel):
    item_id: str
    rank: int = Field(description="1-based position in the list")
    score: float
    tag: str = Field(description="why the item is there: model, buy_again, trending, popular, pinned, backfill or explore")
    title: Optional[str] = Field(None, description="null when the catalogue has no details for the item")
    price: Optional[float] = None
    category: Optional[str] = None


class Recommendations(BaseModel):
    user_id: str
    k: int
    source: str = Field(description='which list answered: "personal", "segment:<name>" or "global"')
    fallback: bool = Field(description="true when the user had no personal list")
    version: str = Field(description="the published version that answered")
    items: List[Product]


class SimilarItems(BaseModel):
    item_id: str
    k: int
    version: str
    items: List[Product]


class ItemDetails(BaseModel):
    item_id: str
    title: Optional[str] = None
    price: Optional[float] = None
    category: Optional[str] = None
    version: str


class DemoUsers(BaseModel):
    version: str
    user_ids: List[str]


class Health(BaseModel):
    status: str = Field(description='"ok" or "unavailable"')
    version: Optional[str] = None
    redis: str = Field(description='"ok" or "down"')
    detail: Optional[str] = None


class ErrorBody(BaseModel):
    detail: str
    retry: bool = Field(False, description="true when the same request may succeed later without any change")
    request_id: Optional[str] = Field(None, description="on 500 only: the id the server logged the error under")


ERRORS = {503: {"model": ErrorBody, "description": "Redis unreachable, or nothing published yet"},
          500: {"model": ErrorBody, "description": "a stored value that cannot be read, or an unexpected error "
                                                   "(logged under request_id)"}}


# --------------------------------------------------------------------------- metrics


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Tuple[Tuple[str, str], ...]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}" if pairs else ""


def _num(x: float) -> str:
    return repr(float(x)) if isinstance(x, float) else str(x)


class Metrics:
    """Counters and a latency histogram kept in memory, rendered as Prometheus text 0.0.4.

    Route labels are path templates ("/v1/users/{user_id}/recommendations"), never
    raw paths, so the number of series stays bounded whatever clients send.
    """

    def __init__(self, buckets: Tuple[float, ...] = LATENCY_BUCKETS):
        self.buckets = buckets
        self._lock = threading.Lock()
        self._requests: Dict[Tuple[str, str, str], int] = {}
        self._hist: Dict[str, List[float]] = {}  # route -> count per bucket (+Inf last), then sum, count
        self._fallbacks: Dict[str, int] = {}
        self._redis_errors = 0
        self._version: Optional[str] = None
        # generation -> [collections, seconds in all, longest]. Every generation is there from the start:
        # the hook runs inside any allocation, render's included, so it only updates lists in place (a
        # key added while render iterates would break the iteration; the lock cannot be taken there)
        self._gc: Dict[int, List[float]] = {g: [0, 0.0, 0.0] for g in range(3)}
        self._gc_started: Optional[float] = None
        self._loop_lag = [0, 0.0]               # [checks that overshot by > STALL_S, longest overshoot]

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, str(status))
        slot = bisect_left(self.buckets, seconds)   # the first bucket with seconds <= its bound
        with self._lock:
            self._requests[key] = self._requests.get(key, 0) + 1
            h = self._hist.get(route)
            if h is None:
                h = self._hist[route] = [0.0] * (len(self.buckets) + 3)
            h[slot] += 1
            h[-2] += seconds
            h[-1] += 1

    def fallback(self, source: str) -> None:
        # "segment:Germany" -> "segment": segment names are data, keep the label set small.
        kind = source.split(":", 1)[0]
        with self._lock:
            self._fallbacks[kind] = self._fallbacks.get(kind, 0) + 1

    def redis_error(self) -> None:
        with self._lock:
            self._redis_errors += 1

    def on_gc(self, phase: str, info: Dict[str, int]) -> None:
        """A ``gc.callbacks`` hook: times every collection (the interpreter stops while it runs)."""
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        if self._gc_started is None:
            return
        spent, self._gc_started = time.perf_counter() - self._gc_started, None
        g = self._gc.get(info.get("generation", -1))
        if g is None:             # CPython has generations 0-2 only
            return
        g[0] += 1
        g[1] += spent
        g[2] = max(g[2], spent)

    def loop_lag(self, seconds: float) -> None:
        """How much later than asked the event-loop monitor woke up (see :func:`_watch_loop`)."""
        if seconds > STALL_S:
            self._loop_lag[0] += 1
        self._loop_lag[1] = max(self._loop_lag[1], seconds)

    def seen_version(self, version: Optional[str]) -> None:
        if version and version != self._version:
            with self._lock:
                self._version = version

    def render(self) -> str:
        with self._lock:
            out: List[str] = []

            def family(name: str, kind: str, help_: str) -> None:
                out.append(f"# HELP {name} {help_}")
                out.append(f"# TYPE {name} {kind}")

            family("reco_http_requests_total", "counter", "HTTP requests by route template, method and status.")
            for (route, method, status), n in sorted(self._requests.items()):
                out.append(f"reco_http_requests_total"
                           f"{_labels((('route', route), ('method', method), ('status', status)))} {n}")

            name = "reco_http_request_duration_seconds"
            family(name, "histogram", "Time from request to response, by route template.")
            for route, h in sorted(self._hist.items()):
                below = 0
                for i, upper in enumerate(self.buckets):  # Prometheus buckets are cumulative
                    below += int(h[i])
                    out.append(f"{name}_bucket{_labels((('route', route), ('le', _num(upper))))} {below}")
                out.append(f"{name}_bucket{_labels((('route', route), ('le', '+Inf')))} {int(h[-1])}")
                out.append(f"{name}_sum{_labels((('route', route),))} {_num(h[-2])}")
                out.append(f"{name}_count{_labels((('route', route),))} {int(h[-1])}")

            family("reco_fallback_answers_total", "counter",
                   "Recommendation answers served from a fallback list, by list kind (segment, global).")
            for kind, n in sorted(self._fallbacks.items()):
                out.append(f"reco_fallback_answers_total{_labels((('list', kind),))} {n}")

            family("reco_redis_errors_total", "counter", "Requests that failed on a Redis error.")
            out.append(f"reco_redis_errors_total {self._redis_errors}")

            family("reco_gc_collections_total", "counter", "Python garbage collections, by generation.")
            for gen, (n, _, _) in sorted(self._gc.items()):
                out.append(f"reco_gc_collections_total{_labels((('generation', str(gen)),))} {int(n)}")
            family("reco_gc_pause_seconds_total", "counter",
                   "Time every request in flight stood still for garbage collection, by generation.")
            for gen, (_, spent, _) in sorted(self._gc.items()):
                out.append(f"reco_gc_pause_seconds_total{_labels((('generation', str(gen)),))} {_num(spent)}")
            family("reco_gc_pause_max_seconds", "gauge", "The longest garbage collection, by generation.")
            for gen, (_, _, longest) in sorted(self._gc.items()):
                out.append(f"reco_gc_pause_max_seconds{_labels((('generation', str(gen)),))} {_num(longest)}")
            family("reco_event_loop_stalls_total", "counter",
                   f"Times the event loop answered its {LOOP_CHECK_S * 1000:g} ms check more than "
                   f"{STALL_S * 1000:g} ms late (a blocked loop or a starved process).")
            out.append(f"reco_event_loop_stalls_total {self._loop_lag[0]}")
            family("reco_event_loop_lag_max_seconds", "gauge", "The longest such delay since start.")
            out.append(f"reco_event_loop_lag_max_seconds {_num(float(self._loop_lag[1]))}")

            family("reco_published_version_info", "gauge",
                   "The published version this process last answered from (value is always 1).")
            if self._version is not None:
                out.append(f"reco_published_version_info{_labels((('version', self._version),))} 1")
            return "\n".join(out) + "\n"


_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def _method_label(scope: dict) -> str:
    method = scope.get("method", "")
    return method if method in _METHODS else "other"  # clients may send any token


def _route_label(scope: dict) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def _internal_error(scope: dict) -> JSONResponse:
    """The generic 500 of an exception nothing handled: logged with an id, the id in the body, no traceback."""
    request_id = uuid.uuid4().hex[:12]
    log.exception("unhandled error on %s %s (request_id=%s)", scope["method"], scope["path"], request_id)
    return JSONResponse(ErrorBody(detail="internal server error", request_id=request_id).model_dump(), status_code=500)


class _ObserveMiddleware:
    """Times every HTTP request the app's routing answers, counts it by route and status, and
    turns an exception nothing else handled into a generic 500 (logged with an id).

    Catching here rather than in an ``Exception`` handler keeps the 500 in the metrics and stops
    Starlette from re-raising it to the server. (The lookups' fast path, ahead of all this, counts
    its own answers: :class:`_FastLookups`.)
    """

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]
        started = [False]

        async def send_observed(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                started[0] = True
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        except Exception:
            if started[0]:  # too late for a clean error response; the server closes the connection
                raise
            await _internal_error(scope)(scope, receive, send_observed)
        finally:
            self.metrics.observe_request(_route_label(scope), _method_label(scope), status[0],
                                         time.perf_counter() - start)


class _LookupApp(FastAPI):
    """FastAPI with the lookups' fast path (:class:`_FastLookups`) tried before anything else:
    a plain lookup never enters Starlette's middleware stack or routing."""

    fast: Optional["_FastLookups"] = None

    async def __call__(self, scope, receive, send) -> None:
        fast = self.fast
        if fast is not None and scope["type"] == "http" and await fast(scope, receive, send):
            return
        await super().__call__(scope, receive, send)


# --------------------------------------------------------------------------- the app


def _user_pattern(ks: KeySpace, version: str) -> Tuple[str, str]:
    prefix = f"{ks.namespace}:{{{version}:"
    # reco:{<version>:<shard>}:u:<user_id>; the shard is digits, so the first "}:" ends the tag.
    return prefix, glob_escape(prefix) + "*" + glob_escape("}:u:") + "*"


def _add_user_ids(found: List[str], keys: List, prefix: str, n: int) -> None:
    for raw in keys:
        key = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        rest = key[len(prefix):]
        tag_end = rest.find("}:")
        if tag_end >= 0 and rest[tag_end + 2:tag_end + 4] == "u:" and len(found) < n:
            found.append(rest[tag_end + 4:])


def sample_user_ids(r: redis.Redis, ks: KeySpace, version: str, n: int,
                    scan_count: int = 1000, max_calls: int = 10) -> List[str]:
    """Up to ``n`` user ids of ``version``, found by SCAN over its user keys.

    At most ``max_calls`` SCAN calls of ``scan_count`` keys each, so the cost is
    bounded however large the database is; user keys are most keys of a
    version, so a few calls usually find ``n``. Fewer than ``n`` may come back.
    """
    prefix, pattern = _user_pattern(ks, version)
    found: List[str] = []
    cursor = 0
    for _ in range(max_calls):
        cursor, keys = r.scan(cursor=cursor, match=pattern, count=scan_count)
        _add_user_ids(found, keys, prefix, n)
        if cursor == 0 or len(found) >= n:
            break
    return found


async def sample_user_ids_async(r: aredis.Redis, ks: KeySpace, version: str, n: int,
                                scan_count: int = 1000, max_calls: int = 10) -> List[str]:
    """:func:`sample_user_ids` on ``redis.asyncio``."""
    prefix, pattern = _user_pattern(ks, version)
    found: List[str] = []
    cursor = 0
    for _ in range(max_calls):
        cursor, keys = await r.scan(cursor=cursor, match=pattern, count=scan_count)
        _add_user_ids(found, keys, prefix, n)
        if cursor == 0 or len(found) >= n:
            break
    return found


AnyClient = Union[LookupClient, AsyncLookupClient]
ClientSource = Union[AnyClient, Callable[[], AnyClient]]


class _InThreads:
    """A blocking client seen as an async one: every method call runs on the thread pool,
    so a slow Redis never stalls the event loop."""

    def __init__(self, client: LookupClient) -> None:
        self.client = client

    def __getattr__(self, name: str):
        method = getattr(self.client, name)

        async def call(*args, **kwargs):
            return await run_in_threadpool(method, *args, **kwargs)
        return call


def _as_async(client) -> Union[AsyncLookupClient, _InThreads]:
    if inspect.iscoroutinefunction(getattr(client, "recommendations", None)):
        return client
    return _InThreads(client)


def _products(items: List[str], scores: List[float], tags: List[str],
              details: Dict[str, Dict]) -> List[Dict]:
    """Product dicts (the fields of :class:`Product`, in its order)."""
    out = []
    for rank, (item_id, score, tag) in enumerate(zip(items, scores, tags), start=1):
        d = details.get(item_id) or {}
        out.append({"item_id": item_id, "rank": rank, "score": float(score), "tag": tag,
                    "title": d.get("title"), "price": d.get("price"), "category": d.get("category")})
    return out


async def _product_list(client, found: Lookup) -> List[Dict]:
    # details from the version the list came from: no pointer read, cached after the first request
    details = await client.item_details(found.items, version=found.version) if found.items else {}
    return _products(found.items, found.scores, found.tags, details)


# --------------------------------------------------------------------------- the lookups' fast path

# What JSONResponse writes: json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).
_json = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_json_str = json.encoder.encode_basestring   # how that encoder writes a str (C), quotes included
_NO_DETAILS = '"title":null,"price":null,"category":null}'
_ID = re.compile(ID_PATTERN)
_JSON_HEADERS = [(b"content-type", b"application/json")]


class _DetailsJson:
    """Each item's details as the JSON text that ends its product object
    (``"title":..,"price":..,"category":..}``), remembered per item id for as long as the
    client hands out the same cached details dict (same object: same content). A new
    version's details are new dicts, so its text is written anew."""

    def __init__(self, max_items: int = 400_000) -> None:
        self.max_items = max_items
        self._memo: Dict[str, Tuple[Dict, str]] = {}

    def tail(self, item_id: str, d: Optional[Dict]) -> str:
        if d is None:
            return _NO_DETAILS
        entry = self._memo.get(item_id)
        if entry is not None and entry[0] is d:
            return entry[1]
        text = _json({"title": d.get("title"), "price": d.get("price"), "category": d.get("category")})[1:]
        if len(self._memo) >= self.max_items:
            self._memo.clear()
        self._memo[item_id] = (d, text)
        return text


def _items_json(found: Lookup, details: Dict[str, Dict], tails: _DetailsJson) -> Optional[str]:
    """The ``items`` array of an answer as JSONResponse would write :func:`_products`, or None when
    the list holds anything but str ids and tags and finite scores (then the caller lets the
    encoder write it, with its errors)."""
    items, tags = found.items, found.tags
    if not (set(map(type, items)) <= {str} and set(map(type, tags)) <= {str}):
        return None
    scores = [float(s) for s in found.scores]
    if not all(map(math.isfinite, scores)):
        return None
    get, tail = details.get, tails.tail
    return "[" + ",".join([
        f'{{"item_id":{_json_str(item_id)},"rank":{rank},"score":{score!r},"tag":{_json_str(tag)},'
        f'{tail(item_id, get(item_id))}'
        for rank, (item_id, score, tag) in enumerate(zip(items, scores, tags), start=1)]) + "]"


def _fast_id(value: str) -> bool:
    """True when the route's own checks of an id (1..ID_MAX characters, ID_PATTERN) pass."""
    return len(value) <= ID_MAX and _ID.fullmatch(value) is not None   # fullmatch: no "$" before a final \n


def _fast_query(scope: dict, segment: bool) -> Optional[Tuple[int, Optional[str]]]:
    """(k, segment) from the query string when the route would accept them as they are, else None
    (the full route then answers, 422 included). Parsed as Starlette does; other parameters are
    ignored, as the route ignores them."""
    qs = scope.get("query_string", b"")
    if not qs:
        return 10, None
    k, seg, seen_k, seen_seg = 10, None, False, False
    for name, value in parse_qsl(qs.decode("latin-1"), keep_blank_values=True):
        if name == "k":
            if seen_k or not (value.isascii() and value.isdigit() and len(value) <= 6):
                return None
            k, seen_k = int(value), True
            if not 1 <= k <= K_MAX:
                return None
        elif name == "segment" and segment:
            if seen_seg or not _fast_id(value):
                return None
            seg, seen_seg = value, True
    return k, seg


class _FastLookups:
    """The two lookup routes as plain ASGI handlers, called by the app (:class:`_LookupApp`) ahead
    of Starlette's middleware and routing and FastAPI's request handling (exception middleware,
    parameter validation, dependency solving, response building), which cost more CPU than the
    lookup itself.

    A request answers here only when it matches one of the routes (Starlette's own matching) and
    the route's checks would pass as they are (ids of 1..256 characters without control
    characters, ``k`` plain digits in 1..100, each parameter at most once); anything else goes to
    the app, so every 422 is FastAPI's own. The answer is the same JSON, byte for byte, as the
    endpoint's JSONResponse; an exception goes to the app's exception handlers (503 for Redis,
    500 for a stored value it cannot read, 422 for another ValueError), as the route's would, and
    one they do not handle to the same generic 500 as the middleware's. The metrics count it under
    the route. FastAPI still documents both routes in
    /openapi.json, and still answers them when called through the router.
    """

    def __init__(self, app: FastAPI, get_client: Callable[[], object], metrics: Metrics) -> None:
        self.app = app
        self.get_client = get_client
        self.metrics = metrics
        self.tails = _DetailsJson()
        self.routes: List[Tuple[APIRoute, Callable]] = []

    def add(self, path: str, handler: Callable) -> None:
        """Answer the app's GET route ``path`` with ``handler(scope, path_params) -> (status, JSON body)``
        (None: not a plain request; the app answers it).
        No route before it may match what it matches (it is tried first)."""
        [route] = [r for r in self.app.router.routes if isinstance(r, APIRoute) and r.path == path]
        self.routes.append((route, handler))

    async def __call__(self, scope: dict, receive, send) -> bool:
        """Answer the request if it is a plain lookup; False: the app must."""
        for route, handler in self.routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                break
        else:
            return False
        start = time.perf_counter()
        try:
            answer = await handler(scope, child["path_params"])
        except Exception as exc:
            answer = await self._error_response(exc, scope, receive, send)
        if answer is None:
            return False
        status = answer.status_code if isinstance(answer, Response) else answer[0]
        try:   # a send that fails (the client went away) goes on to the server, and is counted all the same
            if isinstance(answer, Response):
                await answer(scope, receive, send)
            else:
                await send({"type": "http.response.start", "status": status,
                            "headers": [(b"content-length", str(len(answer[1])).encode("latin-1"))] + _JSON_HEADERS})
                await send({"type": "http.response.body", "body": answer[1]})
        finally:
            self.metrics.observe_request(route.path, _method_label(scope), status, time.perf_counter() - start)
        return True

    async def _error_response(self, exc: Exception, scope: dict, receive, send) -> Response:
        """What the app's handler of ``exc`` answers (503 for Redis, 422 for a ValueError, ...), as the
        route's would; the generic 500 where none handles it (or the handler raises)."""
        handler = self._exception_handler(exc)
        if handler is not None:
            scope.setdefault("app", self.app)
            try:
                return await handler(Request(scope, receive, send), exc)
            except Exception:
                pass
        return _internal_error(scope)

    def _exception_handler(self, exc: Exception) -> Optional[Callable]:
        """The app's handler of ``exc``: the one registered for its nearest class, as Starlette looks it up."""
        handlers = self.app.exception_handlers
        for cls in type(exc).__mro__:
            if cls in handlers:
                return handlers[cls]
        return None

    async def _details(self, client, found: Lookup) -> Dict[str, Dict]:
        if not found.items:
            return {}
        if isinstance(client, AsyncLookupClient) or isinstance(getattr(client, "client", None), LookupClient):
            return await client.item_details(found.items, version=found.version, copy=False)  # read only here
        return await client.item_details(found.items, version=found.version)

    async def _items(self, client, found: Lookup) -> Tuple[Optional[str], Dict[str, Dict]]:
        details = await self._details(client, found)
        return _items_json(found, details, self.tails), details

    async def recommendations(self, scope: dict, params: dict) -> Optional[Tuple[int, bytes]]:
        user_id = params.get("user_id")
        query = _fast_query(scope, segment=True) if isinstance(user_id, str) and _fast_id(user_id) else None
        if query is None:
            return None
        k, segment = query
        client = self.get_client()
        found = await client.recommendations(user_id, k, segment=segment)
        self.metrics.seen_version(found.version)
        if found.fallback:
            self.metrics.fallback(found.source)
        items, details = await self._items(client, found)
        if items is None or type(found.fallback) is not bool or not isinstance(found.source, str) \
                or not isinstance(found.version, str):
            body = _json({"user_id": user_id, "k": k, "source": found.source, "fallback": found.fallback,
                          "version": found.version,
                          "items": _products(found.items, found.scores, found.tags, details)})
        else:
            body = (f'{{"user_id":{_json_str(user_id)},"k":{k},"source":{_json_str(found.source)},'
                    f'"fallback":{"true" if found.fallback else "false"},"version":{_json_str(found.version)},'
                    f'"items":{items}}}')
        return 200, body.encode("utf-8")

    async def similar(self, scope: dict, params: dict) -> Optional[Tuple[int, bytes]]:
        item_id = params.get("item_id")
        query = _fast_query(scope, segment=False) if isinstance(item_id, str) and _fast_id(item_id) else None
        if query is None:
            return None
        k = query[0]
        client = self.get_client()
        found = await client.similar(item_id, k)
        if found is None:
            return 404, _not_found_similar(item_id).body
        self.metrics.seen_version(found.version)
        items, details = await self._items(client, found)
        if items is None or not isinstance(found.version, str):
            body = _json({"item_id": item_id, "k": k, "version": found.version,
                          "items": _products(found.items, found.scores, found.tags, details)})
        else:
            body = f'{{"item_id":{_json_str(item_id)},"k":{k},"version":{_json_str(found.version)},"items":{items}}}'
        return 200, body.encode("utf-8")


def _not_found_similar(item_id: str) -> JSONResponse:
    return JSONResponse({"detail": f"unknown item {item_id!r}: it has no similar-items list "
                                   f"in the published version"}, status_code=404)


async def _watch_loop(metrics: Metrics) -> None:
    """Sleep ``LOOP_CHECK_S`` again and again and record how late each wake-up is: a request that
    arrives during a late wake-up waits as long, so the maximum bounds the stalls behind a p99."""
    while True:
        t0 = time.perf_counter()
        await asyncio.sleep(LOOP_CHECK_S)
        metrics.loop_lag(max(0.0, time.perf_counter() - t0 - LOOP_CHECK_S))


def _lifespan(metrics: Metrics):
    """Startup and shutdown of one app.

    * Move everything alive at startup (the modules, FastAPI's routes and schemas: hundreds of
      thousands of objects) out of the garbage collector's reach with ``gc.freeze``. A full collection
      otherwise walks them all and stalls every request in flight for tens of milliseconds: at 2,000
      lookups per second such pauses decide the p99 (BENCHMARKS.md, lookup latency).
    * Time every collection and watch the event loop's delays (``/metrics``: ``reco_gc_*``,
      ``reco_event_loop_*``), so a slow tail can be told apart: our own pauses or a starved process.

    All undone at shutdown, so an app started and stopped inside a longer-lived process leaves it as
    it was."""
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        gc.collect()
        gc.freeze()
        gc.callbacks.append(metrics.on_gc)
        watcher = asyncio.get_running_loop().create_task(_watch_loop(metrics))
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            with contextlib.suppress(ValueError):
                gc.callbacks.remove(metrics.on_gc)
            gc.unfreeze()
    return lifespan


def create_app(client_factory: ClientSource, *, title: str = "RetailReco lookup",
               fast_lookups: bool = True) -> FastAPI:
    """Build the service around a lookup client.

    Args:
        client_factory: a ready :class:`AsyncLookupClient` (answers on the event loop) or
            :class:`LookupClient` (each Redis call on the thread pool), or a zero-argument
            callable returning one; the callable is called once, on the first request that
            needs it, so the app starts even while Redis is down.
        title: the OpenAPI title.
        fast_lookups: answer plain lookups on the fast path (:class:`_FastLookups`); False sends
            every request through FastAPI's request handling (the same answers, at about twice
            the CPU per lookup; what the tests compare the fast path with).

    The lookup endpoints build their JSON from plain dicts (``response_model`` still
    documents it in the schema): validating our own answers again cost more than the lookup.
    """
    metrics = Metrics()
    # No /docs or /redoc: FastAPI's pages load their scripts from a CDN, and this
    # service must work offline. The schema is at /openapi.json.
    app = _LookupApp(title=title, version="1", docs_url=None, redoc_url=None, lifespan=_lifespan(metrics),
                  description="Reads the recommendations the nightly job published to Redis.")
    app.state.metrics = metrics

    holder: Dict[str, object] = {}
    is_factory = callable(client_factory) and not isinstance(client_factory, (LookupClient, AsyncLookupClient))
    if not is_factory:
        holder["client"] = _as_async(client_factory)

    def get_client():
        # Called on the event loop only, so no lock: the factory runs once (it connects lazily).
        client = holder.get("client")
        if client is None:
            client = holder["client"] = _as_async(client_factory())  # type: ignore[operator]
        return client

    # ---- errors -------------------------------------------------------------------------

    def unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("redis unavailable on %s: %s", request.url.path, exc)
        body = ErrorBody(detail=f"{UNAVAILABLE}: {str(exc) or type(exc).__name__}", retry=True)
        return JSONResponse(body.model_dump(exclude_none=True), status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(redis.exceptions.RedisError)
    async def on_redis_error(request: Request, exc: redis.exceptions.RedisError):
        metrics.redis_error()
        if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            return unavailable(request, exc)
        raise exc  # any other Redis error is a bug or a bad publish: generic 500, logged

    # the built-in TimeoutError (asyncio.wait_for's, a socket's): a lookup only waits on Redis, so
    # Redis was too slow, as with redis.TimeoutError: 503, never the generic 500
    @app.exception_handler(TimeoutError)
    async def on_timeout(request: Request, exc: TimeoutError):
        metrics.redis_error()
        return unavailable(request, exc)

    @app.exception_handler(NoPublishedVersion)
    async def on_nothing_published(request: Request, exc: NoPublishedVersion):
        return JSONResponse(ErrorBody(detail=NOTHING_PUBLISHED).model_dump(exclude_none=True), status_code=503)

    @app.exception_handler(ValueError)
    async def on_bad_value(request: Request, exc: ValueError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(StoredValueError)   # a ValueError, but the stored data's fault: never 422
    async def on_bad_stored_value(request: Request, exc: StoredValueError):
        request_id = uuid.uuid4().hex[:12]
        log.error("unreadable stored value on %s (request_id=%s): %s", request.url.path, request_id, exc)
        body = ErrorBody(detail=f"{STORED_VALUE_UNREADABLE}: {exc}", request_id=request_id)
        return JSONResponse(body.model_dump(), status_code=exc.http_status)   # core.errors.StoredDataError: 500

    # ---- lookups ------------------------------------------------------------------------

    IdPath = dict(min_length=1, max_length=ID_MAX, pattern=ID_PATTERN)
    KQuery = Query(10, ge=1, le=K_MAX, description=f"how many items, 1..{K_MAX}")

    @app.get("/v1/users/{user_id}/recommendations", response_model=Recommendations, responses=ERRORS,
             summary="Recommendations for a customer, or the fallback list for an unknown one")
    async def recommendations(
        user_id: str = Path(..., **IdPath),
        k: int = KQuery,
        segment: Optional[str] = Query(None, max_length=ID_MAX, pattern=ID_PATTERN,
                                       description="the customer's segment (e.g. country), used when they "
                                                   "have no personal list"),
    ):
        client = get_client()
        found = await client.recommendations(user_id, k, segment=segment)
        metrics.seen_version(found.version)
        if found.fallback:
            metrics.fallback(found.source)
        return JSONResponse({"user_id": user_id, "k": k, "source": found.source, "fallback": found.fallback,
                             "version": found.version, "items": await _product_list(client, found)})

    @app.get("/v1/items/{item_id}/similar", response_model=SimilarItems,
             responses={404: {"model": ErrorBody, "description": "unknown item"}, **ERRORS},
             summary="Items similar to an item")
    async def similar(item_id: str = Path(..., **IdPath), k: int = KQuery):
        client = get_client()
        found = await client.similar(item_id, k)
        if found is None:
            return _not_found_similar(item_id)
        metrics.seen_version(found.version)
        return JSONResponse({"item_id": item_id, "k": k, "version": found.version,
                             "items": await _product_list(client, found)})

    @app.get("/v1/items/{item_id}", response_model=ItemDetails,
             responses={404: {"model": ErrorBody, "description": "unknown item"}, **ERRORS},
             summary="Title, price and category of an item")
    async def item(item_id: str = Path(..., **IdPath)):
        client = get_client()
        version = await client.current_version()
        if version is None:
            raise NoPublishedVersion(NOTHING_PUBLISHED)
        details = (await client.item_details([item_id], version=version)).get(item_id)
        if details is None:
            return JSONResponse({"detail": f"unknown item {item_id!r}"}, status_code=404)
        return JSONResponse({"item_id": item_id, "title": details.get("title"), "price": details.get("price"),
                             "category": details.get("category"), "version": version})

    @app.get("/v1/demo/users", response_model=DemoUsers, responses=ERRORS,
             summary="A few customer ids of the current version, for the demo page")
    async def demo_users(n: int = Query(10, ge=1, le=DEMO_USERS_MAX)):
        client = get_client()
        version = await client.current_version()
        if version is None:
            raise NoPublishedVersion(NOTHING_PUBLISHED)
        # a patch holds only the users an hourly run refreshed: top up from the version it patches
        if isinstance(client, _InThreads):
            r, ks = client.client.r, client.client.ks
            ids = await run_in_threadpool(sample_user_ids, r, ks, version, n)
            base = await run_in_threadpool(r.hget, ks.meta(version), "base") if len(ids) < n else None
            if base:
                more = await run_in_threadpool(sample_user_ids, r, ks, maybe_decode_str(base), n)
                ids += [u for u in more if u not in ids][:n - len(ids)]
        else:
            ids = await sample_user_ids_async(client.r, client.ks, version, n)
            base = await client.r.hget(client.ks.meta(version), "base") if len(ids) < n else None
            if base:
                more = await sample_user_ids_async(client.r, client.ks, maybe_decode_str(base), n)
                ids += [u for u in more if u not in ids][:n - len(ids)]
        return DemoUsers(version=version, user_ids=ids)

    # ---- operations ---------------------------------------------------------------------

    @app.get("/healthz", response_model=Health, response_model_exclude_none=True, responses={503: {"model": Health}},
             summary="200 when Redis answers and a version is published, else 503")
    async def healthz():
        try:
            version = await get_client().current_version()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            metrics.redis_error()
            return JSONResponse(Health(status="unavailable", redis="down", detail=f"{UNAVAILABLE}: {exc}")
                                .model_dump(exclude_none=True), status_code=503)
        if version is None:
            return JSONResponse(Health(status="unavailable", redis="ok", detail=NOTHING_PUBLISHED)
                                .model_dump(exclude_none=True), status_code=503)
        metrics.seen_version(version)
        return Health(status="ok", version=version, redis="ok")

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus text exposition",
             responses={200: {"content": {"text/plain": {}}}})
    async def prometheus_metrics():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # ---- demo page ----------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if fast_lookups:
        app.fast = _FastLookups(app, get_client, metrics)
        app.fast.add("/v1/users/{user_id}/recommendations", app.fast.recommendations)
        app.fast.add("/v1/items/{item_id}/similar", app.fast.similar)
    app.add_middleware(_ObserveMiddleware, metrics=metrics)
    return app


# --------------------------------------------------------------------------- python -m serving.app

_ARGV_ENV = "RECO_SERVING_APP_ARGV"   # hands the command line to --workers' worker processes


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serving.app", description=__doc__.split("\n")[0])
    p.add_argument("--redis-url", required=True, help="e.g. redis://127.0.0.1:6390/0 (password: $REDIS_PASSWORD)")
    p.add_argument("--namespace", default="reco", help="key prefix the publisher used (default: reco)")
    p.add_argument("--n-shards", type=int, default=256, help="shard count the publisher used (default: 256)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--socket-timeout", type=float, default=1.0, help="seconds per Redis call (default: 1)")
    p.add_argument("--max-connections", type=int, default=256,
                   help="Redis connections per worker (default: 256); a request that finds all busy waits "
                        "for one up to --socket-timeout, then gets 503")
    p.add_argument("--workers", type=int, default=1,
                   help="uvicorn worker processes (default: 1); each has its own Redis connections and "
                        "item cache, and /metrics counts the worker that answers it")
    p.add_argument("--access-log", action="store_true",
                   help="log one line per request (off by default: it costs CPU per request; /metrics counts them)")
    return p


def _build_app(args: argparse.Namespace) -> FastAPI:
    ks = KeySpace(namespace=args.namespace, n_shards=args.n_shards)

    def build() -> AsyncLookupClient:
        r = connect_async(args.redis_url, password=os.environ.get("REDIS_PASSWORD"),
                          socket_timeout=args.socket_timeout, max_connections=args.max_connections)
        return AsyncLookupClient(r, ks)

    return create_app(build)


def worker_app() -> FastAPI:
    """The app of one ``--workers`` process (uvicorn imports it by name in each)."""
    return _build_app(_parser().parse_args(json.loads(os.environ[_ARGV_ENV])))


def main(argv: Optional[List[str]] = None) -> None:
    import uvicorn

    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    common = dict(host=args.host, port=args.port, access_log=args.access_log)
    if args.workers > 1:
        os.environ[_ARGV_ENV] = json.dumps(argv)
        uvicorn.run("serving.app:worker_app", factory=True, workers=args.workers, **common)
    else:
        uvicorn.run(_build_app(args), **common)


if __name__ == "__main__":
    main()
