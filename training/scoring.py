"""Exact top-K retrieval: every user scored against every item by a blocked matrix multiply.

``top_k`` is the batch scorer: ``scores = user_vecs @ item_vecs.T`` (dot products), computed one
block of users at a time so memory stays at ``block_users x n_items`` floats, then cut to the K
best items per user with ``torch.topk``. The item vectors go to the device once.

Speed on CPU
    At small dim ``torch.topk`` over a whole ``[block, I]`` row costs several times the matrix
    multiply that produced it. So on CPU a block is first cut down to the few scores that can be
    among the K best (a threshold that provably keeps them all, see :func:`_threshold_top_k`),
    and only those are ranked; blocks are small enough to stay in cache and run one per thread
    (``torch.get_num_threads()`` threads, each single-threaded), since small ops split across
    threads wait for the slowest thread at every op. The answer is the same, ties included.

Ranking rule (the same as :func:`training.metrics.topk`)
    Items are sorted by score descending; equal scores are broken by the LOWER item index, so the
    result is deterministic whatever the device or the block size.

Candidates
    ``exclude`` (CSR ``[U, I]``): a non-zero entry removes that item for that user (already
    bought). ``item_mask`` (bool ``[I]``): False removes the item for everyone (unavailable).

Padding
    The result has ``k' = min(k, I)`` columns. A user with fewer than ``k'`` eligible items gets
    their eligible items first, then item ``-1`` with score ``-inf`` in the remaining columns.
    Callers must drop ``items < 0`` (or ``~np.isfinite(scores)``) before publishing.

:func:`training.index.make_index` (``"exact"`` | ``"faiss"``) picks the implementation by name (the ``scoring.index``
setting); ``"faiss"`` needs ``pip install faiss-cpu`` and gives the same lists up to ties.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import scipy.sparse as sp
import torch

logger = logging.getLogger(__name__)

Array = Union[np.ndarray, torch.Tensor]
TopKFn = Callable[..., Tuple[np.ndarray, np.ndarray]]



def pick_device(device: Optional[str] = None) -> torch.device:
    """``device`` as given, else ``cuda`` when available, else ``cpu``."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def _as_matrix(name: str, x: Array, device: torch.device) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D [n, dim], got shape {tuple(t.shape)}")
    t = t.detach().to(device=device, dtype=torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} holds NaN or inf values; fix the embeddings before scoring")
    return t


def _check_args(n_users: int, n_items: int, k: int, exclude, item_mask, block_users: Optional[int]) -> None:
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if block_users is not None and int(block_users) < 1:
        raise ValueError(f"block_users must be >= 1, got {block_users}")
    if exclude is not None and tuple(exclude.shape) != (n_users, n_items):
        raise ValueError(f"exclude has shape {tuple(exclude.shape)}, expected (n_users, n_items) = "
                         f"{(n_users, n_items)}")
    if item_mask is not None and np.asarray(item_mask).shape != (n_items,):
        raise ValueError(f"item_mask has shape {np.asarray(item_mask).shape}, expected ({n_items},)")


def _sortable_key(scores: torch.Tensor, cols: Optional[torch.Tensor] = None,
                  n_cols: Optional[int] = None) -> torch.Tensor:
    """int64 keys, one per score, whose descending order is (score desc, column asc), all distinct.

    The float32 bits are mapped to an int32 with the same order as the floats (flip the magnitude
    bits of negatives), shifted into the high 32 bits; the low bits hold ``n_cols - 1 - column``.
    ``cols`` (same shape as ``scores``) names each score's column when the scores are not in
    column order (candidates gathered from a row); default: the position in the row.
    """
    scores = torch.where(scores == 0, torch.zeros_like(scores), scores)  # -0.0 ties with +0.0
    bits = scores.contiguous().view(torch.int32)
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)
    if cols is None:
        n_cols = scores.shape[1]
        cols = torch.arange(n_cols, device=scores.device, dtype=torch.int64)
    elif n_cols is None:
        n_cols = int(cols.max()) + 1 if cols.numel() else 1
    return ordered * (1 << 32) + ((n_cols - 1) - cols)


def _block_top_k(scores: torch.Tensor, k: int, cols: Optional[torch.Tensor] = None,
                 n_cols: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(values, positions) of the k best per row, ties by lower column. ``scores`` [b, n] has no NaN.

    ``cols`` [b, n] (optional) gives each score's column for the tie rule when the row is a set of
    candidates not in column order; positions index ``scores``' own columns either way.
    """
    n = scores.shape[1]
    # One extra column shows whether the k-th score is shared with an item left out.
    vals, idx = torch.topk(scores, min(k + 1, n), dim=1, largest=True, sorted=True)
    finite = torch.isfinite(vals)
    tied = ((vals[:, 1:] == vals[:, :-1]) & finite[:, 1:]).any(dim=1)
    vals, idx = vals[:, :k], idx[:, :k]
    # torch.topk's values are exact, but which of several equal scores it returns (and in what
    # order) is unspecified. Rows with a finite tie anywhere in the k (+1) best, rare with real
    # embeddings, are redone with distinct integer keys; -inf ties are padding and do not matter.
    fix = torch.nonzero(tied, as_tuple=True)[0]
    if fix.numel():
        sub = scores[fix]
        keys = _sortable_key(sub) if cols is None else _sortable_key(sub, cols[fix], n_cols)
        _, fidx = torch.topk(keys, k, dim=1, largest=True, sorted=True)
        idx[fix] = fidx
        vals[fix] = torch.gather(sub, 1, fidx)
    return vals, idx


# Threshold selection (CPU and GPU). A row of n scores is cut into n / LEAF strided leaves (leaf j holds
# columns j, j + n/LEAF, ...); their maxima take one vectorised pass, an element-wise max of LEAF
# contiguous slices. (Contiguous leaves, columns LEAF*j .. LEAF*j + LEAF-1, ran 1.7x slower on an
# H200: reducing an inner dimension of 8 and gathering 8-wide rows are both several times slower.) The (k+1)-th largest of
# GROUPS_PER_K * (k+1) coarser group maxima is a score that at least k+1 scores of the row reach,
# so every score of the k (+1) best -- ties included -- lies in a leaf whose maximum reaches it.
# Only those leaves (typically 5 % of the row) are gathered, filtered to the scores that reach
# the threshold (about 1.3 (k+1)) and ranked by torch.topk, whose cost per element is several
# times the matrix multiply's at small dim.
LEAF = 8
GROUPS_PER_K = 4         # threshold from the (k+1)-th largest of GROUPS_PER_K * (k+1) group maxima
HEAVY_PER_K = 4          # rows with more selected leaves than HEAVY_PER_K * (k+1) are ranked whole
BLOCK_FLOATS = 1 << 21   # scores per CPU block (8 MB): the block stays in cache between the passes


GPU_COPY_STREAM = True     # results go to host memory on a side stream, overlapping the next block
GPU_BLOCK_SHARE = 1 / 8  # of the GPU's free memory for a block's scores (top-K's temporaries need as much again)
GPU_MAX_BLOCK = 65536
GPU_MIN_BLOCK = 1024


def _block_rows(dev: torch.device, n_cols: int, block_users: Optional[int]) -> int:
    """Users per block: see ``top_k``'s ``block_users``."""
    if dev.type == "cpu":
        return max(1, min(int(block_users or 4096), BLOCK_FLOATS // n_cols))
    if block_users is not None:
        return int(block_users)
    free, _ = torch.cuda.mem_get_info(dev) if dev.type == "cuda" else (GPU_MAX_BLOCK * 4 * n_cols, 0)
    return int(min(GPU_MAX_BLOCK, max(GPU_MIN_BLOCK, free * GPU_BLOCK_SHARE // (4 * n_cols))))


def _use_threshold(n: int, k: int) -> bool:
    """The threshold path pays off when the row is long compared with the k (+1) best leaves."""
    return n % LEAF == 0 and n >= 8 * LEAF * (k + 1)


def _threshold_top_k(scores: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Same answer as :func:`_block_top_k` (values, columns) for ``scores`` [b, n], n % LEAF == 0.

    Rows whose threshold lets through too many leaves (fewer than k+1 finite scores, or massive
    ties) are ranked whole by :func:`_block_top_k`.
    """
    b, n = scores.shape
    dev = scores.device
    n_leaves = n // LEAF
    leaf_max = scores.view(b, LEAF, n_leaves).amax(1)                     # [b, n_leaves]
    n_groups = GROUPS_PER_K * (k + 1)
    per_group = n_leaves // n_groups
    group_max = leaf_max[:, :per_group * n_groups].view(b, per_group, n_groups).amax(1)
    # the (k+1)-th largest of n_groups maxima of disjoint sets of scores: k+1 scores reach it
    thresh = torch.topk(group_max, k + 1, dim=1, sorted=False).values.amin(1)       # [b]
    passed = leaf_max >= thresh.unsqueeze(1)
    rows, leaves = torch.nonzero(passed, as_tuple=True)                              # rows ascending
    heavy = torch.nonzero(passed.sum(1) > HEAVY_PER_K * (k + 1), as_tuple=True)[0]
    if heavy.numel():
        light = torch.ones(b, dtype=torch.bool, device=dev)
        light[heavy] = False
        keep = torch.nonzero(light.index_select(0, rows), as_tuple=True)[0]
        rows, leaves = rows.index_select(0, keep), leaves.index_select(0, keep)
    # every score of the selected leaves, then only those that reach the threshold, and their
    # columns (1-D index_select throughout: several times faster than advanced indexing)
    at = (rows * n + leaves).unsqueeze(1) + torch.arange(0, n, n_leaves, device=dev)      # [m, LEAF]
    vals = scores.view(-1).index_select(0, at.view(-1))
    reach = vals.view(-1, LEAF) >= thresh.index_select(0, rows).unsqueeze(1)
    hit = torch.nonzero(reach.view(-1), as_tuple=True)[0]                            # rows ascending
    leaf_of = torch.div(hit, LEAF, rounding_mode="floor")
    rows, leaves, vals = rows.index_select(0, leaf_of), leaves.index_select(0, leaf_of), vals.index_select(0, hit)
    cols = leaves + (hit - leaf_of * LEAF) * n_leaves
    # rows ascending: row r's candidates are rows[starts[r]:starts[r] + counts[r]]
    bounds = torch.searchsorted(rows, torch.arange(b + 1, device=dev))
    starts, counts = bounds[:-1], bounds[1:] - bounds[:-1]
    width = max(int(counts.max()) if counts.numel() else 0, k + 1)
    slot = rows * width + torch.arange(rows.numel(), device=dev) - starts.index_select(0, rows)
    cand_vals = torch.full((b * width,), float("-inf"), device=dev)
    cand_cols = torch.full((b * width,), n, dtype=torch.int64, device=dev)   # n: no column (padding)
    cand_vals.index_copy_(0, slot, vals)
    cand_cols.index_copy_(0, slot, cols)
    cand_vals, cand_cols = cand_vals.view(b, width), cand_cols.view(b, width)
    top_vals, pos = _block_top_k(cand_vals, k, cand_cols, n + 1)
    top_cols = torch.gather(cand_cols, 1, pos)
    if heavy.numel():
        hv, hi = _block_top_k(scores[heavy], k)
        top_vals[heavy], top_cols[heavy] = hv, hi
    return top_vals, top_cols


def _run_parallel(fn: Callable[[int], None], starts: Sequence[int], workers: int) -> None:
    """``fn(start)`` for every block on ``workers`` threads, each running torch single-threaded.

    Small ops split over intra-op threads wait for the slowest thread at every op; on a busy
    machine that wait dominates. Whole blocks per thread need no such barrier. Each worker sets
    its own OpenMP/MKL thread count to 1 (thread-local); the process-wide default that
    ``torch.set_num_threads`` also stores is put back afterwards.
    """
    saved = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(max_workers=workers, initializer=torch.set_num_threads,
                                initargs=(1,)) as pool:
            for _ in pool.map(fn, starts):
                pass
    finally:
        torch.set_num_threads(saved)


def top_k(user_vecs: Array, item_vecs: Array, k: int, exclude: Optional[sp.csr_matrix] = None,
          block_users: Optional[int] = None, device: Optional[str] = None,
          item_mask: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The k best items per user by dot product, exact.

    Args:
        user_vecs: float32 ``[U, d]`` (numpy or torch).
        item_vecs: float32 ``[I, d]``.
        k: list length wanted; the result has ``min(k, I)`` columns.
        exclude: CSR ``[U, I]``; non-zero entries are not recommended to that user.
        block_users: at most this many users per matrix multiply (memory ``block_users x I``
            floats). None: sized for the device (``_block_rows``): on CPU about ``BLOCK_FLOATS``
            scores, so a block stays in cache while it is ranked; on a GPU up to
            ``GPU_BLOCK_SHARE`` of its free memory, at most ``GPU_MAX_BLOCK`` users (bigger
            blocks ran 1.5-3x faster on an H200: BENCHMARKS.md). On CPU an explicit value is
            cut to the cache size too.
        device: torch device; default ``cuda`` when available, else ``cpu``.
        item_mask: bool ``[I]``; False = never recommended.

    Returns:
        ``(items int64 [U, k'], scores float32 [U, k'])``, sorted by score descending, ties by
        lower item index; missing candidates are padded with item ``-1`` and score ``-inf``.
    """
    dev = pick_device(device)
    users = _as_matrix("user_vecs", user_vecs, dev)
    items = _as_matrix("item_vecs", item_vecs, dev)
    n_users, n_items = users.shape[0], items.shape[0]
    if users.shape[1] != items.shape[1]:
        raise ValueError(f"user_vecs has dim {users.shape[1]} but item_vecs has dim {items.shape[1]}")
    _check_args(n_users, n_items, k, exclude, item_mask, block_users)
    kk = min(int(k), n_items)
    if kk == 0 or n_users == 0:
        return np.full((n_users, kk), -1, dtype=np.int64), np.full((n_users, kk), -np.inf, dtype=np.float32)
    # every block fills its rows whole; on a GPU the results land in pinned host memory, copied
    # asynchronously while the next block is scored
    pinned = dev.type == "cuda"
    out_items_t = torch.empty((n_users, kk), dtype=torch.int64, pin_memory=pinned)
    out_scores_t = torch.empty((n_users, kk), dtype=torch.float32, pin_memory=pinned)
    out_items, out_scores = out_items_t.numpy(), out_scores_t.numpy()

    # pad the catalogue to a multiple of LEAF with zero vectors whose scores are set to -inf (the
    # threshold selection's leaves); on CPU cut blocks to about BLOCK_FLOATS scores (cache-sized)
    n_cols = -(-n_items // LEAF) * LEAF
    threshold, block = _use_threshold(n_cols, kk), _block_rows(dev, n_cols, block_users)
    banned = None
    if item_mask is not None and not np.asarray(item_mask, dtype=bool).all():
        banned = torch.from_numpy(~np.asarray(item_mask, dtype=bool)).to(dev)
    if exclude is not None:
        exclude = sp.csr_matrix(exclude)
    items_t = torch.zeros(items.shape[1], n_cols, device=dev)
    items_t[:, :n_items] = items.T
    buffers: Dict[int, torch.Tensor] = {}   # one score buffer per thread, reused across blocks
    neg_inf = float("-inf")
    # on a GPU the device-to-host copies run on their own stream, after the block's ranking and
    # beside the next block's multiply; record_stream keeps the copied tensors' memory from being
    # reused by the next block before the copy has read it
    copy_stream = torch.cuda.Stream(dev) if pinned and GPU_COPY_STREAM else None

    def score_block(start: int) -> None:
        stop = min(start + block, n_users)
        buf = buffers.get(threading.get_ident())
        if buf is None:
            buf = buffers[threading.get_ident()] = torch.empty(min(block, n_users), n_cols, device=dev)
        with torch.inference_mode():
            scores = buf[:stop - start]
            torch.mm(users[start:stop], items_t, out=scores)
            if n_cols > n_items:
                scores[:, n_items:] = neg_inf
            if banned is not None:
                scores[:, :n_items].masked_fill_(banned, neg_inf)
            if exclude is not None:
                part = exclude[start:stop]
                rows = np.repeat(np.arange(stop - start), np.diff(part.indptr))
                keep = part.data != 0
                if keep.any():
                    r = torch.from_numpy(rows[keep].astype(np.int64)).to(dev)
                    c = torch.from_numpy(part.indices[keep].astype(np.int64)).to(dev)
                    scores[r, c] = neg_inf
            vals, idx = _threshold_top_k(scores, kk) if threshold else _block_top_k(scores, kk)
            idx = torch.where(torch.isfinite(vals), idx, -1)
            # straight into the result arrays: one device-to-host copy, no temporaries
            if copy_stream is None:
                out_items_t[start:stop].copy_(idx, non_blocking=pinned)
                out_scores_t[start:stop].copy_(vals, non_blocking=pinned)
                return
            copy_stream.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(copy_stream):
                out_items_t[start:stop].copy_(idx, non_blocking=True)
                out_scores_t[start:stop].copy_(vals, non_blocking=True)
            idx.record_stream(copy_stream)
            vals.record_stream(copy_stream)

    starts = range(0, n_users, block)
    workers = min(torch.get_num_threads(), len(starts)) if dev.type == "cpu" else 1
    if workers <= 1:
        for start in starts:
            score_block(start)
    else:
        _run_parallel(score_block, starts, workers)
    if pinned:
        torch.cuda.synchronize(dev)
    n_short = int((out_items[:, -1] < 0).sum())
    if n_short:
        logger.debug("top_k: %d of %d users have fewer than %d eligible items (padded with -1)",
                     n_short, n_users, kk)
    return out_items, out_scores


def matmul_rate(n_users: int, n_items: int, dim: int, device: Optional[str] = None,
                repeats: int = 3) -> float:
    """Dense float32 ``[n_users, dim] x [dim, n_items]`` multiply-adds per second on this machine.

    One warm-up multiply, then the best of ``repeats`` timed ones: the ceiling that ``top_k``'s
    throughput (``U * I * d / seconds``) is compared with.
    """
    if min(n_users, n_items, dim, repeats) < 1:
        raise ValueError("n_users, n_items, dim and repeats must all be >= 1")
    dev = pick_device(device)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n_users, dim, generator=gen).to(dev)
    b = torch.randn(dim, n_items, generator=gen).to(dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    best = float("inf")
    with torch.inference_mode():
        a @ b
        sync()
        for _ in range(int(repeats)):
            t0 = time.perf_counter()
            a @ b
            sync()
            best = min(best, time.perf_counter() - t0)
    return float(n_users) * n_items * dim / max(best, 1e-12)
