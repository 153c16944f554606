"""Baselines tuned on validation: every grid entry fitted, the best by the given metric kept."""
from __future__ import annotations

import numpy as np
import pytest

from training.baseline_search import grid, tune
from training.baselines import BaselineSkipped
from training.interactions import Interactions

DAY = 86400.0
NOW = 1_700_000_000.0


def _train() -> Interactions:
    # item 0: four users long ago; item 1: two users yesterday
    return Interactions.from_arrays(user=[0, 1, 2, 3, 4, 5], item=[0, 0, 0, 0, 1, 1], n_users=6, n_items=3,
                                    time=[NOW - 100 * DAY] * 4 + [NOW - DAY] * 2)


def test_the_entry_with_the_best_validation_metric_is_kept_with_its_settings():
    # the "validation" prefers whatever ranks item 1 first: only a window short enough does
    metric = lambda rec: float(np.argmax(rec.score([0])[0]) == 1)   # noqa: E731
    t = tune("popular_recent", {"window_days": 30.0}, [{"window_days": 365.0}, {"window_days": 7.0},
                                                       {"window_days": 3.0}], _train(), metric)
    assert t.kept == {"window_days": 7.0} and t.params == {"window_days": 7.0}   # a tie keeps the earlier entry
    assert t.tried == {"window_days=365": 0.0, "window_days=7": 1.0, "window_days=3": 1.0}
    assert t.model.window_days == 7.0 and t.search_s >= t.fit_s >= 0.0


def test_one_entry_or_no_grid_fits_once_without_scoring():
    def never(rec):
        raise AssertionError("a single setting must not be scored")
    t = tune("buy_again", {"half_life_days": 60.0}, [], _train(), never)
    assert t.kept == {} and t.params == {"half_life_days": 60.0} and t.tried == {}
    t = tune("buy_again", {"half_life_days": 60.0}, [{"backfill_days": 14.0}], _train(), never)
    assert t.params == {"half_life_days": 60.0, "backfill_days": 14.0} and t.model.backfill_days == 14.0
    assert grid(None) == [{}] and grid([{"a": 1}]) == [{"a": 1}]


def test_a_baseline_that_refuses_the_data_is_skipped_not_tuned():
    with pytest.raises(BaselineSkipped):
        tune("ease", {"max_items": 2}, [{"l2": 1.0}, {"l2": 10.0}], _train(), lambda rec: 0.0)
