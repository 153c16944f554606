"""One typed configuration object per process.

Built once from ``conf/base.yaml`` + ``conf/$RECO_ENV.yaml`` (``local`` by
default) + environment overrides of the form ``RECO__SECTION__KEY=value``
(values parsed as YAML, so ``RECO__QUALITY__MAX_BAD_ROW_SHARE=0.1`` is a float).
Secrets are read from the environment only (``AWS_*``, ``REDIS_PASSWORD``);
a secret found in a YAML file is refused, a password inside any URL included
(``redis.url``, ``mlflow.tracking_uri``, ``s3.endpoint_url``...; a whole URL with its
password may come from the environment, e.g. ``RECO__REDIS__URL``). Error messages
show inputs redacted (core/redact.py).

Required settings have no default: a missing or malformed one fails at start-up
with :class:`ConfigError` naming the setting and what is expected.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from config.schema import Config
from core.errors import ConfigError
from core.redact import env_secrets, redact_text

PROJECT_ROOT = Path(__file__).resolve().parent.parent


ENV_PREFIX = "RECO__"


SECRET_KEYS = {"password", "aws_secret_access_key", "aws_access_key_id", "secret", "token"}


# conf/*.yaml files that are not environment layers
NOT_ENVIRONMENTS = ("base", "rules")


def _deep_merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> Dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def _env_overrides(environ: Dict[str, str]) -> Dict[str, Any]:
    """``RECO__A__B=v`` -> ``{"a": {"b": yaml(v)}}``. Keys are lower-cased."""
    out: Dict[str, Any] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == "RECO__":
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX):].split("__") if p]
        # keys of spark.conf keep their dots and case: RECO__SPARK__CONF__spark.x=1
        if len(path) >= 3 and path[:2] == ["spark", "conf"]:
            path = path[:2] + [name[len(ENV_PREFIX):].split("__", 2)[2]]
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def _refuse_secrets(data: Any, where: str, trail: str = "") -> None:
    if isinstance(data, dict):
        for key, value in data.items():
            here = f"{trail}.{key}" if trail else str(key)
            if str(key).lower() in SECRET_KEYS and value not in (None, ""):
                raise ConfigError(f"{here} is a secret and must not be in {where}; "
                                  "set it in the environment instead (see docs/CONFIG.md)")
            _refuse_secrets(value, where, here)


def _url_password(value: str) -> Optional[str]:
    """The password inside ``value`` when it is a URL that carries one, else None."""
    if "://" not in value or "@" not in value:
        return None
    try:
        return urlsplit(value.strip()).password
    except ValueError:      # a malformed url: the client says what is wrong with it
        return None


def _refuse_url_password(data: Any, where: Path, trail: str = "") -> None:
    """A password inside any URL in a YAML file (``redis.url``, ``mlflow.tracking_uri``, ``s3.endpoint_url``,
    a webhook...) is a secret in a file: refused, naming the setting (never the value) and what to use."""
    if isinstance(data, dict):
        for key, value in data.items():
            _refuse_url_password(value, where, f"{trail}.{key}" if trail else str(key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            _refuse_url_password(value, where, f"{trail}[{i}]")
    elif isinstance(data, str) and _url_password(data):
        instead = ("the environment variable REDIS_PASSWORD (or an ACL user's, docs/SECURITY.md) instead, or "
                   "give the whole URL in the environment (RECO__REDIS__URL)" if trail == "redis.url" else
                   f"the whole URL in the environment instead (RECO__{trail.upper().replace('.', '__')})")
        raise ConfigError(f"{trail} in {where} carries a password; a secret must not be in a config file. "
                          f"Remove it from the URL and set {instead}; see docs/CONFIG.md")


def _resolve_paths(data: Dict[str, Any], root: Path) -> Dict[str, Any]:
    """Relative local paths in the config resolve against the project root."""
    def fix(p: Optional[str]) -> Optional[str]:
        if not p or "://" in p or p.startswith("/"):
            return p
        return str((root / p).resolve())

    lh = data.get("lakehouse", {})
    for key in ("root", "staging_dir"):
        if key in lh:
            lh[key] = fix(lh[key])
    q = data.get("quality", {})
    if "quality_dir" in q:
        q["quality_dir"] = fix(q["quality_dir"])
    ml = data.get("mlflow", {})
    if "artifact_root" in ml:
        ml["artifact_root"] = fix(ml["artifact_root"])
    uri = ml.get("tracking_uri")
    if isinstance(uri, str) and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        ml["tracking_uri"] = "sqlite:///" + str((root / uri[len("sqlite:///"):]).resolve())
    tr = data.get("training", {})
    if isinstance(tr, dict) and tr.get("work_dir"):
        tr["work_dir"] = fix(tr["work_dir"])
    sc = data.get("scoring", {})
    if isinstance(sc, dict) and sc.get("rules_path"):
        sc["rules_path"] = fix(sc["rules_path"])
    rd = data.get("redis", {})
    if isinstance(rd, dict) and rd.get("data_dir"):
        rd["data_dir"] = fix(rd["data_dir"])
    orch = data.get("orchestration") or {}
    if isinstance(orch, dict):
        for key in ("airflow_home", "logs_dir"):
            if orch.get(key):
                orch[key] = fix(orch[key])
    for src in data.get("sources", {}).values():
        if isinstance(src, dict):
            for key in ("path", "hourly_path"):
                if src.get(key):
                    src[key] = fix(src[key])
            cat = src.get("catalog")
            if isinstance(cat, dict) and cat.get("path"):
                cat["path"] = fix(cat["path"])
    return data


def _format_validation_error(exc: ValidationError, env: str, secrets: Sequence[str] = ()) -> str:
    """One line per error, naming the setting; the input shown is redacted (a URL's password, a secret
    of the environment: an override such as RECO__REDIS__URL may carry one)."""
    lines = [f"invalid configuration (RECO_ENV={env}):"]
    for err in exc.errors():
        name = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "missing":
            msg = "is required but not set"
        lines.append(f"  - {name}: {redact_text(msg, secrets)} (got {redact_text(repr(err.get('input')), secrets)})"
                     if err["type"] != "missing"
                     else f"  - {name}: {msg}")
    lines.append("Fix it in conf/base.yaml, conf/<env>.yaml, or with RECO__SECTION__KEY=value.")
    return "\n".join(lines)


def load_config(env: Optional[str] = None, conf_dir: Optional[Path] = None,
                environ: Optional[Dict[str, str]] = None, overrides: Optional[Dict[str, Any]] = None) -> Config:
    """Load and validate the configuration.

    Args:
        env: environment layer; defaults to ``$RECO_ENV`` or ``local``.
        conf_dir: folder with ``base.yaml`` and ``<env>.yaml``; defaults to ``conf/``.
        environ: the environment to read overrides from (default ``os.environ``).
        overrides: a nested dict merged last (tests use it).
    """
    environ = dict(os.environ if environ is None else environ)
    env = env or environ.get("RECO_ENV", "local")
    conf_dir = Path(conf_dir or environ.get("RECO_CONF_DIR") or PROJECT_ROOT / "conf")
    base_path, env_path = conf_dir / "base.yaml", conf_dir / f"{env}.yaml"
    for path in (base_path, env_path):
        if not path.exists() or env in NOT_ENVIRONMENTS:
            envs = sorted(p.stem for p in conf_dir.glob('*.yaml') if p.stem not in NOT_ENVIRONMENTS)
            raise ConfigError(f"config file {path} not found (RECO_ENV={env}); available environments: {envs}")
    layers = {path: _read_yaml(path) for path in (base_path, env_path)}
    for path, layer in layers.items():
        _refuse_url_password(layer, path)
    data = _deep_merge(layers[base_path], layers[env_path])
    _refuse_secrets(data, f"{base_path} or {env_path}")
    data = _deep_merge(data, _env_overrides(environ))
    if overrides:
        data = _deep_merge(data, overrides)
    data.setdefault("env", env)
    data = _resolve_paths(data, PROJECT_ROOT)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, env, env_secrets(environ))) from None
