"""Alerts: what went wrong in a run, told to the log always and to a webhook when one is configured.

Every alert is logged (``ERROR`` when critical, ``WARNING`` otherwise, logger ``reco.alerts``). When the
environment holds ``RECO_ALERT_WEBHOOK_URL`` (a secret: never in ``conf/``), the alert is also POSTed
there as JSON that Slack-style incoming webhooks accept (Slack, Mattermost, Rocket.Chat): ``text`` (the
line a person reads) and ``attachments`` with one field per detail, plus ``alert``, the same facts as
plain keys for a machine (kind, severity, summary, details, source).

Sending never raises: a receiver that is down, slow (``timeout_s``) or answers an error costs one logged
warning, and the caller goes on (an alert must not turn a warning into a failed task). What stops a run
is the *severity*: :func:`stop_if_critical` raises :class:`AlertRaised` for a critical alert, so a task
that finds, say, an input volume collapse fails and the DAG holds back what comes after it (publishing).

This module sits in ``core`` (standard library only) because jobs and orchestration both raise alerts.
"""
from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.client import HTTPException
from typing import Any, Dict, Iterable, Mapping, Optional

from core.errors import AlertRaised
from core.redact import redact_url

log = logging.getLogger("reco.alerts")

WEBHOOK_ENV = "RECO_ALERT_WEBHOOK_URL"
WARNING, CRITICAL = "warning", "critical"
SEVERITIES = (WARNING, CRITICAL)
DEFAULT_TIMEOUT_S = 5.0
# the kinds of alert the project raises (a receiver may route on them)
TASK_FAILED = "task_failed"
QUALITY_GATE = "quality_gate"
PROMOTION_REFUSED = "promotion_refused"
TIME_BUDGET = "time_budget"
DRIFT = "drift"
_COLORS = {WARNING: "warning", CRITICAL: "danger"}   # Slack attachment colours


@dataclass(frozen=True)
class Alert:
    """One alert. ``details`` hold what a person needs to act (run date, metric, value, threshold...)."""
    kind: str
    severity: str
    summary: str
    details: Mapping[str, Any] = field(default_factory=dict)
    source: str = "retailreco"

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"alert severity must be one of {SEVERITIES}, got {self.severity!r}")

    @property
    def critical(self) -> bool:
        return self.severity == CRITICAL

    def line(self) -> str:
        """The one line a person reads: ``[CRITICAL] drift: ... (run_date=..., ...)``."""
        extra = ", ".join(f"{k}={v}" for k, v in self.details.items())
        return f"[{self.severity.upper()}] {self.kind}: {self.summary}" + (f" ({extra})" if extra else "")


def payload(alert: Alert) -> Dict[str, Any]:
    """The webhook's JSON body: Slack's ``text`` + ``attachments`` fields, and ``alert`` for machines."""
    return {
        "text": f"RetailReco {alert.line()}",
        "attachments": [{
            "color": _COLORS[alert.severity],
            "title": f"{alert.severity.upper()}: {alert.kind}",
            "text": alert.summary,
            "fields": [{"title": str(k), "value": str(v), "short": len(str(v)) < 40}
                       for k, v in alert.details.items()],
            "footer": alert.source,
        }],
        "alert": {"kind": alert.kind, "severity": alert.severity, "summary": alert.summary,
                  "details": {str(k): _plain(v) for k, v in alert.details.items()}, "source": alert.source},
    }


def _plain(value: Any) -> Any:
    """A JSON-friendly detail: numbers, strings, bools and None as they are, anything else as text."""
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


def webhook_url(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The webhook from the environment (``RECO_ALERT_WEBHOOK_URL``), or None when unset or blank."""
    url = (environ if environ is not None else os.environ).get(WEBHOOK_ENV, "").strip()
    return url or None


def send(alert: Alert, url: Optional[str] = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Log ``alert``, then POST it to ``url`` (default: :func:`webhook_url`). Never raises.

    Returns:
        True when a webhook accepted it (2xx); False when none is configured or the delivery failed
        (the failure is logged as a warning with the reason).
    """
    log.log(logging.ERROR if alert.critical else logging.WARNING, "ALERT %s", alert.line())
    url = url or webhook_url()
    if not url:
        return False
    body = json.dumps(payload(alert)).encode()
    try:
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "retailreco-alerts"})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
        return True
    except urllib.error.HTTPError as exc:     # the receiver answered, with an error status
        reason = f"HTTP {exc.code} {exc.reason}"
    except (OSError, HTTPException) as exc:   # refused, unreachable, timed out (URLError is an OSError)
        reason = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    except ValueError as exc:                 # a malformed URL (no scheme, bad port)
        reason = f"bad webhook URL: {exc}"
    log.warning("alert not delivered to the webhook (%s): %s; it is in this log only", _redact(url), reason)
    return False


def _redact(url: str) -> str:
    """The webhook without its path (Slack's path is the secret token) or credentials: scheme and host only."""
    return redact_url(url, keep_path=False)


def stop_if_critical(alerts: Iterable[Alert]) -> None:
    """Raise :class:`AlertRaised` naming every critical alert of ``alerts`` (sent already); warnings pass."""
    critical = [a for a in alerts if a.critical]
    if critical:
        raise AlertRaised("stopped by critical alert(s): " + "; ".join(a.line() for a in critical)
                          + ". Look into the cause; once fixed (or the threshold in conf/ is adjusted), rerun the task")


def raise_all(alerts: Iterable[Alert], url: Optional[str] = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Send every alert, then stop if any is critical (:func:`stop_if_critical`)."""
    alerts = list(alerts)
    for a in alerts:
        send(a, url=url, timeout_s=timeout_s)
    stop_if_critical(alerts)
