"""Attribution: which served list each feedback event is credited to (issue 25, point 3).

Pure Spark logic (DataFrames and a number in, a DataFrame out; no I/O, no config): the job
(``jobs/attribution.py``, ``reco feedback attribute --date D``) cuts the inputs to a day and writes
``attributed_feedback``.

Inputs

* ``feedback``: the ``feedback`` table's columns (``event_id, ts, event_date, type, user_id, item_id,
  request_id, quantity, price``), one row per event.
* ``impressions``: the ``impressions`` table's columns (``impression_id, ts, event_date, user_id,
  version, variant, source, items``), one row per list answered; ``items`` is an array of
  ``{item_id, position, tag}``.

The rules, per event (``window`` = ``window_hours``):

1. **Request id.** When the event carries a ``request_id`` and that impression showed the item, to the
   same customer (or to nobody in particular: a similar-items answer has no customer), and the event is
   at most ``window`` after it, the event is credited to it. The order of the two times is not checked:
   the request id proves the list came first, and the web app's clock may be behind the service's (the
   event may then look up to ``window`` older than its impression).
2. **Last touch.** Else the latest impression of the same customer that showed the item, at or before
   the event and at most ``window`` before it (ties on time: the larger ``impression_id``, so that a
   rerun gives the same answer). A request id that does not qualify under 1 (the item was not in that
   list) falls back to this rule.
3. Else the event is not attributed: its impression columns are null and ``rule`` is null. Events of
   anonymous impressions are only ever credited by rule 1.

An impression's items are matched on ``item_id``; a list shows an item once (the service dedupes).
"""
from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

RULE_REQUEST_ID = "request_id"
RULE_LAST_TOUCH = "last_touch"

# the item tags of an impression (serving.codec.TAG_CODES) in the vocabulary of `recommendations.source`:
# the model's own picks are tagged `model` in Redis and called `personal` everywhere else
TAG_AS_SOURCE = {"model": "personal"}

# a published version is a score id, `YYYYMMDD-m<model version>-<hash>` (jobs/score.py), or an hourly patch
# over one, `<score id>.hYYYYMMDDHHMM-<hash>` (jobs/hourly.py)
MODEL_VERSION_PATTERN = r"^[0-9]{8}-m([^-]+)-[0-9a-f]+"

OUTPUT_COLUMNS = ("event_id", "event_date", "ts", "type", "user_id", "item_id", "quantity", "price", "revenue",
                  "rule", "impression_id", "impression_ts", "impression_date", "version", "model_version",
                  "variant", "impression_source", "list_source", "position")


def list_source(tag: Column) -> Column:
    """An item's tag as a list source (``model`` -> ``personal``; the others as they are)."""
    out = tag
    for t, source in TAG_AS_SOURCE.items():
        out = F.when(tag == t, F.lit(source)).otherwise(out)
    return out


def model_version(version: Column) -> Column:
    """The model version inside a published version id; null when the id does not have the usual shape."""
    return F.nullif(F.regexp_extract(version, MODEL_VERSION_PATTERN, 1), F.lit(""))


def shown_items(impressions: DataFrame) -> DataFrame:
    """One row per item shown: ``impression_id, impression_ts, impression_date, impression_user_id,
    version, model_version, variant, impression_source, item_id, position, list_source``."""
    exploded = impressions.select(
        "impression_id", F.col("ts").alias("impression_ts"), F.col("event_date").alias("impression_date"),
        F.col("user_id").alias("impression_user_id"), "version", "variant",
        F.col("source").alias("impression_source"), F.explode("items").alias("shown"))
    return exploded.select(
        "impression_id", "impression_ts", "impression_date", "impression_user_id", "version",
        model_version(F.col("version")).alias("model_version"), "variant", "impression_source",
        F.col("shown.item_id").alias("item_id"), F.col("shown.position").alias("position"),
        list_source(F.col("shown.tag")).alias("list_source"))


def attribute(feedback: DataFrame, impressions: DataFrame, window_hours: float) -> DataFrame:
    """Every event of ``feedback`` with the impression it is credited to (see the module's rules).

    Returns:
        One row per input event, columns :data:`OUTPUT_COLUMNS`: the event's own (``revenue`` =
        ``price * quantity`` for a purchase, a missing quantity counting 1; null for other types and
        unknown prices), ``rule`` (``request_id``, ``last_touch`` or null) and the impression's
        (null when not attributed): its id, time and date, the published ``version`` and the
        ``model_version`` in it, ``variant``, the list's ``impression_source`` (``personal``,
        ``global``, ``segment:<s>``, ``similar``), the item's ``list_source`` and ``position``.
    """
    if not window_hours > 0:
        raise ValueError(f"window_hours must be positive, got {window_hours!r}")
    window_us = int(round(window_hours * 3600 * 1_000_000))
    events = feedback.select("event_id", "event_date", "ts", "type", "user_id", "item_id", "request_id",
                             "quantity", "price")
    shown = shown_items(impressions)
    key = ["event_id", "event_date"]
    e, s = events.alias("e"), shown.alias("s")
    lag = F.unix_micros(F.col("e.ts")) - F.unix_micros(F.col("s.impression_ts"))   # event after impression: > 0
    by_request = e.join(s, (F.col("e.request_id") == F.col("s.impression_id"))
                        & (F.col("e.item_id") == F.col("s.item_id"))
                        & (F.col("s.impression_user_id").isNull()
                           | (F.col("s.impression_user_id") == F.col("e.user_id")))
                        & (F.abs(lag) <= window_us))
    by_time = e.join(s, (F.col("e.user_id") == F.col("s.impression_user_id"))
                     & (F.col("e.item_id") == F.col("s.item_id"))
                     & lag.between(0, window_us))
    impression_cols = [c for c in shown.columns if c not in ("item_id", "impression_user_id")]
    candidates = (by_request.select(*[F.col(f"e.{k}") for k in key], F.lit(0).alias("priority"),
                                    F.lit(RULE_REQUEST_ID).alias("rule"), *[F.col(f"s.{c}") for c in impression_cols])
                  .unionByName(by_time.select(*[F.col(f"e.{k}") for k in key], F.lit(1).alias("priority"),
                                              F.lit(RULE_LAST_TOUCH).alias("rule"),
                                              *[F.col(f"s.{c}") for c in impression_cols])))
    best = Window.partitionBy(*key).orderBy(F.col("priority"), F.col("impression_ts").desc(),
                                            F.col("impression_id").desc())
    winners = (candidates.withColumn("_n", F.row_number().over(best)).filter(F.col("_n") == 1)
               .drop("_n", "priority"))
    revenue = F.when(F.col("type") == "purchase", F.col("price") * F.coalesce(F.col("quantity"), F.lit(1)))
    return (events.join(winners, key, "left")
            .withColumn("revenue", revenue.cast("double"))
            .select(*OUTPUT_COLUMNS))
