"""What the middleware (serving.api.middleware) makes of an exception nothing else handled."""
from __future__ import annotations

import logging

from fastapi.testclient import TestClient

from serving.api.app import create_app
from tests.serving.api.store import USERS_ROUTE, parse_prometheus


class Exploding:
    """A client with a bug."""

    def recommendations(self, user_id, k, segment=None):
        raise RuntimeError("secret internal state /srv/app/x.py")


def test_unexpected_exception_is_generic_500_and_logged(caplog):
    app = create_app(lambda: Exploding())
    with caplog.at_level(logging.ERROR, logger="serving.api"), TestClient(app) as api:
        res = api.get("/v1/users/u1/recommendations")
        metrics = parse_prometheus(api.get("/metrics").text)
    assert res.status_code == 500
    body = res.json()
    assert set(body) == {"detail", "request_id", "retry"} and body["detail"] == "internal server error"
    assert "secret" not in res.text and "Traceback" not in res.text
    [record] = [rec for rec in caplog.records if rec.levelno == logging.ERROR]
    assert body["request_id"] in record.getMessage() and record.exc_info[0] is RuntimeError
    assert metrics[("reco_http_requests_total",
                    frozenset({("route", USERS_ROUTE), ("method", "GET"), ("status", "500")}))] == 1
