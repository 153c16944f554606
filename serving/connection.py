"""Opening a Redis connection from a URL (blocking: :func:`connect`; ``redis.asyncio``, for the lookup
service: :func:`connect_async`), and telling the user when it is not there."""
from __future__ import annotations

import logging
from typing import Any, Optional
from urllib.parse import urlsplit

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from core.errors import RecoError
from core.redact import redact_url as redact  # noqa: F401  (the one redaction; callers import it here)

log = logging.getLogger(__name__)

SCHEMES = ("redis", "rediss")
START_HINT = ("is redis-server running? `reco redis start` starts the embedded one "
              "(redis.embedded: true), or point redis.url (RECO__REDIS__URL) at a running server")


class RedisUnavailable(RecoError, RuntimeError):
    """Redis cannot be reached or refuses us; the message names the url (no password) and what to do."""


def describe(r: redis.Redis) -> str:
    """A password-free url of the server ``r`` talks to, for messages."""
    kw = r.connection_pool.connection_kwargs
    scheme = "rediss" if r.connection_pool.connection_class.__name__.startswith("SSL") else "redis"
    if kw.get("path"):
        return f"unix://{kw['path']}"
    return f"{scheme}://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def connect(url: str, password: Optional[str] = None, socket_timeout: float = 2.0,
            retries: int = 2, **kw: Any) -> redis.Redis:
    """A client for ``url`` (``redis://`` or ``rediss://`` for TLS). Connects lazily.

    Args:
        url: ``redis[s]://[[user]:[password]@]host[:port][/db]``.
        password: overrides a password in the url (pass ``Config.redis_password``).
        socket_timeout: seconds for connecting and for each reply.
        retries: retries of a command after a connection error or timeout, with
            jittered backoff of at most 0.5 s (redis-py's default is 10 retries
            of up to 1 s each, too slow for a service that should answer 503).
        **kw: passed to ``redis.Redis.from_url``, e.g. ``ssl_cert_reqs``,
            ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` for TLS.
    """
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise ValueError(f"redis url {redact(url)!r} must start with redis:// or rediss:// (TLS)")
    if password is not None:
        kw["password"] = password
    kw.setdefault("socket_connect_timeout", socket_timeout)
    kw.setdefault("retry", Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries))
    kw.setdefault("health_check_interval", 30)
    return redis.Redis.from_url(url, socket_timeout=socket_timeout, **kw)


def connect_async(url: str, password: Optional[str] = None, socket_timeout: float = 2.0,
                  retries: int = 2, max_connections: int = 256, **kw: Any) -> aredis.Redis:
    """:func:`serving.connection.connect` for ``redis.asyncio``: the same url forms, timeouts and
    retries (jittered backoff of at most 0.5 s). Connects lazily.

    At most ``max_connections`` connections; a request that finds them all busy waits for one (up to
    ``socket_timeout``, then a ``ConnectionError``: the service's 503). redis-py's default pool
    instead fails at once beyond 100 connections ("Too many connections"), which a burst of lookups
    after a scheduling hiccup reached: 503s at 2,000 req/s with Redis itself idle (BENCHMARKS.md).
    """
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in SCHEMES:
        raise ValueError(f"redis url {redact(url)!r} must start with redis:// or rediss:// (TLS)")
    if max_connections < 1:
        raise ValueError(f"max_connections must be at least 1, got {max_connections}")
    if password is not None:
        kw["password"] = password
    kw.setdefault("socket_connect_timeout", socket_timeout)
    kw.setdefault("retry", AsyncRetry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries))
    kw.setdefault("health_check_interval", 30)
    pool = aredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=socket_timeout,
                                                  socket_timeout=socket_timeout, **kw)
    client = aredis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True     # aclose() closes the pool too, as from_url's client does
    return client


def ping_or_raise(r: redis.Redis, url: Optional[str] = None, password_variable: str = "REDIS_PASSWORD") -> None:
    """PING, or raise :class:`RedisUnavailable` saying what is wrong and what to do.

    ``password_variable`` is the environment variable the password came from (an ACL user's:
    ``RedisConfig.password_variable``), named in the message when the server refuses it."""
    where = redact(url) if url else describe(r)
    user = r.connection_pool.connection_kwargs.get("username")
    who = f"the ACL user {user!r}" if user else "our credentials"
    try:
        r.ping()
    except redis.AuthenticationError as e:
        raise RedisUnavailable(f"redis at {where} refused {who} ({e}); set {password_variable} to the "
                               "password the server has for that user (requirepass, or its ACL user: "
                               "`reco redis acl`)") from None
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise RedisUnavailable(f"cannot reach redis at {where}: {e}; {START_HINT}") from None
    except redis.ResponseError as e:
        if "NOAUTH" in str(e) or "WRONGPASS" in str(e):
            raise RedisUnavailable(f"redis at {where} needs a password ({e}); set {password_variable}") from None
        raise
