"""``POST /v1/events``: what customers did with the items the web app showed them (issue 25, point 2;
docs/FEEDBACK.md says what to send and when).

One event per request: a click, an add-to-cart or a purchase (:data:`core.contract.FEEDBACK_TYPES`)
of an item by a customer, with the ``request_id`` of the lookup answer it follows when it follows
one (the answer's ``request_id``; the drain attributes the event to that impression). The body is
checked before anything is stored; a bad one gets a 4xx and is not stored:

* not UTF-8 -> 400 (FastAPI's own answer);
* larger than ``feedback.events.max_body_bytes`` -> 413 (:class:`BodyLimit`: the body is read no
  further, whether it declares its length or not);
* not JSON, not an object, a missing or unknown field, an unknown type, an id the lookups would
  refuse, a time without a time zone -> 422 (pydantic, :class:`FeedbackEvent`);
* a time more than ``future_tolerance_s`` ahead of the server's clock, or more than
  ``max_age_hours`` behind it -> 422 naming ``time``.

An accepted event is written to the events stream (``XADD ... MAXLEN ~``) *before* the answer, 202
with its ``event_id``: unlike an impression, an event is not buffered in memory, because the web app
can retry a 503 (Redis down or slow) and a 202 must mean that the event is in Redis. A retry should
send the same ``event_id`` (made by the web app; else the service makes one): the drain keeps one
row per ``event_id``.
"""
from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from config.feedback import EventsSection
from core.contract import FeedbackType
from serving.api.models import ERRORS, ID_MAX, ID_PATTERN, ErrorBody, validation_error
from serving.api.streams import redis_of, stream_key, xadd_many

TOKEN_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"      # request and event ids


class FeedbackEvent(BaseModel):
    """What a customer did with an item."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    type: FeedbackType = Field(description="click, add_to_cart or purchase")
    user_id: str = Field(min_length=1, max_length=ID_MAX, pattern=ID_PATTERN, description="the customer")
    item_id: str = Field(min_length=1, max_length=ID_MAX, pattern=ID_PATTERN, description="the item")
    request_id: Optional[str] = Field(None, pattern=TOKEN_PATTERN,
                                      description="the request_id of the lookup answer that showed the item, "
                                                  "when the event follows a recommendation")
    event_id: Optional[str] = Field(None, pattern=TOKEN_PATTERN,
                                    description="the web app's id of this event: send the same one when retrying, "
                                                "so it is counted once (made by the service when left out)")
    time: Optional[AwareDatetime] = Field(None, description="when it happened (ISO 8601 with a time zone); the "
                                                            "server's time when left out. At most minutes ahead "
                                                            "of the server's clock, at most days behind")
    quantity: Optional[int] = Field(None, ge=1, le=100_000, description="purchase or add_to_cart: how many")
    price: Optional[float] = Field(None, ge=0, le=1_000_000, description="purchase: the unit price paid")


class EventAccepted(BaseModel):
    event_id: str = Field(description="the event's id (the one sent, or the one the service made)")


def _entry(event: FeedbackEvent, event_id: str, at: datetime, received_ms: int) -> dict:
    """The stream entry of an event (all values strings; see docs/FEEDBACK.md)."""
    return {"event_id": event_id, "type": event.type, "user_id": event.user_id, "item_id": event.item_id,
            "request_id": event.request_id or "", "ts": str(int(at.timestamp() * 1000)),
            "received_ts": str(received_ms), "quantity": "" if event.quantity is None else str(event.quantity),
            "price": "" if event.price is None else repr(float(event.price))}


def _now() -> float:
    return time.time()


def events_router(section: EventsSection, get_client: Callable[[], Any],
                  clock: Optional[Callable[[], float]] = None) -> APIRouter:
    """The ``POST /v1/events`` route, writing to the stream ``section.stream`` names (in the lookup
    client's namespace: :func:`serving.api.streams.stream_key`) on the lookup client's Redis;
    ``clock``: seconds since the epoch (default: the module's :func:`_now`, looked up per request)."""
    router = APIRouter()

    @router.post("/v1/events", status_code=202, response_model=EventAccepted,
                 responses={400: {"model": ErrorBody, "description": "the body cannot be read as text (not UTF-8)"},
                            413: {"model": ErrorBody, "description": f"the body is larger than "
                                                                     f"{section.max_body_bytes} bytes"},
                            422: {"description": "not a valid event (the body says which field and why), or "
                                                 "its time is too far ahead of or behind the server's clock"},
                            **ERRORS},
                 summary="Report a click, add-to-cart or purchase (of a recommended item: with its request_id)")
    async def post_event(event: FeedbackEvent = Body(...)):
        now = clock() if clock is not None else _now()
        at = event.time or datetime.fromtimestamp(now, tz=timezone.utc)
        ahead = at.timestamp() - now
        if ahead > section.future_tolerance_s:
            return validation_error(f"time is {ahead:.0f} s ahead of the server's clock (at most "
                                    f"{section.future_tolerance_s:g} s): send the time the event happened, in UTC "
                                    "or with its offset", loc=("body", "time"))
        if -ahead > section.max_age_hours * 3600:
            return validation_error(f"time is {-ahead / 3600:.1f} hours old (at most {section.max_age_hours:g}): "
                                    "events this old are not taken", loc=("body", "time"))
        event_id = event.event_id or uuid.uuid4().hex
        client = get_client()
        await xadd_many(redis_of(client), stream_key(client, section.stream),
                        [_entry(event, event_id, at, int(now * 1000))], section.maxlen)
        return JSONResponse({"event_id": event_id}, status_code=202)

    return router


_TOO_LARGE = "the body is larger than {} bytes: send one event per request"


class BodyLimit:
    """Refuse (413) a request of ``path`` whose body is larger than ``max_bytes``: at once when its
    Content-Length says so, else as soon as that many bytes have come (a chunked body); the body is
    read no further. A body within the limit is handed on whole."""

    def __init__(self, app, path: str, max_bytes: int) -> None:
        self.app, self.path, self.max_bytes = app, path, max_bytes

    async def _refuse(self, send) -> None:
        body = json.dumps({"detail": _TOO_LARGE.format(self.max_bytes), "retry": False}).encode("utf-8")
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode("latin-1")), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > self.max_bytes:   # a bad one: the server's to refuse
                    await self._refuse(send)
                    return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":       # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(send)
                return
            more = message.get("more_body", False)
        whole, replayed = b"".join(chunks), [False]

        async def replay():
            if replayed[0]:
                return await receive()
            replayed[0] = True
            return {"type": "http.request", "body": whole, "more_body": False}

        await self.app(scope, replay, send)



