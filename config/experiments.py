"""A/B tests of what the lookup service serves: the ``feedback.experiments`` list (issue 25, point 4;
docs/FEEDBACK.md, "A/B tests").

An experiment splits customers between variants by traffic share. A customer's variant is a pure
function of the experiment's ``salt`` and the customer id (:func:`bucket`: SHA-256 of both, read as
a number in [0, 1), against the variants' cumulative shares), so it needs no state, is the same in
every worker and process, and stays the same across nights, versions and restarts for as long as
the salt and the shares do. A request without a customer (an id the store cannot hold) gets the
control variant.

What a variant can change (``serves``) is what the lookup can vary *without another scoring run*,
from the one version the nightly publishes:

* ``personal``: the customer's own list, else their segment's, else the global one (what every
  lookup serves outside experiments: the model and the blend as published);
* ``fallback``: the segment's list, else the global one, never the customer's own: the
  non-personalised baseline (popularity) every version already holds for customers without a list.

A variant reading another published *version* (another model) is not offered: the lookup reads
the one version ``<namespace>:current`` names, and a version per variant needs the nightly to
score and publish each (issue 25, point 4, still open).

Each experiment runs from ``start`` (a UTC date, inclusive) to ``end`` (exclusive; none: until
removed); two experiments may not run on the same day, since each would decide the same list. Outside
its dates an experiment assigns nobody and answers carry no variant. The recorded variant is
``<experiment>:<variant>`` (:attr:`Experiment.label`), so two experiments' ``control`` never mix in a
report.
"""
from __future__ import annotations

import hashlib
from datetime import date, datetime, time, timezone
from typing import List, Literal, Optional, Sequence

from pydantic import Field, model_validator

from config.base import Strict

NAME = r"^[a-z0-9][a-z0-9_-]{0,31}$"
SHARE_TOLERANCE = 1e-9


def bucket(salt: str, customer_id: str) -> float:
    """The customer's place in [0, 1) for an experiment: the first 8 bytes of
    SHA-256(``salt``, NUL, ``customer_id``) over 2**64. Uniform, and independent between salts."""
    digest = hashlib.sha256(salt.encode("utf-8") + b"\0" + customer_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


class Variant(Strict):
    name: str = Field(pattern=NAME)
    share: float = Field(gt=0, le=1)                       # of the customers in the experiment
    serves: Literal["personal", "fallback"] = "personal"   # what the lookup answers them (see the module)


class Experiment(Strict):
    name: str = Field(pattern=NAME)
    salt: str = Field(min_length=1, max_length=64)         # change it to reshuffle customers; keep it to keep them
    control: str                                            # the variant others are compared with; anonymous requests
    variants: List[Variant] = Field(min_length=2)
    start: date                                             # UTC, inclusive
    end: Optional[date] = None                              # UTC, exclusive; none: until removed

    @model_validator(mode="after")
    def _check(self) -> "Experiment":
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment {self.name}: variant names repeat: {names}")
        if self.control not in names:
            raise ValueError(f"experiment {self.name}: control {self.control!r} is not one of its variants {names}")
        total = sum(v.share for v in self.variants)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            raise ValueError(f"experiment {self.name}: the variants' shares add up to {total:g}, not 1 "
                             f"({', '.join(f'{v.name}: {v.share:g}' for v in self.variants)})")
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"experiment {self.name}: end {self.end} is not after start {self.start}")
        return self

    @property
    def start_s(self) -> float:
        return datetime.combine(self.start, time(), timezone.utc).timestamp()

    @property
    def end_s(self) -> float:
        return float("inf") if self.end is None else datetime.combine(self.end, time(), timezone.utc).timestamp()

    def label(self, variant: Variant) -> str:
        """What impressions and answers record: ``<experiment>:<variant>``."""
        return f"{self.name}:{variant.name}"

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    def assign(self, customer_id: Optional[str]) -> Variant:
        """The customer's variant; the control one when there is no customer (None or empty)."""
        if not customer_id:
            return self.variant(self.control)
        u, edge = bucket(self.salt, customer_id), 0.0
        for v in self.variants:
            edge += v.share
            if u < edge:
                return v
        return self.variants[-1]          # the shares' rounding left u above the last edge

    def live(self, at_s: float) -> bool:
        """Whether it runs at ``at_s`` (seconds since the epoch)."""
        return self.start_s <= at_s < self.end_s


def check_experiments(experiments: Sequence[Experiment]) -> None:
    """Names unique, and no two experiments running on the same day.

    Raises:
        ValueError: naming both experiments."""
    seen = set()
    for e in experiments:
        if e.name in seen:
            raise ValueError(f"experiment {e.name!r} is declared twice")
        seen.add(e.name)
    for i, a in enumerate(experiments):
        for b in experiments[i + 1:]:
            if a.start_s < b.end_s and b.start_s < a.end_s:
                raise ValueError(f"experiments {a.name} and {b.name} overlap in time: each would decide the same "
                                 "lists; end one before the other starts")


def live_experiment(experiments: Sequence[Experiment], at_s: float) -> Optional[Experiment]:
    """The experiment running at ``at_s`` (at most one, see :func:`check_experiments`), or None."""
    for e in experiments:
        if e.live(at_s):
            return e
    return None
