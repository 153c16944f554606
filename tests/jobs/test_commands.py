"""`reco report` without Spark tables: what it prints about Redis."""
from datetime import date

import redis

from jobs import commands
from serving.embedded import EmbeddedRedis
from serving.keys import KeySpace
from serving.publish import publish_version
from tests.conftest import free_port, make_config
from tests.serving.records import chunks


def test_the_report_never_prints_the_redis_password(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("REDIS_PASSWORD", raising=False)
    monkeypatch.setattr(commands, "print_tables", lambda spark, cfg, say=print: None)   # the lakehouse part needs Spark
    server = EmbeddedRedis(str(tmp_path / "redis"), free_port(), password="s3cret").start()
    try:
        url = f"redis://:s3cret@127.0.0.1:{server.port}/0"   # allowed from the environment, never in YAML
        cfg = make_config(tmp_path, redis={"url": url, "embedded": False, "n_shards": 4})
        publish_version(redis.Redis.from_url(url), KeySpace(cfg.redis.namespace, 4), "v1", chunks("v1"),
                        {"run_date": "2026-11-26", "model_version": "7"})
        commands.report(None, cfg, "synthetic", date(2026, 11, 26))
    finally:
        server.stop(save=False)
    out = capsys.readouterr().out
    assert "s3cret" not in out
    assert f"Redis: redis://:***@127.0.0.1:{server.port}/0 version v1 (run date 2026-11-26, model v7)" in out


def test_a_command_that_does_not_validate_does_not_import_great_expectations():
    """Every Airflow task is a `reco` process: great_expectations' import (several seconds) is paid by the
    ingest and validate steps only, not by features, train, score, publish... (features/expectations.py)."""
    import subprocess
    import sys

    from config import PROJECT_ROOT
    code = ("import sys; import orchestration.cli, jobs.commands, jobs.ingest; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'great_expectations'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=str(PROJECT_ROOT), capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
