"""The shipped Prometheus config and alert rules (conf/prometheus/) against the real lookup service.

* ``promtool check config`` / ``check rules`` accept them, and ``promtool test rules`` runs their
  known-answer tests (rules_test.yml: each alert fires for the "bad" instance and not the "good" one);
* every series and label the rules read is one the service's live ``/metrics`` exports;
* a real Prometheus, started on a free port with the shipped config pointed at the service, scrapes
  it: the target is up, the rules load healthy, and every series the rules read is stored.

Debian's ``prometheus`` package provides both binaries (``make prometheus`` installs it; ``make test``
does so by itself).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Set

import pytest
import yaml

from serving.connection import connect
from serving.keys import KeySpace
from tests.conftest import free_port
from tests.prometheus.promql import reads
from tests.serving.api.store import USERS_ROUTE, parse_prometheus, publish_store

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf" / "prometheus"
NAMESPACE = "promtest"                 # its own key prefix on the session redis-server
TARGET_LABELS = {"instance", "job"}    # added by Prometheus to every scraped series
SCRAPED_BY_PROMETHEUS = {"up"}         # series Prometheus makes itself, not the service


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not installed: the Prometheus tests need Debian's prometheus package "
                    "(prometheus and promtool). Run `make prometheus` (or `sudo apt-get install prometheus`; "
                    "`make test` installs it by itself)", pytrace=False)
    return path


def rules() -> List[dict]:
    doc = yaml.safe_load((CONF / "rules.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def referenced() -> Dict[str, Set[str]]:
    """Every series the rules read -> the labels their matchers and groupings name."""
    out: Dict[str, Set[str]] = {}
    for rule in rules():
        r = reads(rule["expr"])
        for name, labels in r.series.items():
            out.setdefault(name, set()).update(labels | r.grouping)
    return out


def missing(wanted: Dict[str, Set[str]], exported: Dict[str, Set[str]]) -> List[str]:
    """What the rules read that the service does not export: series, or labels of a series."""
    out = []
    for name, labels in sorted(wanted.items()):
        if name in SCRAPED_BY_PROMETHEUS:
            continue
        if name not in exported:
            out.append(f"series {name}")
            continue
        out += [f"label {label} of {name}" for label in sorted(labels - exported[name] - TARGET_LABELS)]
    return out


def _get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def _wait(what: str, check, proc: subprocess.Popen, log: Path, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what}: the process exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
        try:
            got = check()
            if got:
                return got
        except OSError as exc:
            last = exc
        time.sleep(0.25)
    raise AssertionError(f"{what} within {timeout:.0f} s (last error: {last}):\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def service(redis_server, tmp_path_factory) -> Iterator[str]:
    """The lookup service (``python -m serving.api``, no API keys) on a free port, reading a published
    version of the tiny store; one lookup answered from it and one from a fallback list, so every
    family has its series. Yields the base URL."""
    ks = KeySpace(NAMESPACE, n_shards=16)
    r = connect(redis_server)
    for key in r.scan_iter(f"{NAMESPACE}:*"):
        r.delete(key)
    publish_store(r, ks)
    port = free_port()
    log = tmp_path_factory.mktemp("service") / "service.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECO_API_KEY", "PROMETHEUS_MULTIPROC"))}
    cmd = [sys.executable, "-m", "serving.api", "--redis-url", redis_server, "--namespace", NAMESPACE,
           "--n-shards", "16", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait("the service answers /healthz", lambda: _get(f"{base}/healthz"), proc, log)
        _get(f"{base}/v1/users/u1/recommendations")          # answered from the published version
        _get(f"{base}/v1/users/nobody/recommendations")      # answered from the global fallback list
        yield base
    finally:
        _stop(proc)
        for key in r.scan_iter(f"{NAMESPACE}:*"):
            r.delete(key)
        r.close()


def exported(base: str) -> Dict[str, Set[str]]:
    """The live /metrics: sample name -> the label names it has."""
    out: Dict[str, Set[str]] = {}
    for name, labels in parse_prometheus(_get(f"{base}/metrics").decode()):
        out.setdefault(name, set()).update(k for k, _ in labels)
    return out


def test_reads_names_series_and_labels_not_functions_strings_or_durations():
    r = reads('histogram_quantile(0.99, sum by (instance, le) (rate(a_bucket{route=~"/v1/{id}"}[5m]))) '
              '/ on(instance) group_left count_over_time((max by (version) (b_info) == 1)[26h:10m]) > 1e-05')
    assert r.series == {"a_bucket": {"route"}, "b_info": set()}
    assert r.grouping == {"instance", "le", "version"}


# ------------------------------------------------------------------ promtool


def test_a_missing_binary_fails_with_how_to_install_it(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(pytest.fail.Exception, match=r"`promtool` is not installed.*make prometheus"):
        binary("promtool")


def test_promtool_accepts_the_shipped_config_and_rules():
    promtool = binary("promtool")
    for args in (["check", "config", str(CONF / "prometheus.yml")], ["check", "rules", str(CONF / "rules.yml")]):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_the_rules_known_answers_hold():
    """promtool test rules: each alert fires for the "bad" instance only, with the expected text."""
    done = subprocess.run([binary("promtool"), "test", "rules", str(CONF / "rules_test.yml")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    tested = {t["alertname"] for g in yaml.safe_load((CONF / "rules_test.yml").read_text())["tests"]
              for t in g["alert_rule_test"]}
    assert tested == {r["alert"] for r in rules()}     # every alert has a test


def test_the_rules_cover_what_the_issue_asks():
    reads_ = referenced()
    assert {"reco_http_requests_total", "reco_http_request_duration_seconds_bucket", "reco_fallback_answers_total",
            "reco_redis_errors_total", "reco_published_version_info", "up"} <= set(reads_)
    assert all(r["labels"]["severity"] in ("warning", "critical") and r["annotations"]["summary"] for r in rules())


# ------------------------------------------------------------------ the live service


def test_every_series_the_rules_read_is_exported(service):
    have = exported(service)
    assert missing(referenced(), have) == []
    # and the check can fail: a misspelt series or a label the service does not write are found
    assert missing({"reco_http_request_total": set(), "reco_fallback_answers_total": {"list", "segment"},
                    "up": {"job"}}, have) == ["label segment of reco_fallback_answers_total",
                                               "series reco_http_request_total"]


def test_a_real_prometheus_scrapes_the_service(service, tmp_path):
    prometheus = binary("prometheus")
    config = yaml.safe_load((CONF / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(CONF / name) for name in config["rule_files"]]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [urllib.parse.urlsplit(service).netloc]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1"
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        def query(q: str) -> list:
            body = json.loads(_get(f"{api}/query?" + urllib.parse.urlencode({"query": q})))
            assert body["status"] == "success", body
            return body["data"]["result"]

        def target_up():
            targets = json.loads(_get(f"{api}/targets"))["data"]["activeTargets"]
            return targets if targets and all(t["health"] == "up" for t in targets) else None

        (target,) = _wait("the service's target is up", target_up, proc, log)
        assert target["labels"]["job"] == "reco-lookup" and target["scrapeUrl"] == f"{service}/metrics"
        _wait("a second scrape (rates need two)", lambda: len(query('up{job="reco-lookup"}[10s]')[0]["values"]) >= 2
              if query('up{job="reco-lookup"}[10s]') else None, proc, log)
        for name in sorted(referenced()):
            assert query(f'{name}{{job="reco-lookup"}}'), f"{name} is not in Prometheus"
        # the series the lookups above made, with their labels
        assert query(f'reco_http_requests_total{{route="{USERS_ROUTE}",status="200"}}')
        assert query('reco_fallback_answers_total{list="global"}')[0]["value"][1] == "1"
        assert {s["metric"]["version"] for s in query("reco_published_version_info == 1")} == {"20261126-test"}
        groups = _wait("the rules are evaluated",
                       lambda: [g for g in json.loads(_get(f"{api}/rules"))["data"]["groups"]
                                if all(r.get("lastEvaluation", "").startswith("20") for r in g["rules"])],
                       proc, log)
        assert [r["health"] for g in groups for r in g["rules"]] == ["ok"] * len(rules())
        firing = [a["labels"]["alertname"] for a in json.loads(_get(f"{api}/alerts"))["data"]["alerts"]]
        assert "RecoLookupDown" not in firing
    finally:
        _stop(proc)
