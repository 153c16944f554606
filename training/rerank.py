"""Per-user list assembly: blend candidate sources, re-rank for diversity, cap categories (numpy only).

A candidate list is ``(items int64 [n], scores float32 [n])`` from one source. The sources of the
reference design are ``personal`` (the model), ``buy_again`` (the customer's own history),
``trending``, ``popular`` and ``explore`` (new items without interactions yet); any name works.
Item ids are catalog indices (``item_vecs`` rows, ``categories`` entries).

``blend`` merges the sources into one list, ``mmr`` re-orders it for diversity, ``category_cap``
limits items per category; the metrics at the bottom measure what that did across many lists.
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

SOURCES = ("personal", "buy_again", "trending", "popular", "explore")

Candidates = Tuple[np.ndarray, np.ndarray]


def _ranked(items, scores) -> np.ndarray:
    """The source's items by its own score descending, ties by lower item id; padding (item < 0 or a
    non-finite score) dropped; an item listed twice kept at its best place."""
    items = np.asarray(items, dtype=np.int64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if items.shape != scores.shape:
        raise ValueError(f"items ({items.size}) and scores ({scores.size}) must have the same length")
    ok = (items >= 0) & np.isfinite(scores)
    items, scores = items[ok], scores[ok]
    items = items[np.lexsort((items, -scores))]
    _, first = np.unique(items, return_index=True)
    return items[np.sort(first)]


def _quotas(weights: Mapping[str, float], k: int) -> Dict[str, int]:
    """Largest-remainder split of k slots in proportion to the weights (ties: key order)."""
    total = sum(weights.values())
    # rounded so that float noise (10 * 0.3 = 3.0000000000000004) does not decide a slot
    exact = {name: round(k * w / total, 9) for name, w in weights.items()}
    quota = {name: int(math.floor(x)) for name, x in exact.items()}
    left = k - sum(quota.values())
    names = list(weights)
    by_remainder = sorted(names, key=lambda n: (-(exact[n] - quota[n]), names.index(n)))
    for name in by_remainder[:left]:
        quota[name] += 1
    return quota


def blend(sources: Mapping[str, Candidates], weights: Mapping[str, float],
          k: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge per-source candidate lists into one list of at most k items, deterministically.

    The rule, step by step (the *priority* order is the order of the ``weights`` keys):

    1. Each source's list is ranked by its own score (descending, ties by lower item id); padding
       (item ``< 0`` or a non-finite score, e.g. from :func:`training.scoring.top_k`) is dropped.
    2. Quotas: source ``s`` gets ``k * w_s / sum(w)`` slots, rounded by largest remainder (the
       leftover slots go to the largest fractional parts, ties by priority).
    3. Selection, in priority order: each source takes its top items, up to its quota, skipping
       items a higher-priority source already took.
    4. Spill-over: slots a source could not fill go to the sources in weight order (highest weight
       first, ties by priority), each taking its next untaken items until k are taken or every
       source is exhausted. A weight of 0 therefore means "back-fill only".
    5. Order: source ``s``'s ``j``-th taken item (0-based, in its own rank order) gets the merged
       rank ``(j + 0.5) / w_s``; the list is sorted by merged rank, ties by priority. That is a smooth
       weighted round robin: a source with twice the weight shows up twice as often near the top,
       whatever it took through spill-over, so the heaviest source opens the list and spill-over
       items land after the weighted ones. Items of a weight-0 source (back-fill only) come after
       every weighted item, in their own order.
       (Until 2026-12 the rank was ``(j + 0.5) / n_s``, by the count taken: a source that spilled
       into empty slots was spread over the whole list and pushed a heavier source's best items
       down; scored as served, a buy-again-first blend then lost to buy-again alone.)

    Example: weights ``{"personal": 0.6, "buy_again": 0.3, "trending": 0.1}``, k = 10 -> quotas
    6, 3, 1 -> sources ``P B P P B T P P B P``.

    Args:
        sources: name -> ``(items, scores)``; a name in ``weights`` but not here is an empty source.
        weights: name -> weight ``>= 0`` (not all 0); the key order is the priority order.
        k: slots to fill.

    Returns:
        ``(items int64, scores float32, source_names str)``, at most k long: shorter only when all
        sources together hold fewer than k distinct items (the caller back-fills, see
        :func:`training.rules.apply_rules`). ``scores`` is the merged rank as a score,
        ``(n - position) / n`` for positions ``0..n-1``: strictly decreasing, on one scale for every
        source (the sources' own scores are not comparable), so later boosts act evenly.
    """
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not weights:
        raise ValueError("weights is empty; give at least one source a weight > 0")
    unknown = [name for name in sources if name not in weights]
    if unknown:
        raise ValueError(f"sources {unknown} have no weight; add them to weights (0 = back-fill only) "
                         f"or drop them. Weighted sources: {list(weights)}")
    for name, w in weights.items():
        if not (isinstance(w, (int, float, np.floating, np.integer)) and math.isfinite(w) and w >= 0):
            raise ValueError(f"weight of source {name!r} is {w!r}; weights must be finite numbers >= 0")
    if sum(weights.values()) <= 0:
        raise ValueError(f"all weights are 0 ({dict(weights)}); give at least one source a weight > 0")

    names = list(weights)
    ranked = {n: (_ranked(*sources[n]) if n in sources else np.zeros(0, np.int64)) for n in names}
    quota = _quotas(weights, k)
    taken: Dict[str, List[int]] = {n: [] for n in names}
    cursor = {n: 0 for n in names}
    used: set = set()

    def take(name: str, limit: int) -> None:
        lst, got = ranked[name], 0
        while got < limit and cursor[name] < lst.size:
            item = int(lst[cursor[name]])
            cursor[name] += 1
            if item not in used:
                used.add(item)
                taken[name].append(item)
                got += 1

    for name in names:
        take(name, quota[name])
    for name in sorted(names, key=lambda n: (-weights[n], names.index(n))):
        take(name, k - len(used))

    keyed = [(((j + 0.5) / weights[n], 0.0) if weights[n] > 0 else (math.inf, float(j)), p, n, item)
             for p, n in enumerate(names) for j, item in enumerate(taken[n])]
    keyed.sort(key=lambda t: (t[0], t[1]))
    n = len(keyed)
    items = np.array([t[3] for t in keyed], dtype=np.int64)
    scores = ((n - np.arange(n)) / max(n, 1)).astype(np.float32)
    source_names = np.array([t[2] for t in keyed], dtype=str)
    return items, scores, source_names


def _unit_rows(item_vecs: np.ndarray) -> np.ndarray:
    v = np.asarray(item_vecs, dtype=np.float64)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norm, out=np.zeros_like(v), where=norm > 0)


def _check_items(items: np.ndarray, n_items: int, what: str) -> None:
    if items.size and (items.min() < 0 or items.max() >= n_items):
        raise ValueError(f"{what}: item ids must be in 0..{n_items - 1}; drop padding (-1) first")


def mmr(items, item_vecs: np.ndarray, relevance, k: int, strength: float) -> np.ndarray:
    """Maximal marginal relevance: the first ``min(k, n)`` of ``items``, re-ordered for diversity.

    Greedy: each step picks the unselected item with the highest
    ``(1 - strength) * rel_norm_i - strength * max_sim(i, selected)`` (ties by input position),
    where ``rel_norm`` is ``relevance`` scaled to [0, 1] within the list (all 1 when all equal) and
    ``max_sim`` is the largest cosine similarity to an already selected item (0 before the first
    pick). ``strength = 0`` returns the items by relevance (the input order when it is sorted);
    higher strength pushes near-duplicates apart. ``item_vecs`` rows are normalised here.

    Returns:
        int64 item ids.
    """
    items = np.asarray(items, dtype=np.int64).ravel()
    rel = np.asarray(relevance, dtype=np.float64).ravel()
    if items.shape != rel.shape:
        raise ValueError(f"items ({items.size}) and relevance ({rel.size}) must have the same length")
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if not np.isfinite(rel).all():
        raise ValueError("relevance holds NaN or inf; drop padded candidates first")
    _check_items(items, len(item_vecs), "mmr")
    n_out = min(int(k), items.size)
    if n_out <= 0:
        return np.zeros(0, dtype=np.int64)
    span = rel.max() - rel.min()
    rel_norm = (rel - rel.min()) / span if span > 0 else np.ones_like(rel)
    vecs = _unit_rows(np.asarray(item_vecs)[items])
    s = float(strength)
    max_sim = np.zeros(items.size)  # 0 before the first pick
    free = np.ones(items.size, dtype=bool)
    picked: List[int] = []
    for step in range(n_out):
        gain = (1.0 - s) * rel_norm - s * max_sim
        gain[~free] = -np.inf
        best = int(np.argmax(gain))  # argmax returns the first of equal values: input order
        picked.append(best)
        free[best] = False
        sim = vecs @ vecs[best]
        max_sim = sim if step == 0 else np.maximum(max_sim, sim)
    return items[picked]


def category_cap(items, categories: np.ndarray, max_per_category: int, k: int) -> np.ndarray:
    """At most ``max_per_category`` items of any category, first k kept, order kept.

    Greedy in list order: an item whose category is already full is skipped. When fewer than k
    items survive the list is shorter than k; the caller back-fills (e.g. with
    :func:`training.rules.apply_rules`' fallbacks). ``categories[item]`` is the item's category.
    """
    items = np.asarray(items, dtype=np.int64).ravel()
    if int(max_per_category) < 1:
        raise ValueError(f"max_per_category must be >= 1, got {max_per_category}")
    _check_items(items, len(categories), "category_cap")
    counts: Dict[object, int] = {}
    kept: List[int] = []
    for item in items.tolist():
        if len(kept) >= int(k):
            break
        cat = categories[item]
        if counts.get(cat, 0) < int(max_per_category):
            counts[cat] = counts.get(cat, 0) + 1
            kept.append(item)
    return np.array(kept, dtype=np.int64)


# ------------------------------------------------------------------------------------------ metrics

def _valid(lst) -> np.ndarray:
    lst = np.asarray(lst, dtype=np.int64).ravel()
    return lst[lst >= 0]


def intra_list_diversity(lists: Sequence[np.ndarray], item_vecs: np.ndarray) -> float:
    """Mean over lists of the mean pairwise ``1 - cosine`` of the list's items.

    Padding (``-1``) is ignored; lists with fewer than 2 items have no pairs and are left out of the
    mean; 0.0 when no list has 2 items.
    """
    unit = _unit_rows(item_vecs)
    per_list = []
    for lst in lists:
        lst = _valid(lst)
        if lst.size < 2:
            continue
        v = unit[lst]
        sim = v @ v.T
        iu = np.triu_indices(lst.size, k=1)
        per_list.append(float(np.mean(1.0 - sim[iu])))
    return float(np.mean(per_list)) if per_list else 0.0


def coverage(lists: Sequence[np.ndarray], n_items: int) -> float:
    """Share of the catalog recommended at least once: distinct items over all lists / n_items."""
    if int(n_items) < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    seen = np.unique(np.concatenate([_valid(lst) for lst in lists])) if len(lists) else []
    return len(seen) / float(n_items)


def category_diversity(lists: Sequence[np.ndarray], categories: np.ndarray) -> float:
    """Mean over lists of (distinct categories in the list / list length).

    1.0 = every item from a different category. Padding is ignored; empty lists are left out;
    0.0 when every list is empty.
    """
    cats = np.asarray(categories)
    per_list = [len(set(cats[lst].tolist())) / lst.size for lst in map(_valid, lists) if lst.size]
    return float(np.mean(per_list)) if per_list else 0.0
