"""Keyed hashes of customer ids (HMAC-SHA256), for records that must name a customer without holding the id.

The key comes from the environment only (``RECO_PSEUDONYM_SECRET``; the name holds ``SECRET`` so the CLI's log
and error redaction masks its value). The same key must be used for as long as the hashes it made are kept:
``reco forget`` records the hash of a forgotten customer, and ingest compares every later batch's customers
with those hashes, so a changed key would let a forgotten customer's old rows back in.
"""
from __future__ import annotations

import hashlib
import hmac
import os
from typing import Mapping, Optional

from core.errors import ConfigError

KEY_VARIABLE = "RECO_PSEUDONYM_SECRET"
MIN_KEY_LENGTH = 16


def pseudonym_key(environ: Optional[Mapping[str, str]] = None, why: str = "") -> bytes:
    """The HMAC key from ``RECO_PSEUDONYM_SECRET``.

    Raises:
        ConfigError: unset, or shorter than 16 characters (the message names the variable, never the value).
    """
    environ = os.environ if environ is None else environ
    value = environ.get(KEY_VARIABLE, "")
    if len(value) < MIN_KEY_LENGTH:
        state = "is not set" if not value else f"is shorter than {MIN_KEY_LENGTH} characters"
        raise ConfigError(f"{KEY_VARIABLE} {state}{': ' + why if why else ''}. Set it to a long random secret, "
                          "the same one every run (python -c 'import secrets; print(secrets.token_urlsafe(32))'); "
                          "keep it as long as any forget_requests row is kept")
    return value.encode("utf-8")


def pseudonym(value: str, key: bytes) -> str:
    """HMAC-SHA256 of ``value`` (UTF-8) under ``key``, as 64 hex digits."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()
