"""core.alerts against a real local HTTP receiver: the JSON it gets, and a caller that never crashes."""
from __future__ import annotations

import logging
import time

import pytest

from core import alerts
from core.alerts import CRITICAL, DRIFT, WARNING, Alert, AlertRaised
from tests.webhook import Receiver, closed_port_url

DRIFT_ALERT = Alert(DRIFT, CRITICAL, "event volume collapsed",
                    {"run_date": "2026-10-28", "metric": "event_volume_ratio", "value": 0.05, "threshold": 0.3})


def test_the_receiver_gets_slack_text_fields_and_the_structured_alert():
    with Receiver() as r:
        assert alerts.send(DRIFT_ALERT, url=r.url) is True
    assert len(r.received) == 1
    body = r.received[0]
    assert body["text"] == ("RetailReco [CRITICAL] drift: event volume collapsed (run_date=2026-10-28, "
                            "metric=event_volume_ratio, value=0.05, threshold=0.3)")
    (att,) = body["attachments"]
    assert att["color"] == "danger" and att["title"] == "CRITICAL: drift" and att["text"] == "event volume collapsed"
    assert att["fields"] == [{"title": "run_date", "value": "2026-10-28", "short": True},
                             {"title": "metric", "value": "event_volume_ratio", "short": True},
                             {"title": "value", "value": "0.05", "short": True},
                             {"title": "threshold", "value": "0.3", "short": True}]
    assert body["alert"] == {"kind": "drift", "severity": "critical", "summary": "event volume collapsed",
                             "details": {"run_date": "2026-10-28", "metric": "event_volume_ratio", "value": 0.05,
                                         "threshold": 0.3}, "source": "retailreco"}
    assert r.headers[0]["Content-Type"] == "application/json"


def test_the_url_comes_from_the_environment(monkeypatch):
    warning = Alert(alerts.PROMOTION_REFUSED, WARNING, "challenger v7 kept out", {"version": 7})
    with Receiver() as r:
        monkeypatch.setenv(alerts.WEBHOOK_ENV, r.url)
        assert alerts.send(warning) is True
    assert r.received[0]["attachments"][0]["color"] == "warning"
    assert r.received[0]["alert"]["details"] == {"version": 7}
    monkeypatch.setenv(alerts.WEBHOOK_ENV, "  ")
    assert alerts.webhook_url() is None


def test_every_alert_is_logged_even_without_a_webhook(monkeypatch, caplog):
    monkeypatch.delenv(alerts.WEBHOOK_ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger="reco.alerts"):
        assert alerts.send(DRIFT_ALERT) is False
        alerts.send(Alert(alerts.TIME_BUDGET, WARNING, "slow"))
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", "ALERT " + DRIFT_ALERT.line()), ("WARNING", "ALERT [WARNING] time_budget: slow")]


def test_a_receiver_that_is_down_is_logged_and_the_caller_goes_on(caplog):
    with caplog.at_level(logging.WARNING, logger="reco.alerts"):
        assert alerts.send(DRIFT_ALERT, url=closed_port_url()) is False
    failed = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert len(failed) == 1 and "URLError" in failed[0] and "/hook" not in failed[0]  # the path (a token) hidden


def test_an_error_status_is_logged_with_its_code(caplog):
    with Receiver(status=500) as r, caplog.at_level(logging.WARNING, logger="reco.alerts"):
        assert alerts.send(DRIFT_ALERT, url=r.url) is False
    assert len(r.received) == 1
    assert "HTTP 500" in caplog.text and "secret-token" not in caplog.text


def test_a_slow_receiver_is_cut_off_at_the_timeout(caplog):
    with Receiver(delay_s=2.0) as r, caplog.at_level(logging.WARNING, logger="reco.alerts"):
        t0 = time.perf_counter()
        assert alerts.send(DRIFT_ALERT, url=r.url, timeout_s=0.3) is False
        took = time.perf_counter() - t0
    assert took < 1.5, took
    assert "timed out" in caplog.text


def test_a_malformed_url_is_logged_not_raised(caplog):
    with caplog.at_level(logging.WARNING, logger="reco.alerts"):
        assert alerts.send(DRIFT_ALERT, url="not a url") is False
    assert "bad webhook URL" in caplog.text


def test_severity_decides_whether_the_run_stops():
    warn = Alert(DRIFT, WARNING, "coverage fell", {"value": 0.4})
    alerts.stop_if_critical([warn])                       # a warning lets the task finish
    with pytest.raises(AlertRaised, match=r"\[CRITICAL\] drift: event volume collapsed") as err:
        alerts.stop_if_critical([warn, DRIFT_ALERT])
    assert "coverage fell" not in str(err.value) and err.value.exit_code == 4


def test_raise_all_sends_every_alert_before_it_stops():
    warn = Alert(DRIFT, WARNING, "coverage fell")
    with Receiver() as r:
        with pytest.raises(AlertRaised):
            alerts.raise_all([DRIFT_ALERT, warn], url=r.url)
    assert [b["alert"]["severity"] for b in r.received] == ["critical", "warning"]


def test_an_unknown_severity_is_refused():
    with pytest.raises(ValueError, match="severity must be one of"):
        Alert(DRIFT, "fatal", "x")
