"""One order-insensitive compare helper that prints both sides on failure."""
from __future__ import annotations

from typing import Iterable, Sequence


def _norm(v):
    if isinstance(v, float):
        return round(v, 6)
    return v


def assert_rows(df, expected: Iterable[Sequence], columns: Sequence[str]) -> None:
    """Assert ``df`` (selected to ``columns``) holds exactly ``expected`` rows, in any order."""
    got = sorted((tuple(_norm(x) for x in r) for r in df.select(*columns).collect()), key=repr)
    want = sorted((tuple(_norm(x) for x in r) for r in expected), key=repr)
    if got != want:
        lines = ["rows differ", f"columns: {list(columns)}", "got:"] + [f"  {r}" for r in got]
        lines += ["expected:"] + [f"  {r}" for r in want]
        raise AssertionError("\n".join(lines))
