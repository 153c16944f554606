"""training.rules: the example rule file, one known answer per rule kind, and a seeded property test
over 300 random rule sets. The file's validation messages: test_rules_file.py."""
from __future__ import annotations

import datetime as dt
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import yaml

from training.rules import TOP_KEYS, Rules, RulesError, SegmentRules, apply_rules, eligible, load_rules

CONF = Path(__file__).resolve().parents[2] / "conf" / "rules.yaml"
DAY = dt.date(2026, 12, 10)

# a small catalog: item -> category
CATS = {"a1": "food", "a2": "food", "a3": "food", "b1": "toys", "b2": "toys", "c1": "wine", "c2": "wine"}
POPULAR = ["a1", "b1", "c1", "a2", "b2", "c2", "a3"]   # the whole catalog, a fallback that always fills


def seg_of(data, segment=None, day=DAY) -> SegmentRules:
    return load_rules(data).for_segment(segment, day)


def publish(data, items, scores, k, segment=None, day=DAY, fallbacks=(POPULAR,)):
    return apply_rules(items, scores, CATS, seg_of(data, segment, day), k, list(fallbacks))


# ------------------------------------------------------------------------------------------ the file

def example_block(text: str) -> str:
    """The commented example of conf/rules.yaml, uncommented."""
    block = text.split("# --- example", 1)[1].split("# --- end example", 1)[0]
    lines = block.splitlines()[1:]
    assert all(line.startswith("#") for line in lines if line.strip())
    return "\n".join(re.sub(r"^# ?", "", line) for line in lines)


def test_default_rule_file_validates_and_is_empty():
    rules = load_rules(CONF)
    assert rules.source == str(CONF)
    seg = rules.for_segment("Germany", DAY)
    assert (seg.banned_items, seg.allowed_categories, seg.boosts, seg.pins) == (frozenset(), None, {}, [])
    assert rules.list_length(12) == 12


def test_documented_example_validates_and_shows_every_rule_kind(tmp_path):
    path = tmp_path / "example.yaml"
    path.write_text(example_block(CONF.read_text()))
    rules = load_rules(path)
    assert set(TOP_KEYS) <= set(yaml.safe_load(path.read_text()))     # every top-level key shown
    assert rules.max_per_category == 3 and rules.list_length(12) == 20
    de = rules.for_segment("Germany", dt.date(2026, 12, 2))
    assert de.banned_items == {"POST", "85123A", "22423"}
    assert de.banned_categories == {"gift_cards", "seasonal_2025", "alcohol"}
    assert de.allowed_categories == {"kitchen", "home", "toys"}
    assert de.boosts == {"22423": 1.5, "85099B": 1.5} and de.pins == []
    fr = rules.for_segment("France", dt.date(2026, 12, 2))
    assert fr.pins == [(1, "47566")] and fr.allowed_categories is None
    assert rules.for_segment("France", dt.date(2026, 11, 30)).pins == []       # before start
    assert rules.for_segment("France", dt.date(2026, 12, 25)).boosts == {}      # after end


# ------------------------------------------------------------------------------------------ rule kinds

def test_exclude_items_and_categories_everywhere():
    items, scores, sources = publish({"exclude_items": ["a1"], "exclude_categories": ["wine"]},
                                     ["c1", "a1", "b1", "a2"], [4, 3, 2, 1], 4)
    # c1 (wine) and a1 (banned) go; b1, a2 stay; the back-fill skips a1 (banned), b1 (present),
    # c1 (wine), a2 (present), takes b2, skips c2 (wine), takes a3
    assert items == ["b1", "a2", "b2", "a3"]
    assert sources == ["model", "model", "backfill", "backfill"]
    assert scores[:2] == [2.0, 1.0] and all(math.isnan(s) for s in scores[2:])


def test_ids_are_compared_as_strings():
    seg = seg_of({"exclude_items": [22423, "85123A"]})
    assert seg.banned_items == {"22423", "85123A"}
    assert not eligible(22423, None, seg) and not eligible("22423", None, seg) and eligible("1", None, seg)


def test_segment_include_categories_and_star_segment():
    data = {"segments": {"*": {"exclude_items": ["b2"]},
                         "Germany": {"include_categories": ["food", "toys"], "exclude_items": ["a3"],
                                     "exclude_categories": ["toys"]}}}
    # Germany: only food or toys, but toys excluded -> food only, without a3 (segment) and b2 ("*")
    items, _, sources = publish(data, ["c1", "b1", "a1"], [3, 2, 1], 2, segment="Germany")
    assert items == ["a1", "a2"] and sources == ["model", "backfill"]
    # France: only the "*" segment applies
    items, _, _ = publish(data, ["c1", "b2", "a1"], [3, 2, 1], 3, segment="France")
    assert items == ["c1", "a1", "b1"]
    # no segment at all: also the "*" rules
    assert seg_of(data, None).banned_items == {"b2"}


def test_include_lists_of_star_and_segment_intersect():
    data = {"segments": {"*": {"include_categories": ["food", "toys"]},
                         "Germany": {"include_categories": ["toys", "wine"]}}}
    assert seg_of(data, "Germany").allowed_categories == {"toys"}
    assert seg_of(data, "Spain").allowed_categories == {"food", "toys"}


def test_unknown_category_fails_include_lists_and_is_capped_as_one_category():
    seg = seg_of({"segments": {"*": {"include_categories": ["food"]}}})
    assert not eligible("zz", None, seg) and eligible("a1", "food", seg)
    cats = {"a1": "food"}   # x1, x2 have no category
    seg = seg_of({"max_per_category": 1})
    assert apply_rules(["x1", "x2", "a1"], [3, 2, 1], cats, seg, 2, [])[0] == ["x1", "a1"]


def test_boost_factor_resorts_stably():
    data = {"boosts": [{"segment": "*", "items": ["b1"], "factor": 3},
                       {"segment": "*", "items": ["b1"], "factor": 0.5},     # factors multiply: 1.5
                       {"segment": "Germany", "items": ["a2"], "factor": 10}]}
    items, scores, _ = publish(data, ["a1", "a2", "b1", "c1"], [2.0, 1.0, 1.0, 1.0], 4)
    # a1 2.0, b1 1.0 * 3 * 0.5 = 1.5, then a2 and c1 tie at 1.0 and keep their input order
    assert items == ["a1", "b1", "a2", "c1"] and scores == [2.0, 1.5, 1.0, 1.0]
    items, _, _ = publish(data, ["a1", "a2", "b1", "c1"], [2.0, 1.0, 1.0, 1.0], 4, segment="Germany")
    assert items == ["a2", "a1", "b1", "c1"]


def test_boost_dates_are_inclusive():
    data = {"boosts": [{"segment": "*", "items": ["b1"], "factor": 5, "start": "2026-12-01",
                        "end": dt.date(2026, 12, 10)}]}
    for day, active in [(dt.date(2026, 11, 30), False), (dt.date(2026, 12, 1), True),
                        (dt.date(2026, 12, 10), True), (dt.date(2026, 12, 11), False)]:
        assert (seg_of(data, None, day).boosts == {"b1": 5.0}) is active, day
    assert seg_of(data, None, dt.datetime(2026, 12, 10, 23, 59)).boosts == {"b1": 5.0}


def test_pins_insert_move_and_skip_banned():
    data = {"exclude_items": ["c2"],
            "boosts": [{"segment": "*", "items": ["c1", "a3"], "pin": 2},   # c1 at 2, a3 at 3
                       {"segment": "Germany", "items": ["c2"], "pin": 1}]}  # banned: never pinned
    # c1 is a candidate (moves from 1st to 2nd); a3 is not a candidate (inserted)
    items, scores, sources = publish(data, ["c1", "a1", "b1", "a2"], [4, 3, 2, 1], 5, segment="Germany")
    assert items == ["a1", "c1", "a3", "b1", "a2"]
    assert sources == ["model", "pinned", "pinned", "model", "model"]
    assert scores[:2] == [3.0, 4.0] and math.isnan(scores[2])


def test_pins_ignore_the_cap_but_count_toward_it():
    data = {"max_per_category": 1, "boosts": [{"segment": "*", "items": ["a2", "a3"], "pin": 1}]}
    items, _, sources = publish(data, ["a1", "b1", "b2", "c1"], [4, 3, 2, 1], 4)
    # two food pins exceed the cap of 1 and stay; a1 (food) is then over the cap and dropped
    assert items == ["a2", "a3", "b1", "c1"] and sources == ["pinned", "pinned", "model", "model"]


def test_max_per_category_then_backfill():
    items, _, sources = publish({"max_per_category": 2}, ["a1", "a2", "a3", "b1"], [4, 3, 2, 1], 5)
    # a3 is the third food item; back-fill: a1, b1 present, c1 new
    assert items == ["a1", "a2", "b1", "c1", "b2"]
    assert sources == ["model", "model", "model", "backfill", "backfill"]


def test_duplicates_and_padding_in_candidates_are_dropped():
    items, _, sources = apply_rules(["a1", "a1", "-1", "b1"], [2.0, 9.0, -math.inf, 1.0], CATS,
                                    SegmentRules(), 2, [])
    assert items == ["a1", "b1"] and sources == ["model", "model"]


def test_too_few_eligible_items_raises_with_counts():
    data = {"max_per_category": 1, "boosts": [{"segment": "*", "items": ["b2"], "pin": 1}]}
    # 3 categories, 1 each: at most 3 items (b2 pinned, a1 from the model, c1 from the fallback)
    with pytest.raises(RulesError, match=r"segment None: only 3 eligible items for a list of k=4 "
                                         r"\(1 from the model, 1 pinned, 1 from the fallbacks\); "
                                         r"pass a longer fallback list \(e\.g\. the global popular list"):
        publish(data, ["a1", "a2"], [2, 1], 4)


def test_pin_beyond_k_raises():
    with pytest.raises(RulesError, match=r"item 'b1' is pinned at position 5 but the list has only k=4"):
        publish({"boosts": [{"segment": "*", "items": ["b1"], "pin": 5}]}, ["a1"], [1], 4)


def test_rules_are_frozen():
    rules = load_rules({})
    with pytest.raises(AttributeError):
        rules.max_per_category = 3  # type: ignore[misc]
    assert isinstance(rules, Rules)


# ------------------------------------------------------------------------------------------ property

N_ITEMS, N_CATS, N_CASES = 60, 6, 300
ITEMS = [str(1000 + i) for i in range(N_ITEMS)]
CATEGORY = {item: f"cat{i % N_CATS}" for i, item in enumerate(ITEMS)}
SEGMENTS = ["*", "DE", "FR"]


def random_case(rng: np.random.Generator):
    """A random rule dict, the user's segment and day, k, candidates, and the expected constraints
    worked out from the dict directly (not through for_segment)."""
    def some(pool, lo, hi):
        n = int(rng.integers(lo, hi + 1))
        picked = [pool[i] for i in rng.choice(len(pool), size=min(n, len(pool)), replace=False)]
        # ids written as ints half the time: they must compare equal to the strings
        return [int(p) if p.isdigit() and rng.random() < 0.5 else p for p in picked]

    cats = sorted(set(CATEGORY.values()))
    k = int(rng.integers(3, 16))
    day = dt.date(2026, 12, 1) + dt.timedelta(days=int(rng.integers(0, 10)))
    data = {"exclude_items": some(ITEMS, 0, 6), "exclude_categories": some(cats, 0, 1), "segments": {}}
    for name in SEGMENTS:
        if rng.random() < 0.6:
            spec = {"exclude_items": some(ITEMS, 0, 4), "exclude_categories": some(cats, 0, 1)}
            if rng.random() < 0.5:
                spec["include_categories"] = some(cats, 1, 5)
            data["segments"][name] = spec
    boosts, free_positions, pin_pool = [], list(range(1, k + 1)), list(ITEMS)
    for _ in range(int(rng.integers(0, 6))):
        rule = {"segment": SEGMENTS[int(rng.integers(0, 3))]}
        if rng.random() < 0.5:
            rule["start"] = str(dt.date(2026, 12, 1) + dt.timedelta(days=int(rng.integers(0, 10))))
        if rng.random() < 0.5:
            start = dt.date.fromisoformat(rule.get("start", "2026-11-25"))
            rule["end"] = start + dt.timedelta(days=int(rng.integers(0, 8)))   # a date object
        if rng.random() < 0.4 or not free_positions:
            rule.update(items=some(ITEMS, 1, 4), factor=float(rng.choice([0.2, 0.5, 2.0, 5.0])))
        else:
            # distinct positions and items across all pin rules, so they never clash
            pos = free_positions.pop(int(rng.integers(0, len(free_positions))))
            rule.update(items=[pin_pool.pop(int(rng.integers(0, len(pin_pool))))], pin=pos)
        boosts.append(rule)
    data["boosts"] = boosts
    if rng.random() < 0.6:
        data["max_per_category"] = int(rng.integers(1, 5))
    segment = [None, "DE", "FR", "ES"][int(rng.integers(0, 4))]
    n_cand = int(rng.integers(0, 30))
    candidates = [ITEMS[i] for i in rng.integers(0, N_ITEMS, size=n_cand)]      # may repeat
    scores = np.round(rng.random(n_cand), 1).tolist()                          # many ties

    # expected constraints, straight from the dict
    applies = [data["segments"][s] for s in ("*", segment) if s in data["segments"]]
    banned = {str(i) for i in data["exclude_items"]} | {str(i) for s in applies for i in s["exclude_items"]}
    banned_cats = set(data["exclude_categories"]) | {c for s in applies for c in s["exclude_categories"]}
    allowed = set(cats)
    for s in applies:
        allowed &= set(s.get("include_categories", cats))

    def active(rule):
        start = dt.date.fromisoformat(rule["start"]) if "start" in rule else dt.date.min
        return rule["segment"] in ("*", segment) and start <= day <= rule.get("end", dt.date.max)

    ok = {i for i in ITEMS if i not in banned and CATEGORY[i] not in banned_cats and CATEGORY[i] in allowed}
    pins = {r["pin"]: str(r["items"][0]) for r in boosts if "pin" in r and active(r)}
    pins = {p: i for p, i in pins.items() if i in ok}
    factor = {}
    for r in boosts:
        if "factor" in r and active(r):
            for i in r["items"]:
                factor[str(i)] = factor.get(str(i), 1.0) * r["factor"]
    cap = data.get("max_per_category")
    pinned_per_cat = Counter(CATEGORY[i] for i in pins.values())
    rest_per_cat = Counter(CATEGORY[i] for i in ok if i not in pins.values())
    capacity = sum(pinned_per_cat.values()) + sum(
        n if cap is None else min(n, max(0, cap - pinned_per_cat[c])) for c, n in rest_per_cat.items())
    expected = dict(ok=ok, pins=pins, factor=factor, cap=cap, pinned_per_cat=pinned_per_cat,
                    feasible=capacity >= k)
    return data, segment, day, k, candidates, scores, expected


def test_property_random_rule_sets_always_give_valid_lists():
    rng = np.random.default_rng(20261210)
    n_feasible = n_infeasible = n_pinned = n_backfilled = 0
    for case in range(N_CASES):
        data, segment, day, k, candidates, scores, exp = random_case(rng)
        seg = load_rules(data).for_segment(segment, day)
        fallbacks = [candidates[::-1][:5], list(rng.permutation(ITEMS))]   # the last covers the catalog
        if not exp["feasible"]:
            n_infeasible += 1
            with pytest.raises(RulesError, match=rf"only \d+ eligible items for a list of k={k} "):
                apply_rules(candidates, scores, CATEGORY, seg, k, fallbacks)
            continue
        n_feasible += 1
        items, out_scores, sources = apply_rules(candidates, scores, CATEGORY, seg, k, fallbacks)
        where = f"case {case}: {data}, segment {segment}, day {day}, k {k}"
        assert len(items) == len(out_scores) == len(sources) == k, where
        assert len(set(items)) == k, where
        assert set(items) <= exp["ok"], where                   # no banned item or disallowed category
        per_cat = Counter(CATEGORY[i] for i in items)
        if exp["cap"] is not None:
            for c, n in per_cat.items():
                assert n <= max(exp["cap"], exp["pinned_per_cat"][c]), where
        for pos, item in exp["pins"].items():                   # every active eligible pin in place
            assert items[pos - 1] == item and sources[pos - 1] == "pinned", where
        assert sources.count("pinned") == len(exp["pins"]), where
        # model items: boosted scores, non-increasing, and before every back-fill item
        model = [(i, s) for i, s, src in zip(items, out_scores, sources) if src == "model"]
        best = {}
        for i, s in zip(candidates, scores):
            best.setdefault(i, s)
        assert [s for _, s in model] == [best[i] * exp["factor"].get(i, 1.0) for i, _ in model], where
        assert all(a >= b for (_, a), (_, b) in zip(model, model[1:])), where
        unpinned = [src for src in sources if src != "pinned"]
        assert unpinned == sorted(unpinned, key=lambda src: src != "model"), where
        # back-fill only when no eligible candidate was left out for another reason than its cap
        if "backfill" in sources:
            for i in set(candidates) & exp["ok"]:
                assert i in items or (exp["cap"] is not None and per_cat[CATEGORY[i]] >= exp["cap"]), where
        n_pinned += bool(exp["pins"])
        n_backfilled += "backfill" in sources
    # the generator reaches every branch often enough to mean something
    assert n_feasible > 100 and n_infeasible > 10 and n_pinned > 30 and n_backfilled > 50, \
        (n_feasible, n_infeasible, n_pinned, n_backfilled)


def test_rules_pickle_round_trip_for_spark_broadcast():
    import pickle
    rules = load_rules({"exclude_items": ["A"], "segments": {"Germany": {"exclude_categories": ["X"]}}})
    back = pickle.loads(pickle.dumps(rules))
    assert back == rules and back.segments["Germany"].exclude_categories == rules.segments["Germany"].exclude_categories
