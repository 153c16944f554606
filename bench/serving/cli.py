"""``python -m bench.serving``: the sections to run, their sizes, the stored results."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import Any, Dict, List, Optional


from bench.measure import machine
from bench.serving.common import OUT, STORE
from bench.serving.loadgen import loadgen_main, run_lookup
from bench.serving.publish import run_publish
from bench.serving.redis_tools import free_port
from bench.serving.report import to_markdown
from bench.serving.scoring import run_scoring


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: about two minutes")
    ap.add_argument("--users", type=int, help="scoring: users of the main shape (default 100000; quick 20000)")
    ap.add_argument("--items", type=int, help="scoring: items of the main shape (default 20000)")
    ap.add_argument("--dim", type=int, default=64, help="scoring: embedding dim of the main shape")
    ap.add_argument("--k", type=int, default=100, help="scoring: list length")
    ap.add_argument("--rounds", type=int, help="scoring: interleaved rounds, best of each (default 2; quick 1)")
    ap.add_argument("--publish-users", type=int, help="publishing: users (default 1000000; quick 100000)")
    ap.add_argument("--list-len", type=int, default=100, help="publishing: items per list")
    ap.add_argument("--rates", default="2000,1500,1000,500,250,100,50",
                    help="lookup: request rates, tried highest first until the p99 target holds")
    ap.add_argument("--duration", type=float, help="lookup: seconds per rate (default 20; quick 5)")
    ap.add_argument("--workers", type=int, default=1, help="lookup: uvicorn worker processes of the service "
                    "(default 1; on 2 shared cores 2 workers cost more CPU per request and held no higher rate)")
    ap.add_argument("--only", choices=["scoring", "publish", "lookup"],
                    help="run one section, keep the others from bench/out/serving.json (lookup also publishes)")
    ap.add_argument("--loadgen", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.loadgen:
        loadgen_main(args.loadgen)
        return

    q = args.quick
    users = args.users or (20_000 if q else 100_000)
    items = args.items or 20_000
    rounds = args.rounds or (1 if q else 2)
    shapes = [(users, items, args.dim, args.k, True), (users // 2, 5_000, 32, 20, False)]
    if not q:
        shapes.append((users // 4, items, 128, args.k, False))
    publish_users = args.publish_users or (100_000 if q else 1_000_000)
    duration = args.duration or (5.0 if q else 20.0)
    rates = [int(x) for x in args.rates.split(",") if x]

    data: Dict[str, Any] = json.loads(STORE.read_text()) if args.only and STORE.exists() else {}
    data.update({"date": date.today().isoformat(), "machine": machine(),
                 "command": " ".join(["python -m bench.serving"] + (sys.argv[1:] if argv is None else argv))})
    run = {"date": data["date"], "command": data["command"]}   # per section: --only merges runs
    if args.only in (None, "scoring"):
        print("scoring", flush=True)
        data["scoring"] = {**run_scoring(shapes, rounds), **run}
    if args.only in (None, "publish", "lookup"):
        from serving.connection import connect
        from serving.embedded import EmbeddedRedis
        with tempfile.TemporaryDirectory(prefix="bench_serving_") as tmp:
            work = Path(tmp)
            port = free_port()
            server = EmbeddedRedis(str(work / "redis"), port).start()   # no maxmemory: unlimited
            try:
                r = connect(server.url, socket_timeout=60.0)
                print("publishing", flush=True)
                pub, user_ids = run_publish(r, port, publish_users, args.list_len, 4_000)
                if args.only in (None, "publish"):
                    data["publish"] = {**pub, **run}
                if args.only in (None, "lookup"):
                    print("lookups", flush=True)
                    data["lookup"] = {**run_lookup(work, port, server.pid(), user_ids, rates, duration, args.workers), **run}
            finally:
                server.stop(save=False)
    OUT.mkdir(parents=True, exist_ok=True)
    STORE.write_text(json.dumps(data, indent=1))
    print(to_markdown(data))


if __name__ == "__main__":
    main()
