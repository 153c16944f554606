"""Baselines every model is compared with.

Every baseline follows the :class:`Recommender` protocol: ``fit(train)`` on an
:class:`~training.interactions.Interactions` split, then ``score(users)`` returns
a dense, full-catalog ``float32 [len(users), n_items]`` matrix (higher = better,
always finite). The evaluator does top-K and masking of already-seen items
afterwards, so a baseline never filters anything itself.

``MostPopular`` ("popular", "popular_<N>d")
    The same row for every user: how many distinct users have a pair with the
    item (``by="users"``) or the summed pair weight (``by="weight"``). With
    ``window_days`` only pairs with ``time >= now - window_days`` count
    ("what sells now"; ``now`` defaults to the latest time in train, and a
    training split holds no later pairs); items not seen in the window fall back
    to their all-time popularity, scaled below the smallest windowed score,
    so they rank after every item of the window but still in a useful order.

``BuyAgain`` ("buy_again")
    The customer's own history, ranked by frequency and recency. Retail is
    dominated by repeat purchases (milk, coffee, printer ink, the same
    T-shirt in another colour): a large share of next baskets are items the
    customer bought before, and "show them what they already buy" is a
    surprisingly hard baseline for any model evaluated *without* masking
    seen items. Per pair ``s = count * 0.5 ** (age / half_life)`` (age =
    ``now - time`` in days, clipped at 0; duplicate pair rows are summed);
    a history item scores ``1 + s / (1 + s)`` in ``[1, 2)``, a non-history
    item ``0.5 * popularity / max(popularity)`` in ``[0, 0.5]``. So every
    history item ranks above every other item, more purchases and more
    recent purchases rank higher, and the rest is ordered by global
    popularity (distinct users), or with ``backfill_days`` by the popularity
    of the last ``backfill_days`` days (:class:`MostPopular` with that window:
    "what sells now" behind "what you buy again").

``EASE`` ("ease")
    Steck 2019, "Embarrassingly Shallow Autoencoders": the closed form
    ``G = X^T X + l2 I``, ``P = G^-1``, ``B = -P / diag(P)``, ``diag(B) = 0``,
    ``score = X_u B`` with ``X`` the binary users x items matrix. A strong
    item-item baseline, but it needs a dense ``n_items^2`` matrix, so
    catalogs above ``max_items`` raise :class:`BaselineSkipped`.

``SparkALS`` ("als")
    Implicit-feedback matrix factorisation (Hu, Koren, Volinsky 2008) with
    ``pyspark.ml.recommendation.ALS``; the factors are pulled into numpy and
    scored locally, ``U[users] @ V.T``.

Users without training pairs (or ids outside ``0..n_users-1``) get:
MostPopular - the popularity row (as everyone); BuyAgain - the popularity part
only (no history); EASE - the popularity row normalised to ``[0, 1]``;
SparkALS - zero factors, so only the tiny popularity tie-break remains and the
row is ordered by popularity.
"""
from __future__ import annotations

import re
from typing import Optional, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from training.interactions import Interactions

DAY = 86400.0


class BaselineSkipped(Exception):
    """A baseline refuses to run on this data (e.g. a catalog too large for EASE); the message says why."""


@runtime_checkable
class Recommender(Protocol):
    name: str

    def fit(self, train: Interactions) -> "Recommender": ...

    def score(self, users: np.ndarray) -> np.ndarray:
        """float32 [len(users), n_items], higher = better, finite everywhere."""
        ...


# ------------------------------------------------------------------ helpers

def item_popularity(train: Interactions, by: str = "users", mask: Optional[np.ndarray] = None) -> np.ndarray:
    """float64 [n_items]: distinct users per item (``by="users"``) or summed weight (``by="weight"``),
    over the pairs selected by the boolean ``mask`` (all when None)."""
    user, item, weight = train.user, train.item, train.weight
    if mask is not None:
        user, item, weight = user[mask], item[mask], weight[mask]
    if by == "users":
        m = sp.csr_matrix((np.ones(len(user), np.float32), (user, item)), shape=(train.n_users, train.n_items))
        m.sum_duplicates()
        return np.diff(m.tocsc().indptr).astype(np.float64)    # nonzeros per column = distinct users
    if by == "weight":
        return np.bincount(item, weights=weight.astype(np.float64), minlength=train.n_items)
    raise ValueError(f"popularity: by must be 'users' or 'weight', got {by!r}")


def _normalised(pop: np.ndarray) -> np.ndarray:
    top = pop.max() if len(pop) else 0.0
    return pop / top if top > 0 else np.zeros_like(pop)


def _default_now(train: Interactions, now: Optional[float]) -> float:
    if now is not None:
        return float(now)
    return float(train.time.max()) if len(train) else 0.0


def _as_users(users) -> np.ndarray:
    return np.asarray(users, dtype=np.int64).reshape(-1)


def _known(users: np.ndarray, n_users: int) -> np.ndarray:
    return (users >= 0) & (users < n_users)


def _check_fitted(obj, attr: str) -> None:
    if getattr(obj, attr, None) is None:
        raise RuntimeError(f"{type(obj).__name__}.score called before fit")


# ------------------------------------------------------------------ MostPopular

class MostPopular:
    """Global (optionally recent) popularity; the same row for every user."""

    def __init__(self, window_days: Optional[float] = None, now: Optional[float] = None, by: str = "users"):
        if by not in ("users", "weight"):
            raise ValueError(f"MostPopular: by must be 'users' or 'weight', got {by!r}")
        if window_days is not None and window_days <= 0:
            raise ValueError(f"MostPopular: window_days must be > 0, got {window_days}")
        self.window_days = window_days
        self.now = now
        self.by = by
        self.name = "popular" if window_days is None else f"popular_{window_days:g}d"
        self.row_: Optional[np.ndarray] = None

    def fit(self, train: Interactions) -> "MostPopular":
        pop_all = item_popularity(train, self.by)
        row = pop_all
        if self.window_days is not None:
            self.now_ = _default_now(train, self.now)
            recent = train.time >= self.now_ - self.window_days * DAY
            pop_w = item_popularity(train, self.by, recent)
            positive = pop_w > 0
            if positive.any():
                # Items outside the window: all-time popularity scaled into [0, smallest windowed score).
                floor = pop_w[positive].min()
                fallback = floor * pop_all / (pop_all.max() + 1.0)
                row = np.where(positive, pop_w, fallback)
        self.row_ = row.astype(np.float32)
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        _check_fitted(self, "row_")
        return np.repeat(self.row_[None, :], len(_as_users(users)), axis=0)


# ------------------------------------------------------------------ BuyAgain

class BuyAgain:
    """The user's own history by decayed frequency, then everything else by popularity."""

    name = "buy_again"

    def __init__(self, half_life_days: float = 30.0, now: Optional[float] = None,
                 backfill_days: Optional[float] = None):
        if half_life_days <= 0:
            raise ValueError(f"BuyAgain: half_life_days must be > 0, got {half_life_days}")
        if backfill_days is not None and backfill_days <= 0:
            raise ValueError(f"BuyAgain: backfill_days must be > 0 (or None: all-time popularity), got {backfill_days}")
        self.half_life_days = half_life_days
        self.now = now
        self.backfill_days = backfill_days
        self.history_: Optional[sp.csr_matrix] = None

    def fit(self, train: Interactions) -> "BuyAgain":
        self.now_ = _default_now(train, self.now)
        age = np.clip(self.now_ - train.time, 0.0, None) / (self.half_life_days * DAY)
        s = train.counts.astype(np.float64) * np.power(0.5, age)
        s = np.maximum(s, 1e-300)          # a pair decayed to underflow is still history
        h = sp.csr_matrix((s, (train.user, train.item)), shape=(train.n_users, train.n_items), dtype=np.float64)
        h.sum_duplicates()
        h.data = 1.0 + h.data / (1.0 + h.data)          # [1, 2): above every non-history item
        self.history_ = h
        pop = (item_popularity(train, "users") if self.backfill_days is None else
               MostPopular(window_days=self.backfill_days, now=self.now_).fit(train).row_.astype(np.float64))
        self.base_ = (0.5 * _normalised(pop)).astype(np.float32)   # [0, 0.5]
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        _check_fitted(self, "history_")
        users = _as_users(users)
        out = np.repeat(self.base_[None, :], len(users), axis=0)
        known = np.flatnonzero(_known(users, self.history_.shape[0]))
        if len(known):
            sub = self.history_[users[known]].tocoo()
            out[known[sub.row], sub.col] = sub.data.astype(np.float32)
        return out


# ------------------------------------------------------------------ EASE

class EASE:
    """Steck 2019 closed-form item-item model on the binary users x items matrix."""

    name = "ease"

    def __init__(self, l2: float = 500.0, max_items: int = 20000):
        self.l2 = l2
        self.max_items = max_items
        self.B_: Optional[np.ndarray] = None

    def fit(self, train: Interactions) -> "EASE":
        n = train.n_items
        if n > self.max_items:
            gib = n * n * 8 / 2 ** 30
            raise BaselineSkipped(f"EASE skipped: {n} items > training.baseline_params.ease.max_items={self.max_items} "
                                  f"(a dense item-item matrix would need {gib:.1f} GiB)")
        X = train.csr("binary").astype(np.float64)
        G = (X.T @ X).toarray()
        G[np.diag_indices(n)] += self.l2
        P = np.linalg.inv(G)
        del G
        P /= -np.diag(P)[None, :]          # B_ij = -P_ij / P_jj
        P[np.diag_indices(n)] = 0.0
        self.B_ = P.astype(np.float32)
        self.X_ = X.astype(np.float32).tocsr()
        self.pop_ = _normalised(item_popularity(train, "users")).astype(np.float32)
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        _check_fitted(self, "B_")
        users = _as_users(users)
        out = np.repeat(self.pop_[None, :], len(users), axis=0)     # users without history: popularity
        known = _known(users, self.X_.shape[0])
        idx = np.flatnonzero(known)
        if len(idx):
            Xu = self.X_[users[idx]]
            has = np.diff(Xu.indptr) > 0
            rows = idx[has]
            if len(rows):
                out[rows] = np.asarray(Xu[has] @ self.B_, dtype=np.float32)
        return out


# ------------------------------------------------------------------ Spark ALS

class SparkALS:
    """Implicit ALS from Spark ML; factors are scored locally with numpy.

    Determinism: the input is aggregated per (user, item) in numpy, handed to
    Spark in a fixed order, hash-partitioned by user and sorted within
    partitions; ``numUserBlocks``/``numItemBlocks`` are fixed (``num_blocks``,
    default the context's ``defaultParallelism``) and the seed is fixed, so two
    fits on the same cluster shape give the same factors up to float summation
    order (observed differences far below 1e-5).
    """

    name = "als"

    def __init__(self, spark, rank: int = 64, reg: float = 0.05, alpha: float = 20.0, max_iter: int = 15,
                 seed: int = 42, values: str = "weight", num_blocks: Optional[int] = None,
                 tie_break: float = 1e-6):
        if spark is None:
            raise ValueError("SparkALS needs a SparkSession")
        if values not in ("weight", "count"):
            raise ValueError(f"SparkALS: values must be 'weight' or 'count', got {values!r}")
        self.spark = spark
        self.rank, self.reg, self.alpha, self.max_iter, self.seed = rank, reg, alpha, max_iter, seed
        self.values = values
        self.num_blocks = num_blocks
        self.tie_break = tie_break
        self.U_: Optional[np.ndarray] = None

    def _ratings_df(self, train: Interactions, blocks: int):
        import pandas as pd

        m = train.csr(self.values).tocoo()          # duplicate pair rows summed
        order = np.lexsort((m.col, m.row))
        pdf = pd.DataFrame({"user": m.row[order].astype(np.int32), "item": m.col[order].astype(np.int32),
                            "rating": m.data[order].astype(np.float32)})
        key = "spark.sql.execution.arrow.pyspark.enabled"
        previous = self.spark.conf.get(key, None)
        self.spark.conf.set(key, "true")
        try:
            df = self.spark.createDataFrame(pdf, schema="user int, item int, rating float")
        finally:
            if previous is None:
                self.spark.conf.unset(key)
            else:
                self.spark.conf.set(key, previous)
        return df.repartition(blocks, "user").sortWithinPartitions("user", "item")

    def _factors(self, df, n: int) -> np.ndarray:
        out = np.zeros((n, self.rank), dtype=np.float32)
        rows = df.orderBy("id").collect()
        if rows:
            ids = np.fromiter((r["id"] for r in rows), dtype=np.int64, count=len(rows))
            out[ids] = np.asarray([r["features"] for r in rows], dtype=np.float32)
        return out

    def fit(self, train: Interactions) -> "SparkALS":
        from pyspark.ml.recommendation import ALS

        if len(train) == 0:
            raise ValueError("SparkALS.fit: no training pairs")
        if max(train.n_users, train.n_items) > np.iinfo(np.int32).max:
            raise ValueError("SparkALS.fit: ids must fit in int32")
        blocks = self.num_blocks or max(1, int(self.spark.sparkContext.defaultParallelism))
        df = self._ratings_df(train, blocks)
        sc = self.spark.sparkContext
        if sc.getCheckpointDir() is None:
            # without a checkpoint dir ALS never cuts its RDD lineage: after ~15 iterations collecting the
            # factors can die with a java.lang.StackOverflowError (seen on MovieLens-100k)
            import tempfile
            sc.setCheckpointDir(tempfile.mkdtemp(prefix="retailreco-als-checkpoints-"))
        als = ALS(rank=self.rank, maxIter=self.max_iter, regParam=self.reg, alpha=self.alpha,
                  checkpointInterval=5,
                  implicitPrefs=True, nonnegative=False, coldStartStrategy="drop", seed=self.seed,
                  numUserBlocks=blocks, numItemBlocks=blocks, userCol="user", itemCol="item",
                  ratingCol="rating")
        model = als.fit(df)
        self.U_ = self._factors(model.userFactors, train.n_users)
        self.V_ = self._factors(model.itemFactors, train.n_items)
        self.pop_ = (self.tie_break * _normalised(item_popularity(train, "users"))).astype(np.float32)
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        _check_fitted(self, "U_")
        users = _as_users(users)
        known = _known(users, self.U_.shape[0])
        Uu = np.zeros((len(users), self.rank), dtype=np.float32)
        Uu[known] = self.U_[users[known]]
        out = Uu @ self.V_.T
        out += self.pop_[None, :]
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32, copy=False)


# ------------------------------------------------------------------ factory

_POPULAR_N_DAYS = re.compile(r"^popular_(\d+(?:\.\d+)?)d$")


def build(name: str, spark=None, **params) -> Recommender:
    """A baseline by name: popular, popular_recent (``window_days``, default 30), popular_<N>d,
    buy_again, ease, als (needs ``spark``). ``params`` go to the constructor."""
    if name == "popular":
        return MostPopular(**params)
    if name == "popular_recent":
        params.setdefault("window_days", 30.0)
        return MostPopular(**params)
    match = _POPULAR_N_DAYS.match(name)
    if match:
        return MostPopular(window_days=float(match.group(1)), **params)
    if name == "buy_again":
        return BuyAgain(**params)
    if name == "ease":
        return EASE(**params)
    if name == "als":
        if spark is None:
            raise ValueError("build('als') needs a SparkSession: build('als', spark=spark, ...)")
        return SparkALS(spark, **params)
    raise ValueError(f"unknown baseline {name!r}; known: popular, popular_recent, popular_<N>d, buy_again, "
                     "ease, als")
