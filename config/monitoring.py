"""Monitoring: where alerts go and how severe each is (``core/alerts.py``), the runs' time budgets, and
the nightly drift checks' thresholds (``jobs/monitor.py``, the ``monitoring`` table).

The webhook URL is a secret and comes from the environment only (``RECO_ALERT_WEBHOOK_URL``).
"""
from __future__ import annotations

from typing import Dict, Literal, Optional

from pydantic import Field, field_validator, model_validator

from config.base import Strict
from core.names import HOURLY_DAG_ID, MAINTENANCE_DAG_ID, NIGHTLY_DAG_ID

Severity = Literal["warning", "critical"]

# The drift checks the nightly's monitor task computes, in the order it writes them (docs/TABLES.md,
# `monitoring`): inputs of the day against the champion's training window, outputs against yesterday's.
DRIFT_METRICS = (
    "event_volume_ratio",     # the day's events / the median day of the trailing window
    "event_type_psi",         # PSI of the event-type mix: the day vs the trailing window
    "price_psi",              # PSI of the events' prices: the day vs the trailing window (binned on the window)
    "category_psi",           # PSI of the events' item categories (items.category): the day vs the trailing window
    "user_activity_psi",      # PSI of events per customer: the day vs the trailing window's days
    "new_user_share",         # share of the day's customers never seen in the trailing window
    "new_item_share",         # share of the day's items never seen in the trailing window
    "list_overlap",           # mean share of a customer's list also in yesterday's list (customers in both)
    "list_source_psi",        # PSI of the lists' sources (personal, buy_again, trending...): today vs yesterday
    "catalog_coverage",       # distinct items in the day's lists / items in the catalog
)


class Threshold(Strict):
    """When a metric is breached. ``bound: max`` breaches above a limit, ``bound: min`` below it; the
    critical limit stops the nightly before publishing, the warning one only tells."""
    bound: Literal["max", "min"]
    warning: Optional[float] = None
    critical: Optional[float] = None

    @model_validator(mode="after")
    def _ordered(self) -> "Threshold":
        if self.warning is None and self.critical is None:
            raise ValueError("needs a warning or a critical limit (or both)")
        if self.warning is not None and self.critical is not None:
            if (self.bound == "max" and self.critical < self.warning) or \
                    (self.bound == "min" and self.critical > self.warning):
                raise ValueError(f"the critical limit ({self.critical}) must be beyond the warning one "
                                 f"({self.warning}) for bound: {self.bound}")
        return self


def _default_thresholds() -> Dict[str, Threshold]:
    return {
        "event_volume_ratio": Threshold(bound="min", warning=0.5, critical=0.2),
        "event_type_psi": Threshold(bound="max", warning=0.1, critical=0.25),
        "price_psi": Threshold(bound="max", warning=0.1, critical=0.25),
        "category_psi": Threshold(bound="max", warning=0.1, critical=0.25),
        "user_activity_psi": Threshold(bound="max", warning=0.1, critical=0.25),
        "new_user_share": Threshold(bound="max", warning=0.5),
        "new_item_share": Threshold(bound="max", warning=0.2),
        "list_overlap": Threshold(bound="min", warning=0.3),
        "list_source_psi": Threshold(bound="max", warning=0.25),   # a new champion may blend differently: tell
        "catalog_coverage": Threshold(bound="min", warning=0.05),
    }


class AlertsConfig(Strict):
    """How alerts are sent, and the severity of the ones that are not about drift."""
    webhook_timeout_s: float = Field(5.0, gt=0)   # a slow receiver never holds a task longer than this
    # minutes a DAG run may take, from its start, before a "time_budget" warning (one per run: the task
    # during which the run crossed it tells; each task's execution_timeout is what stops a task)
    run_budget_min: Dict[str, int] = Field(default_factory=lambda: {
        NIGHTLY_DAG_ID: 240, HOURLY_DAG_ID: 30, MAINTENANCE_DAG_ID: 60})
    promotion_refused_severity: Severity = "warning"  # the champion keeps serving: tell, do not stop

    @field_validator("run_budget_min")
    @classmethod
    def _budgets(cls, v: Dict[str, int]) -> Dict[str, int]:
        known = (NIGHTLY_DAG_ID, HOURLY_DAG_ID, MAINTENANCE_DAG_ID)
        unknown = sorted(set(v) - set(known))
        if unknown:
            raise ValueError(f"unknown DAG id(s) {unknown}; known: {list(known)}")
        if any(m <= 0 for m in v.values()):
            raise ValueError("budgets are minutes, more than 0")
        return v


class DriftConfig(Strict):
    """The nightly's drift checks (``jobs/monitor.py``)."""
    enabled: bool = True
    trailing_days: int = Field(14, gt=0)   # the reference: the days before the run date (the champion's recent data)
    price_bins: int = Field(10, ge=2)      # PSI of prices: quantile bins of the reference window
    activity_bins: int = Field(10, ge=2)   # PSI of events per customer: quantile bins of the reference
    # a PSI over fewer rows of the day than this (events; customers for the activity PSI) is not judged
    # (no_data): on a few hundred rows sampling noise alone reaches 0.3 (an empty bin costs ~0.3 at a 5% share)
    min_rows: int = Field(1000, ge=1)
    thresholds: Dict[str, Threshold] = Field(default_factory=_default_thresholds)

    @field_validator("thresholds")
    @classmethod
    def _known(cls, v: Dict[str, Threshold]) -> Dict[str, Threshold]:
        unknown = sorted(set(v) - set(DRIFT_METRICS))
        if unknown:
            raise ValueError(f"unknown drift metric(s) {unknown}; known: {list(DRIFT_METRICS)}")
        return {**_default_thresholds(), **v}


class MonitoringConfig(Strict):
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
