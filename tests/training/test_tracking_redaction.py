"""MLflow params never hold a secret: what training/tracking.py logs goes through log_params, which
redacts; read back from a real sqlite tracking store."""
import ast

import mlflow
from mlflow.tracking import MlflowClient

from config.loader import PROJECT_ROOT
from training.tracking import log_params

PLANTED = "Pl4nted-s3cret"


def test_params_are_logged_redacted_and_read_back_clean(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-" + PLANTED)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("redaction", artifact_location=str(tmp_path / "artifacts"))
    with mlflow.start_run(experiment_id=exp) as run:
        log_params({"input.events": f"s3a://AKIA:{PLANTED}@lake/events", "input.version": 7,
                    "input.signed": f"https://lake.s3/x?X-Amz-Signature={PLANTED}",
                    "input.copy": f"staged with aws-{PLANTED}", "model.dim": 32, "input.where": "/lake/events"})
    params = MlflowClient(tracking_uri=uri).get_run(run.info.run_id).data.params
    assert params == {"input.events": "s3a://AKIA:***@lake/events", "input.version": "7",
                      "input.signed": "https://lake.s3/x?X-Amz-Signature=***", "input.copy": "staged with ***",
                      "model.dim": "32", "input.where": "/lake/events"}


def test_every_param_mlflow_gets_goes_through_log_params():
    """The one mlflow.log_param(s) call of training/ and jobs/ is inside training.tracking.log_params."""
    found = []
    for path in sorted([*PROJECT_ROOT.glob("training/*.py"), *PROJECT_ROOT.glob("jobs/*.py")]):
        tree = ast.parse(path.read_text())
        inside = {id(c) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == "log_params"
                  for c in ast.walk(f)}
        found += [(path.relative_to(PROJECT_ROOT).as_posix(), id(c) in inside) for c in ast.walk(tree)
                  if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
                  and c.func.attr in ("log_param", "log_params") and getattr(c.func.value, "id", None) == "mlflow"]
    assert found == [("training/tracking.py", True)], found
