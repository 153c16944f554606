"""The tiny published store the service's tests read, and a strict parser of /metrics' text."""
from __future__ import annotations

import re
from typing import Dict, List, Tuple

from serving.codec import encode_item, encode_list
from serving.publish import publish_version

VERSION = "20261126-test"
USERS_ROUTE = "/v1/users/{user_id}/recommendations"

# A tiny store. Every list is written so each test can say exactly what it must get back.
CATALOGUE = {
    "A": {"title": "Red teapot", "price": 12.5, "category": "kitchen"},
    "B": {"title": "Blue mug", "price": 4.25, "category": "kitchen"},
    "C": {"title": "Paper lantern", "price": 7.0, "category": "decor"},
    "D": {"title": "Jam jar", "price": 2.1, "category": "kitchen"},
    "E": {"title": "Tea towel", "price": 3.5, "category": "textiles"},
    # "NODETAIL" is recommended but has no details: the API must answer nulls for it.
}
USER_LISTS = {
    "u1": (["A", "B", "C"], [0.9, 0.8, 0.7], ["model", "model", "buy_again"]),
    "u2": (["C", "NODETAIL"], [0.5, 0.4], ["model", "explore"]),
}
SIMILAR = {"A": (["B", "D"], [0.95, 0.6], ["model", "model"])}
FALLBACKS = {
    "global": (["E", "D", "A"], [30.0, 20.0, 10.0], ["popular", "popular", "popular"]),
    "segment:Germany": (["D", "C"], [5.0, 4.0], ["trending", "popular"]),
}

# Details and ids that JSON must escape or write in unusual ways, to compare the fast path's bytes
TRICKY_DETAILS = {
    "Q": {"title": 'He said "hi" \\ \u2028 \x01 é', "price": 3, "category": None},
    "R": {"title": "Réveil", "extra": [1, {"a": None}]},        # no price or category; a field the API ignores
    'q"u\\o': {"title": "quoted id", "price": 1e-05, "category": "x"},
}
TRICKY_LISTS = {
    "u3": (["Q", "R", "NODETAIL", 'q"u\\o'], [123456789.0, 0.1, 1e-05, -0.0], ["editorial", "model", "pinned", "x"]),
    'ü "quoted" \\ id ✓': (["A"], [1.0], ["model"]),
}


def store_records() -> List[Tuple[str, str, bytes]]:
    records = [("i", item, encode_item(details)) for item, details in CATALOGUE.items()]
    records += [("u", user, encode_list(*lst)) for user, lst in USER_LISTS.items()]
    records += [("s", item, encode_list(*lst)) for item, lst in SIMILAR.items()]
    records += [("f", name, encode_list(*lst)) for name, lst in FALLBACKS.items()]
    return records


def tricky_records() -> List[Tuple[str, str, bytes]]:
    """The tiny store plus :data:`TRICKY_DETAILS` and :data:`TRICKY_LISTS`."""
    records = store_records() + [("i", item, encode_item(d)) for item, d in TRICKY_DETAILS.items()]
    records += [("u", user, encode_list(*lst)) for user, lst in TRICKY_LISTS.items()]
    records += [("s", 'q"u\\o', encode_list(["Q", "R"], [2.5, 1.0], ["similar", "model"]))]
    return records


def publish_store(r, ks, version: str = VERSION) -> None:
    """Publish the tiny store above with the real publisher (also used by the browser test)."""
    publish_version(r, ks, version, [store_records()], metadata={"model_version": "test"})


SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)'
    r'(?:\{(?P<labels>[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*)\})?'
    r' (?P<value>[-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|Inf)|NaN)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"')


def parse_prometheus(text: str) -> Dict[Tuple[str, frozenset], float]:
    """Parse text format 0.0.4 strictly: every line is a HELP, a TYPE or a sample of a typed family."""
    assert text.endswith("\n")
    typed: Dict[str, str] = {}
    samples: Dict[Tuple[str, frozenset], float] = {}
    for line in text.rstrip("\n").split("\n"):
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in {"counter", "gauge", "histogram"}, line
            typed[name] = kind
            continue
        m = SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        name = m["name"]
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in typed else name
        assert family in typed, f"sample {name} has no # TYPE line before it"
        labels = frozenset(LABEL.findall(m["labels"] or ""))
        samples[(name, labels)] = float(m["value"])
    return samples
