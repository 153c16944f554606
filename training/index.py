"""The ``scoring.index`` setting: which top-K function scores the lists, :func:`training.scoring.top_k` (exact,
blocked, the default) or :func:`top_k_faiss` (a FAISS exact inner-product index: an optional dependency)."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import scipy.sparse as sp

from training.scoring import Array, TopKFn, _check_args, top_k

INDEX_KINDS = ("exact", "faiss")
FAISS_HINT = "pip install faiss-cpu to use scoring.index: faiss"


def _import_faiss():
    try:
        import faiss  # noqa: F401  (optional dependency)
    except ImportError as exc:
        raise ImportError(FAISS_HINT) from exc
    return faiss


def top_k_faiss(user_vecs: Array, item_vecs: Array, k: int, exclude: Optional[sp.csr_matrix] = None,
                item_mask: Optional[np.ndarray] = None, **_ignored) -> Tuple[np.ndarray, np.ndarray]:
    """``top_k`` through a FAISS exact inner-product index (``IndexFlatIP``), same conventions.

    Masked items are left out of the index; for ``exclude`` each user asks for
    ``k + (their excluded count)`` and drops the excluded ones. Equal scores at the K-th place may
    pick other items than :func:`top_k` (FAISS does not promise an order among ties).
    """
    faiss = _import_faiss()
    u = np.ascontiguousarray(np.asarray(user_vecs, dtype=np.float32))
    v = np.ascontiguousarray(np.asarray(item_vecs, dtype=np.float32))
    if u.ndim != 2 or v.ndim != 2 or u.shape[1] != v.shape[1]:
        raise ValueError(f"user_vecs {u.shape} and item_vecs {v.shape} must be [n, d] with the same d")
    n_users, n_items = u.shape[0], v.shape[0]
    _check_args(n_users, n_items, k, exclude, item_mask, 1)
    kk = min(int(k), n_items)
    out_items = np.full((n_users, kk), -1, dtype=np.int64)
    out_scores = np.full((n_users, kk), -np.inf, dtype=np.float32)
    kept = np.arange(n_items) if item_mask is None else np.flatnonzero(np.asarray(item_mask, bool))
    if kk == 0 or n_users == 0 or kept.size == 0:
        return out_items, out_scores
    index = faiss.IndexFlatIP(v.shape[1])
    index.add(np.ascontiguousarray(v[kept]))
    excl = sp.csr_matrix(exclude) if exclude is not None else None
    extra = int(np.diff(excl.indptr).max()) if excl is not None and excl.nnz else 0
    n_fetch = min(kk + extra, kept.size)
    dist, pos = index.search(u, n_fetch)
    for row in range(n_users):
        ok = pos[row] >= 0
        cand, sc = kept[pos[row][ok]], dist[row][ok]
        if excl is not None:
            seen = excl.indices[excl.indptr[row]:excl.indptr[row + 1]][
                excl.data[excl.indptr[row]:excl.indptr[row + 1]] != 0]
            keep = ~np.isin(cand, seen)
            cand, sc = cand[keep], sc[keep]
        order = np.lexsort((cand, -sc))[:kk]
        out_items[row, :order.size] = cand[order]
        out_scores[row, :order.size] = sc[order]
    return out_items, out_scores


def make_index(kind: str = "exact") -> TopKFn:
    """The top-K function named by the ``scoring.index`` setting: ``"exact"`` or ``"faiss"``.

    Raises:
        ImportError: ``"faiss"`` was asked for but the package is not installed (says what to install).
        ValueError: an unknown kind.
    """
    if kind == "exact":
        return top_k
    if kind == "faiss":
        _import_faiss()
        return top_k_faiss
    raise ValueError(f"unknown scoring index {kind!r}; use one of {list(INDEX_KINDS)}")
