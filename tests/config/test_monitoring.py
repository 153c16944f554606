"""The monitoring section (config/monitoring.py): defaults from conf/, overrides, and what is refused."""
from __future__ import annotations

import pytest

from config import ConfigError, load_config
from config.monitoring import DRIFT_METRICS


def test_conf_sets_every_drift_metric_and_the_budgets():
    m = load_config(environ={}).monitoring
    assert list(m.drift.thresholds) == list(DRIFT_METRICS)
    assert m.drift.thresholds["event_volume_ratio"].model_dump() == {"bound": "min", "warning": 0.5, "critical": 0.2}
    assert m.alerts.run_budget_min == {"reco_nightly": 240, "reco_hourly": 30, "reco_maintenance": 60}


def test_an_override_of_one_threshold_keeps_the_others():
    m = load_config(environ={}, overrides={"monitoring": {"drift": {"thresholds": {
        "list_overlap": {"bound": "min", "critical": 0.1}}}}}).monitoring
    assert m.drift.thresholds["list_overlap"].critical == 0.1
    assert m.drift.thresholds["catalog_coverage"].warning == 0.05


@pytest.mark.parametrize("section, match", [
    ({"drift": {"thresholds": {"ctr": {"bound": "max", "warning": 1}}}}, "unknown drift metric"),
    ({"drift": {"thresholds": {"price_psi": {"bound": "max", "warning": 0.3, "critical": 0.2}}}}, "beyond the warning"),
    ({"drift": {"thresholds": {"list_overlap": {"bound": "min", "warning": None}}}}, "needs a warning or a critical"),
    ({"alerts": {"run_budget_min": {"reco_daily": 10}}}, "unknown DAG id"),
    ({"alerts": {"promotion_refused_severity": "fatal"}}, "promotion_refused_severity"),
])
def test_mistakes_are_refused_with_the_setting(section, match):
    with pytest.raises(ConfigError, match=match):
        load_config(environ={}, overrides={"monitoring": section})
