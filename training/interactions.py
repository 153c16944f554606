"""Implicit feedback as dense index arrays: the one in-memory shape every model,
baseline and metric in ``training/`` shares.

Users and items are dense indices ``0..n_users-1`` / ``0..n_items-1`` (the
``idx`` of ``user_index`` / ``item_index``, or a local remap in benchmark
mode). One row is one (user, item) pair of a split.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class Interactions:
    user: np.ndarray            # int64 [n]
    item: np.ndarray            # int64 [n]
    weight: np.ndarray          # float32 [n]: graded strength of the pair (1.0 for plain implicit data)
    time: np.ndarray            # float64 [n]: unix seconds of the pair's last event (0 when unknown)
    n_users: int
    n_items: int
    count: Optional[np.ndarray] = None   # float32 [n]: events (or purchased quantity) of the pair; None = 1 each
    first_time: Optional[np.ndarray] = None  # float64 [n]: unix seconds of the pair's first event

    def __post_init__(self):
        n = len(self.user)
        for name in ("item", "weight", "time"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Interactions.{name} has {len(getattr(self, name))} rows, user has {n}")
        if n and (self.user.max() >= self.n_users or self.item.max() >= self.n_items
                  or self.user.min() < 0 or self.item.min() < 0):
            raise ValueError("Interactions: an index is outside 0..n_users-1 / 0..n_items-1")

    def __len__(self) -> int:
        return len(self.user)

    @property
    def counts(self) -> np.ndarray:
        return self.count if self.count is not None else np.ones(len(self), dtype=np.float32)

    @property
    def first_times(self) -> np.ndarray:
        return self.first_time if self.first_time is not None else self.time

    def csr(self, values: str = "binary") -> sp.csr_matrix:
        """users x items sparse matrix; ``values``: binary | weight | count. Duplicate pairs are summed
        (binary: clipped to 1)."""
        data = {"binary": np.ones(len(self), dtype=np.float32), "weight": self.weight.astype(np.float32),
                "count": self.counts.astype(np.float32)}[values]
        m = sp.csr_matrix((data, (self.user, self.item)), shape=(self.n_users, self.n_items), dtype=np.float32)
        m.sum_duplicates()
        if values == "binary":
            m.data[:] = 1.0
        return m

    def users(self) -> np.ndarray:
        """Distinct users with at least one pair, sorted."""
        return np.unique(self.user)

    @classmethod
    def from_arrays(cls, user, item, n_users: int, n_items: int, weight=None, time=None, count=None,
                    first_time=None) -> "Interactions":
        user = np.asarray(user, dtype=np.int64)
        item = np.asarray(item, dtype=np.int64)
        n = len(user)
        weight = np.ones(n, np.float32) if weight is None else np.asarray(weight, np.float32)
        time = np.zeros(n, np.float64) if time is None else np.asarray(time, np.float64)
        count = None if count is None else np.asarray(count, np.float32)
        first_time = None if first_time is None else np.asarray(first_time, np.float64)
        return cls(user, item, weight, time, n_users, n_items, count, first_time)

    def concat(self, other: "Interactions") -> "Interactions":
        """Rows of both (same index spaces); pairs present in both stay as two rows."""
        if (self.n_users, self.n_items) != (other.n_users, other.n_items):
            raise ValueError("Interactions.concat: index spaces differ")
        cat = lambda a, b: np.concatenate([a, b])  # noqa: E731
        return Interactions(cat(self.user, other.user), cat(self.item, other.item),
                            cat(self.weight, other.weight), cat(self.time, other.time), self.n_users,
                            self.n_items, cat(self.counts, other.counts), cat(self.first_times, other.first_times))
