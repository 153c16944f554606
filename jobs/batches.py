"""Which batch holds which day. A nightly batch (any id not starting with ``hourly-``) holds its night
completely: it replaces the hourly batches of the days it covers and the night's earlier nightly
batches, in one commit. A batch that ends up with no rows is withdrawn, its returns netted again."""
from __future__ import annotations

import logging
from datetime import date
from typing import List

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from config import Config
from jobs import ingested_files, return_netting
from jobs.lakehouse import Lakehouse
from jobs.storage import InputFile, changed_since, unclaimed

log = logging.getLogger(__name__)


HOURLY_PREFIX = "hourly-"       # jobs.hourly_window.batch_id: an hourly window's batch; any other is a nightly's


def is_nightly(batch_id: str) -> bool:
    return not batch_id.startswith(HOURLY_PREFIX)


def covered_days(good: DataFrame, run_date: date) -> List[date]:
    """The days a nightly batch covers: its run date and the event dates of its accepted rows (a file may
    hold late events of earlier days, or a whole history). One small Spark job."""
    days = {r[0] for r in good.select(F.to_date("event_time")).distinct().collect() if r[0] is not None}
    return sorted(days | {run_date})


def earlier_nightly_batches(lh: Lakehouse, source: str, run_date: date, batch_id: str) -> List[str]:
    """The source's other nightly batches landed for ``run_date`` (from bronze, written before silver, so a
    batch that stopped after its silver write is found too)."""
    bronze = f"bronze_{source}"
    if not lh.exists(bronze):
        return []
    rows = (lh.read(bronze).filter((F.col("_run_date") == F.lit(run_date))
                                   & ~F.col("_batch_id").startswith(HOURLY_PREFIX)
                                   & (F.col("_batch_id") != batch_id))
            .select("_batch_id").distinct().collect())
    return sorted(r[0] for r in rows)


def nightly_supersedes(lh: Lakehouse, source: str, run_date: date, batch_id: str, days: List[date]) -> str:
    """A SQL condition on ``silver_interactions``: the rows a nightly batch of ``source`` for ``run_date``
    replaces in its commit. They are the hourly batches' rows on ``days`` (:func:`covered_days`: the
    nightly holds those days' events, complete), whether or not the source has an ``hourly_path``, and
    every row of the source's earlier nightly batches for ``run_date`` (:func:`earlier_nightly_batches`:
    a corrected export replaces the night's earlier one). Pass it as ``Lakehouse.replace(also=...)``."""
    cond = (f"batch_id LIKE '{HOURLY_PREFIX}%' AND event_date IN ("
            + ", ".join(sql_date(d) for d in sorted(set(days) | {run_date})) + ")")
    earlier = earlier_nightly_batches(lh, source, run_date, batch_id)
    if earlier:
        log.info("[ingest %s] batch %s replaces the earlier batch(es) of %s: %s", source, batch_id, run_date,
                 ", ".join(earlier))
        cond = f"({cond}) OR batch_id IN ({', '.join(sql_str(b) for b in earlier)})"
    return f"source = {sql_str(source)} AND ({cond})"


def withdraw_batch(lh: Lakehouse, cfg: Config, source: str, batch_id: str) -> None:
    """Remove a batch's rows from silver, netting again the returns it held open (its purchases' full
    quantities come back, the purchases its returns cancelled come back); for a batch that now has no rows."""
    if not lh.exists("silver_interactions"):
        return
    netted = return_netting.net_batch(lh, source, batch_id, None, None, None, cfg.interactions.non_product_items,
                                      dict(cfg.interactions.strength), cfg.interactions.rating_max)
    if netted.also:
        lh.replace(netted.silver, "silver_interactions", {"source": source, "batch_id": batch_id},
                   partition_by=["event_date"], also=netted.also)
    else:
        lh.delete("silver_interactions", {"source": source, "batch_id": batch_id})


def nights_files(lh: Lakehouse, source: str, run_date: date, listed: List[InputFile]) -> List[InputFile]:
    """The listed files that are this night's (:func:`jobs.storage.unclaimed`); the others are logged."""
    mine, others = unclaimed(listed, ingested_files.claims(lh, source), run_date)
    if others:
        log.info("[ingest %s] %d of %d listed file(s) belong to other nights' batches and are skipped", source,
                 len(others), len(listed))
    for f, claim in others:
        if changed_since(f, claim):
            log.warning("[ingest %s] %s changed since the batch of %s took it: a correction of that night is "
                        "ingested by rerunning it (`reco ingest --source %s --date %s`), not by this one", source,
                        f.uri, claim.run_date, source, claim.run_date)
    return mine


def sql_date(d: date) -> str:
    return f"DATE'{d.isoformat()}'"


def sql_str(text: str) -> str:
    # Spark SQL escapes with a backslash: two quotes in a row are two literals, concatenated
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
