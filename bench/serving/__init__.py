"""Serving benchmarks: exact top-K scoring, bulk publishing to Redis, HTTP lookups at a fixed rate.

Each result is a ratio against a baseline measured in the same run, on the same machine:

* **Scoring**: :func:`training.scoring.top_k` over every user and item against torch's own dense
  matrix multiply of the same shapes (:func:`training.scoring.matmul_rate`), and against the
  stricter ceiling of a blocked multiply alone (the multiply ``top_k`` cannot avoid). The
  previous implementation (one ``torch.topk`` over each whole ``[block, I]`` row) runs beside
  it, and both must return identical lists.
* **Publishing**: 1M synthetic users' lists through :func:`serving.publish.publish_version` (the
  product's path, verification included) against ``redis-benchmark -P 64 -t set`` with the
  same value size on the same fresh ``redis-server``. Encoding is timed apart from loading,
  and the load is split into its phases (validate + group + checksum, MSETNX round trips,
  read-back verification) with the server's own time from ``INFO commandstats``.
* **Lookup**: ``GET /v1/users/{id}/recommendations?k=20`` on ``python -m serving.api`` (one
  uvicorn worker), driven by an open-loop generator in another process that sends at a fixed
  rate and measures each latency from the request's *scheduled* send time (no coordinated
  omission), beside a raw Redis GET of the same user keys driven the same way.

Run ``python -m bench.serving`` (about 10 minutes) or ``--quick`` (about 2); ``--only`` re-runs
one section and keeps the others' stored results. Results: ``bench/out/serving.json``;
``bench.run_all`` renders them into BENCHMARKS.md with :func:`bench.serving.report.to_markdown`.
"""
