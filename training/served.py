"""The served list, offline: what `reco score` would give each evaluated customer, built by the same code.

The two-tower's own ranking is not what customers see. ``reco score`` blends its personal candidates
with the customer's buy-again list, the trending and popular lists and new items (explore), re-ranks
for diversity (MMR) and applies the business rules (:func:`training.recommend.recommend`). This module
builds those inputs from the split the model was fitted on and calls that same function, so the
offline evaluation scores the list as served: the cost (or gain) of diversity, exploration and the
blend is measured, and the blend's weights can be chosen on validation like any other setting.

Inputs from the fitted split's pairs (``Interactions``: one row per (user, item) with its weight and
first and last time), as of the end of that split:

* ``popular:global``: items by summed pair weight over the last ``popular_window_days`` days;
* ``trending:global``: ``(short / short_days + prior) / (long / long_days + prior)`` over the last
  ``trending_short_days`` / ``trending_long_days`` days (prior 0.1, items with at least
  ``trending_min_events`` pairs in the short window), padded with the long window's popular list;
* ``buy_again``: the customer's own items by the tuned buy-again baseline's decayed frequency;
* new items (explore): first seen within ``new_item_days`` of the end with at most ``max_events`` pairs
  (an item without any pair is not new: the nightly knows no first sighting for it either).

These mirror ``features/lists.py`` (which computes them from events in Spark) on pairs instead of
events: a pair's weight stands for the events it sums, so counts can differ slightly from the
nightly's lists. The blend, diversity and rules are the production code itself. There are no
segments offline (every customer gets the global lists).
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field, replace
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from training import rules as rules_mod
from training.interactions import Interactions
from training.model import TwoTower
from training.recommend import Candidates, Ranked, ServingInputs, UserBatch, explore_k, candidates, recommend

log = logging.getLogger(__name__)

DAY = 86400.0
TRENDING_PRIOR = 0.1


@dataclass
class ServedSettings:
    """What ``reco score`` is configured with (``scoring:`` in conf/), plus the rules to apply."""
    k: int = 50
    fetch: int = 200
    weights: Dict[str, float] = field(default_factory=lambda: {
        "personal": 0.6, "buy_again": 0.2, "trending": 0.1, "popular": 0.05, "explore": 0.05})
    mmr_strength: float = 0.2
    exclude_bought: bool = False
    popular_window_days: int = 30
    trending_short_days: int = 7
    trending_long_days: int = 30
    trending_min_events: int = 3
    fallback_k: int = 200
    new_item_days: int = 14
    max_events: int = 5
    rules: rules_mod.Rules = field(default_factory=rules_mod.Rules)
    # settings tried on validation: each entry overrides ``weights`` and/or ``mmr_strength``
    search: List[Dict[str, object]] = field(default_factory=list)

    @classmethod
    def from_config(cls, scoring, search: Sequence[Mapping[str, object]] = (), rules=None) -> "ServedSettings":
        lists, explore = scoring.lists, scoring.explore
        return cls(k=scoring.k, fetch=scoring.fetch, weights=dict(scoring.weights),
                   mmr_strength=scoring.diversity.mmr_strength, exclude_bought=scoring.exclude_bought,
                   popular_window_days=lists.popular_window_days, trending_short_days=lists.trending_short_days,
                   trending_long_days=lists.trending_long_days, trending_min_events=lists.trending_min_events,
                   fallback_k=lists.fallback_k, new_item_days=explore.new_item_days, max_events=explore.max_events,
                   rules=rules if rules is not None else rules_mod.Rules(), search=[dict(s) for s in search])

    def candidates(self) -> List[Dict[str, object]]:
        """The (weights, mmr_strength) settings to try, the configured ones first."""
        base = {"weights": dict(self.weights), "mmr_strength": self.mmr_strength}
        out = [base]
        for entry in self.search:
            cand = {**base, **{k: (dict(v) if isinstance(v, Mapping) else v) for k, v in entry.items()}}
            if cand not in out:
                out.append(cand)
        return out


def _top(scores: np.ndarray, k: int, keep: Optional[np.ndarray] = None) -> Ranked:
    """The ``k`` best items with a positive score (ties: lower index), as (items, scores)."""
    ok = scores > 0 if keep is None else (scores > 0) & keep
    items = np.flatnonzero(ok)
    order = np.lexsort((items, -scores[items]))[:k]
    return items[order].astype(np.int64), scores[items[order]].astype(np.float32)


def _weight_since(fit: Interactions, end: float, days: int) -> np.ndarray:
    recent = fit.time > end - days * DAY
    return np.bincount(fit.item[recent], weights=fit.weight[recent].astype(np.float64), minlength=fit.n_items)


def global_lists(fit: Interactions, end: float, s: ServedSettings) -> Dict[str, Ranked]:
    """``popular:global`` and ``trending:global`` as of ``end`` (module docstring)."""
    popular = _top(_weight_since(fit, end, s.popular_window_days), s.fallback_k)
    short = _weight_since(fit, end, s.trending_short_days)
    long_ = _weight_since(fit, end, s.trending_long_days)
    recent = fit.time > end - s.trending_short_days * DAY
    enough = np.bincount(fit.item[recent], minlength=fit.n_items) >= s.trending_min_events
    rising = ((short / s.trending_short_days + TRENDING_PRIOR) / (long_ / s.trending_long_days + TRENDING_PRIOR))
    t_items, t_scores = _top(np.where(enough, rising, 0.0), s.fallback_k)
    if len(t_items) < s.fallback_k:     # padded with the long window's popular list, without a score
        pad_items, _ = _top(long_, s.fallback_k)
        pad = pad_items[~np.isin(pad_items, t_items)][: s.fallback_k - len(t_items)]
        t_items = np.concatenate([t_items, pad])
        t_scores = np.concatenate([t_scores, np.full(len(pad), np.nan, np.float32)])
    return {"popular:global": popular, "trending:global": (t_items, t_scores)}


def new_items(fit: Interactions, end: float, s: ServedSettings) -> np.ndarray:
    first = np.full(fit.n_items, np.inf)
    np.minimum.at(first, fit.item, fit.first_times)
    n = np.bincount(fit.item, weights=fit.counts.astype(np.float64), minlength=fit.n_items)
    return np.isfinite(first) & (first > end - s.new_item_days * DAY) & (n <= s.max_events)


def buy_again_lists(history: sp.csr_matrix, users: np.ndarray, k: int) -> List[Ranked]:
    """Each user's own items by the buy-again score (``training.baselines.BuyAgain.history_``), top k."""
    out = []
    for u in users:
        lo, hi = history.indptr[u], history.indptr[u + 1]
        items, scores = history.indices[lo:hi].astype(np.int64), history.data[lo:hi].astype(np.float32)
        order = np.lexsort((items, -scores))[:k]
        out.append((items[order], scores[order]))
    return out


@dataclass
class ServedLists:
    """Everything but the weights: built once per split, then :meth:`score_fn` per setting."""
    model: TwoTower
    inputs: ServingInputs
    history: np.ndarray           # [n_users, H] the evaluated users' state (EvalSet.history)
    feats: np.ndarray
    bought: sp.csr_matrix         # the fitted split's pairs (a user's bought items)
    buy_again: sp.csr_matrix      # BuyAgain.history_ (scores in [1, 2) on a user's own items)
    index_of: Dict[object, int]
    # a search scores several blend settings on the same blocks of users: with ``memo`` the model's
    # candidates of a block (key: users, explore k) and each setting's lists of a block are computed once
    memo: bool = False
    _cands: Dict[tuple, Candidates] = field(default_factory=dict, repr=False)
    _lists: Dict[tuple, List[np.ndarray]] = field(default_factory=dict, repr=False)

    def lists(self, users: np.ndarray, weights: Mapping[str, float], mmr_strength: float) -> List[np.ndarray]:
        """Each user's served list (item indices, best first) under these blend settings."""
        users = np.asarray(users, np.int64)
        setting = (tuple(sorted((str(k), float(v)) for k, v in weights.items())), float(mmr_strength))
        key = (users.tobytes(), setting)
        if key in self._lists:
            return self._lists[key]
        out = self._compute(users, weights, mmr_strength)
        if self.memo:
            self._lists[key] = out
        return out

    def keep_only(self, weights: Mapping[str, float], mmr_strength: float, candidates: bool = True) -> None:
        """Forget every cached list but this setting's (a search: the best so far), and the model's
        candidates unless ``candidates`` (more settings to score)."""
        setting = (tuple(sorted((str(k), float(v)) for k, v in weights.items())), float(mmr_strength))
        self._lists = {k: v for k, v in self._lists.items() if k[1] == setting}
        if not candidates:
            self._cands.clear()

    def _compute(self, users: np.ndarray, weights: Mapping[str, float], mmr_strength: float) -> List[np.ndarray]:
        inp = replace(self.inputs, weights=dict(weights), mmr_strength=float(mmr_strength))
        if "buy_again" not in inp.weights:
            ba = [(np.zeros(0, np.int64), np.zeros(0, np.float32))] * len(users)
        else:
            ba = buy_again_lists(self.buy_again, users, max(inp.k, 1))
        batch = UserBatch(users=users, history=self.history[users], feats=self.feats[users],
                          segments=[None] * len(users),
                          bought=[self.bought.indices[self.bought.indptr[u]:self.bought.indptr[u + 1]]
                                  for u in users], buy_again=ba)
        ckey = (users.tobytes(), explore_k(inp))
        cands = self._cands.get(ckey)
        if cands is None:
            cands = candidates(self.model, batch, inp)
            if self.memo:
                self._cands[ckey] = cands
        rec = recommend(self.model, batch, inp, cands)
        out, start = [], 0
        for _ in users:
            items = rec.items[start:start + inp.k]
            out.append(np.fromiter((self.index_of[i] for i in items), np.int64, len(items)))
            start += inp.k
        return out

    def score_fn(self, weights: Mapping[str, float], mmr_strength: float):
        """A ``training.metrics.evaluate`` scorer: position scores on each user's served list, ``-inf``
        elsewhere (an item the list does not hold is never ranked)."""
        n_items = len(self.inputs.item_ids)
        k = self.inputs.k

        def fn(users: np.ndarray) -> np.ndarray:
            out = np.full((len(users), n_items), -np.inf, np.float32)
            for row, items in enumerate(self.lists(np.asarray(users, np.int64), weights, mmr_strength)):
                out[row, items] = (k - np.arange(len(items))).astype(np.float32)
            return out
        return fn


def build_served(model: TwoTower, fit: Interactions, history: np.ndarray, feats: np.ndarray,
                 buy_again_history: sp.csr_matrix, item_ids: np.ndarray, categories: np.ndarray,
                 settings: ServedSettings, run_date: Optional[dt.date] = None) -> ServedLists:
    """The served lists' inputs as of the end of ``fit`` (``item_ids``/``categories`` by item index; the
    rules speak item ids)."""
    end = float(max(fit.time.max(), fit.first_times.max())) if len(fit) else 0.0
    model.eval()
    with torch.no_grad():
        vecs = model.all_item_vectors().numpy().astype(np.float32)
    n_items = fit.n_items
    pop_all = np.bincount(fit.item, weights=fit.weight.astype(np.float64), minlength=n_items)
    k = min(settings.k, n_items)
    inputs = ServingInputs(
        item_ids=item_ids, categories=categories, item_vecs=vecs, available=np.ones(n_items, bool),
        new_items=new_items(fit, end, settings), lists=global_lists(fit, end, settings), rules=settings.rules,
        run_date=run_date or dt.datetime.fromtimestamp(end, dt.timezone.utc).date(), k=k,
        fetch=min(max(settings.fetch, k), n_items), weights=dict(settings.weights),
        mmr_strength=settings.mmr_strength, exclude_bought=settings.exclude_bought,
        backfill=np.lexsort((np.arange(n_items), -pop_all)).astype(np.int64))
    index_of = {item_id: i for i, item_id in enumerate(item_ids.tolist())}
    return ServedLists(model=model, inputs=inputs, history=history, feats=feats, bought=fit.csr(),
                       buy_again=buy_again_history, index_of=index_of)


def catalog_arrays(catalog_frame, n_items: int):
    """(item_ids, categories) by item index from a ``training.data.Catalog`` frame; an index without a
    catalog row gets its index as id."""
    item_ids = np.array([f"#{i}" for i in range(n_items)], dtype=object)
    categories = np.full(n_items, "unknown", object)
    if catalog_frame is not None and len(catalog_frame):
        idx = catalog_frame["idx"].to_numpy(np.int64)
        ok = idx < n_items
        item_ids[idx[ok]] = catalog_frame["item_id"].astype(str).to_numpy()[ok]
        cats = catalog_frame["category"].where(catalog_frame["category"].notna(), "unknown")
        categories[idx[ok]] = cats.to_numpy()[ok]
    return item_ids, categories


__all__ = ["ServedSettings", "ServedLists", "build_served", "catalog_arrays", "global_lists", "new_items",
           "buy_again_lists"]
