"""Every user's served list: the two-tower's personal candidates blended with the customer's own
"buy again" list, their segment's trending and popular lists and new items (explore), re-ranked for
diversity (MMR over item vectors) and made to obey the business rules, at exactly the promised length.

Pure logic over numpy and torch; ``jobs/score.py`` runs :func:`recommend` per group of users inside
Spark (the :class:`ServingInputs` are broadcast). Items are catalog indices (``item_index.idx``)
until the rules step, which speaks item ids.

Per user, in order:

1. **Candidates.** ``personal``: the ``fetch`` best available items by the user's vector (from their
   history-pooled state: users with few events get personal lists without retraining);
   ``explore``: the best-scoring *new* items (first seen recently, few events: reachable only through
   their content embedding); ``buy_again``, ``trending``, ``popular``: the precomputed lists, the
   user's segment's when there is one, else the global ones.
2. **Blend** (:func:`training.rerank.blend`): slots per source in proportion to ``weights``.
3. **Diversity** (:func:`training.rerank.mmr`, ``mmr_strength``; 0 keeps the blend's order).
4. **Rules** (:func:`training.rules.apply_rules`): exclusions, segment includes, boosts, pins, the
   per-category cap, then back-fill from the segment's and the global popular lists, so every list
   has exactly ``k`` items. ``source`` says where each item came from: a blend source, ``pinned``
   or ``backfill``.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp
import torch

from training import rerank, rules as rules_mod, scoring
from training.index import make_index
from training.model import TwoTower

Ranked = Tuple[np.ndarray, np.ndarray]      # (item indices int64, scores float32), best first


@dataclass
class ServingInputs:
    """Everything :func:`recommend` needs besides the users: built once per run, broadcast."""
    item_ids: np.ndarray                    # object [I]: item_id of each index
    categories: np.ndarray                  # object [I]: category of each index ("unknown" when none)
    item_vecs: Optional[np.ndarray]         # float32 [I, d]: the champion's item vectors (None: no champion)
    available: np.ndarray                   # bool [I]: may be recommended at all
    new_items: np.ndarray                   # bool [I]: new (explore candidates)
    lists: Dict[str, Ranked]                # "popular:global", "popular:segment:<s>", "trending:global", ...
    rules: rules_mod.Rules
    run_date: dt.date
    k: int
    fetch: int
    weights: Dict[str, float]
    mmr_strength: float = 0.0
    exclude_bought: bool = False
    block_users: Optional[int] = None      # users per scoring block; None: sized for the device
    backfill: Optional[np.ndarray] = None   # int64: every available item, most popular first (last resort)
    index: str = "exact"                    # exact (blocked matmul, GPU when present) | faiss
    # the trending / popular weights of the lists for customers without their own (None: ``weights``); the
    # blend chosen on validation for known customers says nothing about them
    fallback_weights: Optional[Dict[str, float]] = None
    _category_of: Optional[Dict[str, str]] = field(default=None, repr=False)
    _segment_rules: Dict[Optional[str], rules_mod.SegmentRules] = field(default_factory=dict, repr=False)
    _fallbacks: Dict[Optional[str], List[List[str]]] = field(default_factory=dict, repr=False)

    @property
    def category_of(self) -> Dict[str, str]:
        if self._category_of is None:
            self._category_of = dict(zip(self.item_ids.tolist(), self.categories.tolist()))
        return self._category_of

    def segment_rules(self, segment: Optional[str]) -> rules_mod.SegmentRules:
        if segment not in self._segment_rules:
            self._segment_rules[segment] = self.rules.for_segment(segment, self.run_date)
        return self._segment_rules[segment]

    def fallbacks(self, segment: Optional[str]) -> List[List[str]]:
        """Back-fill pools for the rules, in order: the segment's popular list, the global one, then
        every available item by popularity."""
        if segment not in self._fallbacks:
            pools = [self.list_for("popular", segment)[0], self.list_for("popular", None)[0]]
            if self.backfill is not None:
                pools.append(self.backfill)
            self._fallbacks[segment] = [self.item_ids[p].tolist() for p in pools]
        return self._fallbacks[segment]

    def list_for(self, kind: str, segment: Optional[str]) -> Ranked:
        """The segment's ``kind`` list (popular, trending) when there is one, else the global one."""
        empty = (np.zeros(0, np.int64), np.zeros(0, np.float32))
        if segment is not None and f"{kind}:segment:{segment}" in self.lists:
            return self.lists[f"{kind}:segment:{segment}"]
        return self.lists.get(f"{kind}:global", empty)


@dataclass
class UserBatch:
    """A group of users to score: their model inputs and their own lists."""
    users: np.ndarray                       # int64 [U]: user indices
    history: np.ndarray                     # int64 [U, H]: item index + 1, 0-padded, most recent first
    feats: np.ndarray                       # float32 [U, F]
    segments: Sequence[Optional[str]]       # [U]: segment (e.g. country) or None
    bought: Sequence[np.ndarray]            # [U]: item indices the user interacted with
    buy_again: Sequence[Ranked]             # [U]: the user's buy-again list (may be empty)


@dataclass
class Recommendations:
    users: np.ndarray                       # int64 [U * k]
    rank: np.ndarray                        # int32, 1-based
    items: np.ndarray                       # object: item_id
    scores: np.ndarray                      # float32; nan for back-fill and pins without a score
    sources: np.ndarray                     # object
    personal_top: np.ndarray                # int64 [U, k]: the model's own top k (diversity before)


def user_vectors(model: TwoTower, batch: UserBatch, item_vecs: torch.Tensor, block: int = 4096) -> torch.Tensor:
    """The users' vectors as of the batch's state. A user whose state is empty (no events) or who is
    beyond the trained id table uses the out-of-vocabulary id row, as in training."""
    out = []
    model.eval()
    with torch.inference_mode():
        for s in range(0, len(batch.users), block):
            users = torch.as_tensor(batch.users[s:s + block])
            feats = torch.as_tensor(batch.feats[s:s + block])
            cold = feats[:, -1] == 0
            users = torch.where(cold, torch.full_like(users, model.cfg.n_users), users)
            out.append(model.user_vectors(users, torch.as_tensor(batch.history[s:s + block]), feats,
                                          item_vecs=item_vecs))
    return torch.cat(out) if out else torch.zeros(0, item_vecs.shape[1])


def _bought_matrix(bought: Sequence[np.ndarray], n_items: int) -> sp.csr_matrix:
    indptr = np.cumsum([0] + [len(b) for b in bought])
    idx = np.concatenate(bought).astype(np.int64) if len(bought) else np.zeros(0, np.int64)
    return sp.csr_matrix((np.ones(len(idx), np.float32), idx, indptr), shape=(len(bought), n_items))


def explore_k(inp: ServingInputs) -> int:
    w = inp.weights.get("explore", 0.0)
    return 0 if w <= 0 else max(1, math.ceil(inp.k * w / sum(inp.weights.values()))) * 2


@dataclass
class Candidates:
    """The model's candidates for a batch of users: ``personal`` (the ``fetch`` best available items,
    [U, fetch]) and ``explore`` (the best new items, [U, explore k]; None when the blend has no explore
    slot). They depend on the model, the users and ``fetch``/``exclude_bought``/the explore share, not on
    the blend's weights otherwise: a search over blend settings computes them once
    (``training.served``)."""
    personal: Ranked
    explore: Optional[Ranked]


def candidates(model: Optional[TwoTower], batch: UserBatch, inp: ServingInputs) -> Candidates:
    """Step 1 of the module docstring for the model's sources (``personal``, ``explore``)."""
    n = len(batch.users)
    if model is None:
        return Candidates((np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)), None)
    item_vecs_t = torch.as_tensor(inp.item_vecs)
    uv = user_vectors(model, batch, item_vecs_t, inp.block_users or 4096)
    bought = _bought_matrix(batch.bought, len(inp.item_ids))
    top_k = make_index(inp.index)
    personal = top_k(uv, item_vecs_t, inp.fetch, exclude=bought if inp.exclude_bought else None,
                     block_users=inp.block_users, item_mask=inp.available)
    ek = explore_k(inp)
    explore_mask = inp.available & inp.new_items
    explore = None
    if ek and explore_mask.any():
        explore = scoring.top_k(uv, item_vecs_t, ek, block_users=inp.block_users, item_mask=explore_mask)
    return Candidates(personal, explore)


def recommend(model: Optional[TwoTower], batch: UserBatch, inp: ServingInputs,
              cands: Optional[Candidates] = None) -> Recommendations:
    """The served list of every user of ``batch`` (see the module docstring). Without a model (no
    champion yet) the lists are built from the other sources only. ``cands``: the model's candidates when
    already computed for these users and settings (:func:`candidates`)."""
    k = inp.k
    if cands is None:
        cands = candidates(model, batch, inp)
    p_items, p_scores = cands.personal
    e_items, e_scores = cands.explore if cands.explore is not None else (None, None)

    out_users, out_rank, out_items, out_scores, out_sources = [], [], [], [], []
    for row, user in enumerate(batch.users):
        seg = batch.segments[row]
        sources = {"personal": (p_items[row], p_scores[row])}
        ba_items, ba_scores = batch.buy_again[row]
        keep = inp.available[ba_items] if len(ba_items) else np.zeros(0, bool)
        sources["buy_again"] = (ba_items[keep], ba_scores[keep])
        sources["trending"] = inp.list_for("trending", seg)
        sources["popular"] = inp.list_for("popular", seg)
        if e_items is not None:
            sources["explore"] = (e_items[row], e_scores[row])
        sources = {name: lst for name, lst in sources.items() if name in inp.weights}
        # blend twice k: room for the rules to drop items before back-filling
        items, scores, names = rerank.blend(sources, inp.weights, 2 * k)
        if inp.mmr_strength > 0 and len(items) > 1 and inp.item_vecs is not None:
            order = rerank.mmr(items, inp.item_vecs, scores, len(items), inp.mmr_strength)
            by_item = dict(zip(items.tolist(), names.tolist()))
            items = order
            names = np.array([by_item[i] for i in order.tolist()], dtype=object)
            scores = ((len(items) - np.arange(len(items))) / len(items)).astype(np.float32)
        source_of = dict(zip(inp.item_ids[items].tolist(), names.tolist()))
        final, final_scores, tags = rules_mod.apply_rules(
            inp.item_ids[items].tolist(), scores.tolist(), inp.category_of, inp.segment_rules(seg), k,
            inp.fallbacks(seg))
        out_users.append(np.full(len(final), user, np.int64))
        out_rank.append(np.arange(1, len(final) + 1, dtype=np.int32))
        out_items.extend(final)
        out_scores.append(np.asarray(final_scores, np.float32))
        out_sources.extend(source_of[it] if tag == "model" else tag for it, tag in zip(final, tags))
    n = len(batch.users)
    return Recommendations(
        users=np.concatenate(out_users) if n else np.zeros(0, np.int64),
        rank=np.concatenate(out_rank) if n else np.zeros(0, np.int32),
        items=np.asarray(out_items, dtype=object), scores=np.concatenate(out_scores) if n else np.zeros(0, np.float32),
        sources=np.asarray(out_sources, dtype=object), personal_top=p_items[:, :k])


def fallback_list(inp: ServingInputs, segment: Optional[str]) -> Tuple[List[str], List[float], List[str]]:
    """The list served to users without a list of their own (unknown or new customers): the segment's
    (else the global) trending and popular lists blended with their ``weights`` (popular alone when both
    are 0), under the segment's rules, exactly ``inp.k`` long."""
    weights = inp.fallback_weights if inp.fallback_weights is not None else inp.weights
    w = {n: weights.get(n, 0.0) for n in ("popular", "trending")}
    if sum(w.values()) <= 0:
        w = {"popular": 1.0, "trending": 0.0}
    items, scores, names = rerank.blend({n: inp.list_for(n, segment) for n in w}, w, 2 * inp.k)
    source_of = dict(zip(inp.item_ids[items].tolist(), names.tolist()))
    final, final_scores, tags = rules_mod.apply_rules(
        inp.item_ids[items].tolist(), scores.tolist(), inp.category_of, inp.segment_rules(segment), inp.k,
        inp.fallbacks(segment))
    return final, final_scores, [source_of[i] if t == "model" else t for i, t in zip(final, tags)]


def similar_lists(inp: ServingInputs, neighbours: np.ndarray, scores: np.ndarray, from_co: np.ndarray,
                  k: int) -> Tuple[List[str], List[List[str]], List[List[float]], List[List[str]]]:
    """Every item's similar-items list under the rules' exclusions (all segments; boosts and pins are for
    user lists and do not apply), back-filled from the popular lists to exactly ``k`` (never the item
    itself). Returns ``(item_ids, lists, scores, sources)``."""
    base = inp.segment_rules(None)
    base = rules_mod.SegmentRules(banned_items=base.banned_items, allowed_categories=base.allowed_categories,
                                  banned_categories=base.banned_categories, max_per_category=base.max_per_category,
                                  segment=None, source=base.source)
    pools = inp.fallbacks(None)
    out_ids, out_lists, out_scores, out_sources = [], [], [], []
    for i in range(len(inp.item_ids)):
        ok = neighbours[i] >= 0
        ids = inp.item_ids[neighbours[i][ok]].tolist()
        sc = [1.0 if not math.isfinite(x) else float(x) for x in scores[i][ok]]   # co-purchase fill: no score
        src = dict(zip(ids, np.where(from_co[i][ok], "co_purchase", "embedding").tolist()))
        me = str(inp.item_ids[i])
        seg = rules_mod.SegmentRules(banned_items=base.banned_items | {me}, allowed_categories=base.allowed_categories,
                                     banned_categories=base.banned_categories, max_per_category=base.max_per_category,
                                     segment=None, source=base.source)
        final, fs, tags = rules_mod.apply_rules(ids, sc, inp.category_of, seg, k, pools)
        out_ids.append(me)
        out_lists.append(final)
        out_scores.append(fs)
        out_sources.append([src[x] if t == "model" else t for x, t in zip(final, tags)])
    return out_ids, out_lists, out_scores, out_sources


def similar_items(item_vecs: Optional[np.ndarray], k: int, available: np.ndarray,
                  co_purchase: Mapping[int, Sequence[int]], block: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every item's k most similar available items by item vector (itself excluded); where fewer than k
    exist, co-purchase neighbours (``co_purchase``: item -> neighbour indices, best first) fill in
    (without item vectors: co-purchase neighbours only).
    Returns ``(neighbours int64 [I, k], scores float32 [I, k], from_co_purchase bool [I, k])``; -1 pads."""
    n = len(available)
    if item_vecs is None:
        nb, sc = np.full((n, k), -1, np.int64), np.full((n, k), -np.inf, np.float32)
    else:
        self_mask = sp.identity(n, dtype=np.float32, format="csr")
        nb, sc = scoring.top_k(item_vecs, item_vecs, k, exclude=self_mask, block_users=block, device="cpu",
                               item_mask=available)
    if nb.shape[1] < k:
        pad = k - nb.shape[1]
        nb = np.hstack([nb, np.full((n, pad), -1, np.int64)])
        sc = np.hstack([sc, np.full((n, pad), -np.inf, np.float32)])
    co = np.zeros(nb.shape, bool)
    for i in np.flatnonzero((nb < 0).any(axis=1)):
        have = set(nb[i][nb[i] >= 0].tolist())
        slot = int((nb[i] >= 0).sum())
        for j in co_purchase.get(int(i), ()):
            if slot >= k:
                break
            if j != i and j not in have and available[j]:
                nb[i, slot], sc[i, slot], co[i, slot] = j, np.nan, True
                have.add(j)
                slot += 1
    return nb, sc, co


def diversity_report(personal: Sequence[np.ndarray], final: Sequence[np.ndarray], item_vecs: np.ndarray,
                     categories: np.ndarray, n_items: int) -> Dict[str, float]:
    """Intra-list diversity, category diversity and coverage of the model's own top k ("before") and
    of the served lists ("after")."""
    cats = np.unique(categories.astype(str), return_inverse=True)[1]
    out = {}
    for name, lists in (("before", personal), ("after", final)):
        out[f"intra_list_diversity_{name}"] = rerank.intra_list_diversity(lists, item_vecs)
        out[f"category_diversity_{name}"] = rerank.category_diversity(lists, cats)
        out[f"coverage_{name}"] = rerank.coverage(lists, n_items)
    return out
