"""Which training settings a run tries on validation, and when a nightly re-runs the search.

The *search space* is every ``optim.search`` entry crossed with every ``optim.others_share``
(:func:`search_candidates`); a searching run fits each candidate with early stopping on validation
NDCG and keeps the best, with its number of epochs.

A nightly retrain need not search every night: the data moves a day at a time, and the settings
(and epochs) the last search kept are what the next night would most likely keep again.
:func:`plan_search` decides whether this run searches or reuses them, from the latest *searching*
run dated at or before this run's date (found in MLflow by ``training.tracking.last_search``):

* it **searches** when ``every_days`` is 0, when no run searched this search space (the configured
  one) in the ``every_days`` days up to this run's date, or when that run's settings do not read back;
* otherwise it **reuses** the kept settings and epochs of that search: one fit for exactly those epochs
  (still evaluated on validation after each epoch, for the gate and the training curve), and the
  serving fit, which needs nothing from it, starts at once beside it.

The decision reads only the config, the run date and runs dated at or before it, so a rerun of a date
(a retry, a backfill) finds the same search and makes the same choice. The run logs its plan
(:data:`PARAMS`), which is how later runs find a search.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Dict, List, Mapping, Optional, Tuple

# the MLflow parameters a training run logs about its search (later runs read them from the latest search)
SEARCH_DATE = "search.date"          # ISO date of the search whose settings the run used
SEARCH_SPACE = "search.space"        # short hash of the search space (candidate list)
SEARCH_KEPT = "search.kept"          # JSON of the kept candidate's overrides
SEARCH_EPOCHS = "search.epochs"      # the epochs that search kept
SEARCH_MODE = "search.mode"          # "search" or "reuse"
SEARCH_BASELINES = "search.baselines"  # JSON: baseline -> the grid entry the search kept (training.baseline_search)
SEARCH_SERVED = "search.served"        # JSON: the served list's blend the search kept (training.served), or null
PARAMS = (SEARCH_DATE, SEARCH_SPACE, SEARCH_KEPT, SEARCH_EPOCHS, SEARCH_MODE, SEARCH_BASELINES, SEARCH_SERVED)


def search_candidates(optim) -> List[Dict[str, object]]:
    """The settings the valid phase tries: every ``others_share`` under every ``search`` entry."""
    return [{**over, "others_share": float(share)} for over in (optim.search or [{}])
            for share in optim.others_share]


MODEL_PREFIX = "model."


def split_override(over: Mapping[str, object]) -> Tuple[Dict[str, object], Dict[str, object]]:
    """A candidate's overrides as (training parameters, model settings): keys ``model.<field>`` set a
    field of the model (``training.model``), every other key an optimiser setting."""
    optim = {k: v for k, v in over.items() if not k.startswith(MODEL_PREFIX)}
    model = {k[len(MODEL_PREFIX):]: v for k, v in over.items() if k.startswith(MODEL_PREFIX)}
    return optim, model


def candidate_label(over: Mapping[str, object]) -> str:
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(over.items())) or "defaults"


def space_id(candidates: List[Mapping[str, object]],
             baseline_search: Optional[Mapping[str, List[Mapping[str, object]]]] = None,
             served: Optional[List[Mapping[str, object]]] = None) -> str:
    """A short, order-independent fingerprint of a search space: the model's candidates and, when there
    are any, the baselines' grids (``training.baseline_search``) and the served list's blend settings
    (``training.served.ServedSettings.candidates``)."""
    text = json.dumps(sorted(json.dumps(c, sort_keys=True) for c in candidates))
    grids = {name: entries for name, entries in (baseline_search or {}).items() if entries}
    if grids:
        text += json.dumps(grids, sort_keys=True)
    if served and len(served) > 1:
        text += json.dumps(served, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class SearchPlan:
    candidates: List[Dict[str, object]]   # what the valid phase fits
    searched_on: date                     # the date of the search whose settings are used (today's when searching)
    space: str                            # space_id of the configured search space
    fixed_epochs: Optional[int]           # reuse: exactly this many epochs (no early stopping); None: search
    reason: str                           # one sentence for the log and the run
    baselines: Optional[Dict[str, Dict[str, object]]] = None   # reuse: the baselines' kept grid entries
    served: Optional[Dict[str, object]] = None                 # reuse: the served list's kept blend

    @property
    def reuses(self) -> bool:
        return self.fixed_epochs is not None

    def params(self, kept: Mapping[str, object], epochs: int,
               baselines: Optional[Mapping[str, Mapping[str, object]]] = None,
               served: Optional[Mapping[str, object]] = None) -> Dict[str, str]:
        """The ``search.*`` parameters the run logs, given what it kept."""
        return {SEARCH_DATE: self.searched_on.isoformat(), SEARCH_SPACE: self.space,
                SEARCH_KEPT: json.dumps(dict(kept), sort_keys=True), SEARCH_EPOCHS: str(int(epochs)),
                SEARCH_MODE: "reuse" if self.reuses else "search",
                SEARCH_BASELINES: json.dumps({k: dict(v) for k, v in (baselines or {}).items()}, sort_keys=True),
                SEARCH_SERVED: json.dumps(dict(served) if served else None, sort_keys=True)}


def plan_search(candidates: List[Dict[str, object]], run_date: date, every_days: int,
                last: Optional[Mapping[str, str]], last_run: str = "",
                baseline_search: Optional[Mapping[str, List[Mapping[str, object]]]] = None,
                served: Optional[List[Mapping[str, object]]] = None) -> SearchPlan:
    """Search or reuse (module docstring). ``last``: the parameters of the latest run that searched,
    dated at or before ``run_date`` (None when there is none); ``last_run`` names it in the reason.
    ``baseline_search``: the baselines' grids, part of the space; a reuse also reuses their kept entries
    (a run logged before baselines were tuned has none: its reuse fits each baseline's grid again), and
    ``served``, the served list's blend settings, likewise."""
    space = space_id(candidates, baseline_search, served)

    def search(why: str) -> SearchPlan:
        return SearchPlan(list(candidates), run_date, space, None,
                          f"searching {len(candidates)} setting(s) on validation: {why}")

    if every_days <= 0:
        return search("training.search_every_days is 0 (every run searches)")
    if last is None:
        return search(f"no run searched this search space ({space}) on or before {run_date}")
    who = f"run {last_run}" if last_run else "the last searching run"
    if last.get(SEARCH_SPACE) != space or last.get(SEARCH_MODE) != "search":
        return search(f"{who} searched another space ({last.get(SEARCH_SPACE)}, mode {last.get(SEARCH_MODE)})")
    try:
        searched_on = date.fromisoformat(last[SEARCH_DATE])
        kept = json.loads(last[SEARCH_KEPT])
        epochs = int(last[SEARCH_EPOCHS])
    except (KeyError, TypeError, ValueError) as e:
        return search(f"{who}'s search settings do not read back ({type(e).__name__}: {e})")
    try:
        kept_baselines = json.loads(last.get(SEARCH_BASELINES) or "{}")
        kept_served = json.loads(last.get(SEARCH_SERVED) or "null")
    except ValueError as e:
        return search(f"{who}'s kept baseline or served settings do not read back ({e})")
    if (not isinstance(kept, dict) or epochs < 1 or not isinstance(kept_baselines, dict)
            or not (kept_served is None or isinstance(kept_served, dict))):
        return search(f"{who}'s search settings do not read back (kept {kept!r}, epochs {epochs})")
    if searched_on > run_date:
        return search(f"{who} searched on {searched_on}, after this run's date")
    age = (run_date - searched_on).days
    if age >= every_days:
        return search(f"the last search ({searched_on}, {who}) is {age} day(s) old; "
                      f"training.search_every_days is {every_days}")
    nxt = searched_on + timedelta(days=every_days)
    return SearchPlan([kept], searched_on, space, epochs,
                      f"reusing the settings {candidate_label(kept)} and {epochs} epoch(s) kept by the search of "
                      f"{searched_on} ({who}); the next search runs on or after {nxt}", kept_baselines,
                      kept_served)
