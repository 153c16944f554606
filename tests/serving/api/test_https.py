"""``reco serve`` over HTTPS (issue 27, point 2, the service's half): a certificate and key made with
openssl inside the test, named in RECO_TLS_CERTFILE / RECO_TLS_KEYFILE; the real command, against
the session redis-server holding the tiny store."""
from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from core.errors import ConfigError
from serving.api.main import TLS_CERT_ENV, TLS_KEY_ENV, tls_options
from tests.conftest import free_port
from tests.serving.api.store import VERSION, publish_store

ROOT = Path(__file__).resolve().parents[3]


def make_certificate(folder: Path) -> tuple:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def test_reco_serve_answers_over_https_with_the_certificate_from_the_environment(r, ks, redis_server, tmp_path):
    publish_store(r, ks)
    cert, key = make_certificate(tmp_path)
    port, log = free_port(), tmp_path / "serve.log"
    env = {**os.environ, "RECO_ENV": "local", "RECO__REDIS__URL": redis_server, "RECO__REDIS__EMBEDDED": "false",
           "RECO__REDIS__NAMESPACE": ks.namespace, "RECO__REDIS__N_SHARDS": str(ks.n_shards),
           TLS_CERT_ENV: str(cert), TLS_KEY_ENV: str(key)}
    cmd = [sys.executable, "-c", "import sys; from orchestration.cli import main; sys.exit(main())",
           "serve", "--port", str(port)]
    with open(log, "w") as out:
        server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    trusted = ssl.create_default_context(cafile=str(cert))     # verifies the chain and the name 127.0.0.1
    base = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"reco serve exited ({server.returncode}):\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"{base}/healthz", context=trusted, timeout=5) as res:
                    assert json.load(res)["version"] == VERSION
                break
            except (urllib.error.URLError, ConnectionError) as exc:
                assert time.monotonic() < deadline, f"no HTTPS answer ({exc}):\n{log.read_text()}"
                time.sleep(0.3)
        with urllib.request.urlopen(f"{base}/v1/users/u1/recommendations?k=2", context=trusted, timeout=5) as res:
            body = json.load(res)
        assert (body["source"], [p["item_id"] for p in body["items"]]) == ("personal", ["A", "B"])
        assert f"https://127.0.0.1:{port}/" in log.read_text()
        # plain HTTP on the same port gets no answer; a client that does not trust the certificate refuses it
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(f"{base}/healthz", context=ssl.create_default_context(), timeout=5)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_tls_settings_need_both_files(tmp_path):
    assert tls_options({}) == {}
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match=f"needs both {TLS_CERT_ENV}.*only {TLS_CERT_ENV} is set"):
        tls_options({TLS_CERT_ENV: str(cert)})
    with pytest.raises(ConfigError, match=f"{TLS_KEY_ENV} names .*missing.pem, which is not a file"):
        tls_options({TLS_CERT_ENV: str(cert), TLS_KEY_ENV: str(tmp_path / "missing.pem")})
    assert tls_options({TLS_CERT_ENV: str(cert), TLS_KEY_ENV: str(cert)}) == {"ssl_certfile": str(cert),
                                                                             "ssl_keyfile": str(cert)}
