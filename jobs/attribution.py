"""``reco feedback attribute --date D``: the feedback events of day D credited to the impressions that
showed the items, into the Delta table ``attributed_feedback`` (issue 25, point 3; the rules are in
:mod:`features.attribution`, the table in docs/TABLES.md).

Reads the ``feedback`` rows of D and the ``impressions`` of the days an impression credited with one of
them can be on: from D minus the window (``feedback.attribution.window_hours``, in whole days) to D + 1
(an event whose web-app clock is behind the service's may come before its impression). Writes D's
partition, replacing it (``replaceWhere event_date = D``): a rerun, after a late drain or with another
window, replaces the day's rows, never adds to them.

A separate command, not the drain's last step: the drain needs Redis and takes whatever is queued; this
is a function of Delta tables and a date, so any day can be attributed again (events arrive up to
``feedback.events.max_age_hours`` late, a window may change) without touching the streams, and a failed
attribution does not make the drain run again (the hourly DAG runs them as two tasks).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import date, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from config import Config
from features.attribution import RULE_LAST_TOUCH, RULE_REQUEST_ID, attribute
from jobs.feedback_drain import FEEDBACK_SCHEMA, IMPRESSIONS_SCHEMA
from jobs.lakehouse import Lakehouse

log = logging.getLogger(__name__)

TABLE = "attributed_feedback"


@dataclass(frozen=True)
class Attributed:
    """What one day's attribution wrote: events, and how many each rule credited."""
    day: date
    events: int
    by_request_id: int
    by_last_touch: int

    @property
    def unattributed(self) -> int:
        return self.events - self.by_request_id - self.by_last_touch


def _read(lh: Lakehouse, table: str, schema, first: date, last: date) -> DataFrame:
    """``table``'s rows with ``event_date`` in [first, last]; none (with the drain's schema) when the drain
    has not made the table yet (no list served, no event reported so far)."""
    if not lh.exists(table):
        return lh.spark.createDataFrame([], schema)
    return lh.read(table).filter(F.col("event_date").between(F.lit(first), F.lit(last)))


def attribute_day(spark: SparkSession, cfg: Config, day: date) -> Attributed:
    """Attribute the events of ``day`` and replace its partition of ``attributed_feedback``."""
    lh = Lakehouse(spark, cfg)
    window = cfg.feedback.attribution.window_hours
    feedback = _read(lh, "feedback", FEEDBACK_SCHEMA, day, day)
    impressions = _read(lh, "impressions", IMPRESSIONS_SCHEMA, day - timedelta(days=math.ceil(window / 24)),
                        day + timedelta(days=1))
    out = attribute(feedback, impressions, window)
    lh.replace(out, TABLE, {"event_date": day}, partition_by=["event_date"])
    counts = dict(lh.read(TABLE).filter(F.col("event_date") == F.lit(day)).groupBy("rule").count().collect())
    done = Attributed(day, sum(counts.values()), counts.get(RULE_REQUEST_ID, 0), counts.get(RULE_LAST_TOUCH, 0))
    log.info("[attribute %s] %d events: %d by request id, %d by last touch (window %g h), %d not attributed",
             day, done.events, done.by_request_id, done.by_last_touch, window, done.unattributed)
    return done
