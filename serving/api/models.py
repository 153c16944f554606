"""What a request may hold and what the service answers: the limits on ids and ``k``, the pydantic
response models (they document ``/openapi.json``), the error body and its texts, and the product
dicts both ways of answering a lookup write (the routes in :mod:`serving.api.app`, the fast path in
:mod:`serving.api.fast`).

The lookup routes build their JSON from plain dicts rather than these models: validating our own
answers again cost more than the lookup. The models still say, in the schema, what those dicts hold.
"""
from __future__ import annotations

from typing import Dict, List, Optional

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

# Ids are opaque strings from the catalogue; refuse only what cannot be one. The store holds
# printable ids only (serving.keys.check_id): an id this pattern allows that is not printable (a C1
# control, U+2028, a format character...) is answered as an unknown id, never refused (storable()).
ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
ID_MAX = 256
K_MAX = 100
DEMO_USERS_MAX = 50

UNAVAILABLE = "recommendation store unavailable"
NOTHING_PUBLISHED = "no recommendations published yet; run `reco publish`"
STORED_VALUE_UNREADABLE = ("the published recommendations hold a value this service cannot read (corrupt, or "
                           "written in a newer format); republish the version, or upgrade the service")


REQUEST_ID_DOC = ("this answer's id (also in the X-Request-Id header), logged with the list as an impression: "
                  "send it back with a click, add-to-cart or purchase of an item from this list (POST /v1/events)")
# the header every lookup answer carries, documented on their 200s
REQUEST_ID_HEADERS = {"X-Request-Id": {"description": REQUEST_ID_DOC, "schema": {"type": "string"}}}


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
    request_id: str = Field(description=REQUEST_ID_DOC)
    items: List[Product]


class SimilarItems(BaseModel):
    item_id: str
    k: int
    version: str
    request_id: str = Field(description=REQUEST_ID_DOC)
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


_ERROR_JSON = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
# the answers of the key check (serving.api.auth), added to every operation that needs a key
AUTH_ERRORS = {"401": {"description": "no API key, or an unknown one", "content": _ERROR_JSON,
                       "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
               "403": {"description": "the API key lacks the scope this path needs", "content": _ERROR_JSON},
               "429": {"description": "the API key's rate limit (per worker process) is reached", "content": _ERROR_JSON,
                       "headers": {"Retry-After": {"schema": {"type": "string"}}}}}

ERRORS = {503: {"model": ErrorBody, "description": "Redis unreachable, or nothing published yet"},
          500: {"model": ErrorBody, "description": "a stored value that cannot be read, or an unexpected error "
                                                   "(logged under request_id)"}}


def storable(value: str) -> bool:
    """True when an id the route accepted can be in the store (printable: ``serving.keys.check_id``).
    One that cannot is nobody's id: answered as an unknown one."""
    return value.isprintable()


def validation_error(msg: str, loc: tuple = ("request",)) -> JSONResponse:
    """A 422 in the shape FastAPI documents for every route (HTTPValidationError: a list of errors)."""
    return JSONResponse({"detail": [{"type": "value_error", "loc": list(loc), "msg": msg}]}, status_code=422)


def product_dicts(items: List[str], scores: List[float], tags: List[str],
                  details: Dict[str, Dict]) -> List[Dict]:
    """Product dicts (the fields of :class:`Product`, in its order)."""
    out = []
    for rank, (item_id, score, tag) in enumerate(zip(items, scores, tags), start=1):
        d = details.get(item_id) or {}
        out.append({"item_id": item_id, "rank": rank, "score": float(score), "tag": tag,
                    "title": d.get("title"), "price": d.get("price"), "category": d.get("category")})
    return out


def not_found_similar(item_id: str) -> JSONResponse:
    """The 404 of an item without a similar-items list (the route's and the fast path's)."""
    return JSONResponse({"detail": f"unknown item {item_id!r}: it has no similar-items list "
                                   f"in the published version"}, status_code=404)
