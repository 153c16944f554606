"""Compact byte encodings of the values stored in Redis.

A ranked list is JSON: ``{"v":1,"i":[item ids],"s":[scores],"t":"mmbp"}``.
Scores are rounded to 4 decimals. Source tags from the known set are written
one character each (``t`` is then a string, e.g. ``"mmbp"`` = model, model,
buy_again, popular); if any tag is outside the set, ``t`` is the list of tags
as they are. ``v`` is the format version: a decoder refuses versions it does
not know instead of misreading them.

Item details are a plain JSON object (``{"title":..,"price":..,"category":..}``);
its first byte ``{`` is its format tag, so another format can come later with a
different first byte.

JSON from the C encoder/decoder of the standard library is about as fast as
the alternatives in Python and readable with ``redis-cli``.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Union

import msgspec
import numpy as np

from core.errors import StoredDataError

LIST_FORMAT = 1
SCORE_DECIMALS = 4

# One character per known source tag. Append only: a code must keep its meaning.
TAG_CODES: Dict[str, str] = {
    "model": "m", "buy_again": "b", "trending": "t", "popular": "p", "pinned": "n",
    "backfill": "k", "explore": "e", "fallback": "f", "similar": "s", "segment": "g",
}
CODE_TAGS: Dict[str, str] = {c: t for t, c in TAG_CODES.items()}

# Metadata fields read back as integers.
INT_META_FIELDS = ("keys", "bytes", "n_shards", "count_u", "count_s", "count_i", "count_f", "complete")

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
# msgspec's decoder: the same values as json.loads for what encode_list / encode_item write (UTF-8,
# finite floats), at a fifth of the CPU; a lookup decodes a whole list to answer its first k
_loads = msgspec.json.Decoder().decode
_JSON_ESCAPE = re.compile(r'["\\\x00-\x1f]')  # what JSON escapes in a string when ensure_ascii is off


class StoredValueError(StoredDataError):
    """Bytes read from Redis are not a value this reader can decode: corrupt, or written in a newer
    format. The stored data is at fault, not the caller's request (a lookup service answers 5xx, not
    422). A ValueError too (``core.errors.StoredDataError``), so code that caught decoding errors as
    ValueError still does.

    Attributes:
        key: the Redis key the bytes came from, where the reader knows it.
        version: the published version that key belongs to, where known.
    """

    def __init__(self, message: str, key: Optional[str] = None, version: Optional[str] = None) -> None:
        super().__init__(message)
        self.key, self.version = key, version

    def at(self, key: str, version: str) -> "StoredValueError":
        """The same error, its message naming the key and version it was read from."""
        return StoredValueError(f"the value of {key} (version {version}) cannot be read: {self}", key, version)


class RankedList(NamedTuple):
    """A decoded ranked list: parallel lists of item ids, scores and source tags."""
    items: List[str]
    scores: List[float]
    tags: List[str]


def encode_list(items: Sequence[str], scores: Sequence[float], tags: Union[Sequence[str], str]) -> bytes:
    """Encode a ranked list. ``tags`` may be one tag for every item.

    Raises:
        ValueError: lengths differ, a score is not finite, or an item is not a string.
    """
    n = len(items)
    if isinstance(tags, str):
        tags = [tags] * n
    if len(scores) != n or len(tags) != n:
        raise ValueError(f"a ranked list needs as many scores and tags as items: "
                         f"{n} items, {len(scores)} scores, {len(tags)} tags")
    rounded = _round_scores(scores)
    if rounded is None:  # not a flat array of real numbers, or not all finite: the exact per-score path
        rounded = []
        for s in scores:
            f = float(s)
            if not math.isfinite(f):
                raise ValueError(f"scores must be finite numbers, got {s!r} (items {list(items)[:5]}...)")
            rounded.append(round(f, SCORE_DECIMALS))
    if set(map(type, items)) - {str}:  # exact types first: one pass in C for the usual all-str list
        for it in items:
            if not isinstance(it, str):
                raise ValueError(f"item ids must be strings, got {type(it).__name__}: {it!r}")
    try:
        t: Union[str, List[str]] = "".join(map(TAG_CODES.__getitem__, tags))
    except KeyError:
        t = [str(x) for x in tags]
    joined = '","'.join(items)
    if _JSON_ESCAPE.search(joined):  # an id JSON must escape: let the encoder do it
        return _dumps({"v": LIST_FORMAT, "i": list(items), "s": rounded, "t": t}).encode("utf-8")
    # what _dumps writes for this dict, without its per-element type dispatch (float.__repr__ is its float format)
    return (f'{{"v":{LIST_FORMAT},"i":[' + (f'"{joined}"' if n else "") + '],"s":['
            + ",".join(map(float.__repr__, rounded)) + '],"t":' + _dumps(t) + "}").encode("utf-8")


_SCALE = 10.0 ** SCORE_DECIMALS


def _round_scores(scores: Sequence[float]) -> Optional[List[float]]:
    """``[round(float(s), 4) for s in scores]`` with numpy, bit for bit; None when that is not sure.

    Python's ``round(x, 4)`` is correctly rounded: the nearest double to the decimal
    ``n / 10**4``, ``n`` being exact ``x * 10**4`` rounded half to even. ``t = x * 1e4``
    in floating point is within half an ulp of the exact product, so where ``t`` is
    further than a few ulps from a half-integer, ``rint(t)`` is that same ``n``; and
    ``n / 1e4`` is one IEEE division of two exact values, hence the same nearest
    double. Scores near a tie (or huge) go through ``round`` itself.

    Returns None (the caller takes the exact per-score path, with its errors) when
    ``scores`` is not a flat sequence of ints, bools or floats, or holds a NaN or an
    infinity.
    """
    try:
        a = np.asarray(scores)
    except (TypeError, ValueError):
        return None
    if a.ndim != 1 or a.dtype.kind not in "fiub":
        return None
    t = a.astype(np.float64) * _SCALE
    n = np.rint(t)
    # |t - n| (exact) is t's distance to the nearest integer; at least a few ulps below one half means no tie.
    # False for NaN and inf, and for |t| >= 2**45 where a double has no fraction bits to spare.
    sure = np.abs(t - n) + np.abs(t) * 2.0 ** -46 < 0.5 - 2.0 ** -60
    out = (n / _SCALE).tolist()
    if not sure.all():
        for i in np.flatnonzero(~sure).tolist():
            f = float(a[i])  # a holds the scores as given (float32, int64, ...): float() as the loop does
            if not math.isfinite(f):
                return None
            out[i] = round(f, SCORE_DECIMALS)
    return out


def decode_list(data: Union[bytes, str], limit: Optional[int] = None) -> RankedList:
    """Decode what :func:`encode_list` wrote.

    Args:
        limit: keep the first ``limit`` entries only (a lookup's ``k``): the same answer as slicing
            the whole list, without expanding the tags of entries nobody reads.

    Raises:
        StoredValueError: the bytes are not a ranked list of a known format version.
    """
    try:
        obj = _loads(data)
        fmt = obj.get("v")
        items, scores, t = obj["i"], obj["s"], obj["t"]
    except (ValueError, TypeError, AttributeError, KeyError) as e:   # msgspec.DecodeError is a ValueError
        raise StoredValueError(f"not an encoded ranked list ({e}): {data[:80]!r}") from None
    if fmt != LIST_FORMAT:
        raise StoredValueError(f"ranked list format v{fmt} is unknown to this reader (knows v{LIST_FORMAT}); "
                               "upgrade the reader or republish")
    if limit is not None:
        items, scores, t = items[:limit], scores[:limit], t[:limit]
    tags = [CODE_TAGS.get(c, c) for c in t] if isinstance(t, str) else list(t)
    return RankedList(items, scores, tags)


def encode_item(details: Mapping[str, Any]) -> bytes:
    """Encode item details (a flat dict of JSON values, e.g. title, price, category)."""
    if not isinstance(details, Mapping):
        raise ValueError(f"item details must be a mapping, got {type(details).__name__}")
    try:
        return _dumps(dict(details)).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ValueError(f"item details cannot be encoded ({e}): {dict(details)!r:.200}") from None


def decode_item(data: Union[bytes, str]) -> Dict[str, Any]:
    """Decode what :func:`encode_item` wrote.

    Raises:
        StoredValueError: the bytes are not item details of a known format.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if not raw.startswith(b"{"):
        raise StoredValueError(f"item details in an unknown format (first byte {raw[:1]!r}): {raw[:80]!r}")
    try:
        details = _loads(raw)
    except ValueError as e:   # msgspec.DecodeError
        raise StoredValueError(f"not encoded item details ({e}): {raw[:80]!r}") from None
    return details


def encode_meta(meta: Mapping[str, Any]) -> Dict[str, str]:
    """Metadata as a hash of strings (None values dropped)."""
    return {str(k): str(v) for k, v in meta.items() if v is not None}


def decode_meta(raw: Mapping[Union[bytes, str], Union[bytes, str]]) -> Dict[str, Any]:
    """A metadata hash as read by HGETALL, with the integer fields as ints."""
    out: Dict[str, Any] = {}
    for k, v in raw.items():
        key = k.decode("utf-8") if isinstance(k, bytes) else k
        val: Any = v.decode("utf-8") if isinstance(v, bytes) else v
        if key in INT_META_FIELDS:
            try:
                val = int(val)
            except ValueError:
                pass
        out[key] = val
    return out


def maybe_decode_str(value: Optional[Union[bytes, str]]) -> Optional[str]:
    """bytes -> str (UTF-8); None stays None."""
    if value is None:
        return None
    return value.decode("utf-8") if isinstance(value, bytes) else value
