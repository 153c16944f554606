"""Impressions: every list the lookup service returns, logged as one entry of a Redis Stream
(issue 25, point 1; docs/FEEDBACK.md has the entry's fields).

How, and why this way: a lookup must not wait on the log. Piggybacking the XADD on the lookup's
own round trip is not possible: that pipeline runs *before* the list is known (it reads the list),
and a second round trip per lookup is what the latency budget (p99 <= 5 ms at 2,000 req/s) cannot
spare. So a lookup only appends a small tuple to an in-memory buffer (:meth:`ImpressionLog.log`:
no encoding, no I/O, a few microseconds), and a background task on the same event loop writes the
buffer out in batches, one pipeline of XADDs (``MAXLEN ~``) per ``batch`` entries, at most every
``flush_ms``: at 2,000 lookups a second that is about 40 entries a round trip, instead of 2,000
round trips. The buffer is bounded (``buffer`` entries): when Redis is slow or down, entries beyond
it are dropped and counted, never waited for; a batch Redis refuses is dropped and counted too
(``reco_stream_entries_total{stream, outcome}``: ``written``, ``dropped_buffer_full``,
``dropped_redis_error``). The price: entries still in the buffer when a worker dies are lost (at
most ``flush_ms`` worth in normal operation; the app's shutdown writes what is left).

Each impression has a request id (:func:`new_request_id`), which the answer carries (its
``request_id`` field and the ``X-Request-Id`` header) so that the web app can echo it back with
the click or purchase that follows (:mod:`serving.api.events`).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import redis
from prometheus_client import CollectorRegistry, Counter

from config.feedback import ImpressionsSection
from serving.api.streams import Fields, redis_of, stream_key, xadd_many
from serving.client import Lookup

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
SHUTDOWN_WAIT_S = 5.0      # at shutdown, how long the buffered impressions may take to be written
# (request id, ms since the epoch, route, user id, anchor item id, segment, k, Lookup, variant)
_Pending = Tuple[str, int, str, Optional[str], Optional[str], Optional[str], int, Lookup, Optional[str]]


def new_request_id() -> str:
    """32 hex digits, random (uuid4): unique across workers and restarts, so the drain can dedupe by it."""
    return uuid.uuid4().hex


def stream_counter(registry: CollectorRegistry) -> Counter:
    return Counter("reco_stream_entries_total", "Feedback-loop stream entries, by stream and outcome (written, "
                   "dropped_buffer_full, dropped_redis_error).", ("stream", "outcome"), registry=registry)


def encode(pending: _Pending) -> Fields:
    """The stream entry of an impression (all values strings; see docs/FEEDBACK.md)."""
    request_id, ts, route, user_id, item_id, segment, k, found, variant = pending
    items = [[item, pos, tag] for pos, (item, tag) in enumerate(zip(found.items, found.tags), start=1)]
    return {"request_id": request_id, "ts": str(ts), "route": route, "user_id": user_id or "",
            "item_id": item_id or "", "segment": segment or "", "k": str(k), "version": found.version or "",
            "variant": variant or "", "source": found.source, "fallback": "1" if found.fallback else "0",
            "items": json.dumps(items, separators=(",", ":"), ensure_ascii=False)}


class ImpressionLog:
    """The bounded buffer of impressions and the task that writes it to the stream.

    Args:
        section: the ``feedback.impressions`` settings (stream name, maxlen, buffer, batch, flush_ms).
        get_client: the app's lookup client (its Redis connection is where the stream is written,
            under its namespace: ``<namespace>:stream:<name>``).
        counter: ``reco_stream_entries_total`` (:func:`stream_counter`) of the app's registry, labelled
            with the stream's name (``impressions``).
        clock: seconds since the epoch (tests pass their own).
    """

    def __init__(self, section: ImpressionsSection, get_client: Callable[[], Any], counter: Counter,
                 clock: Callable[[], float] = time.time) -> None:
        self.section = section
        self.get_client = get_client
        self.clock = clock
        self._pending: Deque[_Pending] = deque()
        self._written = counter.labels(section.stream, "written")
        self._dropped_full = counter.labels(section.stream, "dropped_buffer_full")
        self._dropped_error = counter.labels(section.stream, "dropped_redis_error")
        self._task: Optional[asyncio.Task] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._wake: Optional[asyncio.Event] = None
        self._flushing = asyncio.Lock()

    def log(self, request_id: str, route: str, found: Lookup, k: int, user_id: Optional[str] = None,
            item_id: Optional[str] = None, segment: Optional[str] = None, variant: Optional[str] = None) -> bool:
        """Queue the impression of an answer (called on the event loop); False: the buffer is full
        and the impression was dropped (counted). ``variant``: the A/B variant's label
        (``<experiment>:<variant>``, :mod:`serving.api.variants`) when an experiment decided the list."""
        if len(self._pending) >= self.section.buffer:
            self._dropped_full.inc()
            return False
        self._pending.append((request_id, int(self.clock() * 1000), route, user_id, item_id, segment, k, found,
                              variant))
        self._kick()
        return True

    def __len__(self) -> int:
        return len(self._pending)

    def _kick(self) -> None:
        """Wake the writer, starting it on this loop if it is not running here (first use; a test
        client without a lifespan runs each request on a loop of its own)."""
        loop = asyncio.get_running_loop()
        task = self._task
        if task is None or task.done() or self._loop is not loop:
            self._loop, self._wake = loop, asyncio.Event()
            self._flushing = asyncio.Lock()
            self._wake.set()
            self._task = loop.create_task(self._run(self._wake), name="impressions-writer")
        elif not self._wake.is_set():
            self._wake.set()

    async def _run(self, wake: asyncio.Event) -> None:
        while True:
            await wake.wait()
            await asyncio.sleep(self.section.flush_ms / 1000.0)   # gather a batch
            wake.clear()
            await self.flush()

    async def flush(self) -> int:
        """Write every queued impression (in batches of ``batch``); how many were written."""
        written = 0
        async with self._flushing:
            while self._pending:
                n = min(self.section.batch, len(self._pending))
                batch: List[_Pending] = [self._pending.popleft() for _ in range(n)]
                key = self.section.stream
                try:
                    client = self.get_client()
                    key = stream_key(client, self.section.stream)
                    await xadd_many(redis_of(client), key, [encode(p) for p in batch], self.section.maxlen)
                except asyncio.CancelledError:                  # shutdown while Redis stalls: counted, then out
                    self._dropped_error.inc(n)
                    raise
                except (redis.RedisError, OSError) as exc:     # TimeoutError is an OSError
                    self._dropped_error.inc(n)
                    log.warning("dropped %d impressions: could not write them to %s: %s", n, key, exc)
                    continue
                self._written.inc(n)
                written += n
        return written

    async def aclose(self) -> None:
        """Stop the writer and write what is left (the app's shutdown), waiting at most
        :data:`SHUTDOWN_WAIT_S` in all for Redis; what is still unwritten then is dropped and counted."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHUTDOWN_WAIT_S
        task, self._task = self._task, None
        if task is not None and task.get_loop() is loop:
            with contextlib.suppress(asyncio.TimeoutError):     # let a write under way finish
                await asyncio.wait_for(self._flushing.acquire(), max(0.0, deadline - loop.time()))
                self._flushing.release()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.flush(), max(0.0, deadline - loop.time()))
        if self._pending:
            self._dropped_error.inc(len(self._pending))
            log.warning("dropped %d impressions at shutdown: Redis did not take them in %g s", len(self._pending),
                        SHUTDOWN_WAIT_S)
            self._pending.clear()


def stream_entries(raw: List[Tuple[bytes, Dict[bytes, bytes]]]) -> List[Dict[str, str]]:
    """XRANGE's answer as plain dicts (for tests and tools)."""
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in raw]
