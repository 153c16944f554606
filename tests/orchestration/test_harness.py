"""The local harness's quiet console (orchestration/harness.py, `reco run`): everything to a log file, a
line per finished task and any failure summary to the console."""
from __future__ import annotations

from orchestration.harness import _Progress

OUTPUT = """\
26/12/07 14:44:13 WARN Utils: Your hostname, vm, resolves to a loopback address
:: loading settings :: url = jar:file:/x/ivy-2.5.3.jar!/org/apache/ivy/core/settings/ivysettings.xml
2026-12-07T14:02:22Z [info     ] [DAG TEST] end task task_id=ingest map_index=-1 [airflow.sdk.definitions.dag]
26/12/07 14:46:53 WARN WindowExec: No Partition Defined for Window operation!
2026-12-07T14:05:22Z [info     ] [DAG TEST] end task task_id=validate map_index=-1 [airflow.sdk.definitions.dag]
2026-12-07T14:06:00Z [error    ] ========================================================================
RetailReco task FAILED: reco_nightly.train
  run id        : manual__2026-10-29
  rerun by hand : reco train --date 2026-10-28
========================================================================
2026-12-07T14:06:01Z [info     ] something after the failure
"""


def test_the_console_gets_a_line_per_task_and_the_failure_the_log_gets_everything(tmp_path, capsys):
    log = tmp_path / "logs" / "reco_nightly-2026-10-28.log"
    _Progress(log).follow(iter(OUTPUT.splitlines(keepends=True)))
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[:2]] == ["ingest", "validate"]
    assert all("done" in line for line in out[:2])
    assert out[2:] == ["=" * 72, "RetailReco task FAILED: reco_nightly.train", "  run id        : manual__2026-10-29",
                       "  rerun by hand : reco train --date 2026-10-28", "=" * 72]
    assert log.read_text() == OUTPUT                           # nothing is lost, Spark and Ivy included
    assert not any("WARN" in line or "ivy" in line for line in out)
