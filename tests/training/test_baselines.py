"""Known-answer tests of the baselines on tiny inline interactions."""
from __future__ import annotations

import numpy as np
import pytest

from training.baselines import (EASE, BaselineSkipped, BuyAgain, MostPopular, Recommender, SparkALS, build,
                                item_popularity)
from training.interactions import Interactions

DAY = 86400.0
NOW = 1_700_000_000.0


def _check_scores(scores: np.ndarray, n_rows: int, n_items: int) -> None:
    assert scores.dtype == np.float32
    assert scores.shape == (n_rows, n_items)
    assert np.isfinite(scores).all()


# ------------------------------------------------------------------ MostPopular

def test_popular_counts_distinct_users_not_events():
    # item 0: one user with 10 events (three rows of the same pair); item 1: three users; item 2: two users.
    train = Interactions.from_arrays(user=[0, 0, 0, 1, 2, 3, 1, 2], item=[0, 0, 0, 1, 1, 1, 2, 2],
                                     n_users=5, n_items=4, count=[4, 3, 3, 1, 1, 1, 1, 1])
    model = MostPopular().fit(train)
    assert model.name == "popular"
    scores = model.score(np.array([0, 1, 4]))        # user 4 has no pairs
    _check_scores(scores, 3, 4)
    np.testing.assert_array_equal(scores[0], [1, 3, 2, 0])
    assert (scores == scores[0]).all()               # same row for every user, unseen included
    assert list(np.argsort(-scores[0], kind="stable")) == [1, 2, 0, 3]


def test_popular_by_weight():
    train = Interactions.from_arrays(user=[0, 1, 2], item=[0, 1, 1], n_users=3, n_items=2, weight=[5.0, 1.0, 1.0])
    np.testing.assert_allclose(MostPopular(by="weight").fit(train).score([0])[0], [5.0, 2.0])
    with pytest.raises(ValueError):
        MostPopular(by="events")


def test_popular_window_prefers_recent_and_falls_back_to_all_time():
    old, recent = NOW - 200 * DAY, NOW - 5 * DAY
    # item 0: 4 users long ago; item 1: 2 users recently; item 2: 1 user recently; item 3: 2 users long ago.
    user = [0, 1, 2, 3, 4, 5, 6, 7, 8]
    item = [0, 0, 0, 0, 1, 1, 2, 3, 3]
    time = [old] * 4 + [recent, recent, NOW] + [old, old]
    train = Interactions.from_arrays(user=user, item=item, n_users=9, n_items=5, time=time)

    all_time = MostPopular().fit(train).score([0])[0]
    assert np.argmax(all_time) == 0

    model = MostPopular(window_days=30).fit(train)             # now defaults to max(time) = NOW
    assert model.name == "popular_30d"
    row = model.score([0, 8])[0]
    _check_scores(model.score([0, 8]), 2, 5)
    order = list(np.argsort(-row, kind="stable"))
    assert order == [1, 2, 0, 3, 4]        # window first; then all-time popularity; never-seen item last
    assert row[0] < row[2] and row[3] < row[2] and row[4] == 0

    # The window has only a lower bound: with ``now`` long ago every pair is in it (train holds no later pairs).
    back = MostPopular(window_days=30, now=old + DAY).fit(train).score([0])[0]
    np.testing.assert_array_equal(back, all_time)


# ------------------------------------------------------------------ BuyAgain

def test_buy_again_history_frequency_recency_then_popularity():
    # User 0: item 0 bought 3x and item 1 bought 1x at the same time; item 2 once, recently; item 3 once, long ago.
    # Distinct users: item 5: 4, item 3: 3, item 4: 2; item 6 is never bought.
    t_mid, t_old = NOW - 10 * DAY, NOW - 120 * DAY
    user = [0, 0, 0, 0, 1, 2, 3, 4, 1, 2, 3, 4]
    item = [0, 1, 2, 3, 5, 5, 5, 5, 4, 4, 3, 3]
    count = [3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    time = [t_mid, t_mid, NOW, t_old, NOW, NOW, NOW, NOW, NOW, NOW, NOW, NOW]
    train = Interactions.from_arrays(user=user, item=item, n_users=6, n_items=7, count=count, time=time)
    model = BuyAgain(half_life_days=30).fit(train)
    assert model.name == "buy_again"
    scores = model.score(np.array([0, 5]))          # user 5 has no history
    _check_scores(scores, 2, 7)
    row = scores[0]
    history, rest = [0, 1, 2, 3], [4, 5, 6]
    assert row[history].min() > row[rest].max()     # every history item above every other item
    assert row[0] > row[1]                          # more frequent, equal recency
    assert row[2] > row[3]                          # more recent (item 3 is more popular), equal frequency
    assert row[5] > row[4] > row[6]                 # the rest by distinct users
    assert 0.0 <= row[rest].min() and row[rest].max() < 1.0
    # No history: the popularity part only.
    np.testing.assert_array_equal(scores[1], model.base_)
    assert list(np.argsort(-scores[1], kind="stable"))[:3] == [5, 3, 4]


def test_buy_again_back_fills_with_recent_popularity():
    # item 1: three users long ago; item 2: one user this week. All-time popularity puts 1 first behind the
    # customer's own item 0, the last 14 days' popularity puts 2 first.
    old = NOW - 200 * DAY
    train = Interactions.from_arrays(user=[0, 1, 2, 3, 4], item=[0, 1, 1, 1, 2], n_users=5, n_items=4,
                                     time=[NOW, old, old, old, NOW])
    for backfill, first in ((None, 1), (14.0, 2)):
        row = BuyAgain(half_life_days=30, backfill_days=backfill).fit(train).score([0])[0]
        assert row[0] >= 1.0 > row[1:].max()                  # the history still comes first
        assert int(np.argmax(row[1:])) + 1 == first
    with pytest.raises(ValueError, match="backfill_days"):
        BuyAgain(backfill_days=0)


def test_buy_again_very_old_purchase_still_history():
    train = Interactions.from_arrays(user=[0, 1, 2], item=[0, 1, 1], n_users=3, n_items=2,
                                     time=[0.0, NOW, NOW])             # 0 = unknown time: "very old"
    row = BuyAgain().fit(train).score([0])[0]
    assert row[0] >= 1.0 > row[1]


# ------------------------------------------------------------------ EASE

def _co_occurrence() -> Interactions:
    # Items 0+1 always bought together, 2+3 together; item 4 by a few users of both kinds.
    user, item = [], []
    for u in range(12):
        pair = (0, 1) if u < 6 else (2, 3)
        user += [u, u]
        item += list(pair)
        if u % 3 == 0:
            user.append(u)
            item.append(4)
    user.append(12)          # user 12 only has item 0
    item.append(0)
    return Interactions.from_arrays(user=user, item=item, n_users=14, n_items=5)


def test_ease_planted_co_occurrence():
    train = _co_occurrence()
    model = EASE(l2=1.0).fit(train)
    assert model.name == "ease"
    np.testing.assert_array_equal(np.diag(model.B_), 0.0)
    scores = model.score(np.array([12, 13]))        # 13: no history
    _check_scores(scores, 2, 5)
    row = scores[0]
    non_history = [1, 2, 3, 4]
    assert non_history[int(np.argmax(row[non_history]))] == 1
    assert row[1] > max(row[2], row[3], row[4])
    # No history: the popularity row, normalised.
    np.testing.assert_allclose(scores[1], item_popularity(train) / item_popularity(train).max())


def test_ease_skipped_when_catalog_too_large():
    train = Interactions.from_arrays(user=[0], item=[0], n_users=1, n_items=11)
    with pytest.raises(BaselineSkipped) as err:
        EASE(max_items=10).fit(train)
    assert "11 items" in str(err.value) and "max_items=10" in str(err.value)
    assert isinstance(err.value, Exception)


# ------------------------------------------------------------------ SparkALS

def _two_groups(per_group: int = 20) -> tuple:
    user, item, held_out = [], [], {}
    for g, base in ((0, 0), (1, 5)):
        for k in range(per_group):
            u = g * per_group + k
            miss = base + k % 5
            held_out[u] = miss
            for i in range(base, base + 5):
                if i != miss:
                    user.append(u)
                    item.append(i)
    n_users = 2 * per_group + 1           # the last user has no pairs
    return Interactions.from_arrays(user=user, item=item, n_users=n_users, n_items=10), held_out


def test_spark_als_recovers_groups_and_is_deterministic(spark):
    train, held_out = _two_groups()
    users = np.arange(train.n_users)
    # reg=1.0, not the default 0.05: with rank 8 on a 10-item catalog a weak penalty lets ALS memorise each
    # user's zeros (margins of ~0.004 for some seeds); at 1.0 the held-out item wins by ~0.94 for every seed.
    params = dict(rank=8, max_iter=10, reg=1.0, alpha=20.0, seed=7)
    model = SparkALS(spark, **params).fit(train)
    assert model.name == "als"
    scores = model.score(users)
    _check_scores(scores, train.n_users, 10)
    for u, miss in held_out.items():
        other = list(range(5, 10)) if miss < 5 else list(range(0, 5))
        assert scores[u, miss] > scores[u, other].max(), (u, miss, scores[u])
    # The user without pairs: zero factors, ordered by the popularity tie-break only.
    assert np.abs(scores[-1]).max() <= 1e-6 + 1e-9
    np.testing.assert_allclose(scores[-1], model.pop_)

    again = SparkALS(spark, **params).fit(train)
    np.testing.assert_allclose(again.U_, model.U_, atol=1e-5)
    np.testing.assert_allclose(again.V_, model.V_, atol=1e-5)
    np.testing.assert_allclose(again.score(users), scores, atol=1e-4)


# ------------------------------------------------------------------ build

def test_build_by_name():
    assert isinstance(build("popular"), MostPopular) and build("popular").window_days is None
    recent = build("popular_recent")
    assert recent.window_days == 30 and recent.name == "popular_30d"
    assert build("popular_recent", window_days=7).name == "popular_7d"
    assert build("popular_14d").window_days == 14
    assert isinstance(build("buy_again", half_life_days=10), BuyAgain)
    ease = build("ease", l2=50.0)
    assert isinstance(ease, EASE) and ease.l2 == 50.0
    for model in (recent, ease, build("buy_again")):
        assert isinstance(model, Recommender)
    with pytest.raises(ValueError, match="SparkSession"):
        build("als")
    with pytest.raises(ValueError, match="unknown baseline"):
        build("random")


def test_build_als(spark):
    model = build("als", spark=spark, rank=4, max_iter=2)
    assert isinstance(model, SparkALS) and model.rank == 4 and isinstance(model, Recommender)
