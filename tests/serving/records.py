"""Synthetic published content for serving tests.

Every list names its version in its item ids (``<tag>-i3``), so a lookup shows
which version answered.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Tuple

from serving.codec import encode_item, encode_list

Record = Tuple[str, str, bytes]


def user_list(tag: str, n: int = 5) -> bytes:
    return encode_list([f"{tag}-i{j}" for j in range(n)], [1.0 - j / 10 for j in range(n)],
                       ["model"] * (n - 1) + ["popular"])


def chunks(tag: str, n_users: int = 50, n_items: int = 20, chunk: int = 25) -> Iterator[List[Record]]:
    """Users u0.., similar lists and details for items i0.., and fallbacks global and segment:DE."""
    records: List[Record] = [("u", f"u{n}", user_list(f"{tag}-u{n}")) for n in range(n_users)]
    records += [("s", f"i{n}", user_list(f"{tag}-s{n}", 3)) for n in range(n_items)]
    records += [("i", f"i{n}", encode_item({"title": f"item {n} ({tag})", "price": n + 0.5, "category": "c"}))
                for n in range(n_items)]
    records += [("f", "global", user_list(f"{tag}-global", 8)), ("f", "segment:DE", user_list(f"{tag}-DE", 8))]
    for start in range(0, len(records), chunk):
        yield records[start:start + chunk]


def expected(n_users: int = 50, n_items: int = 20) -> Dict[str, int]:
    return {"u": n_users, "s": n_items, "i": n_items, "f": 2}
