"""One group of customers' served lists, from plain frames to plain frames: what ``reco score`` runs in
every Spark task (``jobs/score.py`` cogroups each user bucket's pairs with its buy-again rows and hands
them here), and what its tests run without Spark.

Input frames:

* ``pairs``: one row per (user, item) the customer interacted with, as of the scoring date: ``user``
  (index), ``item`` (index), ``weight``, ``time``, ``count``, ``first_time`` (epoch seconds) and
  ``segment`` (the customer's segment, or null);
* ``buy_again``: the customers' precomputed buy-again lists: ``user``, ``item``, ``rank``, ``score``.

Output: rows of ``kind, user, rank, item_id, score, source``: ``kind = final`` for the served list (the
blend, diversity and rules of :func:`training.recommend.recommend`), ``kind = personal`` for the
model's own top k before blending (diversity reports), without a score.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from training.featurize import user_states
from training.interactions import Interactions
from training.model import TwoTower
from training.recommend import ServingInputs, UserBatch, recommend

COLUMNS = ("kind", "user", "rank", "item_id", "score", "source")
NONE = (np.zeros(0, np.int64), np.zeros(0, np.float32))


def score_frame(model: Optional[TwoTower], inp: ServingInputs, at: float, pairs: pd.DataFrame,
                buy_again: pd.DataFrame) -> pd.DataFrame:
    """The served and the model's own lists of every user in ``pairs`` (module docstring), their state
    taken as of ``at`` (epoch seconds)."""
    empty = pd.DataFrame({c: [] for c in COLUMNS})
    if pairs.empty:
        return empty
    pairs = pairs.sort_values(["user", "item", "time"], kind="stable")
    inter = Interactions.from_arrays(pairs["user"].to_numpy(np.int64), pairs["item"].to_numpy(np.int64),
                                     int(pairs["user"].max()) + 1, len(inp.item_ids),
                                     weight=pairs["weight"].to_numpy(), time=pairs["time"].to_numpy(),
                                     count=pairs["count"].to_numpy(), first_time=pairs["first_time"].to_numpy())
    users, hist, feats = user_states(inter, at, model.cfg.history_len if model is not None else 1)
    if len(users) == 0:
        return empty
    seg = pairs.groupby("user")["segment"].first()
    bought = pairs.groupby("user")["item"].unique()
    ba_by = {}
    for u, g in (buy_again.groupby("user") if not buy_again.empty else ()):
        g = g.sort_values("rank")
        ba_by[int(u)] = (g["item"].to_numpy(np.int64), g["score"].to_numpy(np.float32))
    segs = [None if pd.isna(seg.get(u)) else str(seg.get(u)) for u in users]
    batch = UserBatch(users=users, history=hist, feats=feats, segments=segs,
                      bought=[np.asarray(bought[u], np.int64) for u in users],
                      buy_again=[ba_by.get(int(u), NONE) for u in users])
    r = recommend(model, batch, inp)
    final = pd.DataFrame({"kind": "final", "user": r.users, "rank": r.rank, "item_id": r.items,
                          "score": r.scores, "source": r.sources})
    top = r.personal_top
    k = top.shape[1]
    personal = pd.DataFrame({"kind": "personal", "user": np.repeat(users, k),
                             "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), len(users)),
                             "item_id": np.where(top.ravel() >= 0, inp.item_ids[np.maximum(top.ravel(), 0)], None),
                             "score": np.full(len(users) * k, np.nan, np.float32), "source": "model_only"})
    personal = personal[personal["item_id"].notna()]
    return pd.concat([final, personal], ignore_index=True) if len(personal) else final


__all__ = ["COLUMNS", "score_frame"]
