"""Model inputs from interactions and catalog metadata: pure numpy, no Spark.

Item side (one row per item index, :class:`ItemMeta`): category and title
tokens hashed with a stable hash (so an item never seen in training, or a
category that did not exist then, still maps to a bucket), a log-scale price
bucket and a log-scale popularity bucket from the training interactions.

User side, at a point in time ``t`` (:func:`user_state`, :func:`sequence_examples`):
the user's most recent distinct items strictly before ``t`` (most recent first,
``H`` of them, 0-padded, item index + 1) and three activity numbers
(:data:`USER_FEATURES`). Computing them at each example's own time keeps
training honest: an example never sees its own or later events, and a user's
vector can be refreshed from new activity without retraining.

Events of a (user, item) pair: one at ``first_time``; a repeated pair
(count > 1 and a later ``last_time``) a second one at ``last_time``, whose
history includes the item itself: that is how the model learns repeat buying.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Tuple

import numpy as np

from training.interactions import Interactions

# Only activity counts: time-since-last-event features look harmless but skew badly between training
# (an example sits at an event, so the gap is the time to the *next* event: hours) and scoring (the gap
# since the last event at the run date: weeks for most users); that skew collapsed every user vector
# onto one direction on MovieLens. Recency enters through the order of the history instead.
USER_FEATURES = ("log_prior_items", "log_prior_events", "has_history")
N_USER_FEATURES = len(USER_FEATURES)
DAY = 86400.0
_TOKEN = re.compile(r"[a-z0-9]+")


def stable_bucket(text: str, n_buckets: int, salt: str = "") -> int:
    """1..n_buckets-1 from a stable hash of ``text`` (0 is reserved for padding / unknown)."""
    return 1 + zlib.crc32((salt + text).encode("utf-8")) % (n_buckets - 1)


def title_tokens(title: Optional[str], n_buckets: int, max_tokens: int) -> np.ndarray:
    """Hashed unigram tokens of a title, in order, de-duplicated, 0-padded to ``max_tokens``."""
    out = np.zeros(max_tokens, dtype=np.int64)
    if not title:
        return out
    seen, k = set(), 0
    for tok in _TOKEN.findall(title.lower()):
        if tok in seen or k == max_tokens:
            continue
        seen.add(tok)
        out[k] = stable_bucket(tok, n_buckets, "t:")
        k += 1
    return out


def price_bucket(price: Optional[float], n_buckets: int) -> int:
    """0 for unknown, else 1 + floor(2 * log2(1 + price)) capped at n_buckets - 1 (half-octave buckets)."""
    if price is None or not np.isfinite(price) or price < 0:
        return 0
    return int(min(n_buckets - 1, 1 + np.floor(2.0 * np.log2(1.0 + price))))


def popularity_buckets(counts: np.ndarray, n_buckets: int) -> np.ndarray:
    """0 for items without interactions, else 1 + floor(log2(count)) capped at n_buckets - 1."""
    counts = np.asarray(counts, dtype=np.float64)
    b = np.zeros(len(counts), dtype=np.int64)
    pos = counts > 0
    b[pos] = np.minimum(n_buckets - 1, 1 + np.floor(np.log2(counts[pos]))).astype(np.int64)
    return b


@dataclass
class ItemMeta:
    """Per-item model inputs, indexed by item index."""
    category: np.ndarray        # int64 [n_items], hashed bucket, 0 = unknown
    price: np.ndarray           # int64 [n_items], price bucket, 0 = unknown
    popularity: np.ndarray      # int64 [n_items], popularity bucket, 0 = no interactions
    title: np.ndarray           # int64 [n_items, max_title_tokens], hashed tokens, 0 = padding

    @property
    def n_items(self) -> int:
        return len(self.category)


def build_item_meta(n_items: int, item_idx: Sequence[int], titles: Sequence[Optional[str]],
                    categories: Sequence[Optional[str]], prices: Sequence[Optional[float]],
                    train_counts: np.ndarray, n_category_buckets: int, n_price_buckets: int,
                    n_popularity_buckets: int, n_title_buckets: int, max_title_tokens: int) -> ItemMeta:
    """Item inputs for items ``0..n_items-1``; items without metadata keep zeros (unknown)."""
    meta = ItemMeta(np.zeros(n_items, np.int64), np.zeros(n_items, np.int64),
                    popularity_buckets(train_counts, n_popularity_buckets),
                    np.zeros((n_items, max_title_tokens), np.int64))
    for i, title, cat, price in zip(item_idx, titles, categories, prices):
        if cat and cat != "unknown":
            meta.category[i] = stable_bucket(str(cat), n_category_buckets, "c:")
        meta.price[i] = price_bucket(None if price is None else float(price), n_price_buckets)
        meta.title[i] = title_tokens(title, n_title_buckets, max_title_tokens)
    return meta


def _features(n_items_prior: int, n_events_prior: int) -> np.ndarray:
    if n_events_prior == 0:
        return np.zeros(N_USER_FEATURES, dtype=np.float32)
    return np.array([np.log1p(n_items_prior), np.log1p(n_events_prior), 1.0], dtype=np.float32)


def _user_events(item: np.ndarray, first: np.ndarray, last: np.ndarray, count: np.ndarray):
    """Events of one user's pairs, sorted by (time, item): (time, item, pair row)."""
    rows = np.arange(len(item))
    rep = (count > 1) & (last > first)
    t = np.concatenate([first, last[rep]])
    it = np.concatenate([item, item[rep]])
    r = np.concatenate([rows, rows[rep]])
    order = np.lexsort((it, t))
    return t[order], it[order], r[order]


def _history_at(items: np.ndarray, end: int, H: int, drop: int = -1) -> np.ndarray:
    """Distinct items of events [0, end), most recent first, without ``drop``, +1, 0-padded to H."""
    out = np.zeros(H, dtype=np.int64)
    seen, k = {drop}, 0
    for j in range(end - 1, -1, -1):
        it = int(items[j])
        if it in seen:
            continue
        seen.add(it)
        out[k] = it + 1
        k += 1
        if k == H:
            break
    return out


def _by_user(inter: Interactions) -> Iterable[Tuple[int, np.ndarray]]:
    order = np.argsort(inter.user, kind="stable")
    users = inter.user[order]
    bounds = np.flatnonzero(np.diff(users)) + 1
    for chunk in np.split(order, bounds):
        if len(chunk):
            yield int(inter.user[chunk[0]]), chunk


def sequence_examples(inter: Interactions, H: int, others_share: float = 0.0, seed: int = 0,
                      repeat_weight: float = 1.0) -> dict:
    """One training example per event of ``inter`` (see the module docstring). By default the history and
    user features are those strictly before the event's time ("what comes next": the time-split
    protocol, repeat purchases included). A seeded ``others_share`` of the examples instead see the
    user's *other* items, before and after, without the target ("what else belongs to this profile":
    the random held-out protocol, where the user's state at scoring time is their whole history).
    ``repeat_weight`` multiplies the weight of "what comes next" examples whose target is already in
    their history (a repeat purchase): on retail data repeats are a large share of what customers buy
    next but a small share of the examples.
    Returns numpy arrays: user, item, weight, time, hist [n, H], feats [n, F]."""
    out = {k: [] for k in ("user", "item", "weight", "time", "hist", "feats")}
    for u, rows in _by_user(inter):
        t, it, r = _user_events(inter.item[rows], inter.first_times[rows], inter.time[rows], inter.counts[rows])
        others = (np.random.default_rng([seed, u]).random(len(t)) < others_share if others_share > 0
                  else np.zeros(len(t), bool))
        n_distinct = len(set(it.tolist()))
        start = 0
        for j in range(len(t)):
            while start < j and t[start] < t[j]:
                start += 1
            repeat = False
            if others[j]:
                hist = _history_at(it, len(it), H, drop=int(it[j]))
                feats = _features(n_distinct - 1, len(t) - 1)
            else:
                # events [0, start) are strictly earlier than event j (same-time events, e.g. one basket,
                # are not)
                hist = _history_at(it, start, H)
                repeat = repeat_weight != 1.0 and bool(np.any(hist == it[j] + 1))
                n_prior_items = len(set(it[:start].tolist())) if start else 0
                feats = _features(n_prior_items, start)
            out["user"].append(u)
            out["item"].append(int(it[j]))
            out["weight"].append(float(inter.weight[rows[r[j]]]) * (repeat_weight if repeat else 1.0))
            out["time"].append(float(t[j]))
            out["hist"].append(hist)
            out["feats"].append(feats)
    n = len(out["user"])
    return {"user": np.asarray(out["user"], np.int64), "item": np.asarray(out["item"], np.int64),
            "weight": np.asarray(out["weight"], np.float32), "time": np.asarray(out["time"], np.float64),
            "hist": np.stack(out["hist"]) if n else np.zeros((0, H), np.int64),
            "feats": np.stack(out["feats"]) if n else np.zeros((0, N_USER_FEATURES), np.float32)}


def user_states(inter: Interactions, at: float, H: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The history [n, H] and features [n, F] at time ``at`` of the n users of ``inter`` with at least one
    event strictly before it (from those events only): ``(users, hist, feats)``, users ascending."""
    users, hists, feats = [], [], []
    for u, rows in _by_user(inter):
        t, it, _ = _user_events(inter.item[rows], inter.first_times[rows], inter.time[rows], inter.counts[rows])
        end = int(np.searchsorted(t, at, side="left"))
        if end == 0:
            continue
        users.append(u)
        hists.append(_history_at(it, end, H))
        feats.append(_features(len(set(it[:end].tolist())), end))
    if not users:
        return np.zeros(0, np.int64), np.zeros((0, H), np.int64), np.zeros((0, N_USER_FEATURES), np.float32)
    return np.asarray(users, np.int64), np.stack(hists), np.stack(feats).astype(np.float32)


def user_state(inter: Interactions, at: float, H: int) -> Tuple[np.ndarray, np.ndarray]:
    """Every user's history [n_users, H] and features [n_users, F] at time ``at`` from all the events of
    ``inter`` strictly before it. Users without events get zeros (a cold user)."""
    hist = np.zeros((inter.n_users, H), np.int64)
    feats = np.zeros((inter.n_users, N_USER_FEATURES), np.float32)
    users, h, f = user_states(inter, at, H)
    hist[users], feats[users] = h, f
    return hist, feats
