"""Deterministic random draws as Spark columns: uniforms from ``xxhash64(seed, stream, row keys)`` (the same rows
whatever the partitioning), discrete picks, Zipf ranks, fixed permutations, alias sampling."""
from __future__ import annotations

from itertools import accumulate
from typing import Sequence

from pyspark.sql import Column
from pyspark.sql import functions as F


_MASK53 = (1 << 53) - 1
_PERM_PRIMES = (1_000_003, 998_244_353, 2_147_483_647)


def _uniform_sql(seed: int, stream: int, *keys: str) -> str:
    """SQL for a uniform double in [0, 1) from the row's keys (SQL expressions).

    Same keys, same value, on any partition. Keys are hashed as BIGINT (xxhash64 of
    an int and of the same long differ). The draws are built as SQL text: one JVM
    call per column instead of dozens of py4j round trips per Column operator.
    """
    hashed = ", ".join(f"CAST({k} AS BIGINT)" for k in keys)
    return f"((xxhash64({int(seed)}L, {int(stream)}, {hashed}) & {_MASK53}L) / {float(1 << 53)!r}D)"


def _uniform(seed: int, stream: int, *keys: str) -> Column:
    return F.expr(_uniform_sql(seed, stream, *keys))


def _pick(u_sql: str, weights: Sequence[float]) -> Column:
    """Index i with probability weights[i] / sum(weights), by inverse CDF on ``u_sql`` (short lists)."""
    total = float(sum(weights))
    cum = list(accumulate(w / total for w in weights))
    if len(weights) == 1:
        return F.lit(0)
    branches = " ".join(f"WHEN {u_sql} < {c!r}D THEN {i}" for i, c in enumerate(cum[:-1]))
    return F.expr(f"CASE {branches} ELSE {len(weights) - 1} END")


def _zipf_rank(u: Column, n: Column, s: float) -> Column:
    """Rank in 1..n with P(k) ~ k^-s: inverse CDF of the continuous power law on [1, n + 1)."""
    n1 = n.cast("double") + 1.0
    if abs(s - 1.0) < 1e-9:
        x = F.exp(u * F.log(n1))
    else:
        x = F.pow(1.0 + u * (F.pow(n1, 1.0 - s) - 1.0), 1.0 / (1.0 - s))
    return F.least(F.floor(x), n.cast("long")).cast("int")


def _permute(idx: Column, n: int) -> Column:
    """A fixed bijection of 0..n-1, idx -> (idx * prime + n // 3) mod n, so ids do not
    reveal popularity order. :func:`_unpermute` is its inverse."""
    prime = next(q for q in _PERM_PRIMES if n % q)
    return F.pmod(idx * F.lit(prime) + F.lit(n // 3), F.lit(n))


def _unpermute(pos: Column, n: int) -> Column:
    prime = next(q for q in _PERM_PRIMES if n % q)
    inverse = pow(prime, -1, n) if n > 1 else 0
    return F.pmod(F.pmod(pos.cast("long") - F.lit(n // 3), F.lit(n)) * F.lit(inverse), F.lit(n))


def _padded(prefix: str, idx: Column, n: int, min_width: int) -> Column:
    return F.concat(F.lit(prefix), F.lpad(idx.cast("string"), max(min_width, len(str(n - 1))), "0"))


def _sql_literal(v) -> str:
    if isinstance(v, str):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(v, float):
        return f"{v!r}D"
    return f"{int(v)}L" if abs(int(v)) >= 2 ** 31 else str(int(v))


def _lookup(values: Sequence, idx: Column) -> Column:
    """values[idx] (0-based) for a constant list; the list is one SQL literal (one JVM call, not one per value)."""
    return F.element_at(F.expr(f"array({', '.join(_sql_literal(v) for v in values)})"), idx + 1)


def _alias_sample(u_index: Column, u_accept: Column, weights: Sequence[float]) -> Column:
    """An index drawn with probability weights[i] / sum(weights): Walker/Vose alias method.

    O(1) per row and exact: pick i uniformly, keep it if u_accept < prob[i], else take
    alias[i]. The two tables are built here on the driver and travel as array literals.
    """
    n = len(weights)
    total = float(sum(weights))
    scaled = [w * n / total for w in weights]
    prob, alias = [1.0] * n, list(range(n))
    small = [i for i, w in enumerate(scaled) if w < 1.0]
    large = [i for i, w in enumerate(scaled) if w >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        prob[s], alias[s] = scaled[s], g
        scaled[g] -= 1.0 - scaled[s]
        (small if scaled[g] < 1.0 else large).append(g)
    i = F.least(F.floor(u_index * n), F.lit(n - 1)).cast("int")
    return F.when(u_accept < _lookup(prob, i), i).otherwise(_lookup(alias, i))
