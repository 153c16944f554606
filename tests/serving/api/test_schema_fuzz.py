"""The API against its own published OpenAPI schema (issue 27, point 6): schemathesis generates
requests from /openapi.json (valid ones and ones the schema forbids) for every operation and checks
each answer (no 5xx, status documented, body and headers as documented, bad input refused, valid
input accepted); then hand-written odd requests: huge, empty, unicode and control-character ids,
odd k, long query strings, many headers.

Against the app served by uvicorn in a thread on a free port (kept-alive connections: a test
client per request, schemathesis's in-process way, cost ten times more), on the tiny store in the
test redis-server, with keys and the demo on. The run is derandomized (the same requests every run)
and sized to stay well under a minute on 2 cores.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Iterator, Tuple

import pytest
import requests
import schemathesis
import uvicorn
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup

from serving.api.auth import Auth
from serving.api.models import ID_MAX
from tests.conftest import free_port
from tests.serving.api.conftest import AUTH, KEY, keyed_app
from tests.serving.api.store import VERSION

CASES = 1000        # generated requests (the issue asks for at least 1,000); schemathesis adds its own
                    # (the same request without the key, with a wrong one) on top


@pytest.fixture
def app(published):
    """The blocking client (the thread pool): each ASGI call may run on a loop of its own. The key
    also has the events scope, so that POST /v1/events is tried past the key check."""
    return keyed_app(published, auth=Auth([("tests", KEY, ["lookup", "admin", "events"], 1e9, 10**9)]))


class Counted:
    """The app, counting every HTTP answer by status as it leaves (what schemathesis sent, its own
    extra requests included)."""

    def __init__(self, app) -> None:
        self.app = app
        self.statuses: Counter = Counter()

    async def __call__(self, scope, receive, send):
        async def counted(message):
            if message["type"] == "http.response.start":
                self.statuses[message["status"]] += 1
            await send(message)
        await self.app(scope, receive, counted)


@pytest.fixture
def served(app) -> Iterator[Tuple[str, Counted]]:
    """(base url, the counting app) of uvicorn in a thread on a free port."""
    counted = Counted(app)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(counted, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", counted
    server.should_exit = True
    thread.join(timeout=5)


def test_generated_requests_get_no_5xx_and_match_the_schema(served):
    base, counted = served
    # schemathesis sends the key as the schema's security schemes say (and checks that the API
    # refuses requests without it or with a wrong one)
    # An event's time must be within minutes ahead of and days behind the server's clock: a rule no
    # schema can state (it moves with the clock), so a schema-valid time outside it is a documented
    # 422 there; and the body limit's 413. Every other check stays as it is for that operation.
    accepted = ["2xx", "401", "403", "404", "409", "413", "422", "429"]
    config = SchemathesisConfig.from_dict({
        "auth": {"openapi": {"bearer": {"bearer": KEY}, "apiKey": {"api_key": KEY}}},
        "operations": [{"include-path": "/v1/events", "include-method": "POST",
                        "checks": {"positive_data_acceptance": {"expected-statuses": accepted}}}]})
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", config=config)
    operations = [op.ok() for op in schema.get_all_operations()]
    assert {op.path for op in operations} == {"/v1/users/{user_id}/recommendations", "/v1/items/{item_id}/similar",
                                              "/v1/items/{item_id}", "/v1/demo/users", "/healthz", "/metrics",
                                              "/v1/events"}
    cases = st.one_of([op.as_strategy(generation_mode=mode) for op in operations
                       for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)])
    failures, generated = [], []
    session = requests.Session()      # one kept-alive connection

    @settings(max_examples=CASES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), phases=["generate"])
    @given(case=cases)
    def run(case):
        generated.append(case.operation.path)
        try:
            # call, then every check (call_and_validate would send a request refused for its key again
            # with the configured key: twice the requests, and the refusal is what is to be checked)
            case.validate_response(case.call(session=session), transport_kwargs={"session": session})
        except FailureGroup as exc:       # the checks that failed, each with how to reproduce it
            failures.append(f"{case.method} {case.formatted_path} {case.query}: {str(exc)[:600]}")

    run()
    statuses = counted.statuses
    assert failures == [], f"{len(failures)} failures; the first:\n\n" + "\n\n".join(failures[:5])
    assert len(generated) >= 1000 and set(generated) == {op.path for op in operations}
    assert sum(statuses.values()) >= len(generated), statuses
    assert not [s for s in statuses if s >= 500], statuses
    by_class = Counter({c: sum(n for s, n in statuses.items() if s // 100 == c // 100) for c in (200, 400)})
    assert by_class[200] > 100 and by_class[400] > 100, statuses    # valid and refused requests both tried
    print(f"schemathesis: {len(generated)} generated cases, {sum(statuses.values())} requests, "
          f"statuses {dict(sorted(statuses.items()))}")


@pytest.fixture
def api(app) -> Iterator[TestClient]:
    with TestClient(app, headers=AUTH) as client:
        yield client


def validation_errors(res) -> list:
    """The 422 body as the schema promises it (HTTPValidationError): a list of {loc, msg, type}."""
    assert res.status_code == 422, res.text
    detail = res.json()["detail"]
    assert isinstance(detail, list) and detail
    for error in detail:
        assert isinstance(error["loc"], list) and isinstance(error["msg"], str) and isinstance(error["type"], str)
    return detail


@pytest.mark.parametrize("path", ["/v1/users/{}/recommendations", "/v1/items/{}/similar", "/v1/items/{}"])
def test_huge_empty_unicode_and_control_character_ids(api, path):
    assert api.get(path.format("x" * ID_MAX)).status_code in (200, 404)                  # the longest allowed
    assert validation_errors(api.get(path.format("x" * (ID_MAX + 1))))[0]["loc"][0] == "path"
    assert validation_errors(api.get(path.format("x" * 60_000)))[0]["loc"][0] == "path"    # huge
    assert api.get(path.format("")).status_code == 404             # an empty segment matches no route
    for unicode in ("%C3%BC%E2%9C%93", "%F0%9F%98%80", "%E4%B8%AD%E6%96%87"):             # üb✓, an emoji, CJK
        assert api.get(path.format(unicode)).status_code in (200, 404)
    for control in ("a%00b", "%01", "a%1Fb", "%7F"):                                      # C0 and DEL: the pattern
        assert validation_errors(api.get(path.format(control)))[0]["loc"][0] == "path"
    for allowed in ("a%C2%85b", "%C2%9C", "a%E2%80%A8b", "%EF%BB%BF"):   # C1, U+2028, BOM: the pattern allows them
        assert api.get(path.format(allowed)).status_code in (200, 404)


@pytest.mark.parametrize("k", ["0", "-1", "101", "1e3", "0x10", "١", "", "99999999999999999999999", "NaN",
                               "true", "%00", "5%00"])
def test_odd_k_is_a_422_with_the_promised_body(api, k):
    for path in ("/v1/users/u1/recommendations", "/v1/items/A/similar"):
        [error] = validation_errors(api.get(f"{path}?k={k}"))
        assert error["loc"] == ["query", "k"]


@pytest.mark.parametrize("k", ["%205", "5%20", "%2B5", "05"])
def test_k_with_spaces_a_sign_or_a_leading_zero_is_read_as_the_number(api, k):
    """As pydantic reads an integer from text (the fast path leaves these to it): k=5."""
    assert api.get(f"/v1/users/u1/recommendations?k={k}").json()["k"] == 5


def test_k_at_its_bounds_and_repeated(api):
    assert len(api.get("/v1/users/u1/recommendations?k=1").json()["items"]) == 1
    assert api.get("/v1/users/u1/recommendations?k=100").json()["k"] == 100
    assert api.get("/v1/users/u1/recommendations?k=2&k=3").status_code in (200, 422)   # FastAPI takes the last


def test_long_query_strings_and_many_headers(api):
    long = "&".join(f"p{i}={'v' * 50}" for i in range(1000))      # about 55 kB of parameters nobody reads
    res = api.get(f"/v1/users/u1/recommendations?k=2&{long}")
    assert res.status_code == 200 and len(res.json()["items"]) == 2
    res = api.get("/v1/users/u1/recommendations", params={"segment": "s" * 10_000})
    assert validation_errors(res)[0]["loc"] == ["query", "segment"]
    headers = {f"X-Noise-{i}": "n" * 100 for i in range(500)}
    res = api.get("/v1/users/u1/recommendations", headers={**headers, **AUTH})
    assert res.status_code == 200 and res.json()["version"] == VERSION
    # a key buried among many headers is still found; a huge bogus one is just unknown
    assert api.get("/v1/items/A", headers={**headers, "X-API-Key": KEY, "Authorization": ""}).status_code == 200
    assert api.get("/v1/items/A", headers={"Authorization": "Bearer " + "k" * 60_000}).status_code == 401
