"""The `reco` CLI: the README's commands run, and user errors never show a stack trace."""
import subprocess

import pytest

from orchestration.cli import main
from config import PROJECT_ROOT


@pytest.fixture
def env(tmp_path, monkeypatch, redis_server):
    for key, value in {
        "RECO__LAKEHOUSE__ROOT": str(tmp_path / "lakehouse"),
        "RECO__LAKEHOUSE__STAGING_DIR": str(tmp_path / "staging"),
        "RECO__QUALITY__QUALITY_DIR": str(tmp_path / "quality"),
        "RECO__SYNTHETIC__N_EVENTS": "6000", "RECO__SYNTHETIC__N_USERS": "300",
        "RECO__SYNTHETIC__N_ITEMS": "120", "RECO__SYNTHETIC__DAYS": "60",
        "RECO__SPLITS__VALID_DAYS": "10", "RECO__SPLITS__TEST_DAYS": "10",
        "RECO__MLFLOW__TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "RECO__MLFLOW__ARTIFACT_ROOT": str(tmp_path / "mlartifacts"),
        "RECO__TRAINING__LAUNCHER": "inprocess", "RECO__TRAINING__OPTIM__MAX_EPOCHS": "1",
        "RECO__TRAINING__OPTIM__OTHERS_SHARE": "[0.0]", "RECO__TRAINING__OPTIM__SEARCH": "[{}]",
        "RECO__TRAINING__MODEL__DIM": "16",
        "RECO__TRAINING__MODEL__HIDDEN": "32", "RECO__TRAINING__BASELINES": "[popular, als]",
        "RECO__TRAINING__BASELINE_PARAMS__ALS": "{rank: 4, max_iter: 2}",
        "RECO__TRAINING__GATE__BASELINES": "[]",            # the first model becomes champion
        "RECO__SCORING__K": "10", "RECO__SCORING__USER_BUCKETS": "2",
        "RECO__REDIS__URL": redis_server, "RECO__REDIS__EMBEDDED": "false", "RECO__REDIS__NAMESPACE": "clitest",
    }.items():
        monkeypatch.setenv(key, value)
    return tmp_path


@pytest.mark.parametrize("argv, message", [
    (["ingest", "--source", "nope"], "unknown source 'nope'"),
    (["ingest", "--source", "online_retail", "--date", "2011-12-09", "--path", "/nonexistent/x.csv"],
     "/nonexistent/x.csv"),
    (["sql", "no_such_query.sql"], "no SQL file"),
])
def test_user_errors_are_one_clear_line(spark, env, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err and "Traceback" not in err


def test_bad_date_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["features", "--date", "24/11/2026"])
    assert exc.value.code == 2 and "--date must be YYYY-MM-DD" in capsys.readouterr().err


def test_bad_config_fails_at_start_up_with_the_setting_name(monkeypatch, capsys):
    monkeypatch.setenv("RECO__QUALITY__MAX_BAD_ROW_SHARE", "lots")
    assert main(["tables"]) == 2
    err = capsys.readouterr().err
    assert "quality.max_bad_row_share" in err and "Traceback" not in err


def test_make_help_lists_the_readme_commands():
    out = subprocess.run(["make", "-s", "help"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout
    for target in ("run", "test", "bench", "clean"):
        assert f"  {target}" in out.replace("\x1b[36m", "  ").replace("\x1b[0m", "")
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    assert (PROJECT_ROOT / ".ci" / "run").read_text().strip().endswith("make test")


def test_validate_checks_a_batch_and_writes_no_table(spark, env, capsys, monkeypatch):
    f = env / "retail.csv"
    f.write_text("InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
                 "536365,85123A,HOLDER,6,2011-12-01 08:26:00,2.55,17850,United Kingdom\n"
                 "536366,71053,LANTERN,abc,2011-12-01 08:26:00,3.39,17850,United Kingdom\n")
    assert main(["validate", "--source", "online_retail", "--date", "2011-12-09", "--path", str(f)]) == 0
    out = capsys.readouterr().out
    assert "checked (nothing written): 2 rows" in out and "quarantined by reason: unparseable_value: 1" in out
    assert not (env / "lakehouse").exists() or not any((env / "lakehouse").iterdir())
