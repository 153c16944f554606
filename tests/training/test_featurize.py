"""Known-answer tests of the model inputs (training.featurize): hashing, buckets, per-event
sequence examples and the users' state at a point in time."""
from __future__ import annotations

import math

import numpy as np
import pytest

from training.featurize import (DAY, N_USER_FEATURES, USER_FEATURES, build_item_meta, popularity_buckets,
                                price_bucket, sequence_examples, stable_bucket, title_tokens, user_state,
                                user_states)
from training.interactions import Interactions

# zlib.crc32 of these byte strings, computed once (they are part of the on-disk contract: a saved
# model's buckets must not change between processes or Python versions)
CRC_HELLO = 907060870          # zlib.crc32(b"hello")
CRC_C_SHOES = 1346296647       # zlib.crc32(b"c:shoes")
CRC_T_RED = 1355165514         # zlib.crc32(b"t:red")


# ------------------------------------------------------------------ stable_bucket

def test_stable_bucket_known_values():
    assert stable_bucket("hello", 1000) == 1 + CRC_HELLO % 999 == 839
    assert stable_bucket("shoes", 1024, "c:") == 1 + CRC_C_SHOES % 1023
    assert stable_bucket("red", 64, "t:") == 1 + CRC_T_RED % 63
    # salt matters
    assert stable_bucket("shoes", 1024, "c:") != stable_bucket("shoes", 1024, "t:")


def test_stable_bucket_range_and_stability():
    words = [f"w{i}" for i in range(500)] + ["", "ünïcode", "UPPER"]
    for n in (2, 3, 17, 1024):
        b = [stable_bucket(w, n) for w in words]
        assert min(b) >= 1 and max(b) <= n - 1
        assert b == [stable_bucket(w, n) for w in words]     # same answer every call
    assert {stable_bucket(w, 17) for w in words} == set(range(1, 17))   # every bucket reachable


# ------------------------------------------------------------------ title_tokens

def test_title_tokens_lowercases_dedups_pads_and_caps():
    n = 1000
    h = lambda tok: stable_bucket(tok, n, "t:")  # noqa: E731
    out = title_tokens("Red red BLUE shoe, size 42!", n, 8)
    assert out.dtype == np.int64 and out.shape == (8,)
    np.testing.assert_array_equal(out, [h("red"), h("blue"), h("shoe"), h("size"), h("42"), 0, 0, 0])
    capped = title_tokens("Red red BLUE shoe, size 42!", n, 3)
    np.testing.assert_array_equal(capped, [h("red"), h("blue"), h("shoe")])
    # case-insensitive: the same tokens whatever the case
    np.testing.assert_array_equal(title_tokens("RED Blue", n, 4), title_tokens("red blue", n, 4))
    # punctuation only, empty or missing: all padding
    for t in (None, "", "!!! ---"):
        np.testing.assert_array_equal(title_tokens(t, n, 4), np.zeros(4, np.int64))


# ------------------------------------------------------------------ price / popularity buckets

@pytest.mark.parametrize("price,expected", [
    (0.0, 1),          # 1 + floor(2 * log2(1)) = 1
    (1.0, 3),          # 1 + floor(2 * 1) = 3
    (2.0, 4),          # 1 + floor(2 * log2(3) = 3.17) = 4
    (3.0, 5),          # 1 + floor(2 * 2) = 5
    (0.5, 2),          # 1 + floor(2 * 0.585) = 2
    (1e9, 31),         # capped at n_buckets - 1
    (None, 0), (float("nan"), 0), (-1.0, 0), (-0.01, 0), (float("inf"), 0),
])
def test_price_bucket_known_values(price, expected):
    assert price_bucket(price, 32) == expected


def test_popularity_buckets_known_values():
    counts = np.array([0, 1, 2, 3, 4, 7, 8, 1000, -3, np.nan])
    np.testing.assert_array_equal(popularity_buckets(counts, 24), [0, 1, 2, 2, 3, 3, 4, 10, 0, 0])
    np.testing.assert_array_equal(popularity_buckets(counts, 5), [0, 1, 2, 2, 3, 3, 4, 4, 0, 0])
    assert popularity_buckets(np.array([]), 8).shape == (0,)


def test_build_item_meta_unknowns_stay_zero():
    meta = build_item_meta(4, item_idx=[0, 2, 3], titles=["Blue shoe", None, "x"],
                           categories=["shoes", "unknown", None], prices=[3.0, None, -2.0],
                           train_counts=np.array([4, 0, 1, 0]), n_category_buckets=64, n_price_buckets=16,
                           n_popularity_buckets=8, n_title_buckets=128, max_title_tokens=3)
    assert meta.n_items == 4
    np.testing.assert_array_equal(meta.category, [stable_bucket("shoes", 64, "c:"), 0, 0, 0])
    np.testing.assert_array_equal(meta.price, [5, 0, 0, 0])
    np.testing.assert_array_equal(meta.popularity, [3, 0, 1, 0])
    np.testing.assert_array_equal(meta.title[0], title_tokens("Blue shoe", 128, 3))
    np.testing.assert_array_equal(meta.title[1:3], np.zeros((2, 3), np.int64))   # no row / no title
    np.testing.assert_array_equal(meta.title[3], title_tokens("x", 128, 3))


# ------------------------------------------------------------------ sequence_examples

def _one_user(user=0, n_users=1):
    # pairs: item 5 at t=100; item 7 first at 200, last at 400, twice; item 9 at 200
    return Interactions.from_arrays(user=[user] * 3, item=[7, 5, 9], n_users=n_users, n_items=10,
                                    weight=[2.0, 1.0, 3.0], time=[400.0, 100.0, 200.0],
                                    count=[2.0, 1.0, 1.0], first_time=[200.0, 100.0, 200.0])


def _feats(n_items, n_events, t=None, last_t=None, first_t=None):
    # activity counts only (times are deliberately not user features: see training/featurize.py)
    return [math.log1p(n_items), math.log1p(n_events), 1.0]


def test_sequence_examples_known_answer():
    ex = sequence_examples(_one_user(), H=4)
    assert set(ex) == {"user", "item", "weight", "time", "hist", "feats"}
    # events sorted by (time, item): (100, 5), (200, 7), (200, 9), (400, 7 again: the repeat)
    np.testing.assert_array_equal(ex["user"], [0, 0, 0, 0])
    np.testing.assert_array_equal(ex["item"], [5, 7, 9, 7])
    np.testing.assert_array_equal(ex["time"], [100.0, 200.0, 200.0, 400.0])
    np.testing.assert_array_equal(ex["weight"], [1.0, 2.0, 3.0, 2.0])    # each event carries its pair's weight
    # history: distinct items of STRICTLY earlier events, most recent first (ties in time: the higher item
    # index counts as more recent, as events are ordered by item within a time), item + 1, 0-padded
    np.testing.assert_array_equal(ex["hist"], [[0, 0, 0, 0],
                                               [6, 0, 0, 0],       # 7 at 200: item 9 at the same time is not history
                                               [6, 0, 0, 0],       # 9 at 200: nor is item 7
                                               [10, 8, 6, 0]])     # 7 again at 400: 9, 7, 5
    assert ex["hist"].dtype == np.int64
    assert ex["feats"].dtype == np.float32 and ex["feats"].shape == (4, N_USER_FEATURES)
    np.testing.assert_array_equal(ex["feats"][0], np.zeros(N_USER_FEATURES))   # no history: all zero
    np.testing.assert_allclose(ex["feats"][1], _feats(1, 1, 200, 100, 100), rtol=1e-6)
    np.testing.assert_allclose(ex["feats"][2], _feats(1, 1, 200, 100, 100), rtol=1e-6)
    np.testing.assert_allclose(ex["feats"][3], _feats(3, 3, 400, 200, 100), rtol=1e-6)
    assert USER_FEATURES[-1] == "has_history"
    np.testing.assert_array_equal(ex["feats"][:, -1], [0.0, 1.0, 1.0, 1.0])


def test_sequence_examples_history_truncated_to_H_most_recent():
    ex = sequence_examples(_one_user(), H=2)
    np.testing.assert_array_equal(ex["hist"], [[0, 0], [6, 0], [6, 0], [10, 8]])
    # the user features still count every prior event, not only the H kept in the history
    np.testing.assert_allclose(ex["feats"][3], _feats(3, 3, 400, 200, 100), rtol=1e-6)


def test_sequence_examples_repeat_rules_and_users_do_not_mix():
    # user 1: the pairs of _one_user; user 0: item 1 at t=50 and item 2 with count 3 but last == first
    # (no second event); user 2 has nothing. Pairs listed out of user order.
    a = _one_user(user=1, n_users=3)
    b = Interactions.from_arrays(user=[0, 0], item=[2, 1], n_users=3, n_items=10, weight=[1.0, 1.0],
                                 time=[60.0, 50.0], count=[3.0, 1.0], first_time=[60.0, 50.0])
    inter = a.concat(b)
    ex = sequence_examples(inter, H=3)
    np.testing.assert_array_equal(ex["user"], [0, 0, 1, 1, 1, 1])              # users in index order
    np.testing.assert_array_equal(ex["item"], [1, 2, 5, 7, 9, 7])
    np.testing.assert_array_equal(ex["hist"][:2], [[0, 0, 0], [2, 0, 0]])
    np.testing.assert_array_equal(ex["hist"][2], [0, 0, 0])                    # user 1 starts empty again
    np.testing.assert_array_equal(ex["hist"][5], [10, 8, 6])


def test_sequence_examples_without_first_time_uses_time():
    inter = Interactions.from_arrays(user=[0, 0], item=[3, 4], n_users=1, n_items=5, time=[10.0, 20.0])
    ex = sequence_examples(inter, H=2)
    np.testing.assert_array_equal(ex["item"], [3, 4])
    np.testing.assert_array_equal(ex["hist"], [[0, 0], [4, 0]])
    np.testing.assert_array_equal(ex["weight"], [1.0, 1.0])


def test_sequence_examples_empty():
    inter = Interactions.from_arrays(user=[], item=[], n_users=2, n_items=3)
    ex = sequence_examples(inter, H=4)
    assert ex["user"].shape == (0,) and ex["hist"].shape == (0, 4) and ex["feats"].shape == (0, N_USER_FEATURES)


# ------------------------------------------------------------------ user_state

def test_user_state_only_strictly_earlier_events():
    inter = _one_user(user=1, n_users=3)        # users 0 and 2 have no events
    hist, feats = user_state(inter, at=200.0, H=4)
    assert hist.shape == (3, 4) and feats.shape == (3, N_USER_FEATURES)
    assert hist.dtype == np.int64 and feats.dtype == np.float32
    # at 200 only the event at 100 is strictly earlier
    np.testing.assert_array_equal(hist[1], [6, 0, 0, 0])
    np.testing.assert_allclose(feats[1], _feats(1, 1, 200, 100, 100), rtol=1e-6)
    for u in (0, 2):                            # cold users: zeros
        np.testing.assert_array_equal(hist[u], np.zeros(4))
        np.testing.assert_array_equal(feats[u], np.zeros(N_USER_FEATURES))


@pytest.mark.parametrize("at,hist,feats", [
    (100.0, [0, 0, 0, 0], None),                                   # nothing strictly before
    (200.5, [10, 8, 6, 0], _feats(3, 3, 200.5, 200, 100)),
    (400.0, [10, 8, 6, 0], _feats(3, 3, 400, 200, 100)),           # the repeat at 400 is not before 400
    (401.0 + DAY, [8, 10, 6, 0], _feats(3, 4, 401 + DAY, 400, 100)),   # after the repeat: 7 is most recent
])
def test_user_state_at_times(at, hist, feats):
    h, f = user_state(_one_user(), at=at, H=4)
    np.testing.assert_array_equal(h[0], hist)
    if feats is None:
        np.testing.assert_array_equal(f[0], np.zeros(N_USER_FEATURES))
    else:
        np.testing.assert_allclose(f[0], feats, rtol=1e-6)


def test_user_state_matches_sequence_examples_at_the_event_time():
    inter = _one_user()
    ex = sequence_examples(inter, H=4)
    for j in range(len(ex["item"])):
        h, f = user_state(inter, at=float(ex["time"][j]), H=4)
        np.testing.assert_array_equal(h[0], ex["hist"][j])
        np.testing.assert_allclose(f[0], ex["feats"][j], rtol=1e-6)


def test_others_share_one_sees_the_users_other_items_without_the_target():
    # one user: item 5 at t=100, item 7 at t=200, item 9 at t=300; every example sees the other two
    inter = Interactions.from_arrays([0, 0, 0], [5, 7, 9], 1, 12, time=[100.0, 200.0, 300.0])
    ex = sequence_examples(inter, 4, others_share=1.0)
    by_item = {int(i): h.tolist() for i, h in zip(ex["item"], ex["hist"])}
    # most recent first, +1 encoding, the target left out
    assert by_item == {5: [10, 8, 0, 0], 7: [10, 6, 0, 0], 9: [8, 6, 0, 0]}
    np.testing.assert_allclose(ex["feats"], [_feats(2, 2)] * 3, rtol=1e-6)
    # the default (0.0) is the next-item history; a share in between is seeded and reproducible
    assert sequence_examples(inter, 4)["hist"][0].tolist() == [0, 0, 0, 0]
    a = sequence_examples(inter, 4, others_share=0.5, seed=3)["hist"]
    np.testing.assert_array_equal(a, sequence_examples(inter, 4, others_share=0.5, seed=3)["hist"])


def test_repeat_weight_scales_only_examples_whose_item_is_in_their_history():
    # _one_user: the last event (item 7 at t=400) repeats item 7 bought at t=200
    np.testing.assert_array_equal(sequence_examples(_one_user(), H=4, repeat_weight=3.0)["weight"],
                                  [1.0, 2.0, 3.0, 6.0])
    # the repeat must be visible in the history: with H=1 the history at t=400 is item 9 only
    np.testing.assert_array_equal(sequence_examples(_one_user(), H=1, repeat_weight=3.0)["weight"],
                                  [1.0, 2.0, 3.0, 2.0])
    # "other items" examples never contain their target, so they are never repeats
    np.testing.assert_array_equal(
        sequence_examples(_one_user(), H=4, others_share=1.0, repeat_weight=3.0)["weight"], [1.0, 2.0, 3.0, 2.0])


def test_user_states_lists_only_users_with_earlier_events():
    a = _one_user(user=1, n_users=3)
    users, hist, feats = user_states(a, at=250.0, H=4)
    np.testing.assert_array_equal(users, [1])
    np.testing.assert_array_equal(hist, [[10, 8, 6, 0]])       # 9 and 7 at 200, then 5 at 100
    np.testing.assert_allclose(feats, [_feats(3, 3)], rtol=1e-6)
    assert user_states(a, at=100.0, H=4)[0].size == 0           # nothing strictly before t=100
