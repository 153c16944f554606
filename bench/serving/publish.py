"""Publishing: synthetic users' lists through serving.publish.publish_version against raw MSET and redis-benchmark."""
from __future__ import annotations

import time
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np
from bench.serving.common import BATCH_KEYS, CHUNK, NAMESPACE, N_SHARDS
from bench.serving.redis_tools import _commandstats, redis_benchmark


def synthetic_catalog(n: int, rng: np.random.Generator) -> List[str]:
    """Stock codes like the UCI Online Retail ones: "85123A", "22423", "84406B"."""
    codes = rng.choice(np.arange(10_000, 99_999), size=n, replace=False)
    suffix = rng.choice(list("ABCDEFGHJKLMNPRSTUVW"), size=n)
    lettered = rng.random(n) < 0.25
    return [f"{c}{s}" if has else str(c) for c, s, has in zip(codes, suffix, lettered)]


def _tag_patterns(list_len: int) -> List[List[str]]:
    """A few realistic source mixes: buy-again items first, then the model's, a popular tail."""
    out = []
    for again, popular in ((0, 0), (2, 0), (5, 0), (0, 10), (3, 20), (10, 5)):
        model = list_len - again - popular
        out.append(["buy_again"] * again + ["model"] * model + ["popular"] * popular)
    return out


def user_list_chunks(n_users: int, list_len: int, catalog: List[str], seed: int = 1
                     ) -> Iterator[Tuple[List[str], List[List[str]], List[List[float]], List[List[str]]]]:
    """(ids, items, scores, tags) per chunk of CHUNK users: the input encode_list gets in the product."""
    from math import gcd
    rng = np.random.default_rng(seed)
    cat = np.array(catalog, dtype=object)
    n_cat = len(catalog)
    steps = np.array([s for s in range(1, 997) if gcd(s, n_cat) == 1])
    patterns = _tag_patterns(list_len)
    for start in range(0, n_users, CHUNK):
        n = min(CHUNK, n_users - start)
        first = rng.integers(0, n_cat, size=(n, 1))
        step = rng.choice(steps, size=(n, 1))
        idx = (first + step * np.arange(list_len)) % n_cat          # distinct items per user
        scores = np.sort(rng.random((n, list_len)).astype(np.float32), axis=1)[:, ::-1] * 8.0
        which = rng.integers(0, len(patterns), size=n)
        yield ([str(12_346 + start + i) for i in range(n)], cat[idx].tolist(), scores.tolist(),
               [patterns[w] for w in which])


def encode_users(n_users: int, list_len: int, catalog: List[str]) -> Tuple[List[List[Tuple[str, str, bytes]]], float]:
    """Encoded user records in chunks, and the seconds spent in ``encode_list`` alone."""
    from serving.codec import encode_list
    chunks, spent = [], 0.0
    for ids, items, scores, tags in user_list_chunks(n_users, list_len, catalog):
        t0 = time.perf_counter()
        values = [encode_list(i, s, t) for i, s, t in zip(items, scores, tags)]
        spent += time.perf_counter() - t0
        chunks.append([("u", uid, v) for uid, v in zip(ids, values)])
    return chunks, spent


def side_records(catalog: List[str]) -> List[Tuple[str, str, bytes]]:
    """Item details for the catalogue and the global fallback list (the lookup reads both)."""
    from serving.codec import encode_item, encode_list
    rng = np.random.default_rng(2)
    recs = [("i", c, encode_item({"title": f"PRODUCT {c}", "category": f"cat{int(rng.integers(0, 40))}",
                                  "price": round(float(rng.uniform(0.5, 20)), 2)})) for c in catalog]
    recs.append(("f", "global", encode_list(catalog[:200], [float(200 - i) for i in range(200)], "popular")))
    return recs


class PhaseTimer:
    """Wraps methods of serving.loader.Loader to time each phase (bench only; nothing is changed)."""

    def __init__(self) -> None:
        from serving import loader
        self.cls, self.spent, self.saved = loader.Loader, {}, {}

    def __enter__(self) -> "PhaseTimer":
        for name in ("_prepare", "_write", "verify"):
            orig = getattr(self.cls, name)
            self.saved[name] = orig

            def timed(*a, _orig=orig, _name=name, **kw):
                t0 = time.perf_counter()
                try:
                    return _orig(*a, **kw)
                finally:
                    self.spent[_name] = self.spent.get(_name, 0.0) + time.perf_counter() - t0
            setattr(self.cls, name, timed)
        return self

    def __exit__(self, *exc) -> None:
        for name, orig in self.saved.items():
            setattr(self.cls, name, orig)


def raw_mset(r, chunks: List[List[Tuple[str, str, bytes]]], ks) -> float:
    """Seconds to write the same keys with plain pipelined MSETs of BATCH_KEYS keys (no checks)."""
    t0 = time.perf_counter()
    pipe = r.pipeline(transaction=False)
    for chunk in chunks:
        for start in range(0, len(chunk), BATCH_KEYS):
            pipe.mset({ks.user("raw", uid): v for _, uid, v in chunk[start:start + BATCH_KEYS]})
        pipe.execute()
    return time.perf_counter() - t0


def run_publish(r, port: int, n_users: int, list_len: int, n_catalog: int) -> Tuple[Dict[str, Any], List[str]]:
    """All publishing measurements; leaves the published version in Redis for the lookups."""
    from serving.keys import KeySpace
    from serving.publish import publish_version
    ks = KeySpace(NAMESPACE, N_SHARDS)
    catalog = synthetic_catalog(n_catalog, np.random.default_rng(0))
    print(f"  encoding {n_users} lists of {list_len} items", flush=True)
    chunks, encode_s = encode_users(n_users, list_len, catalog)
    value_bytes = sum(len(v) for c in chunks for _, _, v in c)
    size = round(value_bytes / n_users)
    bench_n = min(n_users, 1_000_000)
    r.flushall()
    before = redis_benchmark(port, bench_n, size)
    r.flushall()
    print(f"  redis-benchmark: {before['keys_per_s']} SET/s of {size} B", flush=True)
    raw_s = raw_mset(r, chunks, ks)
    r.flushall()
    r.config_resetstat()
    side = side_records(catalog)
    with PhaseTimer() as phases:
        t0 = time.perf_counter()
        res = publish_version(r, ks, "bench-v1", iter([side] + chunks), metadata={"source": "bench.serving"},
                              expected={"u": n_users, "i": n_catalog, "f": 1}, batch_keys=BATCH_KEYS, keep=3)
        publish_s = time.perf_counter() - t0
    stats = _commandstats(r)
    server_s = sum(v.get("usec", 0) for v in stats.values()) / 1e6
    msetnx_s = stats.get("msetnx", {}).get("usec", 0) / 1e6
    print(f"  publish_version: {res.keys_written} keys in {publish_s:.1f} s", flush=True)
    after = redis_benchmark(port, bench_n, size, db=1)   # db 1: the published version stays in db 0
    r.execute_command("SELECT", 1)
    r.flushdb()
    r.execute_command("SELECT", 0)
    ceiling = max(before["keys_per_s"], after["keys_per_s"])
    keys_per_s = res.keys_written / publish_s
    other = publish_s - sum(phases.spent.values())
    out = {
        "users": n_users, "list_len": list_len, "catalog": n_catalog, "value_bytes_avg": size,
        "value_mb_total": round(value_bytes / 1e6, 1), "n_shards": N_SHARDS, "chunk": CHUNK,
        "batch_keys": BATCH_KEYS,
        "encode_s": round(encode_s, 1), "encode_lists_per_s": round(n_users / encode_s),
        "publish_s": round(publish_s, 1), "publish_keys": res.keys_written,
        "publish_keys_per_s": round(keys_per_s), "publish_mb_per_s": round(res.bytes_written / publish_s / 1e6, 1),
        "raw_mset_s": round(raw_s, 1), "raw_mset_keys_per_s": round(n_users / raw_s),
        "raw_mset_mb_per_s": round(value_bytes / raw_s / 1e6, 1),
        "redis_benchmark_before": before, "redis_benchmark_after": after, "redis_benchmark_keys_per_s": ceiling,
        "ratio_publish_vs_benchmark": round(keys_per_s / ceiling, 2),
        "ratio_raw_mset_vs_benchmark": round(n_users / raw_s / ceiling, 2),
        "meets_half": keys_per_s >= 0.5 * ceiling,
        "phases_s": {
            "prepare (validate, group by shard, checksum, sample)": round(phases.spent.get("_prepare", 0), 1),
            "write (MSETNX pipelines: client packing + round trips)": round(phases.spent.get("_write", 0), 1),
            "verify (counts + read back 100 sampled keys)": round(phases.spent.get("verify", 0), 2),
            "other (lock, meta, pointer switch, prune)": round(other, 2)},
        "server_s": {"all commands": round(server_s, 1), "msetnx": round(msetnx_s, 1)},
    }
    return out, [uid for c in chunks[:10] for _, uid, _ in c]
