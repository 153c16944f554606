"""A registered model's files, checked before they are loaded.

The two-tower model is logged with ``mlflow.pytorch.log_model(serialization_format="pickle")``: the
whole ``TwoTower`` module, so loading it is ``torch.load(weights_only=False)``, which runs whatever
code the file names. ``weights_only=True`` cannot load it (the module, its ``ItemMeta`` and config
are Python objects, not tensors), so instead the files are pinned at registration: a SHA-256 over
every file of the model's artifact (path and content) is recorded as the model version's tag
``artifact_sha256`` (:func:`record_checksum`), and :func:`download_verified` downloads a version,
checks the files against that tag and only then hands back the local folder to load from. A
mismatch, or a version without a recorded checksum, raises :class:`core.errors.ArtifactIntegrityError`
before anything is unpickled.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Optional

import mlflow
from mlflow.tracking import MlflowClient

from core.errors import ArtifactIntegrityError

CHECKSUM_TAG = "artifact_sha256"


# written by MLflow beside a registered version's files when it downloads them (its name and version): not
# part of what was stored
DOWNLOAD_NOTE = "registered_model_meta"


def folder_digest(root: str) -> str:
    """SHA-256 over every file under ``root``: each file's relative path and the SHA-256 of its bytes,
    in path order (a renamed, added, removed or changed file changes it); MLflow's download note aside."""
    outer = hashlib.sha256()
    files = sorted(rel for rel in (os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
                                   for d, _, names in os.walk(root) for f in names) if rel != DOWNLOAD_NOTE)
    for rel in files:
        inner = hashlib.sha256()
        with open(os.path.join(root, rel), "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                inner.update(block)
        outer.update(f"{rel}\0{inner.hexdigest()}\n".encode("utf-8"))
    return outer.hexdigest()


def _download(client: MlflowClient, model_name: str, version: str, dst: str) -> str:
    uri = f"models:/{model_name}/{version}"
    return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst, tracking_uri=client.tracking_uri)


def record_checksum(client: MlflowClient, model_name: str, version: str) -> str:
    """Download version ``version`` of ``model_name`` as registered, and tag it with its files' SHA-256."""
    with tempfile.TemporaryDirectory() as tmp:
        digest = folder_digest(_download(client, model_name, version, tmp))
    client.set_model_version_tag(model_name, version, CHECKSUM_TAG, digest)
    return digest


def download_verified(model_name: str, version: str, dst: str, tracking_uri: Optional[str] = None) -> str:
    """Download version ``version`` of ``model_name`` into ``dst`` and return the local folder, once its
    files match the checksum recorded at registration; else raise :class:`ArtifactIntegrityError`."""
    client = MlflowClient(tracking_uri=tracking_uri)
    recorded = (client.get_model_version(model_name, version).tags or {}).get(CHECKSUM_TAG)
    if not recorded:
        raise ArtifactIntegrityError(
            f"model {model_name} v{version} has no recorded artifact checksum (tag {CHECKSUM_TAG}; versions "
            "registered before checksums were recorded have none), so it is not loaded: a model file is a pickle "
            "and loading it runs code. Retrain (`reco train --date D`) to register a version with one")
    local = _download(client, model_name, version, dst)
    found = folder_digest(local)
    if found != recorded:
        raise ArtifactIntegrityError(
            f"model {model_name} v{version}: its files do not match the checksum recorded at registration "
            f"({CHECKSUM_TAG} {recorded[:16]}..., found {found[:16]}...); they changed after registration, so "
            "the model is not loaded. Find out who changed the artifact store; retrain to register a new version")
    return local

