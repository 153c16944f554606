"""The two-tower model (training.model): shapes, normalisation, cold items and users, determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from training.featurize import N_USER_FEATURES, build_item_meta
from training.model import ModelConfig, TwoTower

N_USERS, N_ITEMS, H = 5, 6, 4


def _meta(n_items: int):
    idx = list(range(n_items))
    return build_item_meta(n_items, idx, titles=[f"item {i} red" if i % 2 else f"blue thing {i}" for i in idx],
                           categories=[f"cat{i % 3}" for i in idx], prices=[float(i) for i in idx],
                           train_counts=np.arange(n_items, dtype=np.float64), n_category_buckets=16,
                           n_price_buckets=8, n_popularity_buckets=8, n_title_buckets=64, max_title_tokens=4)


def _cfg(**over) -> ModelConfig:
    base = dict(n_users=N_USERS, n_items=N_ITEMS, dim=8, hidden=16, history_len=H, n_category_buckets=16,
                n_price_buckets=8, n_popularity_buckets=8, n_title_buckets=64, max_title_tokens=4)
    base.update(over)
    return ModelConfig(**base)


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = TwoTower(_cfg(), _meta(N_ITEMS))
    m.eval()
    return m


def _users_batch():
    users = torch.tensor([0, 3, 4])
    hist = torch.tensor([[2, 1, 0, 0], [0, 0, 0, 0], [6, 5, 4, 3]])     # item + 1, 0 = padding
    feats = torch.rand(3, N_USER_FEATURES, generator=torch.Generator().manual_seed(1))
    return users, hist, feats


def test_forward_shapes_and_unit_norm(model):
    users, hist, feats = _users_batch()
    items = torch.tensor([0, 5, 2])
    u, v, extra = model(users, hist, feats, items)
    assert u.shape == (3, 8) and v.shape == (3, 8) and extra is None
    torch.testing.assert_close(u.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(v.norm(dim=1), torch.ones(3))
    allv = model.all_item_vectors()
    assert allv.shape == (N_ITEMS, 8)
    torch.testing.assert_close(allv.norm(dim=1), torch.ones(N_ITEMS))
    # blocked computation gives the same vectors
    torch.testing.assert_close(model.all_item_vectors(block=4), allv)


def test_train_mode_shapes_and_unit_norm():
    torch.manual_seed(0)
    m = TwoTower(_cfg(id_dropout=0.5, dropout=0.3), _meta(N_ITEMS))
    m.train()
    users, hist, feats = _users_batch()
    u, v, ev = m(users, hist, feats, torch.tensor([1, 2, 3]), torch.tensor([0, 4]))
    torch.testing.assert_close(u.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(v.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(ev.norm(dim=1), torch.ones(2))


def test_training_forward_equals_the_separate_towers(model):
    # forward computes every item vector in one pass over the distinct items of the histories, targets and
    # negatives; without dropout that is exactly the towers applied one by one
    users, hist, feats = _users_batch()
    items, extra = torch.tensor([5, 1, 1]), torch.tensor([3, 0, 5, 2])
    with torch.no_grad():
        u, v, ev = model(users, hist, feats, items, extra)
        torch.testing.assert_close(u, model.user_vectors(users, hist, feats))
        torch.testing.assert_close(v, model.item_vectors(items))
        torch.testing.assert_close(ev, model.item_vectors(extra))
    # the user side's gradient reaches the item tower through the history items only (not the padding,
    # which shares the pass as item 0)
    u, v, _ = model(torch.tensor([0]), torch.tensor([[3, 0, 0, 0]]), feats[:1], torch.tensor([5]))
    model.zero_grad()
    u.sum().backward()
    moved = (model.item_id.weight.grad.abs().sum(1) > 0).tolist()
    assert moved == [False, False, True, False, False, False]


def test_new_item_gets_vector_from_metadata_alone(model):
    # the catalog grows to 8 items; the id table still has 6 rows
    model.set_item_meta(_meta(N_ITEMS + 2))
    vecs = model.all_item_vectors()
    assert vecs.shape == (N_ITEMS + 2, 8)
    assert torch.isfinite(vecs).all()
    torch.testing.assert_close(vecs.norm(dim=1), torch.ones(N_ITEMS + 2))
    # a new item's vector does not depend on the id table at all; a known item's does
    new, known = torch.tensor([N_ITEMS, N_ITEMS + 1]), torch.tensor([0, 1])
    before_new, before_known = model.item_vectors(new), model.item_vectors(known)
    with torch.no_grad():
        model.item_id.weight.add_(1.0)
    torch.testing.assert_close(model.item_vectors(new), before_new)
    assert not torch.allclose(model.item_vectors(known), before_known)
    # and a new item is usable in a user's history too
    u = model.user_vectors(torch.tensor([0]), torch.tensor([[N_ITEMS + 2, 1, 0, 0]]), torch.zeros(1, N_USER_FEATURES))
    assert torch.isfinite(u).all()


def test_unknown_user_maps_to_oov_row(model):
    hist = torch.tensor([[3, 1, 0, 0]] * 4)
    feats = torch.zeros(4, N_USER_FEATURES)
    u = model.user_vectors(torch.tensor([N_USERS, N_USERS + 1, 10 ** 6, 0]), hist, feats)
    torch.testing.assert_close(u[1], u[0])
    torch.testing.assert_close(u[2], u[0])
    assert not torch.allclose(u[3], u[0])        # a known user's own id row differs
    # the OOV row starts at zero: an unknown user is the history/feature-only vector
    torch.testing.assert_close(model.user_id.weight[N_USERS], torch.zeros(8))


def test_cold_user_without_history_is_finite(model):
    u = model.user_vectors(torch.tensor([N_USERS + 3]), torch.zeros(1, H, dtype=torch.long),
                           torch.zeros(1, N_USER_FEATURES))
    assert torch.isfinite(u).all()
    torch.testing.assert_close(u.norm(dim=1), torch.ones(1))


def test_eval_mode_is_deterministic():
    torch.manual_seed(0)
    m = TwoTower(_cfg(dropout=0.5, id_dropout=0.5), _meta(N_ITEMS))
    m.eval()
    users, hist, feats = _users_batch()
    a = m(users, hist, feats, torch.arange(N_ITEMS))
    b = m(users, hist, feats, torch.arange(N_ITEMS))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_user_vectors_with_precomputed_item_vectors_match(model):
    users, hist, feats = _users_batch()
    with torch.no_grad():
        item_vecs = model.all_item_vectors()
        direct = model.user_vectors(users, hist, feats)
        pre = model.user_vectors(users, hist, feats, item_vecs=item_vecs)
    torch.testing.assert_close(pre, direct, rtol=1e-5, atol=1e-6)


def test_history_padding_is_ignored(model):
    # padding slots contribute nothing: one item followed by 3 padding slots gives the same vector as the
    # same item in a history of width 2
    feats = torch.zeros(1, N_USER_FEATURES)
    a = model.user_vectors(torch.tensor([1]), torch.tensor([[4, 0, 0, 0]]), feats)
    b = model.user_vectors(torch.tensor([1]), torch.tensor([[4, 0]]), feats)
    torch.testing.assert_close(a, b)


def test_state_dict_round_trip():
    torch.manual_seed(0)
    m = TwoTower(_cfg(), _meta(N_ITEMS))
    m2 = TwoTower(_cfg(), _meta(N_ITEMS))
    m2.load_state_dict(m.state_dict())
    m.eval()
    m2.eval()
    users, hist, feats = _users_batch()
    torch.testing.assert_close(m2(users, hist, feats, torch.arange(N_ITEMS)), m(users, hist, feats, torch.arange(N_ITEMS)))
    # the item metadata travels in the state dict as buffers
    assert {"meta_category", "meta_price", "meta_popularity", "meta_title"} <= set(m.state_dict())


def test_pooling_is_the_position_weighted_mean_of_the_history_vectors(model):
    # known answer, computed by hand from the model's own parts: softmax(position) over the filled slots,
    # renormalised, times the history items' vectors; then the user MLP and the residual
    users, hist, feats = _users_batch()
    with torch.no_grad():
        allv = model.all_item_vectors()
        w = torch.softmax(model.position, dim=0).unsqueeze(0) * (hist > 0)
        w = w / w.sum(1, keepdim=True).clamp_min(1e-9)
        pooled = (allv[(hist - 1).clamp_min(0)] * w.unsqueeze(-1)).sum(1)
        x = torch.cat([model.user_id(users), pooled, feats], dim=-1)
        expected = torch.nn.functional.normalize(model.user_mlp(x) + model.history_scale * pooled, dim=-1)
        torch.testing.assert_close(model.user_vectors(users, hist, feats), expected, rtol=1e-5, atol=1e-6)


def test_forward_all_scores_the_whole_catalog_like_the_separate_towers(model):
    users, hist, feats = _users_batch()
    with torch.no_grad():
        u, allv = model.forward_all(users, hist, feats)
        torch.testing.assert_close(allv, model.all_item_vectors())
        torch.testing.assert_close(u, model.user_vectors(users, hist, feats), rtol=1e-5, atol=1e-6)


def test_history_dropout_hides_slots_in_training_only():
    torch.manual_seed(0)
    m = TwoTower(_cfg(history_dropout=0.99, id_dropout=0.0, dropout=0.0), _meta(N_ITEMS))
    users, hist, feats = _users_batch()
    m.eval()
    with torch.no_grad():
        evals = [m.user_vectors(users, hist, feats) for _ in range(2)]
    torch.testing.assert_close(evals[0], evals[1])             # evaluation sees the whole history
    m.train()
    with torch.no_grad():
        # nearly every slot hidden: the pooled history is (almost always) empty, so a trained user with a
        # full history looks like one without any
        hidden = m.user_vectors(users[2:], hist[2:], feats[2:])
        empty = m.user_vectors(users[2:], torch.zeros_like(hist[2:]), feats[2:])
    torch.testing.assert_close(hidden, empty)


def test_item_id_init_starts_seen_items_apart_and_keeps_unseen_ones_at_zero():
    torch.manual_seed(0)
    meta = _meta(N_ITEMS)                        # train_counts 0..5: item 0 has no interactions
    zero = TwoTower(_cfg(), meta)
    assert torch.count_nonzero(zero.item_id.weight) == 0
    m = TwoTower(_cfg(item_id_init=0.05), meta)
    rows = m.item_id.weight.detach()
    assert torch.count_nonzero(rows[0]) == 0
    assert bool((rows[1:].abs().sum(1) > 0).all())
    assert 0.01 < float(rows[1:].std()) < 0.1


def test_linear_towers_are_normalised_sums_of_embeddings():
    torch.manual_seed(0)
    m = TwoTower(_cfg(towers="linear", id_dropout=0.0, item_id_init=0.05), _meta(N_ITEMS))
    m.eval()
    users, hist, feats = _users_batch()
    with torch.no_grad():
        items = torch.arange(N_ITEMS)
        parts = (m.item_id(items) + m.category(m.meta_category) + m.price(m.meta_price)
                 + m.popularity(m.meta_popularity) + m.title(m.meta_title))
        allv = torch.nn.functional.normalize(parts, dim=-1)
        torch.testing.assert_close(m.all_item_vectors(), allv)
        w = torch.softmax(m.position, dim=0).unsqueeze(0) * (hist > 0)
        w = w / w.sum(1, keepdim=True).clamp_min(1e-9)
        pooled = (allv[(hist - 1).clamp_min(0)] * w.unsqueeze(-1)).sum(1)
        expected = torch.nn.functional.normalize(pooled + m.user_id(users), dim=-1)
        torch.testing.assert_close(m.user_vectors(users, hist, feats), expected, rtol=1e-5, atol=1e-6)
    # a brand-new item (beyond the trained id table) is the sum of its metadata's embeddings
    meta = _meta(N_ITEMS + 1)
    m.set_item_meta(meta)
    with torch.no_grad():
        new = torch.tensor([N_ITEMS])
        content = (m.category(m.meta_category[new]) + m.price(m.meta_price[new]) + m.popularity(m.meta_popularity[new])
                   + m.title(m.meta_title[new]))
        torch.testing.assert_close(m.item_vectors(new), torch.nn.functional.normalize(content, dim=-1))


def test_unknown_towers_rejected():
    with pytest.raises(ValueError, match="towers"):
        _cfg(towers="deep")


def test_every_parameter_of_the_linear_towers_gets_a_gradient():
    # DDP with several processes needs every parameter in the graph: linear towers carry no MLPs
    torch.manual_seed(0)
    m = TwoTower(_cfg(towers="linear"), _meta(N_ITEMS))
    m.train()
    users, hist, feats = _users_batch()
    u, allv = m.forward_all(users, hist, feats)
    (u @ allv.T).sum().backward()
    assert not hasattr(m, "item_mlp") and not hasattr(m, "user_mlp")
    assert [n for n, p in m.named_parameters() if p.grad is None] == []
