"""A tiny synthetic lakehouse with a champion model, shared by the score and publish tests."""
from __future__ import annotations

import pytest

from tests.conftest import make_config

SCORING = {"k": 12, "fetch": 30, "user_buckets": 2,
           "lists": {"fallback_k": 40, "similar_k": 6, "trending_min_events": 1}}


@pytest.fixture(scope="session")
def champion_lake(spark, tmp_path_factory, redis_server):
    """(config maker, run date): ingest + features + a trained champion (the gate needs no baseline here,
    so the first model is promoted). ``make(**overrides)`` gives a config on the same lakehouse."""
    from jobs.build_features import build_features
    from jobs.ingest import ingest
    from jobs.sources import default_run_date
    from jobs.train import train
    from tests.jobs.test_train import TINY_TRAINING

    tmp = tmp_path_factory.mktemp("scored")

    def make(**over):
        base = {"synthetic": {"n_events": 8000, "n_users": 300, "n_items": 80, "days": 60},
                "splits": {"valid_days": 10, "test_days": 10},
                "training": {**TINY_TRAINING, "gate": {"baselines": []}},
                "scoring": SCORING, "redis": {"url": redis_server, "embedded": False}}
        for key, value in over.items():
            base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
        return make_config(tmp, **base)

    cfg = make()
    run_date = default_run_date(cfg, "synthetic")
    ingest(spark, cfg, "synthetic", run_date, None)
    build_features(spark, cfg, run_date)
    result = train(spark, cfg, run_date)
    assert result.promoted, result.reason
    return make, run_date
