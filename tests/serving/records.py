"""Synthetic published content for serving tests.

Every list names its version in its item ids (``<tag>-i3``), so a lookup shows
which version answered.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
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


def kill_midway(script: str, redis_url: str, r, at_least: int = 500, timeout_s: float = 20.0) -> None:
    """Run ``script`` (a publish, given ``redis_url`` as argv[1]) in a subprocess and SIGKILL it, with no
    clean-up, once it has written ``at_least`` keys more than the database held."""
    root = Path(__file__).resolve().parents[2]
    before = r.dbsize()
    proc = subprocess.Popen([sys.executable, "-c", script, redis_url], cwd=root,
                            env={**os.environ, "PYTHONPATH": str(root)}, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout_s
        while r.dbsize() < before + at_least:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the publish subprocess wrote too little"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
