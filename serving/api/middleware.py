"""The ASGI middleware that counts and times every request FastAPI answers, and turns an exception
nothing handled into a generic 500 (logged with an id; the id, never the traceback, in the body).

The lookups' fast path (:mod:`serving.api.fast`) runs ahead of it and counts its own answers with
the same labels (:func:`method_label`), and answers an unhandled exception with the same
:func:`internal_error`.
"""
from __future__ import annotations

import logging
import time
import uuid

from fastapi.responses import JSONResponse

from serving.api.metrics import Metrics
from serving.api.models import ErrorBody

log = logging.getLogger(__name__)

_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def method_label(scope: dict) -> str:
    method = scope.get("method", "")
    return method if method in _METHODS else "other"  # clients may send any token


def route_label(scope: dict) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def internal_error(scope: dict) -> JSONResponse:
    """The generic 500 of an exception nothing handled: logged with an id, the id in the body, no traceback."""
    request_id = uuid.uuid4().hex[:12]
    log.exception("unhandled error on %s %s (request_id=%s)", scope["method"], scope["path"], request_id)
    return JSONResponse(ErrorBody(detail="internal server error", request_id=request_id).model_dump(),
                        status_code=500)


class ObserveMiddleware:
    """Times every HTTP request the app's routing answers, counts it by route and status, and
    turns an exception nothing else handled into a generic 500 (logged with an id).

    Catching here rather than in an ``Exception`` handler keeps the 500 in the metrics and stops
    Starlette from re-raising it to the server. (The lookups' fast path, ahead of all this, counts
    its own answers: :class:`serving.api.fast.FastLookups`.)
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
            await internal_error(scope)(scope, receive, send_observed)
        finally:
            self.metrics.observe_request(route_label(scope), method_label(scope), status[0],
                                         time.perf_counter() - start)
