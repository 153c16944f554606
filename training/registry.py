"""The MLflow model registry with a promotion gate (aliases, not the deprecated stages).

Every trained model is registered as a new version of one registered model and gets the alias
``challenger``. It takes the alias ``champion`` (what scoring loads: ``models:/<name>@champion``)
only when :func:`gate_decision` says so; the decision and its one-sentence reason are written as
tags on the model version and on the training run, so both the registry and the run page say why.

Gate rule (:func:`gate_decision`, pure):

    promote  iff  challenger is finite
             and  (there is no champion value  or  challenger > champion * (1 + margin))
             and  for every name in ``required``:  challenger > baselines[name] * (1 + margin)

* ``margin`` is relative (0.01 = the challenger must be more than 1% better); equal is not better.
  Metrics are "higher is better" and non-negative (ndcg, recall, ...).
* A NaN or infinite challenger never promotes.
* A baseline named in ``required`` but absent from ``baselines`` raises ValueError: a gate that
  cannot check must not pass. A required baseline whose value is NaN cannot be beaten, so it
  rejects.
* "No champion value" covers both "no champion yet" and "a champion whose run lacks the metric
  (or has a non-finite value)": then only the baselines gate the challenger, and the reason says so.

Model registration in MLflow 3: ``mlflow.<flavor>.log_model(..., name=...)`` no longer writes the
model under the run's artifacts; it creates a *logged model* (``models:/m-<id>``) whose files live
under ``<experiment artifact location>/models/m-<id>/artifacts``. A ``runs:/<run_id>/<name>`` URI
therefore points at an empty run folder; :func:`register_and_gate` resolves it to the logged model
the run produced (same lookup ``mlflow.register_model`` does) and registers ``models:/m-<id>``.
We do not call ``mlflow.register_model`` itself because it ignores the ``client`` we are given and
talks to the global tracking URI.
"""
from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence, Tuple

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    ALREADY_EXISTS,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.tracking import MlflowClient

from core.redact import redact_url
from training.model_artifact import download_verified, record_checksum

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PROMOTED = "promoted"
REJECTED = "rejected"
PENDING = "pending"
_MODEL_VERSIONS_TAG = "mlflow.modelVersions"     # the logged model's list of registered versions (as mlflow.register_model sets it)


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str                  # one human sentence
    metric: str                  # display name of the gate metric, e.g. "valid ndcg@10"
    challenger: float
    champion: Optional[float]    # None when there is no champion (or it has no value for the metric)
    champion_version: Optional[str]
    baselines: Dict[str, float]  # the required gate baselines and their values, in `required` order
    margin: float


def _f(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else str(value)


def _is_finite(value: Optional[float]) -> bool:
    return value is not None and math.isfinite(value)


def gate_decision(metric: str, challenger: float, champion: Optional[float], champion_version: Optional[str],
                  baselines: Mapping[str, float], required: Sequence[str], margin: float) -> GateDecision:
    """Decide whether ``challenger`` replaces the champion (the rule is in the module docstring).

    ``champion`` None (or NaN) means there is no champion value to beat; ``champion_version`` is the
    champion's registry version (None when there is no champion at all). Raises ValueError for a
    required baseline missing from ``baselines`` and for a negative or non-finite ``margin``.
    """
    margin = float(margin)
    if not math.isfinite(margin) or margin < 0:
        raise ValueError(f"gate margin must be a finite number >= 0, got {margin!r}")
    names = list(dict.fromkeys(required))
    missing = [n for n in names if n not in baselines]
    if missing:
        raise ValueError(f"gate baseline(s) {', '.join(repr(n) for n in missing)} required but not given "
                         f"(given: {sorted(baselines)}): a gate that cannot check must not pass")
    gate_baselines = {n: float(baselines[n]) for n in names}
    challenger = float(challenger)
    champion = None if champion is None else float(champion)
    champion_value = champion if _is_finite(champion) else None
    factor = 1.0 + margin

    if champion_version is None and champion_value is None:
        context = "no champion yet"
    elif champion_value is None:
        context = f"champion v{champion_version} has no {metric} value"
    else:
        context = None
    kept = f"kept champion v{champion_version}" if champion_version is not None else "not promoted"

    def decision(promote: bool, reason: str) -> GateDecision:
        return GateDecision(promote, reason, metric, challenger, champion, champion_version, gate_baselines, margin)

    if not math.isfinite(challenger):
        return decision(False, f"{kept}: {metric} {_f(challenger)} is not a finite value"
                               + (f" ({context})" if context else ""))

    # (label, value) of everything the challenger has to beat, champion first
    opponents = ([] if champion_value is None else
                 [(f"champion v{champion_version}" if champion_version is not None else "champion", champion_value)])
    opponents += list(gate_baselines.items())
    lost = [(label, value) for label, value in opponents if not challenger > value * factor]
    listed = lambda pairs: ", ".join(f"{label} ({_f(value)})" for label, value in pairs)  # noqa: E731

    if lost:
        return decision(False, f"{kept}: {metric} {_f(challenger)} does not beat {listed(lost)} + margin {margin:g}"
                               + (f" ({context})" if context else ""))
    if not opponents:
        return decision(True, f"promoted: {metric} {_f(challenger)} is finite and there is nothing to beat "
                              f"({context}, no baselines required)")
    return decision(True, f"promoted: {metric} {_f(challenger)} beats {listed(opponents)} by margin {margin:g}"
                          + (f" ({context})" if context else ""))


# --------------------------------------------------------------------------------------------- registry
def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if e.error_code not in (ErrorCode.Name(RESOURCE_ALREADY_EXISTS), ErrorCode.Name(ALREADY_EXISTS)):
            raise


def _alias_version(client: MlflowClient, model_name: str, alias: str) -> Optional[str]:
    """The version the alias points at, None when the alias (or the registered model) does not exist.

    Reads the registered model's alias map instead of catching get_model_version_by_alias's error:
    in MLflow 3.17 an unknown alias raises INVALID_PARAMETER_VALUE, the same code as a malformed call.
    """
    try:
        registered = client.get_registered_model(model_name)
    except MlflowException as e:
        if e.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    version = registered.aliases.get(alias)
    return None if version is None else str(version)


def _model_source(client: MlflowClient, run_id: str, artifact_path: str) -> Tuple[str, Optional[str]]:
    """(source URI, logged model id or None) for the model ``artifact_path`` of run ``run_id``.

    MLflow 3 flavors log a *logged model* (``models:/m-<id>``), found by (name, source run). A model
    written into the run's own artifacts the MLflow 2 way (an MLmodel file under the run's
    ``artifact_path``) is still accepted and registered from its artifact URI.
    """
    if "'" in artifact_path:
        raise ValueError(f"artifact_path must not contain a quote: {artifact_path!r}")
    run = client.get_run(run_id)
    found = []
    page_token = None
    while True:
        page = client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                           filter_string=f"name = '{artifact_path}'", page_token=page_token)
        found.extend(m for m in page if m.source_run_id == run_id)
        page_token = page.token
        if not page_token:
            break
    if found:
        # several logged models of that name in one run: the one logged at the largest step (as MLflow does)
        steps = {o.model_id: o.step for o in (run.outputs.model_outputs if run.outputs else [])}
        model = max(found, key=lambda m: (steps.get(m.model_id, -1), m.creation_timestamp))
        # The sqlite registry resolves a models:/m-<id> source through the *global* tracking URI (an MLflow
        # TODO in SqlAlchemyStore.create_model_version). When our client talks to another store, register
        # the logged model's artifact location instead: same files, same loading.
        if client.tracking_uri == mlflow.get_tracking_uri():
            return f"models:/{model.model_id}", model.model_id
        return model.artifact_location, model.model_id
    if any(a.path.rsplit("/", 1)[-1] == "MLmodel" for a in client.list_artifacts(run_id, artifact_path)):
        return f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}", None
    raise MlflowException(f"run {run_id} has no logged model named {artifact_path!r} (nor an MLmodel under "
                          f"its artifacts at that path)", error_code=ErrorCode.Name(RESOURCE_DOES_NOT_EXIST))


def _link_logged_model(client: MlflowClient, model_id: str, name: str, version: str) -> None:
    """Record the registered version on the logged model (what mlflow.register_model does), so the
    logged model's page links to the registry. Best effort: the registration itself already happened."""
    try:
        existing = client.get_logged_model(model_id).tags.get(_MODEL_VERSIONS_TAG)
        value = (json.loads(existing) if existing else []) + [{"name": name, "version": version}]
        client.set_logged_model_tags(model_id, {_MODEL_VERSIONS_TAG: json.dumps(value)})
    except (MlflowException, ValueError):
        pass


def register_challenger(client: MlflowClient, model_name: str, run_id: str, artifact_path: str,
                        as_of_date: str = "") -> str:
    """Register the run's model as a new version with alias ``challenger`` (not yet gated: version tag
    gate_decision=pending, as_of_date; artifact_sha256: the files' checksum, training/model_artifact.py).
    Returns the version."""
    _ensure_registered_model(client, model_name)
    source, model_id = _model_source(client, run_id, artifact_path)
    created = client.create_model_version(model_name, source, run_id, model_id=model_id)
    version = str(created.version)
    if model_id is not None:
        _link_logged_model(client, model_id, model_name, version)
    record_checksum(client, model_name, version)   # before any alias: scoring loads only verified files
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    client.set_model_version_tag(model_name, version, "gate_decision", PENDING)
    if as_of_date:
        client.set_model_version_tag(model_name, version, "as_of_date", as_of_date)
    client.set_tag(run_id, "model_version", version)
    return version


def _apply_gate(client: MlflowClient, model_name: str, run_id: str, version: str, metric: str, challenger: float,
                baselines: Mapping[str, float], required: Sequence[str], margin: float,
                metric_key: str) -> GateDecision:
    champion_version = _alias_version(client, model_name, CHAMPION)
    champion_value: Optional[float] = None
    if champion_version is not None:
        champion_run_id = client.get_model_version(model_name, champion_version).run_id
        if champion_run_id:
            champion_value = client.get_run(champion_run_id).data.metrics.get(metric_key)

    decision = gate_decision(metric, challenger, champion_value, champion_version, baselines, required, margin)
    outcome = PROMOTED if decision.promote else REJECTED
    client.set_model_version_tag(model_name, version, "gate_decision", outcome)
    client.set_model_version_tag(model_name, version, "gate_reason", decision.reason)
    if decision.promote:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    client.set_tag(run_id, "gate_decision", outcome)
    client.set_tag(run_id, "gate_reason", decision.reason)
    client.set_tag(run_id, "model_version", version)
    return decision


def register_and_gate(client: MlflowClient, model_name: str, run_id: str, artifact_path: str,
                      metric: str, challenger: float, baselines: Mapping[str, float], required: Sequence[str],
                      margin: float, metric_key: str) -> Tuple[GateDecision, str]:
    """Register the run's model as a new version of ``model_name``, gate it against the champion and
    the required baselines, move the aliases, tag the version and the run. Returns (decision, version).

    ``metric`` is the display name used in the reason ("valid ndcg@10"), ``metric_key`` the run
    metric the champion's value is read from ("valid_ndcg_at_10"); ``challenger`` is the new
    model's value of it. The new version always gets alias ``challenger``; it gets ``champion``
    only when promoted. Version tags: gate_decision (promoted/rejected), gate_reason. Run tags:
    gate_decision, gate_reason, model_version.
    """
    # Validate the gate inputs before writing anything to the registry.
    gate_decision(metric, challenger, None, None, baselines, required, margin)
    version = register_challenger(client, model_name, run_id, artifact_path)
    decision = _apply_gate(client, model_name, run_id, version, metric, challenger, baselines, required, margin,
                           metric_key)
    return decision, version


def find_version(client: MlflowClient, model_name: str, as_of_date: str) -> Optional[str]:
    """The newest version registered for a run date (version tag as_of_date), or None."""
    try:
        versions = client.search_model_versions(f"name='{model_name}'")
    except MlflowException:
        return None
    found = [int(v.version) for v in versions if (v.tags or {}).get("as_of_date") == as_of_date]
    return str(max(found)) if found else None


def gate_version(client: MlflowClient, model_name: str, version: str, metric: str, metric_key: str,
                 baseline_keys: Mapping[str, str], required: Sequence[str], margin: float) -> GateDecision:
    """Gate a registered version with the metrics its training run logged (the challenger's
    ``metric_key`` and each required baseline's key in ``baseline_keys``). A version that was gated
    already keeps its decision (a retried task changes nothing); a metric the run lacks is an error."""
    mv = client.get_model_version(model_name, version)
    run = client.get_run(mv.run_id)
    metrics = run.data.metrics
    tags = mv.tags or {}
    if tags.get("gate_decision") in (PROMOTED, REJECTED):
        champion_version = _alias_version(client, model_name, CHAMPION)
        value = float(metrics.get(metric_key, float("nan")))
        return GateDecision(tags["gate_decision"] == PROMOTED, tags.get("gate_reason", "") + " (decided before)",
                            metric, value, None, champion_version, {}, float(margin))
    if metric_key not in metrics:
        raise ValueError(f"run {mv.run_id} of {model_name} v{version} has no metric {metric_key}: it cannot be gated")
    missing = [b for b in required if baseline_keys.get(b) not in metrics]
    if missing:
        raise ValueError(f"run {mv.run_id} of {model_name} v{version} lacks the gate baselines {missing} "
                         f"(metrics {[baseline_keys.get(b) for b in missing]}): a gate that cannot check must not pass")
    baselines = {b: float(metrics[baseline_keys[b]]) for b in required}
    return _apply_gate(client, model_name, mv.run_id, version, metric, float(metrics[metric_key]), baselines,
                       required, margin, metric_key)


def load_alias(model_name: str, alias: str = CHAMPION, tracking_uri: Optional[str] = None
               ) -> Optional[Tuple[str, str]]:
    """(version, ``models:/<name>@<alias>``) of the version the alias points at; None when the alias
    (or the registered model) does not exist. The URI loads with any ``mlflow.<flavor>.load_model``."""
    version = _alias_version(MlflowClient(tracking_uri=tracking_uri), model_name, alias)
    return None if version is None else (version, f"models:/{model_name}@{alias}")


def load_champion(tracking_uri: str, name: str):
    """(model, version, run_id) of the registered model ``name``'s ``champion``, its files verified
    (:func:`download_verified`) before they are loaded; (None, "none", "") when there is none yet (a first
    model that did not pass the gate): the lists are then built without a model."""
    mlflow.set_tracking_uri(tracking_uri)
    found = load_alias(name, tracking_uri=tracking_uri)
    if found is None:
        log.warning("no champion of model '%s' at %s: serving buy-again, trending and popular lists only; run "
                    "`reco train --date D` (a model becomes champion when it beats the gate's baselines)",
                    name, redact_url(tracking_uri))
        return None, "none", ""
    version, _ = found
    run_id = MlflowClient(tracking_uri=tracking_uri).get_model_version(name, version).run_id
    with tempfile.TemporaryDirectory() as tmp:   # the files checked against the registration's SHA-256, then loaded
        local = download_verified(name, version, tmp, tracking_uri=tracking_uri)
        model = mlflow.pytorch.load_model(local, map_location="cpu")
    model.eval()
    return model, str(version), run_id
