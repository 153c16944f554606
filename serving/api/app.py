"""The lookup service's app: :func:`create_app` wires the routes, the exception handlers, the
lifespan, the metrics middleware and the lookups' fast path around an injected lookup client.

The service only reads: the nightly job publishes a version to Redis (``serving.publish``) and
every request here is one Redis round trip (two for an item's details, more on the first lookup
after a publish). Nothing here reads config files: ``reco serve`` builds the client from config,
``python -m serving.api --redis-url URL`` (:mod:`serving.api.main`) from arguments.

The endpoints are ``async``; a blocking client runs on the thread pool (:mod:`serving.api.clients`).
Item details come from the client's per-version cache, so a recommendation answer is usually one
pipeline (the pointer and the lists, see :mod:`serving.client`). The two lookup routes also have a
fast path (:mod:`serving.api.fast`): a plain request is answered without FastAPI's request handling,
the same bytes as the route's; anything else, every 422 included, goes through FastAPI. Both routes
stay in ``/openapi.json``, and the metrics count both paths alike.

Errors map to status codes a caller can act on:

* Redis unreachable or slow -> 503 ``{detail, retry: true}`` (with Retry-After); a
  ``redis.TimeoutError`` or the built-in ``TimeoutError`` alike, and a Redis Cluster none of whose
  nodes answers (or whose slots are not all served: :mod:`serving.api.redis_errors`)
* nothing published yet     -> 503 ``{detail, retry: false}``
* bad ``k`` or id           -> 422
* unknown item              -> 404
* a stored value it cannot read (corrupt, or a newer format) -> 500 naming the key and
  version, logged (the stored data is at fault, not the request; see :class:`StoredValueError`)
* anything else             -> 500 with a generic body; the traceback is logged,
  never returned (:mod:`serving.api.middleware`).

``/metrics`` is the Prometheus text format (:mod:`serving.api.metrics`).

The feedback loop (issue 25; docs/FEEDBACK.md): every list the two lookup routes answer, on either
path, carries a request id (the ``request_id`` field, the ``X-Request-Id`` header) and is logged
under it as one impression on a Redis Stream, written in the background
(:mod:`serving.api.impressions`); ``POST /v1/events`` takes the web app's clicks, add-to-cart and
purchases, which echo that id (:mod:`serving.api.events`). While an A/B test runs
(``feedback.experiments``), the customer's variant decides which list a recommendations answer reads
(:mod:`serving.api.variants`), and is named in the ``X-Variant`` header and in the impression.

Who may call what (:mod:`serving.api.auth`): with ``auth`` given, every path but ``/healthz``,
``/openapi.json`` and the demo page needs an API key with the path's scope (401, 403), within the
key's rate (429; with ``auth.shared_limit``, counted in the lookup client's Redis across processes:
:mod:`serving.api.rate_limit`); the fast path checks the same. ``demo`` adds the demo store front (``/``,
``/static``) and ``/v1/demo/users``; without it they do not exist. ``cors_origins``: the browser
origins allowed to call the API (none by default: no CORS headers at all).
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import uuid
from pathlib import Path as FsPath
from typing import Callable, Optional, Sequence

import redis
from fastapi import FastAPI, Path, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from redis.exceptions import RedisClusterException

from config.feedback import FeedbackConfig
from serving.api.auth import Auth, AuthMiddleware, openapi_security, required_scope
from serving.api.clients import ClientSource, LazyClient
from serving.api.events import BodyLimit, events_router
from serving.api.fast import FastLookups, LookupApp
from serving.api.impressions import REQUEST_ID_HEADER, ImpressionLog, new_request_id, stream_counter
from serving.api.metrics import CONTENT_TYPE, Metrics, watch_loop
from serving.api.middleware import ObserveMiddleware
from serving.api.models import (AUTH_ERRORS, DEMO_USERS_MAX, ERRORS, ID_MAX, ID_PATTERN, K_MAX, NOTHING_PUBLISHED,
                                REQUEST_ID_HEADERS, STORED_VALUE_UNREADABLE, UNAVAILABLE, DemoUsers, ErrorBody, Health, ItemDetails,
                                Recommendations, SimilarItems, not_found_similar, product_dicts, storable,
                                validation_error)
from serving.api.redis_errors import REDIS_FAILURES, unavailable as redis_unavailable
from serving.api.sampler import DemoIds, demo_user_ids
from serving.api.variants import VARIANT_HEADER, Variants
from serving.client import Lookup, NoPublishedVersion
from serving.codec import StoredValueError

log = logging.getLogger(__name__)

STATIC_DIR = FsPath(__file__).resolve().parents[1] / "static"
VARIANT_HEADER_DOC = {"description": "the A/B variant that served the list (<experiment>:<variant>); absent "
                                     "when no experiment runs (feedback.experiments)", "schema": {"type": "string"}}


async def _product_list(client, found: Lookup):
    # details from the version the list came from: no pointer read, cached after the first request
    details = await client.item_details(found.items, version=found.version) if found.items else {}
    return product_dicts(found.items, found.scores, found.tags, details)


def _lifespan(metrics: Metrics, impressions: Optional[ImpressionLog] = None):
    """Startup and shutdown of one app.

    * Move everything alive at startup (the modules, FastAPI's routes and schemas: hundreds of
      thousands of objects) out of the garbage collector's reach with ``gc.freeze``. A full collection
      otherwise walks them all and stalls every request in flight for tens of milliseconds: at 2,000
      lookups per second such pauses decide the p99 (BENCHMARKS.md, lookup latency).
    * Time every collection and watch the event loop's delays (``/metrics``: ``reco_gc_*``,
      ``reco_event_loop_*``), so a slow tail can be told apart: our own pauses or a starved process.

    All undone at shutdown, so an app started and stopped inside a longer-lived process leaves it as
    it was; the impressions still buffered are written out."""
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        gc.collect()
        gc.freeze()
        gc.callbacks.append(metrics.on_gc)
        watcher = asyncio.get_running_loop().create_task(watch_loop(metrics))
        try:
            yield
        finally:
            if impressions is not None:
                await impressions.aclose()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            with contextlib.suppress(ValueError):
                gc.callbacks.remove(metrics.on_gc)
            gc.unfreeze()
    return lifespan


def _add_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    """Redis down or slow -> 503 (retry), nothing published -> 503, a ValueError -> 422, a stored value
    that cannot be read -> its error class's status (500). The fast path calls these same handlers."""

    def unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("redis unavailable on %s: %s", request.url.path, exc)
        body = ErrorBody(detail=f"{UNAVAILABLE}: {str(exc) or type(exc).__name__}", retry=True)
        return JSONResponse(body.model_dump(exclude_none=True), status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(redis.exceptions.RedisError)
    async def on_redis_error(request: Request, exc: redis.exceptions.RedisError):
        metrics.redis_error()
        if redis_unavailable(exc):    # ConnectionError, TimeoutError; a cluster's CLUSTERDOWN
            return unavailable(request, exc)
        raise exc  # any other Redis error is a bug or a bad publish: generic 500, logged

    # a Redis Cluster that no node of answers: redis-py's RedisClusterException, which is no
    # RedisError. The same 503 as one unreachable server; any other (a command it cannot route) is a bug
    @app.exception_handler(RedisClusterException)
    async def on_cluster_error(request: Request, exc: RedisClusterException):
        metrics.redis_error()
        if redis_unavailable(exc):
            return unavailable(request, exc)
        raise exc

    # the built-in TimeoutError (asyncio.wait_for's, a socket's): a lookup only waits on Redis, so
    # Redis was too slow, as with redis.TimeoutError: 503, never the generic 500
    @app.exception_handler(TimeoutError)
    async def on_timeout(request: Request, exc: TimeoutError):
        metrics.redis_error()
        return unavailable(request, exc)

    @app.exception_handler(NoPublishedVersion)
    async def on_nothing_published(request: Request, exc: NoPublishedVersion):
        return JSONResponse(ErrorBody(detail=NOTHING_PUBLISHED).model_dump(exclude_none=True), status_code=503)

    @app.exception_handler(ValueError)   # in the shape the schema promises for a 422: a list of errors
    async def on_bad_value(request: Request, exc: ValueError):
        return validation_error(str(exc))

    @app.exception_handler(StoredValueError)   # a ValueError, but the stored data's fault: never 422
    async def on_bad_stored_value(request: Request, exc: StoredValueError):
        request_id = uuid.uuid4().hex[:12]
        log.error("unreadable stored value on %s (request_id=%s): %s", request.url.path, request_id, exc)
        body = ErrorBody(detail=f"{STORED_VALUE_UNREADABLE}: {exc}", request_id=request_id)
        return JSONResponse(body.model_dump(), status_code=exc.http_status)   # core.errors.StoredDataError: 500


def create_app(client_factory: ClientSource, *, title: str = "RetailReco lookup",
               fast_lookups: bool = True, auth: Optional[Auth] = None, demo: Optional[DemoIds] = None,
               cors_origins: Sequence[str] = (), feedback: FeedbackConfig = FeedbackConfig(),
               request_ids: Callable[[], str] = new_request_id) -> FastAPI:
    """Build the service around a lookup client.

    Args:
        client_factory: a ready :class:`AsyncLookupClient` (answers on the event loop) or
            :class:`LookupClient` (each Redis call on the thread pool), or a zero-argument
            callable returning one; the callable is called once, on the first request that
            needs it, so the app starts even while Redis is down.
        title: the OpenAPI title.
        fast_lookups: answer plain lookups on the fast path (:class:`serving.api.fast.FastLookups`);
            False sends every request through FastAPI's request handling (the same answers, at
            more CPU per lookup; what the tests compare the fast path with).
        auth: the API keys every request is checked against (:class:`serving.api.auth.Auth`); None:
            no keys (``reco serve`` then binds loopback only).
        demo: serve the demo page and ``/v1/demo/users``, offering ids of this synthetic id space.
        cors_origins: browser origins allowed to call the API (CORS); none: no CORS headers.
        feedback: the feedback loop (``feedback:``): impressions of every list answered
            (:mod:`serving.api.impressions`) and ``POST /v1/events`` (:mod:`serving.api.events`),
            each on its Redis Stream on the lookup client's Redis; and the A/B tests
            (``feedback.experiments``, :mod:`serving.api.variants`): the customer's variant decides
            which list answers, and is named in the ``X-Variant`` header and the impression.
        request_ids: makes each lookup answer's request id (tests pass a predictable one).

    The lookup endpoints build their JSON from plain dicts (``response_model`` still
    documents it in the schema): validating our own answers again cost more than the lookup.
    """
    metrics = Metrics()
    get_client = LazyClient(client_factory)
    variants = Variants(feedback.experiments)
    impressions = (ImpressionLog(feedback.impressions, get_client, stream_counter(metrics.registry))
                   if feedback.impressions.enabled else None)
    # No /docs or /redoc: FastAPI's pages load their scripts from a CDN, and this
    # service must work offline. The schema is at /openapi.json.
    app = LookupApp(title=title, version="1", docs_url=None, redoc_url=None, lifespan=_lifespan(metrics, impressions),
                    description="Reads the recommendations the nightly job published to Redis.")
    app.state.metrics = metrics
    app.state.impressions = impressions
    _add_error_handlers(app, metrics)

    # ---- lookups ------------------------------------------------------------------------

    IdPath = dict(min_length=1, max_length=ID_MAX, pattern=ID_PATTERN)
    KQuery = Query(10, ge=1, le=K_MAX, description=f"how many items, 1..{K_MAX}")

    def answered(request_id: str, route: str, found, k: int, **ids) -> None:
        if impressions is not None:
            impressions.log(request_id, route, found, k, **ids)

    @app.get("/v1/users/{user_id}/recommendations", response_model=Recommendations,
             responses={200: {"headers": {**REQUEST_ID_HEADERS, VARIANT_HEADER: VARIANT_HEADER_DOC}}, **ERRORS},
             summary="Recommendations for a customer, or the fallback list for an unknown one")
    async def recommendations(
        user_id: str = Path(..., **IdPath),
        k: int = KQuery,
        segment: Optional[str] = Query(None, max_length=ID_MAX, pattern=ID_PATTERN,
                                       description="the customer's segment (e.g. country), used when they "
                                                   "have no personal list"),
    ):
        client = get_client()
        # an id or segment the store cannot hold is nobody's: the fallbacks answer, as for an unknown one
        customer = user_id if storable(user_id) else None
        assigned = variants(customer) if variants else None     # an A/B variant may serve a fallback list
        found = await client.recommendations(customer if assigned is None or assigned.personal else None, k,
                                             segment=segment if segment is None or storable(segment) else None)
        metrics.seen_version(found.version)
        if found.fallback:
            metrics.fallback(found.source)
        request_id = request_ids()
        body = {"user_id": user_id, "k": k, "source": found.source, "fallback": found.fallback,
                "version": found.version, "request_id": request_id, "items": await _product_list(client, found)}
        answered(request_id, "recommendations", found, k, user_id=user_id, segment=segment,
                 variant=assigned.label if assigned is not None else None)
        headers = {REQUEST_ID_HEADER: request_id}
        if assigned is not None:
            headers[VARIANT_HEADER] = assigned.label
        return JSONResponse(body, headers=headers)

    @app.get("/v1/items/{item_id}/similar", response_model=SimilarItems,
             responses={200: {"headers": REQUEST_ID_HEADERS},
                        404: {"model": ErrorBody, "description": "unknown item"}, **ERRORS},
             summary="Items similar to an item")
    async def similar(item_id: str = Path(..., **IdPath), k: int = KQuery):
        client = get_client()
        if not storable(item_id):      # nobody's id: unknown, once something is published
            if await client.current_version() is None:
                raise NoPublishedVersion(NOTHING_PUBLISHED)
            return not_found_similar(item_id)
        found = await client.similar(item_id, k)
        if found is None:
            return not_found_similar(item_id)
        metrics.seen_version(found.version)
        request_id = request_ids()
        body = {"item_id": item_id, "k": k, "version": found.version, "request_id": request_id,
                "items": await _product_list(client, found)}
        answered(request_id, "similar", found, k, item_id=item_id)
        return JSONResponse(body, headers={REQUEST_ID_HEADER: request_id})

    @app.get("/v1/items/{item_id}", response_model=ItemDetails,
             responses={404: {"model": ErrorBody, "description": "unknown item"}, **ERRORS},
             summary="Title, price and category of an item")
    async def item(item_id: str = Path(..., **IdPath)):
        client = get_client()
        version = await client.current_version()
        if version is None:
            raise NoPublishedVersion(NOTHING_PUBLISHED)
        details = (await client.item_details([item_id], version=version)).get(item_id) if storable(item_id) else None
        if details is None:
            return JSONResponse({"detail": f"unknown item {item_id!r}"}, status_code=404)
        return JSONResponse({"item_id": item_id, "title": details.get("title"), "price": details.get("price"),
                             "category": details.get("category"), "version": version})

    if demo is not None:
        @app.get("/v1/demo/users", response_model=DemoUsers, responses=ERRORS,
                 summary="A few synthetic customer ids the current version has lists for (demo mode only)")
        async def demo_users(n: int = Query(10, ge=1, le=DEMO_USERS_MAX)):
            client = get_client()
            version = await client.current_version()
            if version is None:
                raise NoPublishedVersion(NOTHING_PUBLISHED)
            return DemoUsers(version=version, user_ids=await demo_user_ids(client, version, n, demo))

    if feedback.events.enabled:
        app.include_router(events_router(feedback.events, get_client))

    # ---- operations ---------------------------------------------------------------------

    @app.get("/healthz", response_model=Health, response_model_exclude_none=True, responses={503: {"model": Health}},
             summary="200 when Redis answers and a version is published, else 503")
    async def healthz():
        try:
            version = await get_client().current_version()
        except REDIS_FAILURES as exc:
            if not redis_unavailable(exc):
                raise
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
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    # ---- demo page ----------------------------------------------------------------------

    if demo is not None:
        @app.get("/", include_in_schema=False)
        async def index():
            return FileResponse(STATIC_DIR / "index.html")

        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # ---- who may call, from where -------------------------------------------------------

    if fast_lookups:
        app.fast = FastLookups(app, get_client, metrics, auth=auth, cors=bool(cors_origins),
                               impressions=impressions, request_ids=request_ids, variants=variants)
        app.fast.add("/v1/users/{user_id}/recommendations", app.fast.recommendations)
        app.fast.add("/v1/items/{item_id}/similar", app.fast.similar)
    if feedback.events.enabled:  # inside the key check: nobody's body is read before their key is
        app.add_middleware(BodyLimit, path="/v1/events", max_bytes=feedback.events.max_body_bytes)
    if auth is not None and auth.shared is not None:
        auth.shared.bind(get_client)     # the shared rate limit counts on the lookup client's Redis
    if auth is not None:        # inside CORS: a preflight needs no key, a refusal gets CORS headers
        app.add_middleware(AuthMiddleware, auth=auth, routes=lambda: app.router.routes)
        openapi_security(app, lambda path: required_scope(path) is not None, AUTH_ERRORS)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"],
                           expose_headers=[REQUEST_ID_HEADER, VARIANT_HEADER], max_age=600)
    app.add_middleware(ObserveMiddleware, metrics=metrics)
    return app
