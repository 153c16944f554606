import json
from datetime import date

import pytest

from config import load_config
from training.search import (SEARCH_BASELINES, SEARCH_DATE, SEARCH_EPOCHS, SEARCH_KEPT, SEARCH_MODE, SEARCH_SERVED,
                             SEARCH_SPACE,
                             candidate_label, plan_search, search_candidates, space_id)

SPACE = [{"others_share": 0.0}, {"others_share": 1.0}]
D = date(2026, 10, 28)


def test_search_candidates_cross_every_search_entry_with_every_history_mode():
    optim = load_config(env="local", environ={}, overrides={"training": {"optim": {
        "others_share": [0.0, 1.0], "search": [{}, {"batch_size": 512, "repeat_weight": 3.0}]}}}).training.optim
    cands = search_candidates(optim)
    assert cands == [{"others_share": 0.0}, {"others_share": 1.0},
                     {"batch_size": 512, "repeat_weight": 3.0, "others_share": 0.0},
                     {"batch_size": 512, "repeat_weight": 3.0, "others_share": 1.0}]
    assert [candidate_label(c) for c in cands[1:3]] == ["others_share=1",
                                                        "batch_size=512,others_share=0,repeat_weight=3"]
    assert candidate_label({}) == "defaults"


def test_space_id_ignores_order_and_sees_any_change():
    assert space_id(SPACE) == space_id(SPACE[::-1])
    assert space_id(SPACE) != space_id([{"others_share": 0.0}])
    assert space_id(SPACE) != space_id([{"others_share": 0.0}, {"others_share": 1.0, "lr": 0.01}])


def searched(on: date, kept=None, epochs=2, space=SPACE, mode="search"):
    return {SEARCH_DATE: on.isoformat(), SEARCH_SPACE: space_id(space), SEARCH_MODE: mode,
            SEARCH_KEPT: json.dumps(kept if kept is not None else {"others_share": 1.0}), SEARCH_EPOCHS: str(epochs)}


def test_a_search_within_the_window_is_reused_with_its_settings_and_epochs():
    plan = plan_search(SPACE, D, 7, searched(date(2026, 10, 22), epochs=3), "r1")
    assert plan.reuses and plan.candidates == [{"others_share": 1.0}] and plan.fixed_epochs == 3
    assert plan.searched_on == date(2026, 10, 22)
    assert "2026-10-29" in plan.reason and "run r1" in plan.reason   # the next search date, the source run
    # what the reusing run logs points at the same search, so the next night reuses it too
    logged = plan.params({"others_share": 1.0}, 3)
    assert logged[SEARCH_MODE] == "reuse" and logged[SEARCH_DATE] == "2026-10-22" and logged[SEARCH_EPOCHS] == "3"


@pytest.mark.parametrize("every, last, why", [
    (0, searched(D), "every run searches"),
    (7, None, "no run searched"),
    (7, searched(date(2026, 10, 21)), "7 day(s) old"),                      # exactly every_days old
    (7, searched(date(2026, 10, 29)), "after this run's date"),             # a backfill of an earlier date
    (7, searched(D, space=[{"others_share": 0.0}]), "another space"),
    (7, searched(D, mode="reuse"), "another space"),
    (7, {**searched(D), SEARCH_KEPT: "not json"}, "do not read back"),
    (7, {**searched(D), SEARCH_EPOCHS: "0"}, "do not read back"),
    (7, {k: v for k, v in searched(D).items() if k != SEARCH_KEPT}, "do not read back"),
])
def test_it_searches_the_whole_space_when_there_is_nothing_fresh_to_reuse(every, last, why):
    plan = plan_search(SPACE, D, every, last)
    assert not plan.reuses and plan.fixed_epochs is None
    assert plan.candidates == SPACE and plan.searched_on == D and why in plan.reason
    logged = plan.params({"others_share": 0.0}, 4)
    assert logged == {SEARCH_DATE: "2026-10-28", SEARCH_SPACE: space_id(SPACE), SEARCH_MODE: "search",
                      SEARCH_KEPT: '{"others_share": 0.0}', SEARCH_EPOCHS: "4", SEARCH_BASELINES: "{}",
                      SEARCH_SERVED: "null"}


def test_a_search_run_on_the_same_date_is_reused_by_its_rerun():
    # a retried or backfilled date finds its own search and fits exactly what that search kept
    plan = plan_search(SPACE, D, 7, searched(D, kept={"others_share": 0.0}, epochs=1))
    assert plan.reuses and plan.candidates == [{"others_share": 0.0}] and plan.fixed_epochs == 1


GRIDS = {"ease": [{"l2": 50.0}, {"l2": 500.0}], "als": []}


def test_the_baselines_grids_are_part_of_the_space():
    assert space_id(SPACE, {}) == space_id(SPACE) == space_id(SPACE, {"als": []})   # no grid: the old space
    assert space_id(SPACE, GRIDS) != space_id(SPACE)
    assert space_id(SPACE, GRIDS) != space_id(SPACE, {"ease": [{"l2": 50.0}]})
    # a changed grid is another space: the next run searches again
    last = {**searched(D), SEARCH_SPACE: space_id(SPACE, {"ease": [{"l2": 50.0}]})}
    assert not plan_search(SPACE, D, 7, last, baseline_search=GRIDS).reuses


def test_a_reuse_fits_the_baselines_the_search_kept():
    last = {**searched(date(2026, 10, 25)), SEARCH_SPACE: space_id(SPACE, GRIDS),
            SEARCH_BASELINES: json.dumps({"ease": {"l2": 500.0}, "popular": {}})}
    plan = plan_search(SPACE, D, 7, last, baseline_search=GRIDS)
    assert plan.reuses and plan.baselines == {"ease": {"l2": 500.0}, "popular": {}}
    assert json.loads(plan.params({"others_share": 1.0}, 2, plan.baselines)[SEARCH_BASELINES]) == plan.baselines
    # a search logged before baselines were tuned has no kept baselines: the reuse tunes them again
    old = plan_search(SPACE, D, 7, {**searched(date(2026, 10, 25))})
    assert old.reuses and old.baselines == {}
    # unreadable kept baselines: search again rather than guess
    bad = plan_search(SPACE, D, 7, {**last, SEARCH_BASELINES: "not json"}, baseline_search=GRIDS)
    assert not bad.reuses and "do not read back" in bad.reason


def test_a_reuse_keeps_the_served_blend_the_search_chose():
    served = [{"weights": {"personal": 1.0}, "mmr_strength": 0.2}, {"weights": {"personal": 1.0}, "mmr_strength": 0.0}]
    assert space_id(SPACE, None, served) != space_id(SPACE) == space_id(SPACE, None, served[:1])   # one setting: no search
    chosen = {"weights": {"personal": 1.0}, "mmr_strength": 0.0}
    last = {**searched(date(2026, 10, 25)), SEARCH_SPACE: space_id(SPACE, None, served),
            SEARCH_SERVED: json.dumps(chosen)}
    plan = plan_search(SPACE, D, 7, last, served=served)
    assert plan.reuses and plan.served == chosen
    assert json.loads(plan.params({}, 2, {}, plan.served)[SEARCH_SERVED]) == chosen
    assert plan_search(SPACE, D, 7, {**last, SEARCH_SERVED: "[1]"}, served=served).reuses is False


def test_split_override_separates_model_fields_from_optimiser_settings():
    from training.search import split_override
    assert split_override({"others_share": 1.0, "model.towers": "linear", "temperature": 0.2,
                           "model.history_len": 200}) == (
        {"others_share": 1.0, "temperature": 0.2}, {"towers": "linear", "history_len": 200})
    assert split_override({}) == ({}, {})
