"""What a PromQL expression reads: the series names, the labels its matchers and groupings name.

Enough PromQL for the project's rules (selectors, range and subquery brackets, functions,
aggregations with by/without, binary operators with on/ignoring); no full parser.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Set

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SELECTOR = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}')
_MATCHER_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)')
_GROUPING = re.compile(r'\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)')
_IDENT = re.compile(r'(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(\s*\()?')
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
             "offset", "inf", "nan", "atan2"}


@dataclass
class Reads:
    series: Dict[str, Set[str]] = field(default_factory=dict)   # series name -> label names its matchers use
    grouping: Set[str] = field(default_factory=set)             # labels named in by/without/on/ignoring


def reads(expr: str) -> Reads:
    """The series an expression reads, and the labels it names.

    >>> r = reads('sum by (le) (rate(x_bucket{route=~"/v1/{id}"}[5m])) / on(instance) y')
    >>> sorted(r.series.items()), sorted(r.grouping)
    ([('x_bucket', {'route'}), ('y', set())], ['instance', 'le'])
    """
    out = Reads()
    text = _STRING.sub('""', expr)            # strings may hold braces ("/v1/users/{user_id}")
    for m in _SELECTOR.finditer(text):
        if m.group(1):
            out.series.setdefault(m.group(1), set()).update(_MATCHER_LABEL.findall(m.group(2)))
    text = _SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", text)
    for m in _GROUPING.finditer(text):
        out.grouping.update(x.strip() for x in m.group(2).split(",") if x.strip())
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)   # ranges and subqueries: [5m], [26h:10m]
    for m in _IDENT.finditer(text):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        out.series.setdefault(name, set())
    return out
