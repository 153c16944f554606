"""The feedback loop's settings: the ``feedback:`` section (issue 25; docs/FEEDBACK.md).

* ``impressions``: every list the lookup service returns is logged as one entry of a Redis Stream
  (:mod:`serving.api.impressions`), written in batches by a background task so that no lookup waits
  on it. ``buffer`` bounds the entries waiting in memory (beyond it they are dropped and counted in
  ``reco_stream_entries_total{outcome="dropped_buffer_full"}``); ``batch`` entries go in one
  pipeline, at most every ``flush_ms``.
* ``events``: ``POST /v1/events`` (clicks, add-to-cart, purchases from the web app,
  :mod:`serving.api.events`), each written to its stream before the answer.

Both streams are trimmed to about ``maxlen`` entries (``XADD ... MAXLEN ~``: Redis trims whole
nodes, so a little more may stay), which bounds Redis's memory: an impression of 10 items is about
0.5 kB, so the default million is about 0.5 GB. The drain (``reco feedback drain``) must run more
often than a stream fills, or the oldest entries are trimmed before they are read.

The two stream keys follow ``redis.namespace`` as every other key does: ``stream`` is a name, and the
key is ``<namespace>:stream:<name>`` (``reco:stream:impressions`` by default).

* ``experiments``: A/B tests of what the lookup service serves (:mod:`config.experiments`); the
  variant each answer served is recorded in its impression, and from there in ``impressions.variant``
  and ``attributed_feedback.variant``.
* ``attribution``: ``reco feedback attribute --date D`` credits each event of day D to the impression
  that showed the customer the item (:mod:`features.attribution`): the one its ``request_id`` names,
  else the latest one of the same customer with the item at most ``window_hours`` before the event.
"""
from __future__ import annotations

import re
from typing import Annotated, List

from pydantic import AfterValidator, Field, model_validator

from config.base import Strict
from config.experiments import Experiment, check_experiments

STREAM_NAME = r"[A-Za-z0-9_.-]{1,64}"


def _stream_name(value: str) -> str:
    """A stream's name, not its key: the key is ``<redis.namespace>:stream:<name>``
    (:meth:`serving.keys.KeySpace.stream`), as every other key of the namespace."""
    if not isinstance(value, str) or not re.fullmatch(STREAM_NAME, value):
        raise ValueError(f"{value!r} is not a stream name: use 1-64 letters, digits, '_', '.' or '-' (e.g. "
                         "impressions); the key is <redis.namespace>:stream:<name>, so leave the namespace out "
                         "(reco:stream:impressions is now written impressions)")
    return value


StreamName = Annotated[str, AfterValidator(_stream_name)]


class ImpressionsSection(Strict):
    enabled: bool = True
    stream: StreamName = "impressions"            # the key: <redis.namespace>:stream:impressions
    maxlen: int = Field(1_000_000, gt=0)          # approximate (MAXLEN ~)
    buffer: int = Field(10_000, gt=0)             # entries waiting in memory, per worker process
    batch: int = Field(500, gt=0)                 # entries per pipeline
    flush_ms: float = Field(20.0, ge=0)           # gather entries this long before a write


class EventsSection(Strict):
    enabled: bool = True
    stream: StreamName = "feedback"               # the key: <redis.namespace>:stream:feedback
    maxlen: int = Field(1_000_000, gt=0)          # approximate (MAXLEN ~)
    max_body_bytes: int = Field(4096, gt=0)       # a larger body: 413, nothing read further
    future_tolerance_s: float = Field(300.0, ge=0)   # clocks disagree: a time this far ahead is accepted
    max_age_hours: float = Field(72.0, gt=0)      # an older event (a client's stale queue): refused


class DrainSection(Strict):
    group: str = Field("reco-drain", pattern=r"^[A-Za-z0-9_.-]+$")   # the streams' consumer group
    count: int = Field(10_000, gt=0)              # entries read per XREADGROUP, one Delta commit each
    nightly: bool = True                          # the nightly DAG drains, then attributes its day (task feedback)


class AttributionSection(Strict):
    window_hours: float = Field(24.0, gt=0, le=720)   # an impression older than this when the event happens: no credit


class FeedbackConfig(Strict):
    impressions: ImpressionsSection = Field(default_factory=ImpressionsSection)
    events: EventsSection = Field(default_factory=EventsSection)
    drain: DrainSection = Field(default_factory=DrainSection)
    attribution: AttributionSection = Field(default_factory=AttributionSection)
    experiments: List[Experiment] = Field(default_factory=list)   # A/B tests of what the lookups serve

    @model_validator(mode="after")
    def _experiments_apart(self) -> "FeedbackConfig":
        check_experiments(self.experiments)
        return self
