"""The served list offline (training/served.py): the lists' inputs from pairs, and the production blend,
diversity and rules scored like any model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from training.baselines import BuyAgain
from training.featurize import user_state
from training.interactions import Interactions
from training.metrics import evaluate
from training.model import TwoTower
from training.served import ServedSettings, build_served, catalog_arrays, global_lists, new_items
from tests.training.test_model import _cfg, _meta

DAY = 86400.0
END = 1_700_000_000.0
N_USERS, N_ITEMS = 4, 8


def _fit() -> Interactions:
    # item 0: bought by everyone 60 days ago; item 1: by three users this week (rising); item 7: first
    # seen yesterday, once (new); user 0 also has items 2 and 3
    user = [0, 1, 2, 3, 0, 1, 2, 0, 0, 3]
    item = [0, 0, 0, 0, 1, 1, 1, 2, 3, 7]
    time = [END - 60 * DAY] * 4 + [END - 2 * DAY] * 3 + [END - 40 * DAY, END - 5 * DAY, END - DAY]
    return Interactions.from_arrays(user, item, N_USERS, N_ITEMS, time=time, first_time=time)


def test_popular_trending_and_new_items_as_of_the_end_of_the_split():
    s = ServedSettings(popular_window_days=30, trending_short_days=7, trending_long_days=90, trending_min_events=2,
                       fallback_k=3, new_item_days=14, max_events=2)
    lists = global_lists(_fit(), END, s)
    assert lists["popular:global"][0].tolist() == [1, 3, 7]              # the last 30 days, by weight
    t_items, t_scores = lists["trending:global"]
    assert t_items[0] == 1 and np.isfinite(t_scores[0])                 # 3 events this week, rising
    assert np.isnan(t_scores[1:]).all() and t_items.tolist() == [1, 0, 2]   # padded by the 90-day popular list (ties: lower id)
    assert np.flatnonzero(new_items(_fit(), END, s)).tolist() == [3, 7]   # recent and at most 2 events (1 has 3)


@pytest.fixture
def served():
    torch.manual_seed(0)
    fit = _fit()
    model = TwoTower(_cfg(n_users=N_USERS, n_items=N_ITEMS, history_len=4), _meta(N_ITEMS))
    model.eval()
    hist, feats = user_state(fit, END + 1, 4)
    ids, cats = catalog_arrays(None, N_ITEMS)
    s = ServedSettings(k=5, fetch=8, mmr_strength=0.0, fallback_k=8)
    return build_served(model, fit, hist, feats, BuyAgain(half_life_days=30).fit(fit).history_, ids, cats, s), model


def test_personal_only_without_diversity_is_the_models_own_ranking(served):
    lists, model = served
    users = np.arange(N_USERS)
    got = lists.lists(users, {"personal": 1.0}, 0.0)
    with torch.no_grad():
        from training.recommend import UserBatch, user_vectors
        vecs = torch.as_tensor(lists.inputs.item_vecs)
        uv = user_vectors(model, UserBatch(users, lists.history[users], lists.feats[users], [None] * 4,
                                           [np.zeros(0, np.int64)] * 4, [None] * 4), vecs)
        scores = (uv @ vecs.T).numpy()
    for u in users:
        assert got[u].tolist() == np.lexsort((np.arange(N_ITEMS), -scores[u]))[:5].tolist()


def test_buy_again_first_puts_the_customers_own_items_on_top_and_every_list_is_k_long(served):
    lists, _ = served
    got = lists.lists(np.arange(N_USERS), {"buy_again": 0.8, "personal": 0.2}, 0.0)
    assert all(len(g) == 5 and len(set(g.tolist())) == 5 for g in got)
    # user 0 bought 0, 1, 2, 3; the decayed score puts 1 (two days ago) first; weights .8 / .2 give the
    # order B B P B B (merged ranks (j + .5) / w)
    assert got[0][0] == 1 and set(got[0].tolist()) >= {0, 1, 2, 3}
    # as a scorer: the list's items rank in list order, nothing else is a candidate
    s = lists.score_fn({"buy_again": 0.8, "personal": 0.2}, 0.0)(np.array([0]))[0]
    assert np.isfinite(s).sum() == 5 and np.argsort(-s)[:5].tolist() == got[0].tolist()
    truth = Interactions.from_arrays([0], [int(got[0][0])], N_USERS, N_ITEMS).csr()
    m = evaluate(lists.score_fn({"buy_again": 0.8, "personal": 0.2}, 0.0), np.array([0]), truth, ks=(5,))
    assert m["ndcg@5"] == pytest.approx(1.0)


def test_candidates_start_with_the_configured_settings_and_drop_repeats():
    s = ServedSettings(weights={"personal": 0.6, "buy_again": 0.4}, mmr_strength=0.2,
                       search=[{"mmr_strength": 0.0}, {"weights": {"personal": 0.6, "buy_again": 0.4}}])
    assert s.candidates() == [{"weights": {"personal": 0.6, "buy_again": 0.4}, "mmr_strength": 0.2},
                              {"weights": {"personal": 0.6, "buy_again": 0.4}, "mmr_strength": 0.0}]


def test_a_search_computes_the_models_candidates_once_and_the_same_lists(served, monkeypatch):
    import training.served as served_mod
    lists, _ = served
    users = np.arange(N_USERS)
    settings = [({"personal": 1.0}, 0.0), ({"personal": 0.5, "buy_again": 0.5}, 0.0),
                ({"personal": 0.5, "buy_again": 0.5}, 0.5)]
    plain = [lists.lists(users, w, m) for w, m in settings]          # memo off: nothing kept
    assert lists._cands == {} and lists._lists == {}
    calls = []
    real = served_mod.candidates
    monkeypatch.setattr(served_mod, "candidates", lambda *a: calls.append(1) or real(*a))
    lists.memo = True
    memo = [lists.lists(users, w, m) for w, m in settings]
    assert len(calls) == 1                                            # no explore slot: one key for all three
    assert [[x.tolist() for x in a] for a in memo] == [[x.tolist() for x in a] for a in plain]
    lists.keep_only(*settings[1], candidates=False)
    assert lists._cands == {} and len(lists._lists) == 1
    assert [x.tolist() for x in lists.lists(users, *settings[1])] == [x.tolist() for x in plain[1]]
    assert len(calls) == 1                                            # the kept setting's lists: from the cache
