"""The scoring job loads the champion only when its files match the SHA-256 recorded at registration
(training/model_artifact.py): a real TwoTower logged as the nightly logs it, on a sqlite MLflow store."""
from __future__ import annotations

import os
import pickle
from types import SimpleNamespace

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")   # before mlflow is imported

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.tracking._tracking_service import utils as tracking_utils  # noqa: E402

from core.errors import ArtifactIntegrityError  # noqa: E402
from training.featurize import ItemMeta  # noqa: E402
from training.model import ModelConfig, TwoTower  # noqa: E402
from training.model_artifact import CHECKSUM_TAG, folder_digest  # noqa: E402
from training.registry import CHAMPION, load_champion, register_challenger  # noqa: E402
from training.tracking import MODEL_ARTIFACT  # noqa: E402

NAME = "artifact-check"


class _Payload:
    """A pickle that, when loaded, makes a folder: what a tampered model file could do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """One registered TwoTower version (champion); yields (cfg, version, tmp). Restores the tracking URI."""
    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp}/mlflow.db"
    previous_uri, previous_env = tracking_utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        torch.manual_seed(0)
        cfg = ModelConfig(n_users=3, n_items=4, dim=4, hidden=8, history_len=2, n_category_buckets=8,
                          n_price_buckets=4, n_popularity_buckets=4, n_title_buckets=16, max_title_tokens=2)
        meta = ItemMeta(category=np.array([1, 2, 3, 1]), price=np.array([1, 1, 2, 3]),
                        popularity=np.array([3, 2, 1, 0]), title=np.array([[1, 2], [3, 0], [4, 5], [0, 0]]))
        model = TwoTower(cfg, meta).eval()
        exp = mlflow.create_experiment("artifacts", artifact_location=str(tmp / "artifacts"))
        with mlflow.start_run(experiment_id=exp) as run:      # as training/tracking.py logs the model
            mlflow.pytorch.log_model(model, name=MODEL_ARTIFACT, serialization_format="pickle",
                                     pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
        client = MlflowClient()
        version = register_challenger(client, NAME, run.info.run_id, MODEL_ARTIFACT)
        client.set_registered_model_alias(NAME, CHAMPION, version)
        yield SimpleNamespace(mlflow=SimpleNamespace(tracking_uri=uri, registered_model=NAME)), version, tmp, model
    finally:
        mlflow.set_tracking_uri(previous_uri)
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def _weights_file(tmp) -> str:
    [path] = [os.path.join(d, f) for d, _, names in os.walk(tmp / "artifacts") for f in names if f == "model.pth"]
    return path


def test_registration_records_the_checksum_and_scoring_loads_the_verified_model(registered):
    cfg, version, tmp, model = registered
    recorded = MlflowClient().get_model_version(NAME, version).tags[CHECKSUM_TAG]
    assert recorded == folder_digest(os.path.dirname(os.path.dirname(_weights_file(tmp))))
    loaded, got_version, run_id = load_champion(cfg.mlflow.tracking_uri, cfg.mlflow.registered_model)
    assert got_version == version and run_id
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_a_tampered_artifact_is_refused_before_it_is_unpickled(registered, tmp_path):
    cfg, version, tmp, _ = registered
    path, marker = _weights_file(tmp), tmp_path / "payload-ran"
    original = open(path, "rb").read()
    try:
        with open(path, "wb") as f:
            f.write(pickle.dumps(_Payload(str(marker))))
        with pytest.raises(ArtifactIntegrityError) as err:
            load_champion(cfg.mlflow.tracking_uri, cfg.mlflow.registered_model)
        assert f"model {NAME} v{version}: its files do not match the checksum recorded" in str(err.value)
        assert not marker.exists()                              # refused before torch.load ran the pickle
    finally:
        with open(path, "wb") as f:
            f.write(original)
    assert load_champion(cfg.mlflow.tracking_uri, cfg.mlflow.registered_model)[1] == version                     # restored: loads again


def test_a_version_without_a_recorded_checksum_is_refused(registered):
    cfg, version, _, _ = registered
    client = MlflowClient()
    recorded = client.get_model_version(NAME, version).tags[CHECKSUM_TAG]
    client.delete_model_version_tag(NAME, version, CHECKSUM_TAG)
    try:
        with pytest.raises(ArtifactIntegrityError, match="has no recorded artifact checksum"):
            load_champion(cfg.mlflow.tracking_uri, cfg.mlflow.registered_model)
    finally:
        client.set_model_version_tag(NAME, version, CHECKSUM_TAG, recorded)
