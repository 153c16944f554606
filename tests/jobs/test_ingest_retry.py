"""An ingest killed midway (SIGKILL, no clean-up) and run again converges to what one clean run writes."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from config import PROJECT_ROOT
from jobs.ingest import ingest
from jobs.lakehouse import Lakehouse
from jobs.tables import content_checksum, list_tables
from tests.conftest import make_config
from tests.jobs.test_ingest import LINES, RUN_DATE, _write


def _env_for(cfg) -> dict:
    return {**os.environ,
            "RECO__LAKEHOUSE__ROOT": cfg.lakehouse.root, "RECO__LAKEHOUSE__STAGING_DIR": cfg.lakehouse.staging_dir,
            "RECO__QUALITY__QUALITY_DIR": cfg.quality.quality_dir, "RECO__SPARK__MASTER": "local[1]",
            "RECO__SPARK__DRIVER_MEMORY": "1g", "RECO__SPARK__CONF__spark.sql.shuffle.partitions": "2"}


def test_an_ingest_killed_midway_and_rerun_converges(spark, cfg, tmp_path):
    more = [f"{600000 + i},{20000 + i % 70},ITEM {i % 70} BOX,{1 + i % 5},2011-11-{1 + i % 28:02d} 08:{i % 60:02d}:00,"
            f"{1 + i % 9}.25,{17000 + i % 50},United Kingdom" for i in range(400)]
    path = _write(tmp_path, LINES + more)
    reference = make_config(tmp_path / "reference")
    ingest(spark, reference, "online_retail", RUN_DATE, path)

    bronze_log = Path(cfg.lakehouse.root) / "bronze_online_retail" / "_delta_log" / "00000000000000000000.json"
    proc = subprocess.Popen([sys.executable, "-m", "orchestration.cli", "ingest", "--source", "online_retail", "--date",
                             RUN_DATE.isoformat(), "--path", path], cwd=PROJECT_ROOT, env=_env_for(cfg),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not bronze_log.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL, "the ingest finished before it could be killed: the test proves nothing"
    assert bronze_log.exists(), "killed before it landed anything"

    ingest(spark, cfg, "online_retail", RUN_DATE, path)          # the retry
    # every table equal; pipeline_runs apart from its details (which name each lakehouse's own report path)
    retried, clean = Lakehouse(spark, cfg), Lakehouse(spark, reference)
    assert list_tables(retried) == list_tables(clean)
    for table in list_tables(clean):
        skip = ("duration_s", "details") if table == "pipeline_runs" else ()
        assert content_checksum(retried.read(table), exclude=skip) == content_checksum(clean.read(table), exclude=skip), table
