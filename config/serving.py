"""The lookup service's settings: the ``serving:`` section (``reco serve``; docs/SECURITY.md says why
each is there).

* ``host``, ``port``: where ``reco serve`` listens.
* ``demo``: serve the demo store front (``/``, ``/static``) and ``/v1/demo/users``. The page calls the
  API from the browser, which cannot keep a key secret, so demo mode needs ``auth.enabled: false``;
  and with auth off the service only binds a loopback host (checked at start, see
  :func:`serving.api.auth.check_exposure`).
* ``cors_origins``: the browser origins allowed to call the API from another site (none by default).
* ``auth``: API keys, each read from an environment variable (never from a file), with its scopes
  and its rate limit; ``auth.shared_limit`` counts that rate in Redis across every worker process
  and pod instead of per process (:mod:`serving.api.rate_limit`).
"""
from __future__ import annotations

from typing import Dict, List, Literal

from pydantic import Field, field_validator, model_validator

from config.base import Strict

Scope = Literal["lookup", "events", "admin"]
SCOPES = ("lookup", "events", "admin")


class ApiKeySpec(Strict):
    """One API key: the environment variable that holds it, what it may call, how often.

    The variable holds the key itself or its SHA-256 (``sha256:<64 hex digits>``), or several of
    either separated by commas (a key being rotated and its successor)."""
    env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$")
    scopes: List[Scope] = Field(min_length=1)
    rate_per_s: float = Field(gt=0)     # sustained requests a second, per worker process (all of them: shared_limit)
    burst: int = Field(gt=0)            # requests allowed at once above that rate (per process only)


def _default_keys() -> Dict[str, ApiKeySpec]:
    return {
        "lookup": ApiKeySpec(env="RECO_API_KEY_LOOKUP", scopes=["lookup"], rate_per_s=2000.0, burst=4000),
        "events": ApiKeySpec(env="RECO_API_KEY_EVENTS", scopes=["events"], rate_per_s=500.0, burst=1000),
        "admin": ApiKeySpec(env="RECO_API_KEY_ADMIN", scopes=["admin"], rate_per_s=10.0, burst=20),
    }


class SharedLimitSection(Strict):
    """Each key's rate counted in Redis (the lookup client's), shared by every worker process and pod:
    ``round(rate_per_s * window_s)`` requests per fixed window of ``window_s`` seconds. While Redis
    fails, each process falls back to its own bucket (``rate_per_s``, ``burst``) for ``fallback_s``."""
    enabled: bool = False
    window_s: int = Field(1, ge=1, le=3600)
    fallback_s: float = Field(5.0, gt=0, le=3600)


class AuthSection(Strict):
    enabled: bool = True                # off only in local.yaml (loopback, demo page)
    keys: Dict[str, ApiKeySpec] = Field(default_factory=_default_keys)
    shared_limit: SharedLimitSection = Field(default_factory=SharedLimitSection)

    @field_validator("keys")
    @classmethod
    def _distinct_envs(cls, v: Dict[str, ApiKeySpec]) -> Dict[str, ApiKeySpec]:
        envs = [spec.env for spec in v.values()]
        dup = sorted({e for e in envs if envs.count(e) > 1})
        if dup:
            raise ValueError(f"each key needs its own environment variable; used twice: {dup}")
        return v


class ServingConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, gt=0, lt=65536)
    demo: bool = False
    cors_origins: List[str] = Field(default_factory=list)
    auth: AuthSection = Field(default_factory=AuthSection)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, v: List[str]) -> List[str]:
        import re
        bad = [o for o in v if o != "*" and not re.fullmatch(r"https?://[^/\s?#]+", o)]
        if bad:
            raise ValueError(f"not an origin (scheme://host[:port], no path): {bad}")
        return v

    @model_validator(mode="after")
    def _demo_without_keys(self) -> "ServingConfig":
        if self.demo and self.auth.enabled:
            raise ValueError("serving.demo needs serving.auth.enabled: false: the demo page calls the API from "
                             "the browser, which cannot keep an API key secret (local.yaml turns both so)")
        return self
