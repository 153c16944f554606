"""Baselines tuned like the model: each baseline's settings are chosen on validation.

The two-tower gets a search on validation (``optim.search`` x ``optim.others_share``, early stopping);
a baseline compared at fixed settings is a straw man. So every baseline of ``training.baselines`` is
fitted once per entry of its grid, ``training.baseline_search.<name>`` (a list of overrides of
``training.baseline_params.<name>``; no entry: the settings as they are), each evaluated on the
validation split with the same metric the model is chosen by, and the best is kept (a tie keeps the
earlier entry). The test phase and the served list then use exactly the kept settings: a test split
never chooses anything.

A nightly that reuses the two-tower's last search (``training.search``) reuses the baselines' kept
settings too (one fit each), so the grids cost time only on searching nights.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from training import baselines as bl
from training.interactions import Interactions
from training.search import candidate_label

log = logging.getLogger(__name__)


@dataclass
class TunedBaseline:
    name: str
    model: bl.Recommender
    params: Dict[str, Any]                 # the settings of the kept fit (baseline_params + kept entry)
    kept: Dict[str, Any]                   # the kept grid entry (the overrides only)
    tried: Dict[str, float] = field(default_factory=dict)   # grid entry label -> validation metric
    fit_s: float = 0.0                     # the kept fit's wall time
    search_s: float = 0.0                  # every fit and validation of the grid together


def grid(entries: Optional[Sequence[Mapping[str, Any]]]) -> List[Dict[str, Any]]:
    """The overrides to try, in order: ``[{}]`` (the settings as they are) when there is no grid."""
    return [dict(e) for e in entries] if entries else [{}]


def tune(name: str, base: Mapping[str, Any], entries: Sequence[Mapping[str, Any]], fit: Interactions,
         metric: Callable[[bl.Recommender], float], spark=None) -> TunedBaseline:
    """Fit ``name`` with ``base`` updated by each of ``entries`` (``grid(entries)``) on ``fit`` and keep
    the one with the highest ``metric`` (validation); a single entry is fitted without being scored.
    Raises :class:`training.baselines.BaselineSkipped` when the baseline refuses the data."""
    overs = grid(entries)
    t_all = time.time()
    best: Optional[TunedBaseline] = None
    best_value = float("-inf")
    tried: Dict[str, float] = {}
    for over in overs:
        params = {**base, **over}
        t0 = time.time()
        model = bl.build(name, spark=spark, **params).fit(fit)
        fit_s = time.time() - t0
        if len(overs) == 1:
            return TunedBaseline(name, model, params, dict(over), {}, fit_s, time.time() - t_all)
        value = float(metric(model))
        tried[candidate_label(over)] = value
        if best is None or value > best_value:
            best, best_value = TunedBaseline(name, model, params, dict(over), fit_s=fit_s), value
    assert best is not None
    best.tried, best.search_s = tried, time.time() - t_all
    log.info("  %-22s tuned on validation: kept %s (%s)", name, candidate_label(best.kept),
             ", ".join(f"{k}: {v:.4f}" for k, v in tried.items()))
    return best


__all__ = ["TunedBaseline", "grid", "tune"]
