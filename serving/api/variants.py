"""The A/B variant of a recommendations request (``feedback.experiments``, :mod:`config.experiments`).

Both lookup paths (FastAPI's route and the fast path, :mod:`serving.api.fast`) ask :class:`Variants`
for the customer's variant, read the list it serves, answer with its label in the ``X-Variant``
header and log it in the impression (:mod:`serving.api.impressions`). The assignment is a hash of
the experiment's salt and the customer id (no state, no Redis): about a microsecond a request, and
nothing at all when no experiment runs.

Only the customer's recommendations vary: an item's similar items have no customer (their
impressions carry no variant, so they do not blur a variant's rates).
"""
from __future__ import annotations

import time
from typing import Callable, NamedTuple, Optional, Sequence

from config.experiments import Experiment, live_experiment

VARIANT_HEADER = "X-Variant"


class Assigned(NamedTuple):
    label: str          # <experiment>:<variant>, as recorded
    personal: bool      # serves the customer's own list (else the segment's or global fallback list)


class Variants:
    """``variants(customer_id)``: the variant the running experiment gives the customer, None when
    no experiment runs. ``clock``: seconds since the epoch (tests pass their own)."""

    def __init__(self, experiments: Sequence[Experiment], clock: Callable[[], float] = time.time) -> None:
        self.experiments = tuple(experiments)
        self.clock = clock

    def __bool__(self) -> bool:
        return bool(self.experiments)

    def __call__(self, customer_id: Optional[str]) -> Optional[Assigned]:
        if not self.experiments:
            return None
        experiment = live_experiment(self.experiments, self.clock())
        if experiment is None:
            return None
        variant = experiment.assign(customer_id)
        return Assigned(experiment.label(variant), variant.serves == "personal")
