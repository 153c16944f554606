"""HTTP lookup service over the published recommendations, plus a demo store front.

``python -m serving.api --redis-url URL`` serves :func:`serving.api.app.create_app` with uvicorn on
an :class:`serving.client.AsyncLookupClient` built from the arguments (``reco serve`` does the same
from config). ``--workers N`` runs N uvicorn processes on one port: each has its own Redis
connections and item cache, and their metrics are kept in files of a temporary directory this
command makes (``PROMETHEUS_MULTIPROC_DIR``, prometheus_client's multiprocess mode) and removes when
the server stops, so ``/metrics`` counts every worker whichever one answers it.

API keys come from the environment variables of ``serving.auth``'s default keys
(``RECO_API_KEY_LOOKUP``, ``RECO_API_KEY_EVENTS``, ``RECO_API_KEY_ADMIN``; docs/SECURITY.md): with
any of them set every request but ``/healthz`` needs a key; with none, the service runs without
keys and then binds a loopback host only. ``--demo`` adds the demo page (without keys only).

HTTPS: with ``RECO_TLS_CERTFILE`` and ``RECO_TLS_KEYFILE`` set (PEM files: the certificate chain and
its private key), uvicorn serves HTTPS on the same port (:func:`tls_options`; ``reco serve`` alike).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from typing import Dict, Iterator, List, Mapping, Optional

from fastapi import FastAPI

from config.feedback import FeedbackConfig
from config.serving import AuthSection, ServingConfig
from core.errors import ConfigError
from serving.api.app import create_app
from serving.api.auth import Auth, check_exposure
from serving.api.sampler import DemoIds
from serving.api.metrics import MULTIPROC_ENV
from serving.client import AsyncLookupClient
from serving.connection import connect_async
from serving.keys import KeySpace

_ARGV_ENV = "RECO_SERVING_APP_ARGV"   # hands the command line to --workers' worker processes
WORKER_APP = "serving.api.main:worker_app"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serving.api", description=__doc__.split("\n")[0])
    p.add_argument("--redis-url", required=True, help="e.g. redis://127.0.0.1:6390/0 (password: $REDIS_PASSWORD)")
    p.add_argument("--namespace", default="reco", help="key prefix the publisher used (default: reco)")
    p.add_argument("--n-shards", type=int, default=256, help="shard count the publisher used (default: 256)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--socket-timeout", type=float, default=1.0, help="seconds per Redis call (default: 1)")
    p.add_argument("--max-connections", type=int, default=256,
                   help="Redis connections per worker (default: 256); a request that finds all busy waits "
                        "for one up to --socket-timeout, then gets 503")
    p.add_argument("--workers", type=int, default=1,
                   help="uvicorn worker processes (default: 1); each has its own Redis connections and "
                        "item cache, and /metrics adds up every worker's")
    p.add_argument("--demo", action="store_true",
                   help="serve the demo page and /v1/demo/users (only without API keys, on a loopback host)")
    p.add_argument("--demo-users", type=int, default=20000,
                   help="customers of the synthetic data (synthetic.n_users) the demo offers ids of (default: 20000)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="a browser origin allowed to call the API, e.g. https://shop.example.com (repeatable)")
    p.add_argument("--access-log", action="store_true",
                   help="log one line per request (off by default: it costs CPU per request; /metrics counts them)")
    return p


def configured_app(serving: ServingConfig, client_factory, *, host: str, demo_users: int,
                   demo: Optional[bool] = None, environ: Optional[Mapping[str, str]] = None,
                   feedback: Optional[FeedbackConfig] = None) -> FastAPI:
    """The app ``reco serve`` runs: keys, demo mode and CORS from the ``serving:`` section (``demo``
    overrides ``serving.demo``), the keys' values from ``environ`` (default: the process's), the
    impressions and events streams from ``feedback`` (the ``feedback:`` section; default: its defaults).

    Raises:
        ConfigError: keys on and none set, demo mode with keys, or no keys on a host that is not loopback.
    """
    auth = Auth.from_config(serving.auth, os.environ if environ is None else environ)
    demo = serving.demo if demo is None else demo
    if demo and auth is not None:
        raise ConfigError("the demo page runs without API keys (the browser cannot keep one secret): set "
                          "serving.auth.enabled: false (local.yaml does), or serve without --demo")
    check_exposure(host, auth)
    return create_app(client_factory, auth=auth, demo=DemoIds(demo_users) if demo else None,
                      cors_origins=serving.cors_origins, feedback=feedback or FeedbackConfig())


TLS_CERT_ENV, TLS_KEY_ENV = "RECO_TLS_CERTFILE", "RECO_TLS_KEYFILE"


def tls_options(environ: Mapping[str, str]) -> Dict[str, str]:
    """uvicorn's ``ssl_certfile``/``ssl_keyfile`` from ``RECO_TLS_CERTFILE``/``RECO_TLS_KEYFILE``; {} when
    neither is set (plain HTTP).

    Raises:
        ConfigError: only one is set, or one names no file."""
    cert, key = environ.get(TLS_CERT_ENV), environ.get(TLS_KEY_ENV)
    if not cert and not key:
        return {}
    if not (cert and key):
        raise ConfigError(f"HTTPS needs both {TLS_CERT_ENV} (the certificate, PEM) and {TLS_KEY_ENV} (its private "
                          f"key, PEM); only {TLS_CERT_ENV if cert else TLS_KEY_ENV} is set")
    for var, path in ((TLS_CERT_ENV, cert), (TLS_KEY_ENV, key)):
        if not os.path.isfile(path):
            raise ConfigError(f"{var} names {path}, which is not a file")
    return {"ssl_certfile": cert, "ssl_keyfile": key}


def _auth(args: argparse.Namespace) -> Optional[Auth]:
    """The default keys' variables: keys on when any is set. Refuses what must not run (demo with
    keys, no keys on a host others reach)."""
    section = AuthSection()
    keyed = any(os.environ.get(spec.env) for spec in section.keys.values())
    auth = Auth.from_config(section, os.environ) if keyed else None
    if args.demo and auth is not None:
        raise SystemExit("--demo runs without API keys (the page cannot keep one secret): unset the "
                         "RECO_API_KEY_* variables, or leave --demo out")
    check_exposure(args.host, auth)
    return auth


def _build_app(args: argparse.Namespace) -> FastAPI:
    ks = KeySpace(namespace=args.namespace, n_shards=args.n_shards)
    auth = _auth(args)

    def build() -> AsyncLookupClient:
        r = connect_async(args.redis_url, password=os.environ.get("REDIS_PASSWORD"),
                          socket_timeout=args.socket_timeout, max_connections=args.max_connections)
        return AsyncLookupClient(r, ks)

    return create_app(build, auth=auth, demo=DemoIds(args.demo_users) if args.demo else None,
                      cors_origins=args.cors_origin)


def worker_app() -> FastAPI:
    """The app of one ``--workers`` process (uvicorn imports it by name in each)."""
    return _build_app(_parser().parse_args(json.loads(os.environ[_ARGV_ENV])))


@contextlib.contextmanager
def _multiprocess_metrics() -> Iterator[str]:
    """A fresh directory for the workers' metric files, named in ``PROMETHEUS_MULTIPROC_DIR`` for the
    worker processes started inside (they import prometheus_client after it is set); removed after.
    Fresh on every start: files left by an earlier server would be counted again."""
    path = tempfile.mkdtemp(prefix="reco-metrics-")
    before = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        if before is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = before
        shutil.rmtree(path, ignore_errors=True)


def main(argv: Optional[List[str]] = None) -> None:
    import uvicorn

    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    common = dict(host=args.host, port=args.port, access_log=args.access_log)
    try:
        _auth(args)   # refuse at once what a worker would refuse
        common.update(tls_options(os.environ))
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    if args.workers > 1:
        os.environ[_ARGV_ENV] = json.dumps(argv)
        with _multiprocess_metrics():
            uvicorn.run(WORKER_APP, factory=True, workers=args.workers, **common)
    else:
        uvicorn.run(_build_app(args), **common)


if __name__ == "__main__":
    main()
