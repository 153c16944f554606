"""Business rules on published lists: exclusions, per-segment category lists, boosts, pins, caps.

The rule file (YAML, see ``conf/rules.yaml`` for the documented example) is validated once by
:func:`load_rules`; any mistake raises :class:`RulesError` naming the file, the key path
(``boosts[2].end``) and what to do. Unknown keys are errors, so a typo never silently disables a
rule. Items and categories are compared as strings (``22423`` and ``"22423"`` are the same item).

Top-level keys (all optional)::

    exclude_items: [ids]            never recommended to anyone
    exclude_categories: [names]     never recommended to anyone
    segments:                       per segment ("Germany", ...; "*" = every segment)
      <name>:
        include_categories: [names] only these categories for that segment
        exclude_items: [ids]
        exclude_categories: [names]
    boosts:                         list of rules, each for one segment or "*"
      - segment: <name> | "*"
        items: [ids]
        factor: <float > 0>         multiplies the items' scores ...
        pin: <int >= 1>             ... OR puts items[j] at 1-based position pin + j
        start: YYYY-MM-DD           active from this date (optional)
        end: YYYY-MM-DD             up to and including this date (optional)
    max_per_category: <int >= 1>    at most this many items of one category per list
    promised_length: <int >= 1>     list length to publish (else the caller's k)

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
import difflib
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from core.errors import RulesError  # noqa: F401 (raised here; callers import it from here too)

logger = logging.getLogger(__name__)

TOP_KEYS = ("exclude_items", "exclude_categories", "segments", "boosts", "max_per_category",
            "promised_length")
SEGMENT_KEYS = ("include_categories", "exclude_items", "exclude_categories")
BOOST_KEYS = ("segment", "items", "factor", "pin", "start", "end")
ALL_SEGMENTS = "*"
FALLBACK_HINT = ("pass a longer fallback list (e.g. the global popular list of the whole catalog) "
                 "or relax the rules")


# ------------------------------------------------------------------------------------------ model

@dataclass(frozen=True)
class SegmentSpec:
    """One entry of ``segments:``."""
    include_categories: Optional[FrozenSet[str]] = None
    exclude_items: FrozenSet[str] = frozenset()
    exclude_categories: FrozenSet[str] = frozenset()


@dataclass(frozen=True)
class Boost:
    """One entry of ``boosts:`` (exactly one of ``factor`` and ``pin`` is set)."""
    segment: str
    items: Tuple[str, ...]
    factor: Optional[float] = None
    pin: Optional[int] = None
    start: Optional[dt.date] = None
    end: Optional[dt.date] = None

    def active(self, run_date: dt.date) -> bool:
        return (self.start is None or self.start <= run_date) and (self.end is None or run_date <= self.end)

    def matches(self, segment: Optional[str]) -> bool:
        return self.segment == ALL_SEGMENTS or self.segment == segment


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
    """A validated rule file; :meth:`for_segment` resolves it for one segment and day."""
    source: str = "<rules>"
    exclude_items: FrozenSet[str] = frozenset()
    exclude_categories: FrozenSet[str] = frozenset()
    segments: Mapping[str, SegmentSpec] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    def __reduce__(self):
        # picklable (Spark broadcasts the rules to its workers): a mappingproxy is not
        state = {f: getattr(self, f) for f in self.__dataclass_fields__}
        state["segments"] = dict(self.segments)
        return (_rules_from_state, (state,))
    boosts: Tuple[Boost, ...] = ()
    max_per_category: Optional[int] = None
    promised_length: Optional[int] = None

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


# ------------------------------------------------------------------------------------------ YAML

class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps ids as written and refuses duplicate keys.

    Only plain decimals become ints (``0123`` or ``1:20`` stay strings, not octal or base 60), only
    ``true``/``false`` become booleans (``NO`` for Norway stays a string), dates stay strings and
    are parsed by :func:`_date`, and a key given twice is an error instead of the last one winning.
    """


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_DECIMAL = re.compile(r"[-+]?(0|[1-9][0-9]*)")


def _int_or_str(loader: _Loader, node: yaml.Node):
    text = loader.construct_scalar(node)
    return int(text) if _DECIMAL.fullmatch(text) else text


def _bool_or_str(loader: _Loader, node: yaml.Node):
    text = loader.construct_scalar(node)
    return text.lower() == "true" if text.lower() in ("true", "false") else text


def _mapping_no_duplicates(loader: _Loader, node: yaml.MappingNode):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, (str, int, float, bool)) or key is None:
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping; keep one", key_node.start_mark)
            seen.add(key)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor("tag:yaml.org,2002:int", _int_or_str)
_Loader.add_constructor("tag:yaml.org,2002:bool", _bool_or_str)
_Loader.add_constructor("tag:yaml.org,2002:map", _mapping_no_duplicates)


# ------------------------------------------------------------------------------------------ checks

def _where(path: str, key: Union[str, int]) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


class _Checker:
    """Validation helpers that know the source name for the messages."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, message: str) -> RulesError:
        return RulesError(f"{self.source}: {path or '(top level)'}: {message}")

    def mapping(self, path: str, value: Any, allowed: Sequence[str]) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(path, f"must be a mapping with keys among {list(allowed)}, "
                                  f"got {type(value).__name__} {value!r}")
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise self.fail(_where(path, str(key)),
                                f"unknown key; {hint}allowed keys here: {list(allowed)}")
        return value

    def name(self, path: str, value: Any, what: str) -> str:
        """An id or a category: a string, or an int (kept as its decimal string)."""
        if isinstance(value, bool) or value is None:
            raise self.fail(path, f"{what} {value!r} is not a name; quote it (e.g. 'NO', 'true')")
        if isinstance(value, float):
            raise self.fail(path, f"{what} {value!r} was read as a number; quote it so it is kept "
                                  "exactly as written (e.g. '1.50')")
        if isinstance(value, int):
            return str(value)
        if isinstance(value, str) and value.strip():
            return value
        raise self.fail(path, f"{what} must be a non-empty string, got {value!r}")

    def names(self, path: str, value: Any, what: str) -> Tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, (list, tuple)):
            raise self.fail(path, f"must be a list of {what}s, e.g. [{value!r}]; got {value!r}")
        return tuple(self.name(_where(path, i), v, what) for i, v in enumerate(value))

    def positive_int(self, path: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(path, f"must be a whole number >= 1, got {value!r}")
        return int(value)

    def factor(self, path: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value <= 0:
            raise self.fail(path, f"must be a number > 0 (1.5 = +50%, 0.5 = halve), got {value!r}")
        return float(value)

    def date(self, path: str, value: Any) -> Optional[dt.date]:
        if value is None:
            return None
        if isinstance(value, dt.datetime):
            raise self.fail(path, f"must be a date without a time (YYYY-MM-DD), got {value!r}")
        if isinstance(value, dt.date):
            return value
        if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
            try:
                return dt.date.fromisoformat(value.strip())
            except ValueError as exc:
                raise self.fail(path, f"{value!r} is not a real date ({exc}); write YYYY-MM-DD") from None
        raise self.fail(path, f"must be a date written YYYY-MM-DD (e.g. 2026-12-24), got {value!r}")


def _segment(check: _Checker, path: str, value: Any) -> SegmentSpec:
    spec = check.mapping(path, value, SEGMENT_KEYS)
    include = None
    if "include_categories" in spec and spec["include_categories"] is not None:
        include = frozenset(check.names(_where(path, "include_categories"), spec["include_categories"],
                                        "category"))
        if not include:
            raise check.fail(_where(path, "include_categories"),
                             "an empty list allows no category at all; remove the key to allow every category")
    return SegmentSpec(
        include_categories=include,
        exclude_items=frozenset(check.names(_where(path, "exclude_items"), spec.get("exclude_items"), "item id")),
        exclude_categories=frozenset(check.names(_where(path, "exclude_categories"),
                                                 spec.get("exclude_categories"), "category")))


def _boost(check: _Checker, path: str, value: Any) -> Boost:
    if not isinstance(value, Mapping):
        raise check.fail(path, f"must be a mapping with keys among {list(BOOST_KEYS)}, got {value!r}")
    rule = check.mapping(path, value, BOOST_KEYS)
    if "segment" not in rule:
        raise check.fail(_where(path, "segment"), "is missing; name a segment, or write segment: '*' "
                                                  "to apply the rule to everyone")
    segment = check.name(_where(path, "segment"), rule["segment"], "segment")
    items = check.names(_where(path, "items"), rule.get("items"), "item id")
    if not items:
        raise check.fail(_where(path, "items"), "is missing or empty; list the item ids the rule is for")
    has_factor, has_pin = rule.get("factor") is not None, rule.get("pin") is not None
    if has_factor == has_pin:
        raise check.fail(path, "give exactly one of factor (multiply the score) and pin (fixed position), "
                               f"got {'both' if has_factor else 'neither'}")
    factor = check.factor(_where(path, "factor"), rule["factor"]) if has_factor else None
    pin = check.positive_int(_where(path, "pin"), rule["pin"]) if has_pin else None
    if pin is not None and len(set(items)) != len(items):
        dup = next(i for i in items if items.count(i) > 1)
        raise check.fail(_where(path, "items"), f"item {dup!r} is pinned twice; list it once")
    start = check.date(_where(path, "start"), rule.get("start"))
    end = check.date(_where(path, "end"), rule.get("end"))
    if start is not None and end is not None and end < start:
        raise check.fail(_where(path, "end"), f"end {end} is before start {start}; swap them")
    return Boost(segment=segment, items=items, factor=factor, pin=pin, start=start, end=end)


def _pin_clashes(check: _Checker, boosts: Sequence[Boost], promised_length: Optional[int]) -> None:
    """Pins that could meet in one list must not share a position or an item."""
    far = dt.date.max
    pins = [(i, b) for i, b in enumerate(boosts) if b.pin is not None]
    for i, b in pins:
        last = b.pin + len(b.items) - 1
        if promised_length is not None and last > promised_length:
            raise check.fail(f"boosts[{i}].pin", f"pins reach position {last} but promised_length is "
                                                 f"{promised_length}; move the pin up or lengthen the list")
    for n, (i, a) in enumerate(pins):
        for j, b in pins[n + 1:]:
            if not (a.segment == b.segment or ALL_SEGMENTS in (a.segment, b.segment)):
                continue
            if (a.start or dt.date.min) > (b.end or far) or (b.start or dt.date.min) > (a.end or far):
                continue
            pos_a = set(range(a.pin, a.pin + len(a.items)))
            pos_b = set(range(b.pin, b.pin + len(b.items)))
            same = sorted(pos_a & pos_b)
            what = f"position {same[0]}" if same else \
                f"item {sorted(set(a.items) & set(b.items))[0]!r}" if set(a.items) & set(b.items) else None
            if what:
                raise check.fail(f"boosts[{j}].pin",
                                 f"{what} is also pinned by boosts[{i}] for segment {a.segment!r} on "
                                 "overlapping dates; change the position, the segment or the dates")


def load_rules(path_or_dict: Union[str, Path, Mapping[str, Any]], source: Optional[str] = None) -> Rules:
    """Read and validate a rule file (or an already parsed mapping).

    Raises:
        RulesError: the file is missing, not YAML, or breaks a rule; the message names the file,
            the key path and what to do.
    """
    if isinstance(path_or_dict, Mapping):
        data: Any = path_or_dict
        source = source or "<rules dict>"
    elif isinstance(path_or_dict, (str, Path)):
        path = Path(path_or_dict)
        source = source or str(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise RulesError(f"{source}: rules file not found; create it (see conf/rules.yaml) "
                             "or point the setting at the right file") from None
        try:
            data = yaml.load(text, Loader=_Loader)
        except yaml.YAMLError as exc:
            raise RulesError(f"{source}: not valid YAML; fix the syntax:\n{exc}") from None
    else:
        raise TypeError(f"load_rules takes a path or a mapping, got {type(path_or_dict).__name__}")
    check = _Checker(source)
    top = check.mapping("", data, TOP_KEYS)
    segments_raw = top.get("segments")
    if segments_raw is not None and not isinstance(segments_raw, Mapping):
        raise check.fail("segments", "must be a mapping of segment name -> rules, e.g. Germany: {...}")
    segments = {}
    for name, spec in (segments_raw or {}).items():
        key = check.name(f"segments.{name}", name, "segment name")
        segments[key] = _segment(check, f"segments.{key}", spec)
    boosts_raw = top.get("boosts")
    if boosts_raw is not None and not isinstance(boosts_raw, (list, tuple)):
        raise check.fail("boosts", "must be a list of rules, each starting with '- segment: ...'")
    boosts = tuple(_boost(check, f"boosts[{i}]", b) for i, b in enumerate(boosts_raw or ()))
    max_per_category = top.get("max_per_category")
    if max_per_category is not None:
        max_per_category = check.positive_int("max_per_category", max_per_category)
    promised_length = top.get("promised_length")
    if promised_length is not None:
        promised_length = check.positive_int("promised_length", promised_length)
    _pin_clashes(check, boosts, promised_length)
    rules = Rules(
        source=source,
        exclude_items=frozenset(check.names("exclude_items", top.get("exclude_items"), "item id")),
        exclude_categories=frozenset(check.names("exclude_categories", top.get("exclude_categories"),
                                                 "category")),
        segments=MappingProxyType(segments), boosts=boosts,
        max_per_category=max_per_category, promised_length=promised_length)
    logger.info("rules %s: %d excluded items, %d excluded categories, %d segments, %d boost rules",
                source, len(rules.exclude_items), len(rules.exclude_categories), len(segments), len(boosts))
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
