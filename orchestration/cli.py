"""The ``reco`` command: one entry point for every job.

    reco ingest   --source S [--date D] [--path P] [--dry-run]
    reco validate --source S [--date D] [--path P]     (checks only, writes no table)
    reco features [--date D]
    reco check    --source S [--date D]                 (post-ingest checks of the day: the nightly's validate step)
    reco train    [--date D] [--no-register] [--no-gate] (two-tower + baselines, MLflow, promotion gate)
    reco gate     [--date D]                             (gate the version `train --no-gate` registered)
    reco benchmark --train F [--valid F] --users F --k 20 --out recs.csv [--items F] [--test F]
                   [--exclude-seen] [--value MODE]       (the model on any split, from plain files)
    reco score    [--date D]                             (every user's list, similar items, fallback lists)
    reco monitor  --source S [--date D]                  (drift checks of the day into `monitoring`; alerts)
    reco publish  [--date D] [--restore] | --rollback | --list   (versioned bulk load into Redis, atomic switch)
    reco serve    [--host H] [--port P] [--[no-]demo]    (HTTP lookup service and demo page)
    reco redis    start | stop | status | acl            (the embedded local redis-server; acl: the ACL users' lines)
    reco report   [--date D]                             (the run's summary: tables, model, Redis, lookup)
    reco backtest --date D [--days N] [--skip-missing]   (the lists of D against what customers did the N days after)
    reco hourly   ingest|refresh|score|publish|all --start T --end T [--source S]   (the hourly path: a step, or all)
    reco run      [--source S] [--date D] [--no-airflow] (the nightly pipeline end to end, through Airflow)
    reco rehearse --days N [--hours-per-day H] [--faults none|all|NAME,...] --out DIR   (days in fast-forward)
    reco feedback drain [--date D]                       (the impressions and events streams into Delta, exactly once;
                                                          with --date, then D's attribution: the nightly's task)
    reco feedback attribute --date D                     (D's events credited to the lists that showed the items)
    reco sql FILE [--param name=value ...] [--out result.csv]
    reco tables                                          (every table with rows and location)

Errors a user can act on are printed as one clear message (exit code 2 or 3),
never as a stack trace.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from datetime import date
from typing import List, Optional

if __name__ == "__main__" and __package__ in (None, ""):
    # run as a script (spark-submit orchestration/cli.py, the DAGs' spark_submit executor): its own folder must not
    # shadow top-level modules (jobs/spark.py as `spark`, ...), and the project root must be importable
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
    sys.path.insert(0, os.path.dirname(_here))

from config import load_config
from core.errors import ConfigError, RecoError, RunDateError
from core.names import HOURLY_STEPS
from core.redact import env_secrets, install_log_redaction, redact_text
from jobs.spark import use_utc


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--date must be YYYY-MM-DD, got {text!r}") from None


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        days = 0
    if days < 1:
        raise argparse.ArgumentTypeError(f"--days must be a whole number of days, 1 or more, got {text!r}")
    return days


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reco", description="RetailReco batch recommendation pipeline")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    def source_args(sp, with_path=True):
        sp.add_argument("--source", help="source name from conf (default: default_source)")
        sp.add_argument("--date", type=_date, help="run date YYYY-MM-DD (the logical date; default for the "
                                                  "synthetic source: its last day)")
        if with_path:
            sp.add_argument("--path", help="override the source's path (file, folder, glob or s3://)")

    sp = sub.add_parser("ingest", help="land a batch in bronze, validate, quarantine, write silver")
    source_args(sp)
    sp.add_argument("--dry-run", action="store_true", help="check only; write no table")
    sp = sub.add_parser("validate", help="check a batch against the quality rules and GX suite; write nothing")
    source_args(sp)
    sp = sub.add_parser("check", help="post-ingest checks of a run date (ingest succeeded, events on the day, "
                                      "silver suite)")
    source_args(sp, with_path=False)
    sp = sub.add_parser("monitor", help="drift checks of a run date (inputs against the days before, lists "
                                        "against yesterday's): a row per metric in `monitoring`, an alert per "
                                        "breached limit; a critical one fails the command (exit code 4)")
    source_args(sp, with_path=False)
    sp = sub.add_parser("features", help="build id maps and gold feature tables as of a date")
    sp.add_argument("--date", type=_date)
    sp.add_argument("--source", help="source whose default run date to use (synthetic)")
    sp.add_argument("--maintain", action="store_true", help="OPTIMIZE and VACUUM the tables afterwards")
    sp = sub.add_parser("maintain", help="OPTIMIZE and VACUUM the lakehouse's tables (the maintenance DAG)")
    sp.add_argument("--date", type=_date, help="the day the run is recorded under in pipeline_runs")
    sp.add_argument("--source", help="source whose default run date to use (synthetic)")
    sp.add_argument("--table", action="append", default=None, metavar="NAME",
                    help="only this table (repeatable); default: every table under lakehouse.root")
    sp = sub.add_parser("train", help="train the two-tower model and baselines as of a date; register and gate")
    sp.add_argument("--date", type=_date)
    sp.add_argument("--source", help="source whose default run date to use (synthetic)")
    sp.add_argument("--no-register", action="store_true", help="evaluate only: log nothing to MLflow")
    sp.add_argument("--no-gate", action="store_true", help="register the model as challenger only; "
                                                            "`reco gate` decides (the nightly DAG's split)")
    sp.add_argument("--no-test-phase", action="store_true",
                    help="skip the test-phase refit and its metrics (validation decides the gate; the nightly "
                         "uses this, benchmarks do not)")
    sp = sub.add_parser("gate", help="gate the model version registered for a date: champion or not")
    sp.add_argument("--date", type=_date)
    sp.add_argument("--source", help="source whose default run date to use (synthetic)")
    sp = sub.add_parser("report", help="print the run's summary (tables, MLflow, Redis, a sample lookup)")
    sp.add_argument("--date", type=_date)
    sp.add_argument("--source", help="source whose default run date to use (synthetic)")
    sp = sub.add_parser("backtest", help="score the lists served for a date against what customers did in the "
                                         "days after (pipeline_runs, MLflow)")
    sp.add_argument("--date", type=_date, required=True, help="the lists' date D (recommendations of D)")
    sp.add_argument("--days", type=_days, help="the window: days D+1 .. D+N (default backtest.days)")
    sp.add_argument("--source", help="source whose nightly ingests say the window is complete (default: "
                                     "orchestration.source or default_source)")
    sp.add_argument("--skip-missing", action="store_true",
                    help="the nightly's mode: when the lists or the window's days are not there yet, record "
                         "`skipped` with the reason and succeed")
    sp = sub.add_parser("hourly", help="one step of the hourly path for a data interval [start, end), "
                                       "or all four in order")
    sp.add_argument("step", choices=[*HOURLY_STEPS, "all"],
                    help="all: ingest, refresh, score and publish in this process (one Spark session)")
    sp.add_argument("--start", required=True, help="interval start, ISO timestamp (UTC when no offset)")
    sp.add_argument("--end", required=True, help="interval end, ISO timestamp")
    sp.add_argument("--source", help="source name from conf (default: orchestration.source or default_source)")
    sp = sub.add_parser("benchmark", help="train and recommend on a split given as files (reads nothing else)")
    sp.add_argument("--train", required=True, help="interactions: user,item[,timestamp][,value] (CSV/TSV, .gz ok)")
    sp.add_argument("--valid", help="validation interactions (early stopping, history mode and blend weight "
                                    "only); default: each user's latest 10%% of train events")
    sp.add_argument("--users", required=True, help="users to recommend for (a 'user' column or one id per line)")
    sp.add_argument("--k", type=int, default=20, help="list length (default 20)")
    sp.add_argument("--out", required=True, help="output CSV: user,item,rank,score")
    sp.add_argument("--items", help="optional catalog: item[,title][,category][,price]")
    sp.add_argument("--test", help="held-out interactions: print full-ranking metrics of the model and baselines")
    sp.add_argument("--exclude-seen", action="store_true",
                    help="never recommend (or count as hits) items the user had in train/valid")
    sp.add_argument("--value", choices=["auto", "rating", "quantity", "ignore"], default="auto",
                    help="meaning of the value column (auto: max <= 10 is a rating, else a quantity)")
    sp = sub.add_parser("score", help="score every user with the champion; write recommendations, similar "
                                      "items and fallback lists for a date")
    sp.add_argument("--date", type=_date)
    sp.add_argument("--source", help="source whose default run date to use (synthetic)")
    sp = sub.add_parser("publish", help="load a date's lists into Redis as a new version and switch readers")
    sp.add_argument("--date", type=_date)
    sp.add_argument("--source", help="source whose default run date to use (synthetic)")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--rollback", action="store_true", help="point readers back at the previous version")
    g.add_argument("--list", action="store_true", help="list the published versions")
    g.add_argument("--restore", action="store_true", help="publish the date's lists even if that version was "
                                                           "rolled back (a plain publish leaves a rollback alone)")
    sp = sub.add_parser("rehearse", help="run the nightly, hourly and maintenance DAGs over N simulated days "
                                         "with faults, checking the invariants after every run")
    sp.add_argument("--days", type=int, default=2, help="simulated days after the synthetic data's last day")
    sp.add_argument("--hours-per-day", type=int, default=3, help="hourly runs a day (00:00, then spread)")
    sp.add_argument("--faults", default="none", help="none, all, or a comma list (see docs/OPERATIONS.md)")
    sp.add_argument("--out", required=True, help="folder for rehearsal.json, rehearsal.html and the task logs")
    sp.add_argument("--runner", choices=["process", "inline"], default="process",
                    help="process: each task in its own process (airflow tasks test), as a scheduler runs them; "
                         "inline: the tasks' commands in this process, one Spark session")
    sp.add_argument("--kill-after", type=float, default=25.0, help="seconds into a task when a kill fault fires")
    sp = sub.add_parser("serve", help="run the HTTP lookup service and demo page (reads Redis only)")
    sp.add_argument("--host", help="default: serving.host")
    sp.add_argument("--port", type=int, help="default: serving.port")
    sp.add_argument("--demo", action=argparse.BooleanOptionalAction, default=None,
                    help="serve the demo page and /v1/demo/users (default: serving.demo; only without API keys)")
    sp = sub.add_parser("redis", help="start, stop or check the embedded local redis-server; acl: print the ACL "
                                      "file lines of redis.reader_user and redis.publisher_user (docs/SECURITY.md)")
    sp.add_argument("action", choices=["start", "stop", "status", "acl"])
    sp = sub.add_parser("run", help="run the nightly pipeline end to end (the nightly DAG, through Airflow)")
    source_args(sp, with_path=False)
    sp.add_argument("--no-airflow", action="store_true", help="run the same steps in this process, without Airflow")
    sp.add_argument("--verbose", action="store_true", dest="stream",
                    help="stream Airflow's, Spark's and the jobs' output (default: a line per task on the console, "
                         "all of it in orchestration.logs_dir)")
    sp = sub.add_parser("sql", help="run one query from sql/ against the lakehouse tables")
    sp.add_argument("file", help="a .sql file (path, or a name in sql/)")
    sp.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="value for a :name parameter in the query (repeatable)")
    sp.add_argument("--out", help="save the result as CSV (or .json) instead of printing it")
    sp.add_argument("--limit", type=int, default=50, help="rows to print (default 50)")
    sub.add_parser("tables", help="list every lakehouse table with its row count and location")
    sp = sub.add_parser("feedback", help="drain: the impressions and events Redis Streams into the Delta tables "
                                         "impressions and feedback (one row per id; acknowledged after the commit); "
                                         "attribute --date D: D's events credited to impressions, into "
                                         "attributed_feedback (replaces the day)")
    sp.add_argument("action", choices=["drain", "attribute"])
    sp.add_argument("--date", type=_date, help="attribute: the day of the events (YYYY-MM-DD, required); drain: "
                                               "attribute that day once drained, in the same Spark session")
    sp = sub.add_parser("forget", help="forget a customer: delete their rows from every table (then VACUUM), their "
                                       "lists from every published version, tombstone their id; audited by hash")
    sp.add_argument("--customer", required=True, help="the customer id as the source spells it")
    sp.add_argument("--reason", default="", help="why (recorded in forget_requests; the id is masked in it)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    use_utc()   # before any clock is read or logged: the jobs' times are UTC (see jobs.spark.use_utc)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    for noisy in ("py4j", "great_expectations", "urllib3", "botocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    install_log_redaction()     # no URL password or secret of the environment reaches the log (core/redact.py)
    try:
        cfg = load_config()
        return _dispatch(args, cfg)
    except RecoError as exc:        # the one error tree (core/errors.py): config, input, rules, data, Redis...
        print(f"error: {redact_text(str(exc), env_secrets())}", file=sys.stderr)
        return exc.exit_code


def _redis_acl(cfg) -> int:
    """Print the ACL file lines of the two Redis users (passwords as SHA-256 digests, from the environment)."""
    from serving.acl import acl_lines
    missing = [f"redis.{role}_user" for role in ("reader", "publisher") if not cfg.redis.user(role)]
    if missing:
        raise ConfigError(f"{' and '.join(missing)} not set; name the users in conf/<env>.yaml or with "
                          "RECO__REDIS__READER_USER / RECO__REDIS__PUBLISHER_USER")
    reader, publisher = cfg.redis.client_options("reader"), cfg.redis.client_options("publisher")
    streams = (cfg.feedback.impressions.stream, cfg.feedback.events.stream)   # the service appends, the drain reads
    for line in acl_lines(cfg.redis.namespace, reader["username"], reader["password"], publisher["username"],
                          publisher["password"], streams):
        print(line)
    return 0


def _dispatch(args, cfg) -> int:
    # commands that need no Spark
    if args.command == "rehearse":
        from orchestration.rehearse import rehearse
        summary = rehearse(cfg, args.days, args.hours_per_day, args.faults, args.out, runner=args.runner,
                           kill_after_s=args.kill_after)
        recovered = sum(f["recovered"] for f in summary["faults"])
        print(f"rehearsal: {len(summary['runs'])} runs, invariants failed after {summary['invariants_failed']}; "
              f"{recovered} of {len(summary['faults'])} faults recovered; {args.out}/rehearsal.html")
        return 0 if summary["invariants_failed"] == 0 and recovered == len(summary["faults"]) else 1
    if args.command in ("serve", "redis") or (args.command == "publish" and (args.rollback or args.list)):
        from jobs import commands
        if args.command == "serve":
            return commands.serve(cfg, args.host, args.port, demo=args.demo)
        if args.command == "redis" and args.action == "acl":
            return _redis_acl(cfg)
        if args.command == "redis":
            return commands.redis_server(cfg, args.action)
        return commands.publish_admin(cfg, rollback=args.rollback)
    source = getattr(args, "source", None) or cfg.orchestration.source or cfg.default_source
    cfg.source(source)  # fail early on an unknown name
    if args.command == "feedback" and args.action == "attribute" and args.date is None:
        raise RunDateError("reco feedback attribute needs --date D: the day whose events to attribute (YYYY-MM-DD)")
    if args.command == "forget":
        from jobs.forget import check_forget_ready
        check_forget_ready()                 # no key: fail before Spark starts
    if args.command == "hourly":
        from jobs.hourly_window import parse_window
        parse_window(args.start, args.end)   # a bad window fails before Spark starts
    if args.command == "run" and not args.no_airflow:
        from jobs import commands
        from orchestration.harness import run_nightly
        return run_nightly(cfg, source, args.date or commands.default_date(cfg, source),
                           quiet=not (args.verbose or args.stream))
    # The JVM starts (10-15 s) on a thread while the job modules import (great-expectations, torch, MLflow:
    # about as long); a start error is raised here by result(). pyspark and delta are imported here first
    # (0.3 s): when two threads import one package at once, one of them can get it half-initialised
    # ("cannot import name ... from partially initialized module 'pyspark.util'").
    from concurrent.futures import ThreadPoolExecutor

    import delta  # noqa: F401
    import pyspark.java_gateway  # noqa: F401
    import pyspark.sql  # noqa: F401

    from jobs.spark import build_spark
    with ThreadPoolExecutor(1, thread_name_prefix="spark-start") as pool:
        spark_ready = pool.submit(build_spark, cfg)
        from jobs import commands
        spark = spark_ready.result()
    t0 = time.time()
    if args.command in ("ingest", "validate"):
        commands.ingest(spark, cfg, source, args.date, args.path, dry_run=getattr(args, "dry_run", False) or args.command == "validate")
    elif args.command == "features":
        commands.features(spark, cfg, source, args.date, args.maintain)
    elif args.command == "maintain":
        commands.maintain(spark, cfg, source, args.date, args.table)
    elif args.command == "check":
        commands.check(spark, cfg, source, args.date)
    elif args.command == "monitor":
        commands.monitor(spark, cfg, source, args.date)
    elif args.command == "train":
        if args.no_test_phase:
            cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"evaluate_test": False})})
        commands.train(spark, cfg, source, args.date, register=not args.no_register, gate=not args.no_gate)
    elif args.command == "gate":
        commands.gate(spark, cfg, source, args.date)
    elif args.command == "report":
        commands.report(spark, cfg, source, args.date)
    elif args.command == "backtest":
        commands.backtest(spark, cfg, source, args.date, args.days, skip_missing=args.skip_missing)
    elif args.command == "hourly":
        commands.hourly(spark, cfg, args.step, source, args.start, args.end)
    elif args.command == "benchmark":
        commands.benchmark(spark, cfg, args)
    elif args.command == "score":
        commands.score(spark, cfg, source, args.date)
    elif args.command == "publish":
        commands.publish(spark, cfg, source, args.date, restore=args.restore)
    elif args.command == "run":
        commands.run(spark, cfg, source, args.date)
    elif args.command == "sql":
        commands.sql(spark, cfg, args.file, args.param, args.out, args.limit)
    elif args.command == "tables":
        commands.print_tables(spark, cfg)
    elif args.command == "forget":
        commands.forget(spark, cfg, args.customer, args.reason)
    elif args.command == "feedback" and args.action == "attribute":
        from jobs.attribution import attribute_day
        done = attribute_day(spark, cfg, args.date)
        print(f"attributed_feedback {done.day}: {done.events} events, {done.by_request_id} by request id, "
              f"{done.by_last_touch} by last touch, {done.unattributed} not attributed")
    elif args.command == "feedback":
        from jobs.feedback_drain import drain
        from jobs.publish import redis_client
        for table, done in drain(spark, cfg, redis_client(cfg, "publisher")).items():
            print(f"{table}: {done.read} entries read, {done.inserted} new rows, {done.trimmed} trimmed before read")
        if args.date is not None:        # the nightly's task: its day's events, now drained, attributed
            from jobs.attribution import attribute_day
            done = attribute_day(spark, cfg, args.date)
            print(f"attributed_feedback {done.day}: {done.events} events, {done.by_request_id} by request id, "
                  f"{done.by_last_touch} by last touch, {done.unattributed} not attributed")
    print(f"done in {time.time() - t0:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
