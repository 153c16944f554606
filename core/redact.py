"""Keeping secrets out of logs, reports, error messages and MLflow params: the one redaction.

A URL may carry a password (``redis://:pw@host``, ``https://user:pw@mlflow``, ``http://key:secret@minio``)
or a token in its query (``?X-Amz-Signature=...``, ``?token=...``); the environment holds the rest
(``REDIS_PASSWORD``, ``AWS_SECRET_ACCESS_KEY``, API keys). Everything that prints, logs or records
text that may hold one goes through :func:`redact_url` (one URL) or :func:`redact_text` (any text);
a CLI process also puts :class:`RedactingFilter` on its log handlers, so a message that slipped
through is cleaned before it is written.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Iterable, List, Mapping, Optional
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# query parameters whose values are credentials (compared lower-case)
SECRET_QUERY_KEYS = frozenset({
    "password", "passwd", "pwd", "secret", "token", "access_token", "auth", "api_key", "apikey", "key",
    "sig", "signature", "x-amz-signature", "x-amz-credential", "x-amz-security-token", "sas", "client_secret"})
# environment variables whose values are secrets: names containing one of these words
SECRET_ENV_WORDS = ("PASSWORD", "SECRET", "TOKEN", "API_KEY", "PRIVATE_KEY", "CREDENTIAL")
MIN_SECRET_LENGTH = 4       # shorter values are not replaced in text (they would match everywhere)

# scheme://user:password@ in any text; the password runs to the last '@' before a '/' or a space
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):(?P<password>[^\s/]*)@")
_QUERY_PAIR = re.compile(r"(?P<head>[?&;](?P<key>[^=&;\s#]+)=)(?P<value>[^&;\s#'\"]*)")


def redact_url(url: str, keep_path: bool = True) -> str:
    """``url`` without its password (``redis://:pw@h:1/0`` -> ``redis://:***@h:1/0``) and with
    secret query values masked. ``keep_path=False`` also drops the path and query (``scheme://host/...``),
    for URLs whose path is itself the secret (a Slack webhook's)."""
    try:
        parts = urlsplit(url)
    except ValueError:                      # malformed: clean it as text
        return redact_text(url)
    if not keep_path:
        if not parts.scheme:
            return "(url)"
        host = parts.hostname or ""
        return f"{parts.scheme}://{host}" + (f":{parts.port}" if _port(parts) else "") + "/..."
    netloc = parts.netloc
    if parts.password is not None:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:{MASK}@{host}" + (f":{parts.port}" if _port(parts) else "")
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in SECRET_QUERY_KEYS for k, _ in pairs):
            query = urlencode([(k, MASK if k.lower() in SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _port(parts) -> Optional[int]:
    try:
        return parts.port
    except ValueError:
        return None


def env_secrets(environ: Optional[Mapping[str, str]] = None) -> List[str]:
    """The values of the environment's secret variables (names with PASSWORD, SECRET, TOKEN, API_KEY...),
    longest first (equal lengths in order of value, so the order does not vary with the process's hash seed), for :func:`redact_text`."""
    environ = os.environ if environ is None else environ
    values = {v for k, v in environ.items()
              if any(w in k.upper() for w in SECRET_ENV_WORDS) and v and len(v) >= MIN_SECRET_LENGTH}
    for v in list(values):          # RECO_API_KEY_LOOKUP=new,old: each key on its own too
        values.update(p.strip() for p in v.split(",") if len(p.strip()) >= MIN_SECRET_LENGTH)
    return sorted(values, key=lambda v: (-len(v), v))     # longest first; ties by value, not by hash order


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL's password and secret query values masked, and every one of ``secrets``
    (e.g. :func:`env_secrets`) replaced by ``***`` wherever it appears."""
    text = _USERINFO.sub(lambda m: f"{m.group('head')}:{MASK}@", text)
    text = _QUERY_PAIR.sub(lambda m: m.group("head") + (MASK if m.group("key").lower() in SECRET_QUERY_KEYS
                                                         else m.group("value")), text)
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A log filter that renders each record's message and writes it back redacted (URL passwords,
    secret query values, and the environment's secrets as they were when the filter was made)."""

    def __init__(self, secrets: Optional[Iterable[str]] = None) -> None:
        super().__init__()
        self.secrets = list(env_secrets() if secrets is None else secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message, self.secrets)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text, self.secrets)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        return True


def install_log_redaction(logger: Optional[logging.Logger] = None) -> RedactingFilter:
    """Put one :class:`RedactingFilter` on every handler of ``logger`` (the root logger by default)."""
    logger = logger or logging.getLogger()
    f = RedactingFilter()
    for handler in logger.handlers:
        if not any(isinstance(x, RedactingFilter) for x in handler.filters):
            handler.addFilter(f)
    return f
