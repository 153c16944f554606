"""A refused promotion raises an alert (jobs/train.refused_promotion), delivered to a real local receiver;
its severity (monitoring.alerts.promotion_refused_severity) decides whether the gate task stops."""
from __future__ import annotations

from datetime import date

import pytest

from config import load_config
from core import alerts
from core.errors import AlertRaised
from jobs.train import refused_promotion
from training.registry import GateDecision
from tests.webhook import Receiver

REJECTED = GateDecision(False, "kept champion v3: valid ndcg@10 0.1000 does not beat 0.1200 by margin 0",
                        "valid ndcg@10", 0.1, 0.12, "3", {}, 0.0)
PROMOTED = GateDecision(True, "promoted", "valid ndcg@10", 0.2, 0.12, "3", {}, 0.0)


@pytest.fixture
def receiver(monkeypatch):
    with Receiver() as r:
        monkeypatch.setenv(alerts.WEBHOOK_ENV, r.url)
        yield r


def test_a_refused_promotion_warns_by_default(receiver):
    alert = refused_promotion(load_config(), date(2026, 10, 28), "4", REJECTED)
    assert alert.severity == "warning"
    (body,) = receiver.received
    assert body["alert"]["kind"] == "promotion_refused"
    assert body["alert"]["summary"] == f"model version 4 as of 2026-10-28 was not promoted: {REJECTED.reason}"
    assert body["alert"]["details"] == {"run_date": "2026-10-28", "model_version": "4", "metric": "valid ndcg@10",
                                        "challenger": 0.1, "champion": 0.12, "champion_version": "3"}


def test_a_promotion_or_no_gate_sends_nothing(receiver):
    assert refused_promotion(load_config(), date(2026, 10, 28), "5", PROMOTED) is None
    assert refused_promotion(load_config(), date(2026, 10, 28), "5", None) is None
    assert receiver.received == []


def test_a_critical_refusal_stops_the_task_after_sending(receiver):
    cfg = load_config(overrides={"monitoring": {"alerts": {"promotion_refused_severity": "critical"}}})
    with pytest.raises(AlertRaised, match="promotion_refused: model version 4"):
        refused_promotion(cfg, date(2026, 10, 28), "4", REJECTED)
    assert [b["alert"]["severity"] for b in receiver.received] == ["critical"]
