"""training.rerank: known answers for blend, mmr, category_cap and the list metrics."""
from __future__ import annotations

import math

import numpy as np
import pytest

from training.rerank import (blend, category_cap, category_diversity, coverage, intra_list_diversity,
                             mmr)


def cands(items, scores=None):
    """A candidate list; default scores make the given order the source's ranking."""
    items = np.asarray(items, dtype=np.int64)
    if scores is None:
        scores = np.arange(len(items), 0, -1)
    return items, np.asarray(scores, dtype=np.float32)


# ------------------------------------------------------------------------------------------ blend

def test_blend_interleaves_by_quota_as_documented():
    sources = {"personal": cands([10, 11, 12, 13, 14, 15, 16]),
               "buy_again": cands([20, 21, 22, 23]),
               "trending": cands([30, 31])}
    items, scores, names = blend(sources, {"personal": 0.6, "buy_again": 0.3, "trending": 0.1}, 10)
    # quotas 6 / 3 / 1; merged ranks: P (j+.5)/.6, B (j+.5)/.3, T .5/.1 (ties by priority: B before T)
    assert names.tolist() == ["personal", "buy_again", "personal", "personal", "buy_again", "trending",
                              "personal", "personal", "buy_again", "personal"]
    assert items.tolist() == [10, 20, 11, 12, 21, 30, 13, 14, 22, 15]
    assert np.allclose(scores, np.arange(10, 0, -1) / 10) and scores.dtype == np.float32
    assert items.dtype == np.int64


def test_blend_ranks_each_source_by_its_own_score_and_drops_padding():
    sources = {"personal": cands([5, 6, 7, -1], [0.1, 0.9, 0.5, -np.inf]),   # 6, 7, 5; -1 is padding
               "popular": cands([8, 9], [3.0, 3.0])}                          # tie: lower id first
    items, _, names = blend(sources, {"personal": 1.0, "popular": 1.0}, 4)
    # quotas 2 / 2; merged ranks P .25 .75, Pop .25 .75 -> P, Pop, P, Pop
    assert items.tolist() == [6, 8, 7, 9]
    assert names.tolist() == ["personal", "popular", "personal", "popular"]


def test_blend_dedup_keeps_the_higher_priority_source():
    # item 1 is in both; buy_again comes first in `weights`, so it keeps item 1 and personal skips it
    sources = {"personal": cands([1, 2, 3]), "buy_again": cands([1, 4])}
    items, _, names = blend(sources, {"buy_again": 0.5, "personal": 0.5}, 4)
    # quotas 2 / 2: buy_again takes 1, 4; personal takes 2, 3 (skips 1)
    assert items.tolist() == [1, 2, 4, 3]
    assert names.tolist() == ["buy_again", "personal", "buy_again", "personal"]


def test_blend_unfilled_slots_go_to_other_sources_by_weight():
    sources = {"personal": cands([1, 2, 3, 4, 5, 6]),
               "buy_again": cands([7]),                 # quota 3, has only 1 item
               "trending": cands([8, 9, 10, 11])}
    items, _, names = blend(sources, {"buy_again": 0.5, "personal": 0.3, "trending": 0.2}, 6)
    # quotas: 3, 1.8, 1.2 -> floor 3, 1, 1 + the 1 leftover to personal (.8) -> 3 / 2 / 1.
    # buy_again fills 1 of 3; the 2 spare slots go to the next weight: personal (3, 4).
    # taken: B [7], P [1, 2, 3, 4], T [8]; merged (j+.5)/w: B 1.0, P 1.67 5 8.3 11.7, T 2.5: the heaviest
    # source opens the list however few items it has, and the spill-over comes after
    assert items.tolist() == [7, 1, 8, 2, 3, 4]
    assert names.tolist() == ["buy_again", "personal", "trending", "personal", "personal", "personal"]


def test_blend_zero_weight_only_backfills_and_missing_sources_are_empty():
    sources = {"personal": cands([1, 2]), "popular": cands([1, 3, 4, 5])}
    items, _, names = blend(sources, {"personal": 1.0, "buy_again": 1.0, "popular": 0.0}, 5)
    # quotas 3 / 2 / 0 (largest remainder: personal .5 and buy_again .5 tie -> personal, key order)
    # personal has 2, buy_again none; spill: personal (weight 1) nothing left, buy_again nothing,
    # popular takes 3, 4, 5 (1 is taken)
    assert sorted(items.tolist()) == [1, 2, 3, 4, 5]
    assert names.tolist().count("popular") == 3
    assert items.tolist() == [1, 2, 3, 4, 5]   # the weighted source first, back-fill (weight 0) after it


def test_blend_returns_fewer_than_k_when_sources_run_dry():
    items, scores, names = blend({"personal": cands([1, 2])}, {"personal": 1.0}, 5)
    assert items.tolist() == [1, 2] and scores.tolist() == [1.0, 0.5]


def test_blend_rejects_bad_weights():
    with pytest.raises(ValueError, match=r"sources \['explore'\] have no weight"):
        blend({"explore": cands([1])}, {"personal": 1.0}, 3)
    with pytest.raises(ValueError, match="all weights are 0"):
        blend({}, {"personal": 0.0}, 3)
    with pytest.raises(ValueError, match="finite numbers >= 0"):
        blend({}, {"personal": -1.0}, 3)


# ------------------------------------------------------------------------------------------ mmr

# items 0 and 1 are near-duplicates (both along x), item 2 is orthogonal, item 3 is opposite-ish
VECS = np.array([[1.0, 0.0], [0.99, 0.141], [0.0, 1.0], [-0.6, 0.8]])
VECS = VECS / np.linalg.norm(VECS, axis=1, keepdims=True)


def test_mmr_strength_zero_keeps_relevance_order():
    items = np.array([0, 1, 2, 3])
    assert mmr(items, VECS, [0.9, 0.8, 0.5, 0.1], 4, 0.0).tolist() == [0, 1, 2, 3]
    assert mmr(items, VECS, [0.1, 0.8, 0.5, 0.9], 4, 0.0).tolist() == [3, 1, 2, 0]


def test_mmr_separates_near_duplicates():
    items = np.array([0, 1, 2, 3])
    # rel_norm = 1, .875, .5, 0; strength .5. Pick 1: item 0 (gain .5).
    # Pick 2: item 1 .5*.875 - .5*.99 = -.06; item 2 .25 - .5*0 = .25; item 3 0 - .5*(-.6) = .3 -> 3.
    # Pick 3: item 1 -.06 (max sim still .99); item 2 .25 - .5*.8 = -.15 (sim to item 3) -> 1, then 2.
    out = mmr(items, VECS, [0.9, 0.8, 0.5, 0.1], 4, 0.5).tolist()
    assert out == [0, 3, 1, 2]
    assert out.index(1) > 1   # the near-duplicate no longer comes second
    # k cuts the list; relevance all equal -> rel_norm 1 for all, diversity decides after the first
    assert mmr(items, VECS, [1, 1, 1, 1], 2, 0.5).tolist() == [0, 3]


def test_mmr_rejects_bad_input():
    with pytest.raises(ValueError, match=r"strength must be in \[0, 1\]"):
        mmr(np.array([0]), VECS, [1.0], 1, 1.5)
    with pytest.raises(ValueError, match="drop padding"):
        mmr(np.array([0, -1]), VECS, [1.0, 0.5], 2, 0.5)


# ------------------------------------------------------------------------------------------ cap

def test_category_cap_keeps_order_and_may_return_fewer():
    categories = np.array(["a", "a", "b", "a", "c", "b"])
    items = np.array([0, 1, 3, 2, 5, 4])
    assert category_cap(items, categories, 2, 4).tolist() == [0, 1, 2, 5]   # 3 is the third "a"
    assert category_cap(items, categories, 1, 10).tolist() == [0, 2, 4]      # shorter than k
    assert category_cap(np.array([1, 0]), np.array([7, 7]), 1, 5).tolist() == [1]   # int categories


# ------------------------------------------------------------------------------------------ metrics

def test_intra_list_diversity_known_answer():
    vecs = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    # list [0, 1]: 1 - 0 = 1; list [0, 2]: 1 - 1 = 0; list [0, 1, 2]: pairs 1, 0, 1 -> 2/3
    # list [2] and padding-only lists have no pair and are left out
    value = intra_list_diversity([np.array([0, 1]), np.array([0, 2]), np.array([0, 1, 2]),
                                  np.array([2, -1])], vecs)
    assert math.isclose(value, (1 + 0 + 2 / 3) / 3)
    assert intra_list_diversity([np.array([1])], vecs) == 0.0


def test_coverage_known_answer():
    assert coverage([np.array([0, 1]), np.array([1, 2, -1])], 10) == 0.3
    assert coverage([], 10) == 0.0


def test_category_diversity_known_answer():
    cats = np.array(["a", "a", "b", "c"])
    # [0, 1]: 1 category / 2; [0, 2, 3]: 3 / 3; empty list left out
    assert math.isclose(category_diversity([np.array([0, 1]), np.array([0, 2, 3]), np.array([], np.int64)],
                                           cats), (0.5 + 1.0) / 2)
