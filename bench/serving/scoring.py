"""Scoring: training.scoring.top_k against torch's dense multiply and a blocked multiply of the same shapes."""
from __future__ import annotations

import time
from typing import Any, Dict, Sequence, Tuple

import numpy as np
from bench.serving.common import THREADS


def _synthetic_vectors(n_users: int, n_items: int, dim: int, seed: int = 0):
    """Embeddings with a popularity direction: popular items score high for most users, as with
    trained two-tower vectors (iid noise alone would make every item equally likely)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    users = torch.randn(n_users, dim, generator=g)
    items = torch.randn(n_items, dim, generator=g)
    users[:, 0] = users[:, 0].abs() + 1.0
    items[:, 0] = torch.randn(n_items, generator=g).mul(1.5)  # log-popularity
    return users.contiguous(), items.contiguous()


def _plain_top_k(users, items, k: int, block: int = 4096) -> np.ndarray:
    """The previous ``top_k``: blocked multiply, then ``torch.topk`` over each whole row."""
    import torch
    from training.scoring import _block_top_k
    items_t = items.T.contiguous()
    out = []
    with torch.inference_mode():
        for start in range(0, users.shape[0], block):
            _, idx = _block_top_k(users[start:start + block] @ items_t, k)
            out.append(idx.cpu().numpy())
    return np.concatenate(out)


def _blocked_matmul_s(users, items, rows: int, per_thread: bool) -> float:
    """Seconds for the dense multiply alone, block by block into a reused buffer: the part of
    top_k no selection method avoids. ``per_thread``: blocks spread over single-threaded
    workers, as top_k runs them on CPU; else every block on torch's intra-op threads."""
    import torch
    from training import scoring
    items_t = items.T.contiguous()
    n = users.shape[0]
    bufs: Dict[int, Any] = {}

    def one(start: int) -> None:
        import threading
        buf = bufs.setdefault(threading.get_ident(), torch.empty(rows, items.shape[0]))
        stop = min(start + rows, n)
        torch.mm(users[start:stop], items_t, out=buf[:stop - start])

    t0 = time.perf_counter()
    with torch.inference_mode():
        if per_thread:
            scoring._run_parallel(one, range(0, n, rows), torch.get_num_threads())
        else:
            for start in range(0, n, rows):
                one(start)
    return time.perf_counter() - t0


def scoring_case(n_users: int, n_items: int, dim: int, k: int, rounds: int, plain: bool) -> Dict[str, Any]:
    """top_k against the matmul baselines, interleaved ``rounds`` times; best time of each."""
    import torch
    from training import scoring
    torch.set_num_threads(THREADS)
    users, items = _synthetic_vectors(n_users, n_items, dim)
    macs = float(n_users) * n_items * dim
    # the same-shape product [U, d] x [d, I] as one tensor; capped at 2 GiB of output (the rate
    # does not grow with more rows: it is bound by writing the output)
    rate_users = min(n_users, (2 << 30) // (4 * n_items))
    small_rows = max(1, scoring.BLOCK_FLOATS // n_items)
    best: Dict[str, float] = {}
    same_shape_rate = 0.0
    same = None
    first_top_k = 0.0
    for r in range(rounds):
        t0 = time.perf_counter()
        got, _ = scoring.top_k(users, items, k, device="cpu")
        seconds = time.perf_counter() - t0
        best["top_k"] = min(best.get("top_k", 1e18), seconds)
        if plain and r == 0:   # once (it is slow), right after top_k: the speed-up compares these two
            first_top_k = seconds
            t0 = time.perf_counter()
            want = _plain_top_k(users, items, k)
            best["plain"] = time.perf_counter() - t0
            same = bool(np.array_equal(got, want))
            del want
        for name, rows, per_thread in (("mm_4096", 4096, False), ("mm_small", small_rows, True)):
            best[name] = min(best.get(name, 1e18), _blocked_matmul_s(users, items, rows, per_thread))
        same_shape_rate = max(same_shape_rate, scoring.matmul_rate(rate_users, n_items, dim, device="cpu",
                                                                   repeats=2))
        print(f"  scoring {n_users}x{n_items}x{dim} k={k} round {r + 1}: " +
              ", ".join(f"{n} {s:.2f} s" for n, s in best.items()), flush=True)
    rate = macs / best["top_k"]
    blocked_rate = macs / min(best["mm_4096"], best["mm_small"])
    out = {
        "users": n_users, "items": n_items, "dim": dim, "k": k, "rounds": rounds,
        "top_k_s": round(best["top_k"], 3), "users_per_s": round(n_users / best["top_k"]),
        "top_k_gmacs": round(rate / 1e9, 2),
        "matmul_same_shape_gmacs": round(same_shape_rate / 1e9, 2), "matmul_same_shape_users": rate_users,
        "matmul_blocked_gmacs": round(blocked_rate / 1e9, 2),
        "matmul_blocked_4096_s": round(best["mm_4096"], 3),
        f"matmul_blocked_{small_rows}_per_thread_s": round(best["mm_small"], 3),
        "ratio_vs_same_shape": round(rate / same_shape_rate, 2),
        "ratio_vs_blocked": round(rate / blocked_rate, 2),
        "meets_half": rate >= 0.5 * same_shape_rate,
    }
    if "plain" in best:
        out.update({"plain_s": round(best["plain"], 3), "plain_users_per_s": round(n_users / best["plain"]),
                    "plain_ratio_vs_same_shape": round(macs / best["plain"] / same_shape_rate, 2),
                    "top_k_same_round_s": round(first_top_k, 3),
                    "speedup_vs_plain": round(best["plain"] / first_top_k, 2), "identical_to_plain": same})
    return out


def run_scoring(shapes: Sequence[Tuple[int, int, int, int, bool]], rounds: int) -> Dict[str, Any]:
    return {"threads": THREADS, "cases": [scoring_case(u, i, d, k, rounds, plain) for u, i, d, k, plain in shapes]}
