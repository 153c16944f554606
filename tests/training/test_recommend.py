"""Per-user serving lists (training.recommend): sources, rules, cold start, new items, fallback and
similar lists, with and without a model."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import torch

from training.featurize import N_USER_FEATURES
from training.model import TwoTower
from training.recommend import (ServingInputs, UserBatch, fallback_list, recommend, similar_items,
                                similar_lists)
from training.rules import load_rules
from tests.training.test_model import _cfg, _meta

N_ITEMS = 6
IDS = np.array([f"I{i}" for i in range(N_ITEMS)], dtype=object)
CATS = np.array(["a", "a", "b", "b", "c", "c"], dtype=object)
EMPTY = (np.zeros(0, np.int64), np.zeros(0, np.float32))


def _inputs(model=None, rules=None, **over) -> ServingInputs:
    vecs = None
    if model is not None:
        with torch.inference_mode():
            vecs = model.all_item_vectors().numpy()
    base = dict(item_ids=IDS, categories=CATS, item_vecs=vecs, available=np.array([1, 1, 1, 1, 1, 0], bool),
                new_items=np.array([0, 0, 0, 0, 1, 0], bool),
                lists={"popular:global": (np.array([0, 1, 2, 3, 4]), np.array([5, 4, 3, 2, 1], np.float32)),
                       "popular:segment:DE": (np.array([3, 2]), np.array([2, 1], np.float32)),
                       "trending:global": (np.array([4, 3]), np.array([2, 1], np.float32))},
                rules=rules or load_rules({}), run_date=dt.date(2026, 11, 26), k=4, fetch=5,
                weights={"personal": 0.5, "buy_again": 0.25, "trending": 0.25, "popular": 0.0, "explore": 0.0},
                backfill=np.array([0, 1, 2, 3, 4]))
    base.update(over)
    return ServingInputs(**base)


def _batch(segments=(None, "DE")) -> UserBatch:
    return UserBatch(users=np.array([0, 1]), history=np.array([[1, 2, 0, 0], [0, 0, 0, 0]]),
                     feats=np.array([[1, 1, 1], [0, 0, 0]], np.float32)[:, :N_USER_FEATURES],
                     segments=list(segments), bought=[np.array([0, 1]), np.zeros(0, np.int64)],
                     buy_again=[(np.array([1, 0]), np.array([2.0, 1.0], np.float32)), EMPTY])


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = TwoTower(_cfg(n_items=N_ITEMS), _meta(N_ITEMS))
    m.eval()
    return m


def test_every_list_has_k_distinct_available_items_with_their_sources(model):
    r = recommend(model, _batch(), _inputs(model))
    assert r.users.tolist() == [0] * 4 + [1] * 4 and r.rank.tolist() == [1, 2, 3, 4] * 2
    for u in (0, 1):
        items = r.items[r.users == u].tolist()
        assert len(set(items)) == 4 and "I5" not in items          # I5 is unavailable
    src0 = dict(zip(r.items[r.users == 0], r.sources[r.users == 0]))
    assert src0["I1"] == "buy_again" or "personal" in src0.values()
    assert set(r.sources) <= {"personal", "buy_again", "trending"}
    assert r.personal_top.shape == (2, 4) and 5 not in r.personal_top


def test_rules_exclusions_and_pins_hold_for_the_segment(model):
    rules = load_rules({"exclude_items": ["I0"], "boosts": [{"segment": "DE", "items": ["I3"], "pin": 1}]})
    r = recommend(model, _batch(), _inputs(model, rules=rules))
    assert "I0" not in r.items.tolist()
    de = r.items[r.users == 1]
    assert de[0] == "I3" and r.sources[r.users == 1][0] == "pinned"
    assert (r.items[r.users == 0] != "I3").any() or r.sources[r.users == 0][0] != "pinned"


def test_explore_slot_brings_a_new_item(model):
    # explore listed first: it owns I4 (the only new item) even where personal also ranks it
    r = recommend(model, _batch(), _inputs(model, weights={"explore": 0.25, "personal": 0.75}))
    for u in (0, 1):
        src = dict(zip(r.items[r.users == u], r.sources[r.users == u]))
        assert src["I4"] == "explore" and list(src.values()).count("explore") == 1


def test_without_a_model_the_other_sources_fill_the_lists():
    r = recommend(None, _batch(), _inputs(None))
    assert r.items[r.users == 0].tolist()[:1] in (["I1"], ["I4"])  # buy-again or trending opens
    assert set(r.sources) <= {"buy_again", "trending", "popular", "backfill"}
    assert (np.bincount(r.users) == 4).all()
    assert r.personal_top.shape == (2, 0)


def test_fallback_list_uses_the_segment_lists_and_the_rules():
    rules = load_rules({"exclude_items": ["I3"]})
    items, scores, sources = fallback_list(_inputs(None, rules=rules), "DE")
    # DE: trending I4, I3 and popular:segment:DE I3, I2 (weights 0.25 / 0 -> trending first); I3 excluded
    assert len(items) == 4 and "I3" not in items and items[0] == "I4"
    assert set(sources) <= {"trending", "popular", "backfill"}
    # a personal-only blend chosen for known customers leaves the fallback's own weights alone
    chosen = _inputs(None, rules=rules, weights={"personal": 1.0},
                     fallback_weights={"personal": 0.5, "trending": 0.25, "popular": 0.0})
    assert fallback_list(chosen, "DE")[0] == items
    assert fallback_list(_inputs(None, rules=rules, weights={"personal": 1.0}), "DE")[2][0] == "popular"


def test_similar_lists_never_hold_the_item_itself_and_fill_from_co_purchase(model):
    inp = _inputs(model)
    nb, sc, co = similar_items(inp.item_vecs, 3, inp.available, {0: [5, 2, 1]})
    assert (nb != np.arange(N_ITEMS)[:, None]).all() and 5 not in nb
    ids, lists, scores, sources = similar_lists(inp, nb, sc, co, 3)
    assert ids == IDS.tolist() and all(len(x) == 3 and me not in x for me, x in zip(ids, lists))
    # without vectors: co-purchase neighbours (available ones), then popular back-fill
    nb, sc, co = similar_items(None, 3, inp.available, {0: [5, 2, 1]})
    assert nb[0].tolist() == [2, 1, -1] and co[0, :2].all()
    _, lists, _, sources = similar_lists(_inputs(None), nb, sc, co, 3)
    assert lists[0][:2] == ["I2", "I1"] and sources[0] == ["co_purchase", "co_purchase", "backfill"]
