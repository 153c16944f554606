"""Full-ranking offline evaluation of recommenders (numpy + scipy only).

Every model is evaluated the same way: for each evaluated user the model
scores *every* item, the allowed items are ranked by score, and the ranking is
compared with the user's held-out relevant items. There is no negative
sampling, so the numbers are comparable across models and runs.

Ranking rule
    Items are sorted by score descending; equal scores are broken by the
    LOWER item index first, so rankings (and metrics) are deterministic.
    Excluded items (``exclude``) are not candidates. A score of ``-inf`` or
    ``NaN`` also makes an item a non-candidate: it never appears in a top-K
    list (a row with fewer than K candidates is filled with ``-1``).

Relevance
    Binary: a non-zero entry of ``truth`` marks a relevant (user, item) pair.
    Items in the user's ``exclude`` row are removed from the candidates AND
    from the relevant set (the "new to the customer" protocol: items the user
    already bought in training are neither recommended nor counted as hits).
    Only users with at least one relevant item left are counted.

Metrics (per counted user, then the mean over counted users; ``rel_i`` = 1 if
the item at position ``i`` of the top-K list is relevant, ``R`` = number of
relevant items of the user, ``hits@K`` = sum of ``rel_i`` for i = 1..K)

    precision@K = hits@K / K
    recall@K    = hits@K / R
    ndcg@K      = DCG@K / IDCG@K, with binary gains:
                  DCG@K  = sum_{i=1..K} rel_i / log2(i + 1)
                  IDCG@K = sum_{i=1..min(R, K)} 1 / log2(i + 1)
                  (the DCG of min(R, K) hits at the top)
    map@K       = mean over users of AP@K, where
                  AP@K = (1 / min(R, K)) * sum_{i=1..K} precision@i * rel_i
    hit@K       = 1 if hits@K > 0 else 0
    mrr         = mean of 1 / rank of the best-ranked relevant item in the FULL
                  ranking of allowed items (not cut at K):
                  rank(r) = 1 + #{allowed j : s_j > s_r or (s_j == s_r and j < r)},
                  minimised over the relevant items r (0 when every relevant
                  item has a non-candidate score of -inf / NaN)
    coverage@K  = number of distinct items in the top-K list of any counted
                  user / n_items (catalog coverage; not a per-user mean)
    n_users     = number of counted users (int)

``evaluate`` calls the model's ``score_fn`` on blocks of users, so memory is
bounded by ``block x n_items`` scores whatever the number of users.
"""
from __future__ import annotations

import math
from numbers import Number
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp

PER_USER_METRICS = ("precision", "recall", "ndcg", "map", "hit")


def _nonzero_coords(m: sp.spmatrix) -> Tuple[np.ndarray, np.ndarray]:
    """(row, col) of the stored entries of ``m`` whose value is non-zero."""
    m = sp.csr_matrix(m)
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    keep = m.data != 0
    return rows[keep], m.indices[keep].astype(np.int64)


def _binary(m: sp.spmatrix) -> sp.csr_matrix:
    """A float32 0/1 CSR copy of ``m`` (explicit zeros dropped)."""
    b = sp.csr_matrix(m, dtype=np.float32, copy=True)
    b.data = (b.data != 0).astype(np.float32)
    b.eliminate_zeros()
    return b


def _prepare_scores(scores: np.ndarray, exclude: Optional[sp.spmatrix]) -> np.ndarray:
    """A float copy of ``scores`` with NaN and excluded entries set to -inf."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D [n_rows, n_items], got shape {scores.shape}")
    s = np.array(scores, dtype=np.result_type(scores.dtype, np.float32))  # always a copy
    nan = np.isnan(s)
    if nan.any():
        s[nan] = -np.inf
    if exclude is not None:
        if exclude.shape != s.shape:
            raise ValueError(f"exclude has shape {exclude.shape}, scores have shape {s.shape}")
        rows, cols = _nonzero_coords(exclude)
        s[rows, cols] = -np.inf
    return s


def _topk_prepared(s: np.ndarray, k: int) -> np.ndarray:
    """Top-k of prepared scores (no NaN; -inf = not a candidate), ties by lower index, -1 fill."""
    n_rows, n_items = s.shape
    out = np.full((n_rows, k), -1, dtype=np.int64)
    kk = min(k, n_items)
    if n_rows == 0 or kk == 0:
        return out
    if kk == n_items:
        order = np.argsort(-s, axis=1, kind="stable")
    else:
        # kk-th largest score per row; everything strictly above it is in, and the
        # remaining places go to the LOWEST-index items tied with it (argpartition alone
        # would pick arbitrary tied items at the boundary).
        v = np.partition(s, n_items - kk, axis=1)[:, n_items - kk][:, None]
        above = s > v
        tied = s == v
        need = kk - above.sum(axis=1)
        sel = above | tied
        fix = np.flatnonzero(tied.sum(axis=1) > need)
        if fix.size:
            tf = tied[fix]
            sel[fix] = above[fix] | (tf & (np.cumsum(tf, axis=1) <= need[fix, None]))
        cols = np.nonzero(sel)[1].reshape(n_rows, kk)        # ascending item index per row
        vals = np.take_along_axis(s, cols, axis=1)
        order = np.take_along_axis(cols, np.argsort(-vals, axis=1, kind="stable"), axis=1)
    order = order[:, :kk]
    order[np.take_along_axis(s, order, axis=1) == -np.inf] = -1
    out[:, :kk] = order
    return out


def topk(scores: np.ndarray, k: int, exclude: Optional[sp.csr_matrix] = None) -> np.ndarray:
    """int64 [n_rows, k]: the k best items per row, by score descending, ties by lower item index.

    ``exclude`` (CSR, same shape as ``scores``): non-zero entries are not candidates. Items scored
    -inf or NaN are not candidates either; a row with fewer than k candidates ends with -1.
    ``scores`` is not modified.
    """
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return _topk_prepared(_prepare_scores(scores, exclude), k)


def _check_ks(ks: Sequence[int]) -> List[int]:
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be a non-empty sequence of positive ints, got {ks}")
    return ks


def _block_metrics(hits: np.ndarray, n_rel: np.ndarray, ks: Sequence[int]) -> Dict[str, np.ndarray]:
    """Per-user precision/recall/ndcg/map/hit@K from a [b, K] hit matrix and relevant counts."""
    K = hits.shape[1]
    pos = np.arange(1, K + 1, dtype=np.float64)
    disc = 1.0 / np.log2(pos + 1.0)
    h = hits.astype(np.float64)
    cum_hits = np.cumsum(h, axis=1)
    cum_dcg = np.cumsum(h * disc, axis=1)
    cum_ap = np.cumsum(cum_hits / pos * h, axis=1)
    ideal = np.cumsum(disc)
    n_rel = n_rel.astype(np.int64)
    out = {}
    for k in ks:
        hk = cum_hits[:, k - 1]
        cut = np.minimum(n_rel, k)
        out[f"precision@{k}"] = hk / k
        out[f"recall@{k}"] = hk / n_rel
        out[f"ndcg@{k}"] = cum_dcg[:, k - 1] / ideal[cut - 1]
        out[f"map@{k}"] = cum_ap[:, k - 1] / cut
        out[f"hit@{k}"] = (hk > 0).astype(np.float64)
    return out


def _reciprocal_rank(s: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """1 / full-ranking rank of the best-ranked relevant item per row (prepared scores, bool rel)."""
    n_items = s.shape[1]
    best = np.where(rel, s, -np.inf).max(axis=1)[:, None]
    at_best = rel & (s == best)
    r = np.argmax(at_best, axis=1)[:, None]                      # lowest relevant index at the best score
    above = (s > best).sum(axis=1)
    tied_before = ((s == best) & (np.arange(n_items)[None, :] < r)).sum(axis=1)
    rr = 1.0 / (1.0 + above + tied_before)
    rr[best[:, 0] == -np.inf] = 0.0                              # no relevant item is a candidate
    return rr


def _summary(per_user: Dict[str, np.ndarray], mask: np.ndarray, seen: Dict[int, np.ndarray],
             ks: Sequence[int], n_items: int) -> Dict[str, object]:
    n = int(mask.sum())
    out: Dict[str, object] = {}
    for k in ks:
        for name in PER_USER_METRICS:
            key = f"{name}@{k}"
            out[key] = float(per_user[key][mask].mean()) if n else math.nan
        out[f"coverage@{k}"] = float(seen[k].sum()) / n_items if n and n_items else math.nan
    out["mrr"] = float(per_user["mrr"][mask].mean()) if n else math.nan
    out["n_users"] = n
    return out


def evaluate(score_fn: Callable[[np.ndarray], np.ndarray], users: np.ndarray, truth: sp.csr_matrix,
             ks: Sequence[int] = (10, 20), exclude: Optional[sp.csr_matrix] = None,
             segments: Optional[Mapping[str, np.ndarray]] = None, block: int = 2048,
             return_topk: bool = False) -> dict:
    """Full-ranking metrics of ``score_fn`` for ``users`` (see the module docstring for definitions).

    score_fn: block_users (int64) -> float32 [len(block_users), n_items] scores; called on blocks of
        at most ``block`` counted users.
    users: int64 user indices to evaluate (each entry is evaluated; duplicates count twice).
    truth: CSR n_users x n_items, non-zero = relevant.
    exclude: CSR n_users x n_items of items that are neither candidates nor hits for the user.
    segments: name -> bool mask of length n_users; adds ``"<name>/<metric>"`` keys (and
        ``"<name>/n_users"``) over the counted users of the segment (NaN metrics when none).
    return_topk: also return ``"topk"`` (int64 [n_counted, max(ks)]) and ``"topk_users"``.

    Returns a dict: ``precision@K recall@K ndcg@K map@K hit@K coverage@K`` per K, ``mrr``, ``n_users``.
    """
    ks = _check_ks(ks)
    K = max(ks)
    block = int(block)
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    truth = _binary(truth)
    n_users, n_items = truth.shape
    if exclude is not None:
        if exclude.shape != truth.shape:
            raise ValueError(f"exclude has shape {exclude.shape}, truth has shape {truth.shape}")
        exclude = _binary(exclude)
    users = np.asarray(users, dtype=np.int64).ravel()
    if users.size and (users.min() < 0 or users.max() >= n_users):
        raise ValueError(f"users must lie in 0..{n_users - 1}")
    seg_masks: Dict[str, np.ndarray] = {}
    for name, mask in (segments or {}).items():
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (n_users,):
            raise ValueError(f"segment {name!r} must be a bool mask of length n_users={n_users}")
        seg_masks[name] = mask

    # Relevant sets after exclusion, restricted to the requested users.
    rel = truth[users]
    if exclude is not None:
        rel = rel - rel.multiply(exclude[users])
        rel = sp.csr_matrix(rel)
        rel.eliminate_zeros()
    n_rel = np.diff(rel.indptr)
    counted = np.flatnonzero(n_rel > 0)
    c_users = users[counted]
    c_rel = rel[counted]
    c_nrel = n_rel[counted]

    groups = {"": np.ones(len(c_users), dtype=bool)}
    groups.update({name: mask[c_users] for name, mask in seg_masks.items()})
    seen = {g: {k: np.zeros(n_items, dtype=bool) for k in ks} for g in groups}
    per_user: Dict[str, List[np.ndarray]] = {}
    tops: List[np.ndarray] = []

    for start in range(0, len(c_users), block):
        stop = min(start + block, len(c_users))
        b_users = c_users[start:stop]
        scores = np.asarray(score_fn(b_users))
        if scores.shape != (len(b_users), n_items):
            raise ValueError(f"score_fn returned shape {scores.shape}, expected {(len(b_users), n_items)}")
        s = _prepare_scores(scores, exclude[b_users] if exclude is not None else None)
        top = _topk_prepared(s, K)
        rel_dense = c_rel[start:stop].toarray() > 0
        valid = top >= 0
        hits = np.take_along_axis(rel_dense, np.where(valid, top, 0), axis=1) & valid
        metrics = _block_metrics(hits, c_nrel[start:stop], ks)
        metrics["mrr"] = _reciprocal_rank(s, rel_dense)
        for key, val in metrics.items():
            per_user.setdefault(key, []).append(val)
        for g, gmask in groups.items():
            gtop = top[gmask[start:stop]]
            for k in ks:
                items = gtop[:, :k]
                seen[g][k][items[items >= 0]] = True
        if return_topk:
            tops.append(top)

    keys = [f"{m}@{k}" for k in ks for m in PER_USER_METRICS] + ["mrr"]
    flat = {key: (np.concatenate(per_user[key]) if key in per_user else np.zeros(0)) for key in keys}
    result: dict = _summary(flat, groups[""], seen[""], ks, n_items)
    for name in seg_masks:
        for key, val in _summary(flat, groups[name], seen[name], ks, n_items).items():
            result[f"{name}/{key}"] = val
    if return_topk:
        result["topk"] = np.concatenate(tops) if tops else np.zeros((0, K), dtype=np.int64)
        result["topk_users"] = c_users.copy()
    return result


def format_metrics(metrics: dict, keys: Optional[Sequence[str]] = None) -> str:
    """One log line ``"ndcg@10=0.1234 recall@20=0.2345 ... n_users=123"``.

    ``keys``: which entries, in order (default: all, in dict order); missing and non-scalar entries
    (arrays such as ``topk``) are skipped.
    """
    parts = []
    for key in (metrics.keys() if keys is None else keys):
        if key not in metrics:
            continue
        val = metrics[key]
        if isinstance(val, np.generic):
            val = val.item()
        if isinstance(val, bool) or not isinstance(val, Number):
            continue
        parts.append(f"{key}={val}" if isinstance(val, int) else f"{key}={float(val):.4f}")
    return " ".join(parts)
