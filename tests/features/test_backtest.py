"""backtest_metrics: hit, precision, recall and ndcg of served lists, against hand-computed answers."""
from math import log2

import pytest

from features.backtest import backtest_metrics, same_list_for_all
from tests.compare import assert_rows

GROUPS = {"purchase": ["purchase"], "any": ["purchase", "cart", "view"]}
KS = [2, 3]

LISTS = [  # (user, rank, item, source)
    ("u1", 1, "a", "personal"), ("u1", 2, "b", "buy_again"), ("u1", 3, "c", "popular"),
    ("u2", 1, "d", "personal"), ("u2", 2, "e", "trending"), ("u2", 3, "f", "personal"),
    ("u3", 1, "a", "personal"), ("u3", 2, "g", "explore"), ("u3", 3, "h", "backfill"),
    ("u4", 1, "a", "personal"), ("u4", 2, "b", "buy_again"), ("u4", 3, "c", "popular"),
]
ACTIONS = [  # (user, item, event_type)
    ("u1", "b", "purchase"),    # u1 bought b (rank 2) ...
    ("u1", "x", "purchase"),    # ... and x, which is not in the list: purchase R = {b, x}
    ("u1", "a", "view"),        # a view of a (rank 1): counts in "any" only -> any R = {a, b, x}
    ("u2", "f", "purchase"),    # u2 bought f (rank 3) ...
    ("u2", "f", "purchase"),    # ... twice: one relevant item, R = {f}
    ("u3", "h", "cart"),        # u3 only carted h (rank 3): counted in "any", not in "purchase"
    ("u5", "a", "purchase"),    # u5 was not served a list: acting, never counted
    (None, "d", "purchase"),    # anonymous: nothing (else u2's d, rank 1, would look like a hit)
    ("u2", "e", "rating"),      # a type of no group: nothing
]                               # u4 was served and did nothing: not counted

G1 = 1 / log2(3)        # the gain of a hit at rank 2
G2 = 1 / log2(4)        # ... at rank 3 (0.5); a hit at rank 1 gains 1


def shares(metrics: dict) -> dict:
    """Pop the hit_share@K entries of ``metrics`` (the rest are numbers) as {K: shares}."""
    return {int(k.split("@")[1]): metrics.pop(k) for k in [k for k in metrics if k.startswith("hit_share@")]}


def frames(spark):
    lists = spark.createDataFrame(LISTS, "user_id string, rank int, item_id string, source string")
    actions = spark.createDataFrame(ACTIONS, "user_id string, item_id string, event_type string")
    return lists, actions


# The answer, by hand.
# purchase: u1 (R = {b, x}, b at rank 2) and u2 (R = {f}, f at rank 3) are counted
#   u1: @2 and @3: one hit, ndcg = G1 / (1 + G1) (IDCG of min(|R|, k) = 2 hits)
#   u2: @2 nothing; @3 one hit, precision 1/3, recall 1, ndcg = G2 / 1
# any: u1 (R = {a, b, x}: a at 1, b at 2), u2 (R = {f}: rank 3), u3 (R = {h}: rank 3)
#   u1: @2 two hits, ndcg (1 + G1) / (1 + G1) = 1; @3 two hits, ndcg (1 + G1) / (1 + G1 + G2)
#   hits by source: @2 a (personal) and b (buy_again); @3 also f (personal) and h (backfill)
U1_NDCG = G1 / (1 + G1)
EXPECTED = {
    "purchase": {
        "users_served": 4, "users_acting": 3, "users_active": 2,
        "hits@2": 1, "hit@2": (1 + 0) / 2, "precision@2": (1 / 2 + 0) / 2, "recall@2": (1 / 2 + 0) / 2,
        "ndcg@2": (U1_NDCG + 0) / 2,
        "hits@3": 2, "hit@3": (1 + 1) / 2, "precision@3": (1 / 3 + 1 / 3) / 2, "recall@3": (1 / 2 + 1) / 2,
        "ndcg@3": (U1_NDCG + G2) / 2,
    },
    "any": {
        "users_served": 4, "users_acting": 4, "users_active": 3,
        "hits@2": 2, "hit@2": (1 + 0 + 0) / 3, "precision@2": (2 / 2 + 0 + 0) / 3,
        "recall@2": (2 / 3 + 0 + 0) / 3, "ndcg@2": (1 + 0 + 0) / 3,
        "hits@3": 4, "hit@3": (1 + 1 + 1) / 3, "precision@3": (2 / 3 + 1 / 3 + 1 / 3) / 3,
        "recall@3": (2 / 3 + 1 + 1) / 3, "ndcg@3": ((1 + G1) / (1 + G1 + G2) + G2 + G2) / 3,
    },
}
EXPECTED_SHARES = {"purchase": {2: {"buy_again": 1.0}, 3: {"buy_again": 0.5, "personal": 0.5}},
                   "any": {2: {"buy_again": 0.5, "personal": 0.5},
                           3: {"backfill": 0.25, "buy_again": 0.25, "personal": 0.5}}}


def assert_known_answer(got: dict) -> None:
    """``got`` (backtest_metrics of LISTS and ACTIONS, GROUPS, KS) is the answer above."""
    assert sorted(got) == sorted(EXPECTED)
    for group, want in EXPECTED.items():
        metrics = dict(got[group])
        assert shares(metrics) == EXPECTED_SHARES[group], group
        assert metrics == pytest.approx(want), group


def test_known_answer_for_three_users_and_two_cut_offs(spark):
    assert_known_answer(backtest_metrics(*frames(spark), GROUPS, KS))


def test_a_group_nobody_acted_in_is_undefined_not_zero(spark):
    got = backtest_metrics(*frames(spark), {"rating_only": ["rating"]}, [2])
    assert got["rating_only"]["users_active"] == 1          # u2 rated e, which is in u2's list at rank 2
    assert got["rating_only"]["hit@2"] == 1.0
    lists, actions = frames(spark)
    got = backtest_metrics(lists, actions.filter("event_type = 'view'"), {"purchase": ["purchase"]}, [2])
    m = got["purchase"]
    assert (m["users_served"], m["users_acting"], m["users_active"], m["hits@2"]) == (4, 0, 0, 0)
    assert m["hit@2"] is None and m["ndcg@2"] is None and m["hit_share@2"] == {}


def test_only_the_first_k_positions_count(spark):
    lists, actions = frames(spark)
    # u2's hit is at rank 3: with k = 2 alone (so the lists are cut at 2) u2 is counted without a hit
    got = backtest_metrics(lists, actions, {"purchase": ["purchase"]}, [2])["purchase"]
    assert got["users_active"] == 2 and got["hits@2"] == 1 and got["recall@2"] == pytest.approx(0.25)


@pytest.mark.parametrize("groups, ks", [({}, [10]), ({"purchase": []}, [10]), (GROUPS, []), (GROUPS, [0])])
def test_bad_groups_or_cut_offs_are_refused(spark, groups, ks):
    with pytest.raises(ValueError):
        backtest_metrics(*frames(spark), groups, ks)


def test_same_list_for_all_gives_every_user_the_head_of_one_list(spark):
    users = spark.createDataFrame([("u1",), ("u2",), ("u2",)], "user_id string")
    ranked = spark.createDataFrame([(1, "p"), (2, "q"), (3, "r")], "rank int, item_id string")
    assert_rows(same_list_for_all(users, ranked, "popular", 2),
                [("u1", 1, "p", "popular"), ("u1", 2, "q", "popular"),
                 ("u2", 1, "p", "popular"), ("u2", 2, "q", "popular")],
                ["user_id", "rank", "item_id", "source"])
