"""Known-answer tests of training.metrics: hand-computed values on tiny cases, and a slow
pure-Python reference implementation for random cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from training.metrics import evaluate, format_metrics, topk

LOG2_3 = math.log2(3)   # 1.5849625...
LOG2_5 = math.log2(5)   # 2.3219280...


def csr(rows, n_items, n_users=None):
    """CSR n_users x n_items with a 1 at every (user, item) of ``rows`` = [[items of user 0], ...]."""
    n_users = len(rows) if n_users is None else n_users
    r = [u for u, items in enumerate(rows) for _ in items]
    c = [i for items in rows for i in items]
    return sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(n_users, n_items))


def table_scorer(scores):
    """score_fn that looks the rows up in a fixed [n_users, n_items] table and records its calls."""
    scores = np.asarray(scores, dtype=np.float32)
    calls = []

    def fn(users):
        calls.append(np.array(users))
        return scores[users].copy()

    fn.calls = calls
    return fn


# ---------------------------------------------------------------------------------------------- topk


def test_topk_orders_by_score_and_breaks_ties_by_lower_index():
    scores = np.array([[1, 2, 2, 0, 2],
                       [0, 0, 0, 0, 0]], dtype=np.float32)
    # row 0: score 2 at items 1, 2, 4 (lower index first), then 1 at item 0, then 0 at item 3
    # row 1: all tied -> plain index order
    assert topk(scores, 3).tolist() == [[1, 2, 4], [0, 1, 2]]
    assert topk(scores, 5).tolist() == [[1, 2, 4, 0, 3], [0, 1, 2, 3, 4]]
    assert topk(scores, 2).dtype == np.int64


def test_topk_ties_at_the_cut_take_the_lowest_indices():
    # 200 tied items around one winner: whatever argpartition picks, the cut keeps the lowest indices
    row = np.zeros(200, np.float32)
    row[150] = 1.0
    row[[3, 7]] = -1.0
    assert topk(row[None, :], 5).tolist() == [[150, 0, 1, 2, 4]]
    # -0.0 and 0.0 are the same score
    row2 = np.array([[0.0, -0.0, 0.0, 1.0]], np.float32)
    assert topk(row2, 3).tolist() == [[3, 0, 1]]


def test_topk_exclusion_and_minus_one_fill():
    scores = np.array([[0.4, 0.3, 0.2, 0.1],
                       [0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
    exclude = csr([[0, 2], [3]], 4)
    # row 0: items 0 and 2 excluded -> only 1, 3 allowed -> [1, 3, -1]
    # row 1: item 3 excluded -> [2, 1, 0]
    assert topk(scores, 3, exclude=exclude).tolist() == [[1, 3, -1], [2, 1, 0]]
    # k larger than the catalog: the tail is -1
    assert topk(scores, 6).tolist() == [[0, 1, 2, 3, -1, -1], [3, 2, 1, 0, -1, -1]]


def test_topk_explicit_zero_in_exclude_is_not_an_exclusion():
    scores = np.array([[0.3, 0.2, 0.1]], np.float32)
    exclude = sp.csr_matrix((np.array([0.0, 1.0], np.float32), np.array([0, 1]), np.array([0, 2])),
                            shape=(1, 3))
    assert topk(scores, 3, exclude=exclude).tolist() == [[0, 2, -1]]


def test_topk_minus_inf_and_nan_are_not_candidates():
    scores = np.array([[0.5, -np.inf, np.nan, 0.1]], np.float32)
    assert topk(scores, 4).tolist() == [[0, 3, -1, -1]]


def test_topk_does_not_modify_the_callers_array():
    scores = np.array([[0.4, 0.3, np.nan, 0.1]], dtype=np.float32)
    before = scores.copy()
    topk(scores, 2, exclude=csr([[0, 1]], 4))
    np.testing.assert_array_equal(scores, before)


def ref_ranking(score_row, excluded=()):
    """Slow reference: all candidates (not excluded, finite score) by (-score, index)."""
    cand = [j for j in range(len(score_row))
            if j not in excluded and not math.isnan(score_row[j]) and score_row[j] != -math.inf]
    return sorted(cand, key=lambda j: (-float(score_row[j]), j))


@pytest.mark.parametrize("k", [1, 3, 7, 25, 40])
def test_topk_matches_reference_on_random_ties(k):
    rng = np.random.default_rng(k)
    scores = rng.integers(0, 4, size=(30, 25)).astype(np.float32)   # many ties
    exclude = sp.random(30, 25, density=0.3, format="csr", random_state=k)
    got = topk(scores, k, exclude=exclude)
    assert got.shape == (30, k)
    for u in range(30):
        ranking = ref_ranking(scores[u], set(exclude[u].indices))[:k]
        assert got[u].tolist() == ranking + [-1] * (k - len(ranking))


def test_topk_rejects_bad_k():
    with pytest.raises(ValueError):
        topk(np.zeros((1, 3), np.float32), 0)


# ------------------------------------------------------------------------------ known-answer metrics

# User 0: relevant {1, 3}; scores rank the items [3, 0, 1, 2, 4, 5]  -> rel = [1, 0, 1, 0, 0, 0]
# User 1: relevant {1, 3}; scores rank the items [0, 3, 2, 1, 4, 5]  -> rel = [0, 1, 0, 1, 0, 0]
SCORES = np.array([[0.8, 0.7, 0.3, 0.9, 0.2, 0.1],
                   [0.9, 0.3, 0.6, 0.8, 0.2, 0.1]], dtype=np.float32)
TRUTH = csr([[1, 3], [1, 3]], 6)
IDCG2 = 1 + 1 / LOG2_3                     # two hits at the top: 1/log2(2) + 1/log2(3)

U0 = {  # ranking [3, 0, 1, ...], hits at positions 1 and 3
    "precision@1": 1.0, "recall@1": 0.5, "ndcg@1": 1.0, "map@1": 1.0, "hit@1": 1.0,
    "precision@3": 2 / 3,                  # 2 hits / 3
    "recall@3": 1.0,                       # 2 hits / 2 relevant
    "ndcg@3": (1 + 1 / math.log2(4)) / IDCG2,   # (1 + 0.5) / 1.6309 = 0.9197
    "map@3": (1 / 2) * (1 / 1 + 2 / 3),    # P@1 * 1 + P@3 * 1, over min(2, 3) = 5/6
    "hit@3": 1.0,
    "precision@5": 2 / 5, "recall@5": 1.0, "ndcg@5": 1.5 / IDCG2, "map@5": 5 / 6, "hit@5": 1.0,
    "mrr": 1.0,                            # item 3 ranks first
}
U1 = {  # ranking [0, 3, 2, 1, 4, 5], hits at positions 2 and 4
    "precision@1": 0.0, "recall@1": 0.0, "ndcg@1": 0.0, "map@1": 0.0, "hit@1": 0.0,
    "precision@3": 1 / 3,                  # 1 hit / 3
    "recall@3": 1 / 2,
    "ndcg@3": (1 / LOG2_3) / IDCG2,        # 0.6309 / 1.6309 = 0.3869
    "map@3": (1 / 2) * (1 / 2),            # P@2 * 1 over min(2, 3)
    "hit@3": 1.0,
    "precision@5": 2 / 5, "recall@5": 1.0,
    "ndcg@5": (1 / LOG2_3 + 1 / LOG2_5) / IDCG2,   # hits at 2 and 4: (0.6309 + 0.4307) / 1.6309
    "map@5": (1 / 2) * (1 / 2 + 2 / 4),    # (P@2 + P@4) / 2 = 1/2
    "hit@5": 1.0,
    "mrr": 1 / 2,                          # item 3 ranks second
}


def test_known_answer_single_user():
    m = evaluate(table_scorer(SCORES), np.array([0]), TRUTH, ks=(1, 3, 5))
    for key, want in U0.items():
        assert m[key] == pytest.approx(want), key
    assert m["ndcg@3"] == pytest.approx(0.919720, abs=1e-6)
    assert m["coverage@1"] == pytest.approx(1 / 6)      # {3}
    assert m["coverage@3"] == pytest.approx(3 / 6)      # {3, 0, 1}
    assert m["coverage@5"] == pytest.approx(5 / 6)      # {3, 0, 1, 2, 4}
    assert m["n_users"] == 1 and isinstance(m["n_users"], int)


def test_known_answer_second_user():
    m = evaluate(table_scorer(SCORES), np.array([1]), TRUTH, ks=(1, 3, 5))
    for key, want in U1.items():
        assert m[key] == pytest.approx(want), key
    assert m["ndcg@3"] == pytest.approx(0.386853, abs=1e-6)
    assert m["ndcg@5"] == pytest.approx(0.650921, abs=1e-6)


def test_known_answer_mean_over_users_and_coverage():
    # user 2 has no relevant item: skipped (not counted, never scored)
    scores = np.vstack([SCORES, np.zeros((1, 6), np.float32)])
    truth = csr([[1, 3], [1, 3], []], 6)
    fn = table_scorer(scores)
    m = evaluate(fn, np.array([0, 1, 2]), truth, ks=(1, 3, 5))
    assert m["n_users"] == 2
    for key in U0:
        assert m[key] == pytest.approx((U0[key] + U1[key]) / 2), key
    assert m["mrr"] == pytest.approx(0.75)              # (1 + 1/2) / 2
    assert m["coverage@1"] == pytest.approx(2 / 6)      # {3} | {0}
    assert m["coverage@3"] == pytest.approx(4 / 6)      # {3, 0, 1} | {0, 3, 2}
    assert m["coverage@5"] == pytest.approx(5 / 6)      # {3, 0, 1, 2, 4} | {0, 3, 2, 1, 4}
    assert np.concatenate(fn.calls).tolist() == [0, 1]


def test_result_keys():
    m = evaluate(table_scorer(SCORES), np.array([0, 1]), TRUTH, ks=(10, 20))
    want = [f"{name}@{k}" for k in (10, 20)
            for name in ("precision", "recall", "ndcg", "map", "hit", "coverage")] + ["mrr", "n_users"]
    assert sorted(m) == sorted(want)


def test_exclusion_removes_candidates_and_relevance():
    # user 0: item 3 excluded -> relevant {1}; ranking [0, 1, 2, 4, 5] -> hit at position 2
    # user 1: relevant {1} only, and item 1 excluded -> nothing relevant left -> not counted
    truth = csr([[1, 3], [1]], 6)
    exclude = csr([[3], [1]], 6)
    fn = table_scorer(SCORES)
    m = evaluate(fn, np.array([0, 1]), truth, ks=(1, 3), exclude=exclude, return_topk=True)
    assert m["n_users"] == 1
    assert m["topk_users"].tolist() == [0]
    assert m["topk"].tolist() == [[0, 1, 2]]           # item 3 is not a candidate
    assert m["precision@1"] == 0.0 and m["hit@1"] == 0.0
    assert m["precision@3"] == pytest.approx(1 / 3)    # 1 hit / 3
    assert m["recall@3"] == pytest.approx(1.0)         # 1 hit / 1 relevant (item 3 no longer counts)
    assert m["ndcg@3"] == pytest.approx(1 / LOG2_3)    # (1/log2(3)) / (IDCG of 1 hit = 1) = 0.6309
    assert m["map@3"] == pytest.approx(0.5)            # P@2 * 1 / min(1, 3)
    assert m["mrr"] == pytest.approx(0.5)
    assert m["coverage@3"] == pytest.approx(3 / 6)
    assert np.concatenate(fn.calls).tolist() == [0]    # the uncounted user is not scored


def test_too_few_candidates_fill_and_precision_denominator():
    # 4 items, items 0 and 1 excluded -> only 2 candidates for K = 3; relevant {2}
    scores = np.array([[0.9, 0.8, 0.1, 0.5]], np.float32)
    m = evaluate(table_scorer(scores), np.array([0]), csr([[2]], 4), ks=(3,), exclude=csr([[0, 1]], 4),
                 return_topk=True)
    assert m["topk"].tolist() == [[3, 2, -1]]
    assert m["precision@3"] == pytest.approx(1 / 3)    # still / K
    assert m["recall@3"] == 1.0
    assert m["ndcg@3"] == pytest.approx(1 / LOG2_3)    # hit at position 2, IDCG = 1
    assert m["map@3"] == pytest.approx(0.5)
    assert m["mrr"] == pytest.approx(0.5)
    assert m["coverage@3"] == pytest.approx(2 / 4)     # the -1 is not an item


def test_mrr_uses_the_full_ranking_beyond_k():
    # relevant {5}, scores 6..1 -> item 5 is ranked 6th; K = 3 misses it
    scores = np.array([[6, 5, 4, 3, 2, 1]], np.float32)
    truth = csr([[5]], 6)
    m = evaluate(table_scorer(scores), np.array([0]), truth, ks=(3,))
    assert m["hit@3"] == 0.0 and m["ndcg@3"] == 0.0 and m["map@3"] == 0.0
    assert m["mrr"] == pytest.approx(1 / 6)
    # excluding item 0 lifts it to rank 5
    m = evaluate(table_scorer(scores), np.array([0]), truth, ks=(3,), exclude=csr([[0]], 6))
    assert m["mrr"] == pytest.approx(1 / 5)


def test_mrr_tie_rule():
    flat = np.zeros((1, 6), np.float32)
    # all tied: rank of item 4 = 1 + #{j < 4} = 5
    assert evaluate(table_scorer(flat), np.array([0]), csr([[4]], 6), ks=(1,))["mrr"] == pytest.approx(1 / 5)
    # relevant {2, 4}, all tied: best-ranked is item 2 -> rank 3
    assert evaluate(table_scorer(flat), np.array([0]), csr([[2, 4]], 6), ks=(1,))["mrr"] == pytest.approx(1 / 3)
    # item 4 above a tie block: scores [1, 1, 0, 1, 1, 1] relevant {4}
    # -> items 0, 1, 3 tie with it at lower index: rank 4 (items 5 ties at a higher index)
    s = np.array([[1, 1, 0, 1, 1, 1]], np.float32)
    assert evaluate(table_scorer(s), np.array([0]), csr([[4]], 6), ks=(1,))["mrr"] == pytest.approx(1 / 4)
    # relevant item scored -inf is never ranked: reciprocal rank 0
    s = np.array([[1, 1, -np.inf]], np.float32)
    m = evaluate(table_scorer(s), np.array([0]), csr([[2]], 3), ks=(1,))
    assert m["n_users"] == 1 and m["mrr"] == 0.0 and m["recall@1"] == 0.0


def test_coverage_union_over_users():
    scores = np.array([[3, 2, 1, 0, 0],
                       [0, 3, 2, 1, 0],
                       [3, 2, 0, 0, 1]], np.float32)
    truth = csr([[0], [1], [4]], 5)
    m = evaluate(table_scorer(scores), np.array([0, 1, 2]), truth, ks=(1, 2))
    assert m["coverage@1"] == pytest.approx(2 / 5)     # {0} | {1} | {0}
    assert m["coverage@2"] == pytest.approx(3 / 5)     # {0, 1} | {1, 2} | {0, 1}


def test_segments():
    scores = np.vstack([SCORES, SCORES[::-1]]).astype(np.float32)   # users 2, 3 = users 1, 0
    truth = csr([[1, 3]] * 4, 6)
    new = np.array([True, False, False, False])
    segments = {"new": new, "returning": ~new, "empty": np.zeros(4, bool)}
    fn = table_scorer(scores)
    m = evaluate(fn, np.arange(4), truth, ks=(3,), segments=segments)
    assert m["n_users"] == 4
    assert m["new/n_users"] == 1 and m["returning/n_users"] == 3 and m["empty/n_users"] == 0
    # "new" = user 0 alone
    assert m["new/ndcg@3"] == pytest.approx(U0["ndcg@3"])
    assert m["new/mrr"] == pytest.approx(1.0)
    assert m["new/coverage@3"] == pytest.approx(3 / 6)
    # "returning" = users 1, 2 (= user 1's scores), 3 (= user 0's scores)
    assert m["returning/map@3"] == pytest.approx((2 * U1["map@3"] + U0["map@3"]) / 3)
    assert m["returning/mrr"] == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert m["returning/coverage@3"] == pytest.approx(4 / 6)
    # the same numbers as evaluating the segment's users alone
    alone = evaluate(table_scorer(scores), np.array([1, 2, 3]), truth, ks=(3,))
    for key, val in alone.items():
        assert m[f"returning/{key}"] == pytest.approx(val), key
    for key in ("precision@3", "recall@3", "ndcg@3", "map@3", "hit@3", "coverage@3", "mrr"):
        assert math.isnan(m[f"empty/{key}"])
        assert f"new/{key}" in m


def test_no_counted_users():
    m = evaluate(table_scorer(SCORES), np.array([0]), csr([[], []], 6), ks=(5,), return_topk=True)
    assert m["n_users"] == 0
    assert math.isnan(m["ndcg@5"]) and math.isnan(m["mrr"]) and math.isnan(m["coverage@5"])
    assert m["topk"].shape == (0, 5) and m["topk_users"].shape == (0,)


def test_perfect_scorer():
    rng = np.random.default_rng(0)
    n_users, n_items, k = 25, 40, 10
    rows = [sorted(rng.choice(n_items, size=rng.integers(1, k + 1), replace=False).tolist())
            for _ in range(n_users)]
    truth = csr(rows, n_items)
    perfect = truth.toarray() + rng.random((n_users, n_items)).astype(np.float32) * 0.5
    m = evaluate(table_scorer(perfect), np.arange(n_users), truth, ks=(k,))
    for key in ("ndcg", "recall", "hit", "map"):
        assert m[f"{key}@{k}"] == pytest.approx(1.0), key
    assert m["mrr"] == pytest.approx(1.0)
    assert m[f"precision@{k}"] == pytest.approx(np.mean([len(r) / k for r in rows]))


def test_return_topk_matches_topk():
    rng = np.random.default_rng(3)
    scores = rng.random((12, 9)).astype(np.float32)
    truth = sp.random(12, 9, density=0.25, format="csr", random_state=3)
    exclude = sp.random(12, 9, density=0.2, format="csr", random_state=4)
    users = np.array([11, 2, 5, 0, 7, 3])
    m = evaluate(table_scorer(scores), users, truth, ks=(2, 4), exclude=exclude, return_topk=True, block=4)
    assert m["topk"].dtype == np.int64 and m["topk"].shape == (m["n_users"], 4)
    kept = [u for u in users if set(truth[u].indices) - set(exclude[u].indices)]
    assert m["topk_users"].tolist() == kept
    np.testing.assert_array_equal(m["topk"], topk(scores[kept], 4, exclude=exclude[kept]))


# --------------------------------------------------------------------------- reference implementation


def reference_evaluate(scores, users, truth, ks, exclude=None, segments=None):
    """Slow per-user loop straight from the definitions."""
    n_items = scores.shape[1]
    per_user, tops = [], []
    for u in users:
        excluded = set(exclude[u].indices[exclude[u].data != 0]) if exclude is not None else set()
        rel = set(truth[u].indices[truth[u].data != 0]) - excluded
        if not rel:
            continue
        ranking = ref_ranking(scores[u], excluded)
        row = {"user": u}
        for k in ks:
            top = ranking[:k]
            hits = [1 if j in rel else 0 for j in top]
            n_hits = sum(hits)
            row[f"precision@{k}"] = n_hits / k
            row[f"recall@{k}"] = n_hits / len(rel)
            dcg = sum(h / math.log2(i + 2) for i, h in enumerate(hits))
            idcg = sum(1 / math.log2(i + 2) for i in range(min(len(rel), k)))
            row[f"ndcg@{k}"] = dcg / idcg
            ap = sum(sum(hits[:i + 1]) / (i + 1) * hits[i] for i in range(len(hits)))
            row[f"map@{k}"] = ap / min(len(rel), k)
            row[f"hit@{k}"] = 1.0 if n_hits else 0.0
            row[f"top@{k}"] = set(top)
        ranks = [pos + 1 for pos, j in enumerate(ranking) if j in rel]
        row["mrr"] = 1 / ranks[0] if ranks else 0.0
        per_user.append(row)

    def summary(rows):
        out = {}
        for k in ks:
            for name in ("precision", "recall", "ndcg", "map", "hit"):
                out[f"{name}@{k}"] = float(np.mean([r[f"{name}@{k}"] for r in rows])) if rows else math.nan
            items = set().union(*[r[f"top@{k}"] for r in rows]) if rows else set()
            out[f"coverage@{k}"] = len(items) / n_items if rows else math.nan
        out["mrr"] = float(np.mean([r["mrr"] for r in rows])) if rows else math.nan
        out["n_users"] = len(rows)
        return out

    result = summary(per_user)
    for name, mask in (segments or {}).items():
        for key, val in summary([r for r in per_user if mask[r["user"]]]).items():
            result[f"{name}/{key}"] = val
    return result


def random_case(seed, kind):
    rng = np.random.default_rng(seed)
    n_users, n_items = 60, 35
    if kind == "continuous":
        scores = rng.normal(size=(n_users, n_items)).astype(np.float32)
    else:
        scores = rng.integers(0, 5, size=(n_users, n_items)).astype(np.float32)   # heavy ties
    if kind == "nonfinite":
        scores[rng.random(scores.shape) < 0.05] = -np.inf
        scores[rng.random(scores.shape) < 0.05] = np.nan
    truth = sp.random(n_users, n_items, density=0.08, format="csr", random_state=seed)
    exclude = sp.random(n_users, n_items, density=0.15, format="csr", random_state=seed + 100)
    users = rng.permutation(n_users)[:50]
    new = rng.random(n_users) < 0.3
    segments = {"new": new, "returning": ~new}
    return scores, users, truth, exclude, segments


@pytest.mark.parametrize("kind", ["continuous", "ties", "nonfinite"])
@pytest.mark.parametrize("use_exclude", [False, True])
def test_matches_reference_on_random_case(kind, use_exclude):
    scores, users, truth, exclude, segments = random_case(7, kind)
    exclude = exclude if use_exclude else None
    ks = (1, 5, 10, 50)        # 50 > n_items: -1 fill
    got = evaluate(table_scorer(scores), users, truth, ks=ks, exclude=exclude, segments=segments, block=16)
    want = reference_evaluate(scores, users, truth, ks, exclude=exclude, segments=segments)
    assert got["n_users"] > 20
    assert sorted(got) == sorted(want)
    for key, val in want.items():
        assert got[key] == pytest.approx(val, nan_ok=True), key


def test_block_size_does_not_change_results():
    scores, users, truth, exclude, segments = random_case(11, "ties")
    runs = [evaluate(table_scorer(scores), users, truth, ks=(3, 10), exclude=exclude, segments=segments,
                     block=b, return_topk=True) for b in (1, 7, 1000)]
    for other in runs[1:]:
        assert sorted(other) == sorted(runs[0])
        for key, val in runs[0].items():
            if isinstance(val, np.ndarray):
                np.testing.assert_array_equal(other[key], val)
            else:
                assert other[key] == val, key


def test_score_fn_is_called_on_blocks():
    scores, users, truth, _, _ = random_case(5, "continuous")
    fn = table_scorer(scores)
    m = evaluate(fn, users, truth, ks=(5,), block=8)
    sizes = [len(c) for c in fn.calls]
    assert max(sizes) <= 8 and sum(sizes) == m["n_users"]
    assert all(c.dtype == np.int64 for c in fn.calls)


# --------------------------------------------------------------------------------- errors and logging


def test_bad_inputs_raise():
    fn = table_scorer(SCORES)
    with pytest.raises(ValueError):
        evaluate(lambda u: np.zeros((len(u), 5), np.float32), np.array([0]), TRUTH)   # wrong n_items
    with pytest.raises(ValueError):
        evaluate(fn, np.array([0]), TRUTH, segments={"new": np.array([True])})   # wrong length
    with pytest.raises(ValueError):
        evaluate(fn, np.array([0]), TRUTH, segments={"new": np.array([0, 1])})   # not boolean
    with pytest.raises(ValueError):
        evaluate(fn, np.array([2]), TRUTH)                                        # user out of range
    with pytest.raises(ValueError):
        evaluate(fn, np.array([0]), TRUTH, exclude=csr([[0]], 5))                 # shape mismatch
    with pytest.raises(ValueError):
        evaluate(fn, np.array([0]), TRUTH, ks=(0,))


def test_format_metrics():
    m = {"ndcg@10": 0.123449, "recall@20": np.float64(0.23456), "n_users": 12, "topk": np.zeros((2, 2)),
         "new/mrr": math.nan}
    assert format_metrics(m) == "ndcg@10=0.1234 recall@20=0.2346 n_users=12 new/mrr=nan"
    assert format_metrics(m, keys=["recall@20", "topk", "missing", "ndcg@10"]) == "recall@20=0.2346 ndcg@10=0.1234"
    full = evaluate(table_scorer(SCORES), np.array([0, 1]), TRUTH, ks=(3,), return_topk=True)
    line = format_metrics(full)
    assert "topk" not in line and line.startswith("precision@3=0.5000 ") and line.endswith("n_users=2")
