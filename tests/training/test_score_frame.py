"""What `reco score` runs in every Spark task (training/score_frame.py), without Spark: frames in, each
customer's served list out, with known answers."""
from __future__ import annotations

import numpy as np
import pandas as pd

from training.score_frame import COLUMNS, score_frame
from tests.training.test_recommend import _inputs

AT = 1_700_000_000.0
PAIRS = pd.DataFrame({"user": [0, 0, 1], "item": [0, 1, 2], "weight": [1.0, 1.0, 1.0],
                      "time": [AT - 86400, AT - 3600, AT - 7200], "count": [1, 1, 1],
                      "first_time": [AT - 86400, AT - 3600, AT - 7200], "segment": [None, None, "DE"]})
BUY_AGAIN = pd.DataFrame({"user": [0, 0], "item": [0, 1], "rank": [2, 1], "score": [1.0, 2.0]})


def _lists(out: pd.DataFrame, kind: str = "final"):
    rows = out[out["kind"] == kind].sort_values(["user", "rank"])
    return {int(u): list(zip(g["item_id"], g["source"])) for u, g in rows.groupby("user")}


def test_without_a_model_each_customer_gets_their_blend_and_back_fill():
    out = score_frame(None, _inputs(None), AT, PAIRS, BUY_AGAIN)
    assert tuple(out.columns) == COLUMNS
    # user 0: buy-again (its rank order: I1 then I0) and trending (I4, I3) share the slots 1:1, the first
    # source named in the weights first on a tie; user 1 (segment DE, nothing to buy again): trending, then
    # DE's popular list (weight 0: after every weighted source; I3 is there already, so I2), then the rules'
    # back-fill from the global popular list (I0)
    assert _lists(out) == {0: [("I1", "buy_again"), ("I4", "trending"), ("I0", "buy_again"), ("I3", "trending")],
                           1: [("I4", "trending"), ("I3", "trending"), ("I2", "popular"), ("I0", "backfill")]}
    assert (out["kind"] == "personal").sum() == 0          # no model, no model-only list


def test_no_pairs_is_no_rows():
    out = score_frame(None, _inputs(None), AT, PAIRS.iloc[:0], BUY_AGAIN.iloc[:0])
    assert out.empty and tuple(out.columns) == COLUMNS


def test_with_a_model_the_models_own_top_k_rides_along_unscored():
    import torch

    from tests.training.test_model import _cfg, _meta
    from training.model import TwoTower
    torch.manual_seed(0)
    model = TwoTower(_cfg(n_items=6), _meta(6))
    model.eval()
    inp = _inputs(model)
    out = score_frame(model, inp, AT, PAIRS, BUY_AGAIN)
    for kind in ("final", "personal"):
        lists = _lists(out, kind)
        assert sorted(lists) == [0, 1] and all(len(v) == inp.k for v in lists.values())
    personal = out[out["kind"] == "personal"]
    assert personal["score"].isna().all() and set(personal["source"]) == {"model_only"}
    assert "I5" not in set(out["item_id"])                  # not available: never listed
