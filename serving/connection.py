"""Opening a Redis connection from a URL (blocking: :func:`connect`; ``redis.asyncio``, for the lookup
service: :func:`connect_async`), and telling the user when it is not there.

A URL of scheme ``redis+cluster://`` or ``rediss+cluster://`` (TLS), or ``cluster=True`` (the setting
``redis.cluster``), names a Redis Cluster: the client is then redis-py's ``RedisCluster`` (blocking or
asyncio), which routes each command to the node that holds its key's hash slot and follows the cluster
when slots move. The URL names any one node; the client learns the others from it. Every multi-key
command the project sends touches one hash slot (see :mod:`serving.keys`), so it runs on a cluster as
it is; docs/SERVING.md, "Redis Cluster", lists each path.
"""
from __future__ import annotations

import logging
from typing import Any, Optional, Tuple, Union
from urllib.parse import urlsplit

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from core.errors import RecoError
from core.redact import redact_url as redact  # noqa: F401  (the one redaction; callers import it here)

log = logging.getLogger(__name__)

SCHEMES = ("redis", "rediss")
CLUSTER = "+cluster"    # redis+cluster://, rediss+cluster://: the url names a node of a Redis Cluster
CLUSTER_CLIENTS = (redis.RedisCluster, aredis.RedisCluster)
START_HINT = ("is redis-server running? `reco redis start` starts the embedded one "
              "(redis.embedded: true), or point redis.url (RECO__REDIS__URL) at a running server")

AnyClient = Union[redis.Redis, redis.RedisCluster, aredis.Redis, aredis.RedisCluster]


class RedisUnavailable(RecoError, RuntimeError):
    """Redis cannot be reached or refuses us; the message names the url (no password) and what to do."""


def parse_url(url: str, cluster: bool = False) -> Tuple[str, bool]:
    """(the url as redis-py reads it, whether it names a Redis Cluster): ``redis+cluster://`` and
    ``rediss+cluster://`` lose their ``+cluster`` and say cluster, as ``cluster=True`` does.

    Raises:
        ValueError: the scheme is none of those, naming the url without its password."""
    scheme = urlsplit(url).scheme if "://" in url else ""
    named = scheme.endswith(CLUSTER)
    plain = scheme[:-len(CLUSTER)] if named else scheme
    if plain not in SCHEMES:
        raise ValueError(f"redis url {redact(url)!r} must start with redis:// or rediss:// (TLS), or "
                         "redis+cluster:// or rediss+cluster:// for a Redis Cluster")
    return (plain + url[len(scheme):] if named else url), named or cluster


def is_cluster(r: Any) -> bool:
    """Whether ``r`` is a Redis Cluster client (blocking or asyncio)."""
    return isinstance(r, CLUSTER_CLIENTS)


def connection_kwargs(r: AnyClient) -> dict:
    """The keyword arguments ``r`` opens its connections with (host, port, username, ...; a cluster
    client's: those every node's connections share)."""
    if isinstance(r, redis.RedisCluster):
        return r.get_connection_kwargs()
    if isinstance(r, aredis.RedisCluster):
        return r.connection_kwargs
    return r.connection_pool.connection_kwargs


def describe(r: AnyClient) -> str:
    """A password-free url of the server ``r`` talks to, for messages (for a cluster, the node it
    was given or, once connected, the node it sends keyless commands to)."""
    kw = connection_kwargs(r)
    if is_cluster(r):
        node = r.get_default_node() or next(iter(r.nodes_manager.startup_nodes.values()), None)
        tls = kw.get("ssl") or getattr(kw.get("connection_class"), "__name__", "").startswith("SSL")
        where = f"{node.host}:{node.port}" if node is not None else "(no node)"
        return f"{'rediss' if tls else 'redis'}{CLUSTER}://{where}"
    scheme = "rediss" if r.connection_pool.connection_class.__name__.startswith("SSL") else "redis"
    if kw.get("path"):
        return f"unix://{kw['path']}"
    return f"{scheme}://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def connect(url: str, password: Optional[str] = None, socket_timeout: float = 2.0,
            retries: int = 2, cluster: bool = False, **kw: Any) -> Union[redis.Redis, redis.RedisCluster]:
    """A client for ``url`` (``redis://`` or ``rediss://`` for TLS). Connects lazily, except to a
    Redis Cluster: its client reads the slot map from the node named at once.

    Args:
        url: ``redis[s][+cluster]://[[user]:[password]@]host[:port][/db]`` (a cluster has db 0 only).
        password: overrides a password in the url (pass ``Config.redis_password``).
        socket_timeout: seconds for connecting and for each reply.
        retries: retries of a command after a connection error or timeout, with
            jittered backoff of at most 0.5 s (redis-py's default is 10 retries
            of up to 1 s each, too slow for a service that should answer 503).
        cluster: a Redis Cluster even where the url says ``redis://`` (``redis.cluster``).
        **kw: passed to ``redis.Redis.from_url``, e.g. ``ssl_cert_reqs``,
            ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` for TLS.

    Raises:
        RedisUnavailable: a cluster none of whose nodes answers.
    """
    url, cluster = parse_url(url, cluster)
    if password is not None:
        kw["password"] = password
    kw.setdefault("socket_connect_timeout", socket_timeout)
    kw.setdefault("retry", Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries))
    if cluster:
        try:
            return redis.RedisCluster.from_url(url, socket_timeout=socket_timeout, **kw)
        except (RedisClusterException, redis.ConnectionError, redis.TimeoutError) as e:
            raise RedisUnavailable(f"cannot reach the Redis Cluster at {redact(url)}: {e}; start it, or point "
                                   "redis.url (RECO__REDIS__URL) at one of its nodes") from None
    kw.setdefault("health_check_interval", 30)
    return redis.Redis.from_url(url, socket_timeout=socket_timeout, **kw)


def connect_async(url: str, password: Optional[str] = None, socket_timeout: float = 2.0,
                  retries: int = 2, max_connections: int = 256, cluster: bool = False,
                  **kw: Any) -> Union[aredis.Redis, aredis.RedisCluster]:
    """:func:`serving.connection.connect` for ``redis.asyncio``: the same url forms, timeouts and
    retries (jittered backoff of at most 0.5 s). Connects lazily (a cluster client too: it reads the
    slot map on its first command).

    At most ``max_connections`` connections; a request that finds them all busy waits for one (up to
    ``socket_timeout``, then a ``ConnectionError``: the service's 503). redis-py's default pool
    instead fails at once beyond 100 connections ("Too many connections"), which a burst of lookups
    after a scheduling hiccup reached: 503s at 2,000 req/s with Redis itself idle (BENCHMARKS.md).
    On a cluster, ``max_connections`` is per node, and a request beyond it fails at once with a
    ``ConnectionError`` (redis-py's cluster client has no waiting pool).
    """
    url, cluster = parse_url(url, cluster)
    if max_connections < 1:
        raise ValueError(f"max_connections must be at least 1, got {max_connections}")
    if password is not None:
        kw["password"] = password
    kw.setdefault("socket_connect_timeout", socket_timeout)
    kw.setdefault("retry", AsyncRetry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries))
    kw.setdefault("health_check_interval", 30)
    if cluster:
        return aredis.RedisCluster.from_url(url, max_connections=max_connections, socket_timeout=socket_timeout,
                                            **kw)
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
    user = connection_kwargs(r).get("username")
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
