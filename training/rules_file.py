"""The rules file: how it is read (YAML) and what it may hold (pydantic models, one per section).

:func:`read_rules_file` validates the whole file the way ``config/`` validates the config: strict
models (``config.base.Strict``: unknown keys refused, frozen), every mistake reported at once, one
line each, naming the file, the key path (``boosts[2].end``) and what to do, as a
:class:`RulesError`. Unknown keys are errors (with a "did you mean"), so a typo never silently
disables a rule. Items and categories are kept as strings (``22423`` and ``"22423"`` are the same
item). What the rules mean is in :mod:`training.rules`, which turns the file into ``Rules``.

Top-level keys (all optional; ``conf/rules.yaml`` is the documented example)::

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

Two pin rules that could be active for the same user on the same day must not share a position or
an item: that is a load-time error, so pins never collide.
"""
from __future__ import annotations

import datetime as dt
import difflib
import math
import re
from pathlib import Path
from typing import Annotated, Any, Callable, Dict, FrozenSet, Mapping, Optional, Tuple, Type, Union

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from config.base import Strict
from core.errors import RulesError

ALL_SEGMENTS = "*"


# ------------------------------------------------------------------------------------------ YAML

class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps ids as written and refuses duplicate keys.

    Only plain decimals become ints (``0123`` or ``1:20`` stay strings, not octal or base 60), only
    ``true``/``false`` become booleans (``NO`` for Norway stays a string), dates stay strings and
    are parsed by the schema, and a key given twice is an error instead of the last one winning.
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


# ------------------------------------------------------------------------------------------ values

def _error(message: str, *below: Union[str, int]) -> PydanticCustomError:
    """A validation error whose message is ours, word for word; ``below`` names the key under the
    one being validated that is at fault (a check of a whole rule that blames one of its keys)."""
    # the message goes in as the last context value, so braces in it (a repr) are never formatted
    return PydanticCustomError("rules", "{message}", {"below": below, "message": message})


def _name(what: str) -> Callable[[Any], str]:
    """An id or a category: a string, or an int (kept as its decimal string)."""
    def check(value: Any) -> str:
        if isinstance(value, bool) or value is None:
            raise _error(f"{what} {value!r} is not a name; quote it (e.g. 'NO', 'true')")
        if isinstance(value, float):
            raise _error(f"{what} {value!r} was read as a number; quote it so it is kept "
                         "exactly as written (e.g. '1.50')")
        if isinstance(value, int):
            return str(value)
        if isinstance(value, str) and value.strip():
            return value
        raise _error(f"{what} must be a non-empty string, got {value!r}")
    return check


def _list_of(what: str) -> Callable[[Any], Any]:
    """A YAML list (left out or empty = none); its entries are checked one by one afterwards."""
    def check(value: Any) -> Any:
        if value is None:
            return ()
        if not isinstance(value, (list, tuple)):
            raise _error(f"must be a list of {what}s, e.g. [{value!r}]; got {value!r}")
        return value
    return check


def _whole_number(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _error(f"must be a whole number >= 1, got {value!r}")
    return int(value)


def _factor(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise _error(f"must be a number > 0 (1.5 = +50%, 0.5 = halve), got {value!r}")
    return float(value)


def _date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        raise _error(f"must be a date without a time (YYYY-MM-DD), got {value!r}")
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError as exc:
            raise _error(f"{value!r} is not a real date ({exc}); write YYYY-MM-DD") from None
    raise _error(f"must be a date written YYYY-MM-DD (e.g. 2026-12-24), got {value!r}")


def _some_category(value: FrozenSet[str]) -> FrozenSet[str]:
    if not value:
        raise _error("an empty list allows no category at all; remove the key to allow every category")
    return value


def _some_item(value: Tuple[str, ...]) -> Tuple[str, ...]:
    if not value:
        raise _error("is missing or empty; list the item ids the rule is for")
    return value


def _segment_mapping(value: Any) -> Any:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _error("must be a mapping of segment name -> rules, e.g. Germany: {...}")
    return value


def _rule_list(value: Any) -> Any:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise _error("must be a list of rules, each starting with '- segment: ...'")
    return value


ItemId = Annotated[str, BeforeValidator(_name("item id"))]
Category = Annotated[str, BeforeValidator(_name("category"))]
ItemIds = Annotated[FrozenSet[ItemId], BeforeValidator(_list_of("item id"))]
Categories = Annotated[FrozenSet[Category], BeforeValidator(_list_of("category"))]
Position = Annotated[int, BeforeValidator(_whole_number)]
Date = Annotated[dt.date, BeforeValidator(_date)]


# ------------------------------------------------------------------------------------------ sections

class SegmentSpec(Strict):
    """One entry of ``segments:`` (an empty entry is allowed and changes nothing)."""
    include_categories: Optional[Annotated[FrozenSet[Category], BeforeValidator(_list_of("category")),
                                           AfterValidator(_some_category)]] = None
    exclude_items: ItemIds = frozenset()
    exclude_categories: Categories = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _none_is_empty(cls, data: Any) -> Any:
        return {} if data is None else data


class Boost(Strict):
    """One entry of ``boosts:`` (exactly one of ``factor`` and ``pin`` is set)."""
    segment: Annotated[str, BeforeValidator(_name("segment"))] = Field(
        description="name a segment, or write segment: '*' to apply the rule to everyone")
    items: Annotated[Tuple[ItemId, ...], BeforeValidator(_list_of("item id")), AfterValidator(_some_item)] = \
        Field(default=(), validate_default=True)
    factor: Optional[Annotated[float, BeforeValidator(_factor)]] = None
    pin: Optional[Position] = None
    start: Optional[Date] = None
    end: Optional[Date] = None

    @model_validator(mode="after")
    def _one_rule(self) -> "Boost":
        if (self.factor is None) == (self.pin is None):
            raise _error("give exactly one of factor (multiply the score) and pin (fixed position), "
                         f"got {'neither' if self.factor is None else 'both'}")
        if self.pin is not None and len(set(self.items)) != len(self.items):
            dup = next(i for i in self.items if self.items.count(i) > 1)
            raise _error(f"item {dup!r} is pinned twice; list it once", "items")
        if self.start is not None and self.end is not None and self.end < self.start:
            raise _error(f"end {self.end} is before start {self.start}; swap them", "end")
        return self

    def active(self, run_date: dt.date) -> bool:
        return (self.start is None or self.start <= run_date) and (self.end is None or run_date <= self.end)

    def matches(self, segment: Optional[str]) -> bool:
        return self.segment == ALL_SEGMENTS or self.segment == segment


class RulesFile(Strict):
    """The whole file (an empty file is allowed: no rules)."""
    exclude_items: ItemIds = frozenset()
    exclude_categories: Categories = frozenset()
    segments: Annotated[Dict[Annotated[str, BeforeValidator(_name("segment name"))], SegmentSpec],
                        BeforeValidator(_segment_mapping)] = Field(default_factory=dict)
    boosts: Annotated[Tuple[Boost, ...], BeforeValidator(_rule_list)] = ()
    max_per_category: Optional[Position] = None
    promised_length: Optional[Position] = None

    @model_validator(mode="before")
    @classmethod
    def _none_is_empty(cls, data: Any) -> Any:
        return {} if data is None else data

    @model_validator(mode="after")
    def _pins_never_clash(self) -> "RulesFile":
        """Pins that could meet in one list must not share a position or an item."""
        far = dt.date.max
        pins = [(i, b) for i, b in enumerate(self.boosts) if b.pin is not None]
        for i, b in pins:
            last = b.pin + len(b.items) - 1
            if self.promised_length is not None and last > self.promised_length:
                raise _error(f"pins reach position {last} but promised_length is {self.promised_length}; "
                             "move the pin up or lengthen the list", "boosts", i, "pin")
        for n, (i, a) in enumerate(pins):
            for j, b in pins[n + 1:]:
                if not (a.segment == b.segment or ALL_SEGMENTS in (a.segment, b.segment)):
                    continue
                if (a.start or dt.date.min) > (b.end or far) or (b.start or dt.date.min) > (a.end or far):
                    continue
                same = sorted(set(range(a.pin, a.pin + len(a.items)))
                              & set(range(b.pin, b.pin + len(b.items))))
                shared = sorted(set(a.items) & set(b.items))
                what = f"position {same[0]}" if same else f"item {shared[0]!r}" if shared else None
                if what:
                    raise _error(f"{what} is also pinned by boosts[{i}] for segment {a.segment!r} on "
                                 "overlapping dates; change the position, the segment or the dates",
                                 "boosts", j, "pin")
        return self


TOP_KEYS = tuple(RulesFile.model_fields)
SEGMENT_KEYS = tuple(SegmentSpec.model_fields)
BOOST_KEYS = tuple(Boost.model_fields)


# ------------------------------------------------------------------------------------------ messages

def _section(loc: Tuple[Any, ...]) -> Type[BaseModel]:
    """The model whose keys ``loc`` (the path of a mapping in the file) holds."""
    if len(loc) >= 2 and loc[0] == "segments":
        return SegmentSpec
    if len(loc) >= 2 and loc[0] == "boosts":
        return Boost
    return RulesFile


def _key_path(loc: Tuple[Any, ...]) -> str:
    """``("boosts", 2, "end")`` -> ``boosts[2].end``; the key under ``segments`` is a name, not an index."""
    out = ""
    for n, part in enumerate(loc):
        if isinstance(part, int) and not (n == 1 and loc[0] == "segments"):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _message(err: Mapping[str, Any]) -> Tuple[Tuple[Any, ...], str]:
    """(where, what is wrong and what to do) of one pydantic error."""
    loc, kind, value = tuple(err["loc"]), err["type"], err.get("input")
    ctx = err.get("ctx") or {}
    if loc[-1:] == ("[key]",):      # a bad segment name: pydantic's path ends (..., 1, "[key]") for True
        loc = loc[:-2] + (value,)
    if kind == "rules":
        return loc + tuple(ctx.get("below", ())), err["msg"]
    if kind in ("extra_forbidden", "invalid_key"):
        loc = loc[:-1] + (str(loc[-1]),)       # a key, even one YAML read as a number
        allowed = list(_section(loc[:-1]).model_fields)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return loc, f"unknown key; {hint}allowed keys here: {allowed}"
    if kind == "model_type":
        allowed = list(_section(loc).model_fields)
        got = repr(value) if value is None else f"{type(value).__name__} {value!r}"
        return loc, f"must be a mapping with keys among {allowed}, got {got}"
    if kind == "missing":
        field = _section(loc[:-1]).model_fields.get(str(loc[-1]))
        return loc, f"is missing; {field.description}" if field and field.description else "is missing"
    return loc, f"{err['msg']} (got {value!r})"


def format_errors(exc: ValidationError, source: str) -> str:
    """One line per mistake: ``<file>: <key path>: <what is wrong; what to do>``."""
    lines = []
    for err in exc.errors():
        loc, message = _message(err)
        lines.append(f"{source}: {_key_path(loc) or '(top level)'}: {message}")
    return "\n".join(dict.fromkeys(lines))


def read_rules_file(path_or_dict: Union[str, Path, Mapping[str, Any]],
                    source: Optional[str] = None) -> Tuple[str, RulesFile]:
    """Read and validate a rules file (or an already parsed mapping).

    Returns:
        ``(source, rules)``: the name the messages use (the path, or ``source``, or
        ``"<rules dict>"`` for a mapping) and the validated file.

    Raises:
        RulesError: the file is missing, not YAML, or breaks a rule; the message names the file,
            the key path and what to do, one line per mistake.
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
    try:
        return source, RulesFile.model_validate(data)
    except ValidationError as exc:
        raise RulesError(format_errors(exc, source)) from None
