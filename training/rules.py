"""Business rules on published lists: exclusions, per-segment category lists, boosts, pins, caps.

The rules file (YAML; its format and validation are in :mod:`training.rules_file`, the documented
example is ``conf/rules.yaml``) is read and validated once by :func:`load_rules`; any mistake
raises :class:`RulesError` naming the file, the key path (``boosts[2].end``) and what to do.
Items and categories are compared as strings (``22423`` and ``"22423"`` are the same item).

Semantics
    ``for_segment(segment, run_date)`` merges the global keys, ``segments["*"]`` and
    ``segments[segment]``: exclusions are united; include lists (when several apply) are
    intersected, and an excluded category stays excluded even when included. Boost rules apply
    when their segment is the user's or ``"*"`` and ``start <= run_date <= end``; several factors
    on one item multiply. Two pin rules that could be active for the same user on the same day
    must not share a position or an item: that is a load-time error, so pins never collide.

``apply_rules`` turns a model's list into the published one (steps in its docstring). An item
missing from the ``categories`` map has category ``None``: it fails any include list, is never in
an excluded category, and ``None`` counts as one category for ``max_per_category``.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple, Union

from core.errors import RulesError
from training.rules_file import (
    ALL_SEGMENTS, BOOST_KEYS, SEGMENT_KEYS, TOP_KEYS, Boost, SegmentSpec, read_rules_file)

# the file's sections and keys and RulesError are public here too: callers import them from here
__all__ = ["ALL_SEGMENTS", "BOOST_KEYS", "FALLBACK_HINT", "SEGMENT_KEYS", "TOP_KEYS", "Boost", "Rules",
           "RulesError", "SegmentRules", "SegmentSpec", "apply_rules", "eligible", "load_rules"]

logger = logging.getLogger(__name__)

FALLBACK_HINT = ("pass a longer fallback list (e.g. the global popular list of the whole catalog) "
                 "or relax the rules")


# ------------------------------------------------------------------------------------------ model

@dataclass(frozen=True)
class SegmentRules:
    """The rules for one segment on one run date: what :func:`apply_rules` needs."""
    banned_items: FrozenSet[str] = frozenset()
    allowed_categories: Optional[FrozenSet[str]] = None
    banned_categories: FrozenSet[str] = frozenset()
    boosts: Mapping[str, float] = field(default_factory=dict, hash=False)
    pins: List[Tuple[int, str]] = field(default_factory=list, hash=False)
    max_per_category: Optional[int] = None
    segment: Optional[str] = None
    source: str = "<rules>"


@dataclass(frozen=True)
class Rules:
    """A validated rules file; :meth:`for_segment` resolves it for one segment and day.

    ``segments`` and ``boosts`` hold the file's sections as validated (frozen pydantic models).
    """
    source: str = "<rules>"
    exclude_items: FrozenSet[str] = frozenset()
    exclude_categories: FrozenSet[str] = frozenset()
    segments: Mapping[str, SegmentSpec] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    boosts: Tuple[Boost, ...] = ()
    max_per_category: Optional[int] = None
    promised_length: Optional[int] = None

    def __reduce__(self):
        # picklable (Spark broadcasts the rules to its workers): a mappingproxy is not
        state = {f: getattr(self, f) for f in self.__dataclass_fields__}
        state["segments"] = dict(self.segments)
        return (_rules_from_state, (state,))

    def list_length(self, k: int) -> int:
        """The length to publish: ``promised_length`` when set, else the caller's k."""
        return self.promised_length if self.promised_length is not None else int(k)

    def for_segment(self, segment: Optional[str], run_date: dt.date) -> SegmentRules:
        """The rules that apply to users of ``segment`` (None = no segment) on ``run_date``."""
        if isinstance(run_date, dt.datetime):
            run_date = run_date.date()
        if not isinstance(run_date, dt.date):
            raise TypeError(f"run_date must be a datetime.date, got {type(run_date).__name__}")
        segment = None if segment is None else str(segment)
        specs = [self.segments[name] for name in (ALL_SEGMENTS, segment)
                 if name is not None and name in self.segments]
        if segment == ALL_SEGMENTS:
            specs = specs[:1]
        allowed = None
        for spec in specs:
            if spec.include_categories is not None:
                allowed = spec.include_categories if allowed is None else allowed & spec.include_categories
        boosts: Dict[str, float] = {}
        pins: List[Tuple[int, str]] = []
        for rule in self.boosts:
            if not (rule.matches(segment) and rule.active(run_date)):
                continue
            if rule.pin is not None:
                pins.extend((rule.pin + j, item) for j, item in enumerate(rule.items))
            else:
                for item in rule.items:
                    boosts[item] = boosts.get(item, 1.0) * rule.factor
        return SegmentRules(
            banned_items=self.exclude_items.union(*(s.exclude_items for s in specs)),
            allowed_categories=allowed,
            banned_categories=self.exclude_categories.union(*(s.exclude_categories for s in specs)),
            boosts=boosts, pins=sorted(pins), max_per_category=self.max_per_category,
            segment=segment, source=self.source)


def _rules_from_state(state: Dict[str, Any]) -> "Rules":
    return Rules(**{**state, "segments": MappingProxyType(state["segments"])})


def load_rules(path_or_dict: Union[str, Path, Mapping[str, Any]], source: Optional[str] = None) -> Rules:
    """Read and validate a rules file (or an already parsed mapping).

    Raises:
        RulesError: the file is missing, not YAML, or breaks a rule; the message names the file,
            the key path and what to do, one line per mistake (:mod:`training.rules_file`).
    """
    source, spec = read_rules_file(path_or_dict, source)
    rules = Rules(
        source=source, exclude_items=spec.exclude_items, exclude_categories=spec.exclude_categories,
        segments=MappingProxyType(dict(spec.segments)), boosts=spec.boosts,
        max_per_category=spec.max_per_category, promised_length=spec.promised_length)
    logger.info("rules %s: %d excluded items, %d excluded categories, %d segments, %d boost rules",
                source, len(rules.exclude_items), len(rules.exclude_categories), len(rules.segments),
                len(rules.boosts))
    return rules


# ------------------------------------------------------------------------------------------ apply

def _category(categories: Mapping[str, Any], item: str) -> Optional[str]:
    cat = categories.get(item)
    return None if cat is None else str(cat)


def eligible(item: str, category: Optional[str], seg: SegmentRules) -> bool:
    """Whether the rules allow ``item`` (of ``category``; None = unknown) at all for this segment."""
    if str(item) in seg.banned_items:
        return False
    if category is not None and str(category) in seg.banned_categories:
        return False
    return seg.allowed_categories is None or (category is not None and str(category) in seg.allowed_categories)


def apply_rules(items: Sequence[str], scores: Sequence[float], categories: Mapping[str, Any],
                seg: SegmentRules, k: int,
                fallbacks: Sequence[Sequence[str]]) -> Tuple[List[str], List[float], List[str]]:
    """The published list: exactly k items that obey ``seg``.

    Steps:
        1. Candidates: ``items`` deduplicated (first kept); items with a non-finite score (top-K
           padding) and items :func:`eligible` refuses are dropped.
        2. Boosts: scores multiplied by their factor, then a stable sort by score descending.
        3. Pins: each active pin whose item is eligible takes its 1-based position (a candidate
           that is pinned moves there). Pins ignore the candidate list and ``max_per_category``,
           but count toward the category cap of the other items. An ineligible pin is skipped.
        4. The free positions are filled in order from the sorted candidates, then from each
           fallback list in turn, skipping duplicates, ineligible items and items whose category
           already holds ``max_per_category`` items.

    Returns:
        ``(items, scores, sources)``, each of length k. ``scores``: the boosted model score;
        ``nan`` for items without one (back-fill, and pins that were not candidates).
        ``sources``: ``"model"``, ``"pinned"`` or ``"backfill"`` per item.

    Raises:
        RulesError: a pin lies beyond k, or fewer than k eligible items exist in the candidates,
            pins and fallbacks together (the message gives the count).
    """
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(items) != len(scores):
        raise ValueError(f"items ({len(items)}) and scores ({len(scores)}) must have the same length")
    cap = seg.max_per_category
    where = f"{seg.source}: segment {seg.segment!r}"

    for pos, item in seg.pins:
        if pos > k:
            raise RulesError(f"{where}: item {item!r} is pinned at position {pos} but the list has "
                             f"only k={k} places; move the pin up or publish longer lists")
    pinned: Dict[int, str] = {}
    for pos, item in seg.pins:
        if eligible(item, _category(categories, item), seg):
            pinned[pos] = item
        else:
            logger.debug("%s: pinned item %r is excluded by the rules; not pinned", where, item)

    boosted: Dict[str, float] = {}
    for item, score in zip(items, scores):
        item, score = str(item), float(score)
        if item in boosted or not math.isfinite(score) or not eligible(item, _category(categories, item), seg):
            continue
        boosted[item] = score * seg.boosts.get(item, 1.0)
    ranked = sorted(boosted, key=lambda it: -boosted[it])  # stable: ties keep the input order

    out: List[Optional[Tuple[str, float, str]]] = [None] * k
    for pos, item in pinned.items():
        out[pos - 1] = (item, boosted.get(item, math.nan), "pinned")
    placed = set(pinned.values())
    per_cat = Counter(_category(categories, item) for item in placed)
    free = [i for i in range(k) if out[i] is None]
    streams = [(ranked, "model")] + [(fb, "backfill") for fb in fallbacks]
    n_free = 0
    for stream, tag in streams:
        for item in stream:
            if n_free == len(free):
                break
            item = str(item)
            if item in placed:
                continue
            cat = _category(categories, item)
            if tag != "model" and not eligible(item, cat, seg):
                continue
            if cap is not None and per_cat[cat] >= cap:
                continue
            placed.add(item)
            per_cat[cat] += 1
            out[free[n_free]] = (item, boosted[item] if tag == "model" else math.nan, tag)
            n_free += 1
    if n_free < len(free):
        got = Counter(entry[2] for entry in out if entry is not None)
        raise RulesError(f"{where}: only {sum(got.values())} eligible items for a list of k={k} "
                         f"({got['model']} from the model, {got['pinned']} pinned, {got['backfill']} "
                         f"from the fallbacks); {FALLBACK_HINT}")
    return [e[0] for e in out], [e[1] for e in out], [e[2] for e in out]
