"""training.scoring: known answers on tiny vectors, blocked == unblocked, same answer as the
evaluator's top-K, determinism, and the FAISS selection."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from training import scoring
from training.metrics import topk as metrics_topk
from training.index import make_index, top_k_faiss
from training.scoring import matmul_rate, top_k

NEG = -np.inf

# 1-d vectors make the dot products easy to read: score = user * item.
ITEMS_1D = np.array([[1.0], [3.0], [2.0], [3.0], [0.0]], dtype=np.float32)   # item 1 and 3 tie


def csr(rows, n_items):
    r = [u for u, items in enumerate(rows) for _ in items]
    c = [i for items in rows for i in items]
    return sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(rows), n_items))


def test_known_answer_with_ties_by_lower_index():
    users = np.array([[1.0], [-1.0]], dtype=np.float32)
    items, scores = top_k(users, ITEMS_1D, 3)
    # user 0: 3 (items 1 and 3, lower index first), then 2 (item 2)
    # user 1: -0 (item 4), -1 (item 0), -2 (item 2)
    assert items.tolist() == [[1, 3, 2], [4, 0, 2]]
    assert scores.tolist() == [[3.0, 3.0, 2.0], [0.0, -1.0, -2.0]]
    assert items.dtype == np.int64 and scores.dtype == np.float32


def test_boundary_tie_takes_the_lowest_indices():
    # 6 items all scoring 1: whatever torch.topk picks, the answer is items 0, 1, 2
    items, scores = top_k(np.ones((1, 2), np.float32), np.full((6, 2), 0.5, np.float32), 3)
    assert items.tolist() == [[0, 1, 2]]
    assert scores.tolist() == [[1.0, 1.0, 1.0]]


def test_negative_and_positive_zero_tie():
    # item 0 scores -0.0, item 1 scores +0.0: equal scores, so the lower index comes first
    items, _ = top_k(np.array([[1.0, 1.0]], np.float32),
                     np.array([[-0.0, -0.0], [0.0, 0.0], [-1.0, 0.0]], np.float32), 1)
    assert items.tolist() == [[0]]


def test_exclude_and_item_mask():
    users = np.array([[1.0], [1.0]], dtype=np.float32)
    exclude = csr([[1], [3, 2]], 5)                 # user 0 bought item 1, user 1 items 3 and 2
    mask = np.array([True, True, True, False, True])  # item 3 unavailable for everyone
    items, scores = top_k(users, ITEMS_1D, 3, exclude=exclude, item_mask=mask)
    assert items.tolist() == [[2, 0, 4], [1, 0, 4]]
    assert scores.tolist() == [[2.0, 1.0, 0.0], [3.0, 1.0, 0.0]]


def test_explicit_zero_in_exclude_does_not_exclude():
    exclude = sp.csr_matrix((np.array([0.0], np.float32), (np.array([0]), np.array([1]))), shape=(1, 5))
    items, _ = top_k(np.ones((1, 1), np.float32), ITEMS_1D, 1, exclude=exclude)
    assert items.tolist() == [[1]]


def test_k_larger_than_catalog_and_padding():
    users = np.array([[1.0], [1.0]], dtype=np.float32)
    exclude = csr([[], [0, 1, 2]], 5)
    mask = np.array([True, True, True, True, False])
    items, scores = top_k(users, ITEMS_1D, 10, exclude=exclude, item_mask=mask)
    # k' = min(10, 5) = 5 columns; user 0 has 4 eligible items, user 1 only item 3
    assert items.tolist() == [[1, 3, 2, 0, -1], [3, -1, -1, -1, -1]]
    assert scores.tolist() == [[3.0, 3.0, 2.0, 1.0, NEG], [3.0, NEG, NEG, NEG, NEG]]


def test_torch_inputs_and_empty_users():
    items, scores = top_k(torch.ones(2, 1), torch.from_numpy(ITEMS_1D), 2)
    assert items.tolist() == [[1, 3], [1, 3]]
    items, scores = top_k(np.zeros((0, 1), np.float32), ITEMS_1D, 2)
    assert items.shape == (0, 2) and scores.shape == (0, 2)


def test_bad_inputs_fail_with_clear_messages():
    u = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="dim 3 .* dim 2"):
        top_k(u, np.ones((4, 2), np.float32), 2)
    with pytest.raises(ValueError, match="k must be >= 1"):
        top_k(u, np.ones((4, 3), np.float32), 0)
    with pytest.raises(ValueError, match=r"exclude has shape \(1, 4\)"):
        top_k(u, np.ones((4, 3), np.float32), 2, exclude=csr([[0]], 4))
    with pytest.raises(ValueError, match="item_mask has shape"):
        top_k(u, np.ones((4, 3), np.float32), 2, item_mask=np.ones(3, bool))
    with pytest.raises(ValueError, match="NaN or inf"):
        top_k(np.array([[np.nan, 0, 0]], np.float32), np.ones((4, 3), np.float32), 2)


def random_case(seed, n_users=37, n_items=53, dim=8):
    rng = np.random.default_rng(seed)
    # rounded vectors give many exactly equal scores, which exercises the tie rule
    users = rng.integers(-2, 3, size=(n_users, dim)).astype(np.float32)
    items = rng.integers(-2, 3, size=(n_items, dim)).astype(np.float32)
    exclude = sp.random(n_users, n_items, density=0.2, format="csr", random_state=seed, dtype=np.float32)
    exclude.data[:] = 1.0
    mask = rng.random(n_items) > 0.1
    return users, items, exclude, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blocked_equals_unblocked_and_matches_the_evaluator(seed):
    users, items, exclude, mask = random_case(seed)
    full_items, full_scores = top_k(users, items, 10, exclude=exclude, item_mask=mask, block_users=10_000)
    for block in (1, 4, 16):
        b_items, b_scores = top_k(users, items, 10, exclude=exclude, item_mask=mask, block_users=block)
        np.testing.assert_array_equal(b_items, full_items)
        np.testing.assert_array_equal(b_scores, full_scores)
    # the reference: dense scores in numpy through the evaluator's top-K (same tie rule)
    dense = users.astype(np.float64) @ items.T.astype(np.float64)
    dense[:, ~mask] = -np.inf
    np.testing.assert_array_equal(full_items, metrics_topk(dense, 10, exclude=exclude))
    expected_scores = np.take_along_axis(dense, np.maximum(full_items, 0), axis=1)
    expected_scores[full_items < 0] = -np.inf
    np.testing.assert_allclose(full_scores, expected_scores, rtol=1e-6)


def test_deterministic_across_calls():
    users, items, exclude, mask = random_case(5)
    first = top_k(users, items, 7, exclude=exclude, item_mask=mask, block_users=8)
    for _ in range(3):
        again = top_k(users, items, 7, exclude=exclude, item_mask=mask, block_users=8)
        np.testing.assert_array_equal(again[0], first[0])
        np.testing.assert_array_equal(again[1], first[1])


def test_sortable_key_orders_like_floats_then_lower_index():
    values = torch.tensor([[-np.inf, -2.5, -1.0, -0.0, 0.0, 1e-30, 1.0, 7.0, 7.0, np.inf]], dtype=torch.float32)
    keys = scoring._sortable_key(values)[0]
    order = torch.argsort(keys, descending=True).tolist()
    assert order == [9, 7, 8, 6, 5, 3, 4, 2, 1, 0]   # -0.0 == 0.0: index 3 before 4


def test_matmul_rate_is_positive():
    rate = matmul_rate(64, 128, 16, device="cpu", repeats=2)
    assert rate > 1e6   # any machine does more than a million multiply-adds per second
    with pytest.raises(ValueError):
        matmul_rate(0, 1, 1)


# ------------------------------------------------------------------------------------------ faiss

class FakeIndexFlatIP:
    """Exact inner-product index in numpy with FAISS's interface; reports ties in REVERSE index
    order, so the test sees that top_k_faiss re-sorts them."""

    def __init__(self, d):
        self.d, self.vecs = d, np.zeros((0, d), np.float32)

    def add(self, x):
        self.vecs = np.vstack([self.vecs, x])

    def search(self, q, n):
        s = q @ self.vecs.T
        order = np.lexsort((-np.arange(s.shape[1])[None, :].repeat(len(q), 0), -s), axis=1)[:, :n]
        return np.take_along_axis(s, order, 1), order


def test_make_index_selects_the_exact_scorer_and_rejects_unknown_kinds():
    assert make_index("exact") is top_k
    with pytest.raises(ValueError, match="unknown scoring index 'annoy'.*'exact', 'faiss'"):
        make_index("annoy")


def test_make_index_faiss_missing_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)   # makes `import faiss` raise ImportError
    with pytest.raises(ImportError, match="pip install faiss-cpu to use scoring.index: faiss"):
        make_index("faiss")


def test_faiss_path_gives_the_exact_answer(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", types.SimpleNamespace(IndexFlatIP=FakeIndexFlatIP))
    assert make_index("faiss") is top_k_faiss
    rng = np.random.default_rng(3)
    users = rng.normal(size=(9, 4)).astype(np.float32)
    items = rng.normal(size=(30, 4)).astype(np.float32)
    items[7] = items[2]                                    # a tie the fake reports in reverse
    exclude = csr([[0, 1, 2], [], [5], [29, 28], [], [], [3], [], [10, 11, 12, 13]], 30)
    mask = np.ones(30, bool)
    mask[[4, 6]] = False
    for k in (1, 5, 30):
        exact = top_k(users, items, k, exclude=exclude, item_mask=mask)
        approx = top_k_faiss(users, items, k, exclude=exclude, item_mask=mask)
        np.testing.assert_array_equal(approx[0], exact[0])
        np.testing.assert_allclose(approx[1], exact[1], rtol=1e-5)


# ------------------------------------------------------------------- threshold selection (CPU)

def test_threshold_selection_equals_plain_topk_with_ties_and_heavy_rows():
    # scores on a coarse grid: many equal scores around every row's k-th place
    rng = np.random.default_rng(7)
    n = 1024
    scores = torch.from_numpy(np.round(rng.normal(size=(40, n)), 1).astype(np.float32))
    scores[3] = 1.0                          # one value everywhere: every leaf passes, ranked whole
    scores[4, :] = float("-inf")             # nothing eligible
    scores[5, :n - 5] = float("-inf")        # fewer eligible items than k
    scores[6, ::7] = float("-inf")           # some excluded
    k = 10
    assert scoring._use_threshold(n, k)
    got_vals, got_cols = scoring._threshold_top_k(scores, k)
    want_vals, want_cols = scoring._block_top_k(scores, k)
    np.testing.assert_array_equal(got_vals.numpy(), want_vals.numpy())
    finite = np.isfinite(want_vals.numpy())   # columns of -inf padding are unspecified
    np.testing.assert_array_equal(got_cols.numpy()[finite], want_cols.numpy()[finite])
    # and the tie rule itself: equal scores in column order
    for row in range(40):
        v, c = want_vals[row].numpy(), want_cols[row].numpy()
        same = (v[1:] == v[:-1]) & np.isfinite(v[1:])
        assert (c[1:][same] > c[:-1][same]).all()


@pytest.mark.parametrize("groups_per_k", [2, 4, 8])
def test_threshold_selection_on_embedding_scores(groups_per_k, monkeypatch):
    # dot products with a popularity direction (the real case): a few leaves hold most of the best
    rng = np.random.default_rng(11)
    users = rng.normal(size=(64, 16)).astype(np.float32)
    items = rng.normal(size=(8192, 16)).astype(np.float32)
    items[:, 0] += np.linspace(3, 0, 8192, dtype=np.float32)
    scores = torch.from_numpy(users @ items.T)
    k = 40
    monkeypatch.setattr(scoring, "GROUPS_PER_K", groups_per_k)
    assert scoring._use_threshold(8192, k)
    got_vals, got_cols = scoring._threshold_top_k(scores, k)
    want_vals, want_cols = scoring._block_top_k(scores, k)
    np.testing.assert_array_equal(got_vals.numpy(), want_vals.numpy())
    np.testing.assert_array_equal(got_cols.numpy(), want_cols.numpy())


@pytest.mark.parametrize("n_items", [2048, 2001])   # 2001: catalogue padded to a multiple of LEAF
def test_large_catalog_matches_the_evaluator(n_items):
    # big enough for the threshold path and for several blocks on several threads
    rng = np.random.default_rng(n_items)
    n_users, dim, k = 300, 8, 12
    users = rng.integers(-3, 4, size=(n_users, dim)).astype(np.float32)   # integer scores: many ties
    items = rng.integers(-3, 4, size=(n_items, dim)).astype(np.float32)
    exclude = sp.random(n_users, n_items, density=0.05, format="csr", random_state=1, dtype=np.float32)
    exclude.data[:] = 1.0
    exclude = exclude.tolil()
    exclude[0, :] = 1.0                  # user 0 may have nothing
    exclude[1, : n_items - 3] = 1.0      # user 1 has at most 3 items
    exclude = exclude.tocsr()
    mask = rng.random(n_items) > 0.05
    old_block = scoring.BLOCK_FLOATS
    try:
        scoring.BLOCK_FLOATS = 64 * 2048  # 64-user blocks: five blocks
        got_items, got_scores = top_k(users, items, k, exclude=exclude, item_mask=mask)
    finally:
        scoring.BLOCK_FLOATS = old_block
    dense = users.astype(np.float64) @ items.T.astype(np.float64)
    dense[:, ~mask] = -np.inf
    np.testing.assert_array_equal(got_items, metrics_topk(dense, k, exclude=exclude))
    assert (got_items[0] == -1).all() and (got_items[1, 3:] == -1).all()
    want = np.take_along_axis(dense, np.maximum(got_items, 0), axis=1)
    want[got_items < 0] = -np.inf
    np.testing.assert_array_equal(got_scores, want.astype(np.float32))
    # the same lists from one plain block per call (block_users=1 bypasses nothing but the size)
    one = top_k(users[:20], items, k, exclude=exclude[:20], item_mask=mask, block_users=1)
    np.testing.assert_array_equal(one[0], got_items[:20])


def test_top_k_leaves_the_torch_thread_count_alone():
    # the worker threads run torch single-threaded; neither this thread nor a thread started
    # later (torch initialises a new thread from the process-wide setting) may inherit that
    import threading

    original = torch.get_num_threads()
    torch.set_num_threads(2)             # two workers even on a one-core runner
    try:
        rng = np.random.default_rng(0)
        top_k(rng.normal(size=(500, 4)).astype(np.float32), rng.normal(size=(1024, 4)).astype(np.float32),
              5, block_users=64)
        seen = []
        later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        later.start()
        later.join()
        assert torch.get_num_threads() == 2 and seen == [2]
    finally:
        torch.set_num_threads(original)


def test_block_rows_cpu_is_cache_sized_and_explicit_gpu_value_is_kept():
    import torch
    from training.scoring import BLOCK_FLOATS, _block_rows
    cpu = torch.device("cpu")
    assert _block_rows(cpu, 1024, None) == min(4096, BLOCK_FLOATS // 1024)
    assert _block_rows(cpu, 8, None) == 4096                   # tiny catalogue: the default cap
    assert _block_rows(cpu, 8, 100) == 100
    assert _block_rows(cpu, BLOCK_FLOATS * 2, None) == 1       # never zero rows
    assert _block_rows(torch.device("cuda"), 50_000, 16_384) == 16_384
