"""training.rules_file: one test per validation message (the file or source, the key path, what to
do), every mistake of a file reported at once, and the YAML reading that keeps ids as written."""
from __future__ import annotations

import datetime as dt
import re

import pytest

from training.rules import RulesError, load_rules
from training.rules_file import BOOST_KEYS, SEGMENT_KEYS, TOP_KEYS, RulesFile, read_rules_file

# ------------------------------------------------------------------------------------------ validation

BAD = [
    # (rules, the message expected: file/source, key path, what to do)
    ({"exclude_item": ["a"]}, r"exclude_item: unknown key; did you mean 'exclude_items'\?"),
    ({"segments": {"Germany": {"include_category": ["x"]}}},
     r"segments\.Germany\.include_category: unknown key; did you mean 'include_categories'\?"),
    ({"boosts": [{"segment": "*", "items": ["a"], "factor": 2, "ends": "2026-01-01"}]},
     r"boosts\[0\]\.ends: unknown key; did you mean 'end'\?"),
    ({"boosts": [{"segment": "*", "items": ["a"], "factor": 2},
                 {"segment": "*", "items": ["a"], "factor": 2},
                 {"segment": "*", "items": ["a"], "factor": 2, "start": "2026-02-01", "end": "2026-01-01"}]},
     r"boosts\[2\]\.end: end 2026-01-01 is before start 2026-02-01; swap them"),
    ({"boosts": [{"segment": "*", "items": ["a"], "factor": 2, "start": "01/02/2026"}]},
     r"boosts\[0\]\.start: must be a date written YYYY-MM-DD"),
    ({"boosts": [{"segment": "*", "items": ["a"], "factor": 2, "end": "2026-02-30"}]},
     r"boosts\[0\]\.end: '2026-02-30' is not a real date .*; write YYYY-MM-DD"),
    ({"boosts": [{"segment": "*", "items": ["a"], "factor": 0}]}, r"boosts\[0\]\.factor: must be a number > 0"),
    ({"boosts": [{"segment": "*", "items": ["a"], "factor": 2, "pin": 1}]},
     r"boosts\[0\]: give exactly one of factor .* and pin .*, got both"),
    ({"boosts": [{"segment": "*", "items": ["a"]}]}, r"boosts\[0\]: give exactly one .* got neither"),
    ({"boosts": [{"segment": "*", "items": ["a"], "pin": 0}]}, r"boosts\[0\]\.pin: must be a whole number >= 1"),
    ({"boosts": [{"items": ["a"], "pin": 1}]}, r"boosts\[0\]\.segment: is missing; .* segment: '\*'"),
    ({"boosts": [{"segment": "*", "items": [], "pin": 1}]}, r"boosts\[0\]\.items: is missing or empty"),
    ({"boosts": [{"segment": "*", "items": ["a", "a"], "pin": 1}]}, r"boosts\[0\]\.items: item 'a' is pinned twice"),
    ({"boosts": {"segment": "*"}}, r"boosts: must be a list of rules"),
    ({"boosts": ["a"]}, r"boosts\[0\]: must be a mapping"),
    ({"exclude_items": "a1"}, r"exclude_items: must be a list of item ids, e\.g\. \['a1'\]"),
    ({"exclude_items": ["a", 1.5]}, r"exclude_items\[1\]: item id 1\.5 was read as a number; quote it"),
    ({"exclude_categories": [True]}, r"exclude_categories\[0\]: category True is not a name; quote it"),
    ({"segments": ["Germany"]}, r"segments: must be a mapping of segment name"),
    ({"segments": {"Germany": {"include_categories": []}}},
     r"segments\.Germany\.include_categories: an empty list allows no category at all; remove the key"),
    ({"max_per_category": 0}, r"max_per_category: must be a whole number >= 1, got 0"),
    ({"promised_length": "20"}, r"promised_length: must be a whole number >= 1, got '20'"),
    ({"promised_length": 3, "boosts": [{"segment": "*", "items": ["a", "b"], "pin": 3}]},
     r"boosts\[0\]\.pin: pins reach position 4 but promised_length is 3; move the pin up"),
    ({"boosts": [{"segment": "Germany", "items": ["a"], "pin": 2, "start": "2026-12-01"},
                 {"segment": "*", "items": ["b", "c"], "pin": 1, "end": "2026-12-01"}]},
     r"boosts\[1\]\.pin: position 2 is also pinned by boosts\[0\] .* overlapping dates"),
    ({"boosts": [{"segment": "*", "items": ["a"], "pin": 1},
                 {"segment": "France", "items": ["a"], "pin": 5}]},
     r"boosts\[1\]\.pin: item 'a' is also pinned by boosts\[0\]"),
]


@pytest.mark.parametrize("data, message", BAD, ids=[m[:40] for _, m in BAD])
def test_validation_errors_name_the_source_path_and_fix(data, message):
    with pytest.raises(RulesError, match=r"^<rules dict>: " + message):
        load_rules(data)


def test_pins_that_never_meet_are_fine():
    rules = load_rules({"boosts": [
        {"segment": "Germany", "items": ["a"], "pin": 1},     # different segments: never one list
        {"segment": "France", "items": ["b"], "pin": 1},
        {"segment": "*", "items": ["c"], "pin": 2, "end": "2026-01-31"},      # disjoint dates
        {"segment": "*", "items": ["d"], "pin": 2, "start": "2026-02-01"}]})
    assert rules.for_segment("Germany", dt.date(2026, 2, 1)).pins == [(1, "a"), (2, "d")]


def test_yaml_errors_name_the_file(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("exclude_items: [a\nboosts: []\n")
    with pytest.raises(RulesError, match=rf"^{re.escape(str(path))}: not valid YAML; fix the syntax"):
        load_rules(path)
    path.write_text("max_per_category: 2\nmax_per_category: 3\n")
    with pytest.raises(RulesError, match=r"key 'max_per_category' appears twice in one mapping; keep one"):
        load_rules(path)
    path.write_text("boosts:\n  - segment: '*'\n    items: [a]\n    factor: 2\n    end: 2026-01-01\n"
                    "    start: 2026-02-01\n")
    with pytest.raises(RulesError, match=rf"^{re.escape(str(path))}: boosts\[0\]\.end: end 2026-01-01 is "
                                         r"before start 2026-02-01; swap them"):
        load_rules(path)
    path.write_text("- exclude_items: [a]\n")
    with pytest.raises(RulesError, match=r": \(top level\): must be a mapping with keys among"):
        load_rules(path)
    with pytest.raises(RulesError, match=r"missing\.yaml: rules file not found"):
        load_rules(tmp_path / "missing.yaml")


def test_yaml_keeps_ids_as_written(tmp_path):
    path = tmp_path / "rules.yaml"
    # 0123 is not octal 83, NO (Norway) is not False, 1:20 is not 80, 22423 is the string "22423"
    path.write_text("exclude_items: [0123, 1:20, 22423]\nsegments:\n  NO:\n    exclude_items: [yes]\n"
                    "boosts:\n  - segment: NO\n    items: [x]\n    pin: 1\n    start: 2026-01-01\n")
    rules = load_rules(path)
    assert rules.exclude_items == {"0123", "1:20", "22423"}
    seg = rules.for_segment("NO", dt.date(2026, 1, 1))
    assert seg.banned_items == {"0123", "1:20", "22423", "yes"} and seg.pins == [(1, "x")]
    path.write_text("max_per_category: 0x10\n")
    with pytest.raises(RulesError, match=r"max_per_category: must be a whole number >= 1, got '0x10'"):
        load_rules(path)


def test_every_mistake_is_reported_at_once_one_line_each(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("exclude_item: [a]\nmax_per_category: 0\nboosts:\n  - segment: '*'\n    items: [a]\n"
                    "    factor: 2\n  - items: [b]\n    pin: 1\n    ends: 2026-01-01\n")
    with pytest.raises(RulesError) as err:
        load_rules(path)
    lines = str(err.value).splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines), lines
    # every wrong key, each with its fix (the order is the schema's, not the file's)
    assert sorted(line[len(str(path)) + 2:].split(":", 1)[0] for line in lines) == \
        ["boosts[1].ends", "boosts[1].segment", "exclude_item", "max_per_category"]


def keys(names) -> str:
    return re.escape(str(list(names)))


ODD = [
    # a segment name YAML read as a boolean: named as written, not by pydantic's position of it
    ({"segments": {True: {}}}, r"segments\.True: segment name True is not a name; quote it"),
    # a segment name that is a number stays a name in the path; its entries are checked as usual
    ({"segments": {7: {"exclude_items": [None]}}},
     r"segments\.7\.exclude_items\[0\]: item id None is not a name"),
    ({"segments": {"Germany": ["x"]}}, rf"segments\.Germany: must be a mapping with keys among "
                                       rf"{keys(SEGMENT_KEYS)}, got list \['x'\]$"),
    ({"boosts": [None]}, rf"boosts\[0\]: must be a mapping with keys among {keys(BOOST_KEYS)}, got None$"),
    ({3: ["a"]}, rf"3: unknown key; allowed keys here: {keys(TOP_KEYS)}$"),
    ({"boosts": [{"segment": "*", "items": ["a"], "factor": 2, 4: 1}]}, r"boosts\[0\]\.4: unknown key"),
    ({"boosts": [{"segment": "*", "items": ["a"], "factor": 2, "start": dt.datetime(2026, 1, 1)}]},
     r"boosts\[0\]\.start: must be a date without a time \(YYYY-MM-DD\)"),
    ({"boosts": [{"segment": "*", "items": ["a"], "factor": float("nan")}]},
     r"boosts\[0\]\.factor: must be a number > 0 .*, got nan$"),
    ({"exclude_items": ["  "]}, r"exclude_items\[0\]: item id must be a non-empty string, got '  '$"),
    ({"exclude_items": {"a"}}, r"exclude_items: must be a list of item ids"),
]


@pytest.mark.parametrize("data, message", ODD, ids=[m[:40] for _, m in ODD])
def test_the_key_path_and_message_of_odd_entries(data, message):
    with pytest.raises(RulesError, match=r"^<rules dict>: " + message):
        read_rules_file(data)


def test_empty_file_and_empty_sections_are_no_rules(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("# nothing yet\n")
    source, spec = read_rules_file(path)
    assert source == str(path) and spec == RulesFile()
    path.write_text("exclude_items:\nsegments:\n  Germany:\nboosts:\nmax_per_category:\n")
    rules = load_rules(path, source="rules of the day")
    assert rules.source == "rules of the day" and rules.max_per_category is None and rules.boosts == ()
    assert rules.for_segment("Germany", dt.date(2026, 1, 1)).banned_items == frozenset()


def test_sections_are_frozen_models_with_the_documented_keys():
    assert TOP_KEYS == ("exclude_items", "exclude_categories", "segments", "boosts", "max_per_category",
                        "promised_length")
    assert SEGMENT_KEYS == ("include_categories", "exclude_items", "exclude_categories")
    assert BOOST_KEYS == ("segment", "items", "factor", "pin", "start", "end")
    boost = load_rules({"boosts": [{"segment": "*", "items": [1], "factor": 2}]}).boosts[0]
    assert (boost.items, boost.factor) == (("1",), 2.0)
    with pytest.raises(ValueError):      # pydantic's ValidationError on assignment to a frozen model
        boost.factor = 3.0  # type: ignore[misc]
