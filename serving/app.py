"""HTTP lookup service over the published recommendations, plus a demo store front.

The service only reads: the nightly job publishes a version to Redis
(``serving.publish``) and every request here is one or two Redis round trips
through an injected client. Nothing in this module reads config files;
``reco serve`` builds the client from config, and
``python -m serving.app --redis-url URL`` does the same from arguments.

The endpoints are ``async``: with :class:`serving.client.AsyncLookupClient`
(what ``python -m serving.app`` uses) a request never leaves the event loop;
a blocking :class:`serving.client.LookupClient` still works, each of its Redis
calls then running on the thread pool. Item details come from the client's
per-version cache, so a recommendation answer is usually the pointer read plus
one pipeline.

Errors map to status codes a caller can act on:

* Redis unreachable or slow -> 503 ``{detail, retry: true}`` (with Retry-After)
* nothing published yet     -> 503 ``{detail, retry: false}``
* bad ``k`` or id           -> 422
* unknown item              -> 404
* anything else             -> 500 with a generic body; the traceback is logged,
  never returned.

``/metrics`` is the Prometheus text format, written by hand (no client library):
request counts by route and status, a latency histogram by route, fallback
answers, Redis errors and the published version as an info gauge.
"""
from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import sys
import threading
import time
import uuid
from pathlib import Path as FsPath
from typing import Callable, Dict, List, Optional, Tuple, Union

import redis
import redis.asyncio as aredis
from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from serving.codec import maybe_decode_str
from serving.client import AsyncLookupClient, Lookup, LookupClient, NoPublishedVersion, connect_async
from serving.keys import KeySpace, glob_escape

log = logging.getLogger(__name__)

STATIC_DIR = FsPath(__file__).resolve().parent / "static"

# Ids are opaque strings from the catalogue; refuse only what cannot be one.
ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
ID_MAX = 256
K_MAX = 100
DEMO_USERS_MAX = 50

# Seconds. Lookups are one or two Redis round trips, so most land in the first buckets.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

UNAVAILABLE = "recommendation store unavailable"
NOTHING_PUBLISHED = "no recommendations published yet; run `reco publish`"


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
          500: {"model": ErrorBody, "description": "unexpected error (logged under request_id)"}}


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
        self._hist: Dict[str, List[float]] = {}  # route -> per-bucket counts + [sum, count]
        self._fallbacks: Dict[str, int] = {}
        self._redis_errors = 0
        self._version: Optional[str] = None

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (route, method, str(status))
            self._requests[key] = self._requests.get(key, 0) + 1
            h = self._hist.setdefault(route, [0.0] * (len(self.buckets) + 2))
            for i, upper in enumerate(self.buckets):
                if seconds <= upper:
                    h[i] += 1
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

    def seen_version(self, version: Optional[str]) -> None:
        if version:
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
                for i, upper in enumerate(self.buckets):  # h[i] is already cumulative (see observe_request)
                    out.append(f"{name}_bucket{_labels((('route', route), ('le', _num(upper))))} {int(h[i])}")
                out.append(f"{name}_bucket{_labels((('route', route), ('le', '+Inf')))} {int(h[-1])}")
                out.append(f"{name}_sum{_labels((('route', route),))} {_num(h[-2])}")
                out.append(f"{name}_count{_labels((('route', route),))} {int(h[-1])}")

            family("reco_fallback_answers_total", "counter",
                   "Recommendation answers served from a fallback list, by list kind (segment, global).")
            for kind, n in sorted(self._fallbacks.items()):
                out.append(f"reco_fallback_answers_total{_labels((('list', kind),))} {n}")

            family("reco_redis_errors_total", "counter", "Requests that failed on a Redis error.")
            out.append(f"reco_redis_errors_total {self._redis_errors}")

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


class _ObserveMiddleware:
    """Times every HTTP request, counts it by route and status, and turns an
    exception nothing else handled into a generic 500 (logged with an id).

    Catching here rather than in an ``Exception`` handler keeps the 500 in the
    metrics and stops Starlette from re-raising it to the server.
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
            request_id = uuid.uuid4().hex[:12]
            log.exception("unhandled error on %s %s (request_id=%s)", scope["method"], scope["path"], request_id)
            body = ErrorBody(detail="internal server error", request_id=request_id)
            await JSONResponse(body.model_dump(), status_code=500)(scope, receive, send_observed)
        finally:
            self.metrics.observe_request(_route_label(scope), _method_label(scope), status[0],
                                         time.perf_counter() - start)


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


def create_app(client_factory: ClientSource, *, title: str = "RetailReco lookup") -> FastAPI:
    """Build the service around a lookup client.

    Args:
        client_factory: a ready :class:`AsyncLookupClient` (answers on the event loop) or
            :class:`LookupClient` (each Redis call on the thread pool), or a zero-argument
            callable returning one; the callable is called once, on the first request that
            needs it, so the app starts even while Redis is down.
        title: the OpenAPI title.

    The lookup endpoints build their JSON from plain dicts (``response_model`` still
    documents it in the schema): validating our own answers again cost more than the lookup.
    """
    metrics = Metrics()
    # No /docs or /redoc: FastAPI's pages load their scripts from a CDN, and this
    # service must work offline. The schema is at /openapi.json.
    app = FastAPI(title=title, version="1", docs_url=None, redoc_url=None,
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

    @app.exception_handler(redis.exceptions.RedisError)
    async def on_redis_error(request: Request, exc: redis.exceptions.RedisError):
        metrics.redis_error()
        if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            log.warning("redis unavailable on %s: %s", request.url.path, exc)
            body = ErrorBody(detail=f"{UNAVAILABLE}: {exc}", retry=True)
            return JSONResponse(body.model_dump(exclude_none=True), status_code=503, headers={"Retry-After": "1"})
        raise exc  # any other Redis error is a bug or a bad publish: generic 500, logged

    @app.exception_handler(NoPublishedVersion)
    async def on_nothing_published(request: Request, exc: NoPublishedVersion):
        return JSONResponse(ErrorBody(detail=NOTHING_PUBLISHED).model_dump(exclude_none=True), status_code=503)

    @app.exception_handler(ValueError)
    async def on_bad_value(request: Request, exc: ValueError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

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
            return JSONResponse({"detail": f"unknown item {item_id!r}: it has no similar-items list "
                                           f"in the published version"}, status_code=404)
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
                          socket_timeout=args.socket_timeout)
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
