"""What each ``reco`` sub-command does, given a session and the config."""
from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path
from typing import Callable, List, Optional

from pyspark.sql import SparkSession

from config import PROJECT_ROOT, Config
from core.errors import RecoError
from core.redact import redact_url
from jobs.build_features import build_features
from jobs.ingest import ingest as ingest_batch
from jobs.lakehouse import Lakehouse
from jobs.sources import default_run_date
from jobs.sql_runner import run_sql_file
from jobs.tables import maintain_tables, table_summary

# set by `reco run` (orchestration.harness): where `reco report` also writes the run's summary
SUMMARY_FILE_ENV = "RECO_SUMMARY_FILE"


def _run_date(cfg: Config, source: str, given: Optional[date]) -> date:
    return given or default_run_date(cfg, source)


def default_date(cfg: Config, source: str) -> date:
    return default_run_date(cfg, source)


def ingest(spark: SparkSession, cfg: Config, source: str, run_date: Optional[date], path: Optional[str],
           dry_run: bool = False):
    result = ingest_batch(spark, cfg, source, _run_date(cfg, source, run_date), path, dry_run=dry_run)
    verb = "checked (nothing written)" if dry_run else "ingested"
    print(f"{source} batch {result.batch_id} {verb}: {result.input_rows} rows = {result.accepted_rows} accepted"
          f" + {result.excluded_rows} excluded + {result.quarantined_rows} quarantined"
          + ("" if not dry_run else f" ({result.input_rows - result.quarantined_rows} pass the row checks)"))
    for title, counts in (("excluded by rule", result.excluded_by_rule),
                          ("quarantined by reason", result.quarantined_by_rule)):
        for rule, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            print(f"  {title}: {rule}: {n}")
    print(f"  great-expectations: {'passed' if result.gx_success else 'found problems'} -> {result.gx_result}")
    return result


def features(spark: SparkSession, cfg: Config, source: str, run_date: Optional[date], maintain: bool):
    result = build_features(spark, cfg, _run_date(cfg, source, run_date), maintain=maintain)
    for table, n in result.rows.items():
        print(f"  {table}: {n} rows (as of {result.run_date})")
    return result


def maintain(spark: SparkSession, cfg: Config, source: str, run_date: Optional[date],
             tables: Optional[List[str]] = None):
    """OPTIMIZE + VACUUM the lakehouse's tables (the maintenance DAG's task), recorded in pipeline_runs."""
    import time

    from jobs.pipeline_runs import record_run
    d = _run_date(cfg, source, run_date)
    lh = Lakehouse(spark, cfg)
    t0 = time.time()
    seconds = maintain_tables(lh, tables)
    record_run(lh, "maintain", "all", f"maintain-{d.isoformat()}", d, "succeeded", {"seconds": seconds},
               time.time() - t0)
    for table, s in seconds.items():
        print(f"  {table}: OPTIMIZE + VACUUM in {s:.1f}s")
    return seconds


def train(spark: SparkSession, cfg: Config, source: str, run_date: Optional[date], register: bool = True,
          gate: bool = True):
    from jobs.train import summary_lines, train as train_model
    result = train_model(spark, cfg, _run_date(cfg, source, run_date), register=register, gate=gate)
    print("\n".join(summary_lines(result, tuple(cfg.training.ks))))
    return result


def gate(spark: SparkSession, cfg: Config, source: str, run_date: Optional[date]):
    from jobs.train import gate as gate_model
    version, decision = gate_model(spark, cfg, _run_date(cfg, source, run_date))
    print(f"model {cfg.mlflow.registered_model} v{version}: {decision.reason}")
    return version, decision


def check(spark: SparkSession, cfg: Config, source: str, run_date: Optional[date]):
    from jobs.validate import check_ingested
    res = check_ingested(spark, cfg, source, _run_date(cfg, source, run_date))
    print(f"{source} {res['run_date']}: {res['events_on_day']} events on the day "
          f"(trailing median {res['trailing_median']}), batch {res['batch_id']}: {res['status']}")
    for w in res["warnings"]:
        print(f"  warning: {w}")
    return res


def monitor(spark: SparkSession, cfg: Config, source: str, run_date: Optional[date]):
    """The day's drift checks (``jobs/monitor.py``); a critical breach raises AlertRaised once written and sent."""
    from jobs.monitor import monitor as run_monitor
    res = run_monitor(spark, cfg, source, _run_date(cfg, source, run_date))
    for r in res.rows:
        value = "-" if r[3] is None else f"{r[3]:.4g}"
        print(f"  {r[2]:<20} {value:>10}  {r[8]}" + (f" (limit {r[7]:g})" if r[8] in ("warning", "critical") else ""))
    return res


def backtest(spark: SparkSession, cfg: Config, source: str, run_date: date, days: Optional[int] = None,
             skip_missing: bool = False):
    """The lists served for ``run_date`` against the ``days`` after it (``jobs/backtest.py``)."""
    from jobs.backtest import backtest as run_backtest, summary_lines
    res = run_backtest(spark, cfg, run_date, days, source=source, skip_missing=skip_missing)
    print("\n".join(summary_lines(res, cfg.backtest.ks)))
    return res


def hourly(spark: SparkSession, cfg: Config, step: str, source: str, start: str, end: str):
    """One step of the hourly path for the window, or ``all``: the four in order in this Spark session
    (each step idempotent, so a retry of the whole runs them again to the same result)."""
    from core.names import HOURLY_STEPS
    from jobs import hourly as h
    from jobs.hourly_window import ingest_hour, parse_window
    if step == "all":
        return [hourly(spark, cfg, s, source, start, end) for s in HOURLY_STEPS]
    lo, hi = parse_window(start, end)
    if step == "ingest":
        res = ingest_hour(spark, cfg, source, lo, hi)
        print(f"{source} {res.batch_id}: {res.input_rows} rows = {res.accepted_rows} accepted + "
              f"{res.excluded_rows} excluded + {res.quarantined_rows} quarantined")
    elif step == "refresh":
        res = h.refresh(spark, cfg, lo, hi)
        print(f"refreshed {res.lists} lists ({res.rows} rows) as of {res.end} on the {res.base_date} nightly")
    elif step == "score":
        res = h.score_hour(spark, cfg, source, lo, hi)
        print(f"scored {res.users} active users with model v{res.model_version} ({res.score_id})")
    else:
        res = h.publish_hour(spark, cfg, lo, hi)
        if res.held:
            print(f"Redis: readers stay on {res.version}: {res.held}")
        else:
            verb = "already published; readers on it" if res.skipped else f"published in {res.seconds:.1f}s"
            print(f"Redis patch {res.version} over {res.base}: {verb} ({res.counts})")
    return res


def benchmark(spark: SparkSession, cfg: Config, args):
    from jobs.benchmark import benchmark as run_benchmark
    if args.k < 1:
        raise RecoError(f"--k must be at least 1, got {args.k}")
    out = run_benchmark(spark, cfg, train=args.train, users=args.users, k=args.k, out=args.out,
                        valid=args.valid, items=args.items, test=args.test, exclude_seen=args.exclude_seen,
                        value_mode=args.value)
    print(f"wrote {len(out.recs)} recommendations ({out.source}) to {args.out}")
    if out.metrics:
        ks = tuple(cfg.training.ks)
        keys = [f"{m}@{k}" for k in ks for m in ("precision", "recall", "ndcg", "map", "hit")] + ["mrr"]
        print(f"test metrics (full ranking, {out.metrics[next(iter(out.metrics))]['n_users']} users):")
        print("  " + "model".ljust(26) + "".join(k.rjust(13) for k in keys))
        for name, m in out.metrics.items():
            print("  " + name.ljust(26) + "".join(f"{m[k]:13.4f}" for k in keys))
    return out


def score(spark: SparkSession, cfg: Config, source: str, run_date: Optional[date]):
    from jobs.score import score as score_all
    res = score_all(spark, cfg, _run_date(cfg, source, run_date))
    print(f"scored {res.counts['users']} users with model v{res.model_version} ({res.score_id}): "
          f"{res.counts['recommendations']} list rows, {res.counts['similar_items']} similar-item rows")
    if res.diversity:
        d = res.diversity
        print(f"  diversity (sample): intra-list {d['intra_list_diversity_before']:.3f} -> "
              f"{d['intra_list_diversity_after']:.3f}, coverage {d['coverage_before']:.3f} -> {d['coverage_after']:.3f}")
    return res


def publish(spark: SparkSession, cfg: Config, source: str, run_date: Optional[date], restore: bool = False):
    from jobs.publish import publish as publish_lists
    res = publish_lists(spark, cfg, _run_date(cfg, source, run_date), restore=restore)
    verb = (f"not published, readers stay on it: {res.held}" if res.held else
            "already published; readers on it" if res.skipped else f"published in {res.seconds:.1f}s")
    print(f"Redis version {res.version}: {verb} ({res.counts}); previous {res.previous}")
    return res


def publish_admin(cfg: Config, rollback: bool) -> int:
    from jobs.publish import keyspace, redis_client, rollback as do_rollback
    if rollback:
        frm, to = do_rollback(cfg)
        print(f"rolled back: readers moved from {frm} to {to}")
        return 0
    from serving.publish import list_versions
    for v in list_versions(redis_client(cfg), keyspace(cfg)):
        meta = v.get("meta", {})
        print(f"{'*' if v.get('is_current') else ' '} {v['version']}  run_date={meta.get('run_date')} "
              f"model=v{meta.get('model_version')} users={meta.get('count_u')} created={meta.get('created_at')}")
    return 0


def serve(cfg: Config, host: Optional[str], port: Optional[int], demo: Optional[bool] = None) -> int:
    import uvicorn

    from jobs.publish import keyspace
    from serving.api.main import configured_app, tls_options
    from serving.client import AsyncLookupClient
    from serving.connection import connect_async
    from serving.embedded import ensure_running

    host, port = host or cfg.serving.host, port or cfg.serving.port
    kw = cfg.redis.client_options("reader")  # the read-only ACL user (redis.reader_user), TLS files
    # keys, demo mode, CORS from serving: (refused before anything starts: demo with keys, no keys off loopback)
    app = configured_app(cfg.serving, lambda: AsyncLookupClient(
        connect_async(cfg.redis.url, socket_timeout=cfg.redis.socket_timeout_s,
                      max_connections=cfg.redis.max_connections, **kw),
        keyspace(cfg)), host=host, demo_users=cfg.synthetic.n_users, demo=demo, feedback=cfg.feedback)
    if cfg.redis.embedded:       # the service itself starts without Redis (and answers 503 until it is there)
        ensure_running(cfg.redis.url, cfg.redis_dir, password=cfg.redis_password)
    tls = tls_options(os.environ)  # HTTPS with RECO_TLS_CERTFILE and RECO_TLS_KEYFILE
    demo_page = cfg.serving.demo if demo is None else demo
    print(f"lookup service{' and demo page' if demo_page else ''}: {'https' if tls else 'http'}://{host}:{port}/  "
          "(API schema: /openapi.json)")
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False, **tls)  # no log line per request: CPU
    return 0


def redis_server(cfg: Config, action: str) -> int:
    from urllib.parse import urlsplit

    from serving.embedded import EmbeddedRedis, ensure_running
    if action == "start":
        server = ensure_running(cfg.redis.url, cfg.redis_dir, password=cfg.redis_password)
        print(f"redis-server running at {server.url} (data and log in {cfg.redis_dir})")
        return 0
    parts = urlsplit(cfg.redis.url)
    server = EmbeddedRedis(cfg.redis_dir, parts.port or 6379, host=parts.hostname or "127.0.0.1",
                           password=cfg.redis_password or parts.password)
    if action == "stop":
        server.stop()
        print(f"redis-server at {server.url} stopped")
        return 0
    print(f"redis-server at {server.url}: {'running' if server.is_running() else 'not running'}")
    return 0 if server.is_running() else 1


def sample_lookup(cfg: Config) -> str:
    """One lookup through the client, as the web app does it: a line for the run summary."""
    from jobs.publish import keyspace, redis_client
    from serving.client import LookupClient
    client = LookupClient(redis_client(cfg), keyspace(cfg))
    users = (client.metadata().get("sample_users") or "").split(",")
    if not users or not users[0]:
        return "sample lookup: no users published"
    hit = client.recommendations(users[0], k=5)
    miss = client.recommendations("no-such-customer", k=5)
    return (f"sample lookup: user {users[0]} -> {hit.items} ({hit.source}); "
            f"unknown user -> {miss.items} ({miss.source}, fallback)")


def redis_summary(cfg: Config) -> str:
    """The report's Redis line: the server (password redacted), the version readers are on, a sample lookup."""
    from jobs.publish import keyspace, redis_client
    from serving.connection import redact
    from serving.versions import current_version, read_meta
    r, ks = redis_client(cfg), keyspace(cfg)
    current = current_version(r, ks)
    meta = read_meta(r, ks, current) if current else {}
    return (f"Redis: {redact(cfg.redis.url)} version {current} (run date {meta.get('run_date')}, "
            f"model v{meta.get('model_version')}{', patch over ' + str(meta['base']) if meta.get('base') else ''}); "
            f"{sample_lookup(cfg)}")


def run(spark: SparkSession, cfg: Config, source: str, run_date: Optional[date]):
    """The nightly pipeline in this process, without Airflow: ingest -> check -> features -> train -> gate ->
    score -> monitor -> publish -> backtest -> report (``reco run`` drives the same steps through the Airflow DAG). Table
    maintenance is its own job (``reco maintain``, the maintenance DAG)."""
    d = _run_date(cfg, source, run_date)
    ingest(spark, cfg, source, d, None)
    check(spark, cfg, source, d)
    features(spark, cfg, source, d, maintain=False)
    train(spark, cfg, source, d, gate=False)
    gate(spark, cfg, source, d)
    score(spark, cfg, source, d)
    if cfg.monitoring.drift.enabled:   # a critical drift stops here: the lists are not published
        monitor(spark, cfg, source, d)
    publish(spark, cfg, source, d)
    if cfg.backtest.enabled:    # the lists this publish replaced, as the DAG's backtest task does
        backtest(spark, cfg, source, d - timedelta(days=cfg.backtest.days), skip_missing=True)
    report(spark, cfg, source, d)


def report(spark: SparkSession, cfg: Config, source: str, run_date: Optional[date]):
    """The run's summary: tables with counts, the MLflow run and champion, the Redis version, a sample lookup
    and the local URLs."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from training.registry import CHAMPION, find_version
    d = _run_date(cfg, source, run_date)
    lines: List[str] = []
    say = lines.append
    print_tables(spark, cfg, say)
    docs = Path(cfg.quality.quality_dir) / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    say(f"\ndata-quality docs: file://{docs}")
    client = MlflowClient(tracking_uri=cfg.mlflow.tracking_uri)
    name = cfg.mlflow.registered_model
    version = find_version(client, name, d.isoformat())
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION).version
    except MlflowException:     # no registered model or alias yet
        champion = None
    if version is not None:
        mv = client.get_model_version(name, version)
        uri = redact_url(cfg.mlflow.tracking_uri)      # no password of the tracking server in the report
        say(f"MLflow: {uri} (mlflow ui --backend-store-uri {uri}); "
              f"run {mv.run_id}, model {name} v{version} for {d}: {(mv.tags or {}).get('gate_reason', 'not gated')}")
    say(f"champion: {name} v{champion}" if champion else f"champion: none yet ({name})")
    say(redis_summary(cfg))
    say(f"lookup service and demo page: reco serve  ->  http://{cfg.serving.host}:{cfg.serving.port}/")
    say(f"Airflow UI: make airflow  ->  http://127.0.0.1:8080/ (AIRFLOW_HOME {cfg.airflow_home})")
    say("query the tables: reco sql sql/daily_sales.sql   (see sql/ and docs/TABLES.md)")
    text = "\n".join(lines)
    print(text)
    summary = os.environ.get(SUMMARY_FILE_ENV)
    if summary:             # `reco run` (orchestration.harness) prints it when the run ends
        Path(summary).parent.mkdir(parents=True, exist_ok=True)
        Path(summary).write_text(text + "\n")


def print_tables(spark: SparkSession, cfg: Config, say: Callable[[str], None] = print) -> None:
    rows = table_summary(Lakehouse(spark, cfg))
    width = max((len(r[0]) for r in rows), default=10)
    say(f"\n{'table'.ljust(width)}  {'rows':>12}  location")
    for name, count, location in rows:
        say(f"{name.ljust(width)}  {count:>12,}  {location}")


def sql(spark: SparkSession, cfg: Config, file: str, params: List[str], out: Optional[str], limit: int):
    path = Path(file)
    if not path.exists() and (PROJECT_ROOT / "sql" / file).exists():
        path = PROJECT_ROOT / "sql" / file
    if not path.exists() and (PROJECT_ROOT / "sql" / f"{file}.sql").exists():
        path = PROJECT_ROOT / "sql" / f"{file}.sql"
    df = run_sql_file(Lakehouse(spark, cfg), path, params)
    if out:
        pdf = df.toPandas()
        (pdf.to_json(out, orient="records", date_format="iso", indent=1) if out.endswith(".json")
         else pdf.to_csv(out, index=False))
        print(f"{len(pdf)} rows written to {out}")
    else:
        df.show(limit, truncate=60)
    return df


def forget(spark: SparkSession, cfg: Config, customer: str, reason: str) -> None:
    """``reco forget``: print what was removed, never the id (jobs/forget.py)."""
    from jobs.forget import AUDIT_TABLE, forget as forget_customer
    out = forget_customer(spark, cfg, customer, reason)
    print(f"forgot customer (hash {out.customer_hash}) at {out.requested_at.isoformat()}; audit row in {AUDIT_TABLE}")
    for table, n in sorted(out.rows_deleted.items()):
        print(f"  {table}: {n} rows {'tombstoned' if table == 'user_index' else 'deleted'}")
    print(f"  redis: {out.redis_keys_removed} lists removed in {len(out.redis_versions)} versions")
    if out.exposure_until:
        print(f"exposure: older Delta versions and their log hold the rows until {out.exposure_until.isoformat()} "
              "(the retention); the first `reco maintain` after that deletes the files")
    else:
        print("no table held the customer: nothing left to expire")
