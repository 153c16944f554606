import json
from datetime import date

import pytest

from jobs.config import load_config
from training.search import (SEARCH_DATE, SEARCH_EPOCHS, SEARCH_KEPT, SEARCH_MODE, SEARCH_SPACE, candidate_label,
                             plan_search, search_candidates, space_id)

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
                      SEARCH_KEPT: '{"others_share": 0.0}', SEARCH_EPOCHS: "4"}


def test_a_search_run_on_the_same_date_is_reused_by_its_rerun():
    # a retried or backfilled date finds its own search and fits exactly what that search kept
    plan = plan_search(SPACE, D, 7, searched(D, kept={"others_share": 0.0}, epochs=1))
    assert plan.reuses and plan.candidates == [{"others_share": 0.0}] and plan.fixed_epochs == 1
