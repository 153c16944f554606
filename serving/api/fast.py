"""The lookups' fast path: the two lookup routes (a customer's recommendations, an item's similar
items) answered as plain ASGI handlers, ahead of Starlette's middleware and routing and FastAPI's
request handling, with their JSON written directly.

Why it exists: what bounds the request rate one process holds is its CPU per lookup, and FastAPI's
handling of a request (exception middleware, parameter validation, dependency solving, response
building) cost more CPU than the lookup itself. The fast path came with commit 8e3648a ("Lookup
CPU per request about halved", together with one-round-trip lookups and hiredis). Measured since:
BENCHMARKS.md, "Lookup latency at a fixed request rate": at 0.33 ms of service CPU per lookup one
uvicorn worker holds p99 <= 5 ms at 2,000 req/s on the 2-core VM; docs/SERVING.md (the HTTP
service's section): py-spy at 2,000 req/s put Starlette's middleware alone at about 8% of the
service's CPU, which is why this path now runs ahead of it, and that move with the pipelined reader
and msgspec (commit 2dab6d1) took a lookup from 0.48 to 0.33 ms of CPU. The fast path's own share
was not measured apart: ``create_app(..., fast_lookups=False)`` sends every request through
FastAPI, the baseline to measure it against.

What it answers and what it leaves to FastAPI is in :class:`FastLookups`; the tests compare its
bytes with FastAPI's for every kind of request. Being ahead of the middleware, it checks the API key
itself (:meth:`serving.api.auth.Auth.check`: one SHA-256 and a few constant-time compares, a few
microseconds against the 330 of a lookup), and leaves every cross-origin request (an ``Origin``
header, when CORS is on) to FastAPI, whose CORS middleware adds the headers.
"""
from __future__ import annotations

import json
import math
import re
import time
from typing import Callable, Dict, List, Optional, Tuple, Union
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.routing import Match

from serving.api.auth import Auth
from serving.api.impressions import ImpressionLog, new_request_id
from serving.api.metrics import Metrics
from serving.api.middleware import internal_error, method_label
from serving.api.models import ID_MAX, ID_PATTERN, K_MAX, not_found_similar, product_dicts
from serving.api.variants import Variants
from serving.client import AsyncLookupClient, Lookup, LookupClient

# What JSONResponse writes: json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).
_json = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_json_str = json.encoder.encode_basestring   # how that encoder writes a str (C), quotes included
_NO_DETAILS = '"title":null,"price":null,"category":null}'
_ID = re.compile(ID_PATTERN)
_JSON_HEADERS = [(b"content-type", b"application/json")]


class LookupApp(FastAPI):
    """FastAPI with the lookups' fast path (:class:`FastLookups`) tried before anything else:
    a plain lookup never enters Starlette's middleware stack or routing."""

    fast: Optional["FastLookups"] = None

    async def __call__(self, scope, receive, send) -> None:
        fast = self.fast
        if fast is not None and scope["type"] == "http" and await fast(scope, receive, send):
            return
        await super().__call__(scope, receive, send)


class DetailsJson:
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


def items_json(found: Lookup, details: Dict[str, Dict], tails: DetailsJson) -> Optional[str]:
    """The ``items`` array of an answer as JSONResponse would write :func:`product_dicts`, or None when
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
    """True when the route's own checks of an id (1..ID_MAX characters, ID_PATTERN) pass and the
    store can hold it (printable; the route answers any other as an unknown id)."""
    # fullmatch: no "$" before a final \n
    return len(value) <= ID_MAX and _ID.fullmatch(value) is not None and value.isprintable()


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


class FastLookups:
    """The two lookup routes as plain ASGI handlers, called by the app (:class:`LookupApp`) ahead
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

    def __init__(self, app: FastAPI, get_client: Callable[[], object], metrics: Metrics,
                 auth: Optional[Auth] = None, cors: bool = False, impressions: Optional[ImpressionLog] = None,
                 request_ids: Callable[[], str] = new_request_id, variants: Optional[Variants] = None) -> None:
        self.app = app
        self.variants = variants
        self.impressions = impressions
        self.request_ids = request_ids
        self.auth = auth
        self.cors = cors
        self.get_client = get_client
        self.metrics = metrics
        self.tails = DetailsJson()
        self.routes: List[Tuple[APIRoute, Callable]] = []

    def add(self, path: str, handler: Callable) -> None:
        """Answer the app's GET route ``path`` with ``handler(scope, path_params) -> (status, JSON body,
        request id[, A/B variant])`` or a Response (None: not a plain request; the app answers it).
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
        if self.cors and any(name == b"origin" for name, _ in scope["headers"]):
            return False                  # FastAPI's CORS middleware answers it, with its headers
        start = time.perf_counter()
        refusal = await self.auth.check(scope) if self.auth is not None else None
        if refusal is not None:
            try:
                await refusal.send(send)
            finally:
                self.metrics.observe_request(route.path, method_label(scope), refusal.status,
                                             time.perf_counter() - start)
            return True
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
                headers = [(b"content-length", str(len(answer[1])).encode("latin-1")),
                           (b"x-request-id", answer[2].encode("latin-1"))]
                if len(answer) > 3:          # the A/B variant that served the list
                    headers.append((b"x-variant", answer[3].encode("latin-1")))
                await send({"type": "http.response.start", "status": status, "headers": headers + _JSON_HEADERS})
                await send({"type": "http.response.body", "body": answer[1]})
        finally:
            self.metrics.observe_request(route.path, method_label(scope), status, time.perf_counter() - start)
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
        return internal_error(scope)

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
        return items_json(found, details, self.tails), details

    def _answered(self, route: str, found: Lookup, k: int, **ids) -> str:
        """A new request id, and the answer's impression logged under it (when impressions are on)."""
        request_id = self.request_ids()
        if self.impressions is not None:
            self.impressions.log(request_id, route, found, k, **ids)
        return request_id

    async def recommendations(self, scope: dict, params: dict) -> Optional[Tuple]:
        """(200, body, request id) or, when an experiment decided the list, (200, body, request id, variant)."""
        user_id = params.get("user_id")
        query = _fast_query(scope, segment=True) if isinstance(user_id, str) and _fast_id(user_id) else None
        if query is None:
            return None
        k, segment = query
        client = self.get_client()
        assigned = self.variants(user_id) if self.variants else None   # an A/B variant may serve a fallback list
        found = await client.recommendations(user_id if assigned is None or assigned.personal else None, k,
                                             segment=segment)
        self.metrics.seen_version(found.version)
        if found.fallback:
            self.metrics.fallback(found.source)
        items, details = await self._items(client, found)
        request_id = self._answered("recommendations", found, k, user_id=user_id, segment=segment,
                                    variant=assigned.label if assigned is not None else None)
        if items is None or type(found.fallback) is not bool or not isinstance(found.source, str) \
                or not isinstance(found.version, str):
            body = _json({"user_id": user_id, "k": k, "source": found.source, "fallback": found.fallback,
                          "version": found.version, "request_id": request_id,
                          "items": product_dicts(found.items, found.scores, found.tags, details)})
        else:
            body = (f'{{"user_id":{_json_str(user_id)},"k":{k},"source":{_json_str(found.source)},'
                    f'"fallback":{"true" if found.fallback else "false"},"version":{_json_str(found.version)},'
                    f'"request_id":{_json_str(request_id)},"items":{items}}}')
        if assigned is not None:
            return 200, body.encode("utf-8"), request_id, assigned.label
        return 200, body.encode("utf-8"), request_id

    async def similar(self, scope: dict, params: dict) -> Optional[Union[Response, Tuple[int, bytes, str]]]:
        item_id = params.get("item_id")
        query = _fast_query(scope, segment=False) if isinstance(item_id, str) and _fast_id(item_id) else None
        if query is None:
            return None
        k = query[0]
        client = self.get_client()
        found = await client.similar(item_id, k)
        if found is None:
            return not_found_similar(item_id)
        self.metrics.seen_version(found.version)
        items, details = await self._items(client, found)
        request_id = self._answered("similar", found, k, item_id=item_id)
        if items is None or not isinstance(found.version, str):
            body = _json({"item_id": item_id, "k": k, "version": found.version, "request_id": request_id,
                          "items": product_dicts(found.items, found.scores, found.tags, details)})
        else:
            body = (f'{{"item_id":{_json_str(item_id)},"k":{k},"version":{_json_str(found.version)},'
                    f'"request_id":{_json_str(request_id)},"items":{items}}}')
        return 200, body.encode("utf-8"), request_id
