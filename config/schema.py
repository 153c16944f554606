"""The whole configuration: one typed object with a section per concern (the section modules beside it)."""
from __future__ import annotations

import os
from typing import Dict, Optional

from pydantic import Field, model_validator

from config.base import Strict
from config.feedback import FeedbackConfig
from config.monitoring import MonitoringConfig
from config.pipeline import (BacktestConfig, FeaturesConfig, InteractionsConfig, OrchestrationConfig, QualityConfig,
                             SplitsConfig, SyntheticConfig)
from config.scoring import ScoringConfig, ServingConfig
from config.sources import SourceConfig
from config.storage import LakehouseConfig, MlflowConfig, RedisConfig, S3Config, SparkConfig
from config.training import TrainingConfig
from core.errors import ConfigError


class Config(Strict):
    env: str
    lakehouse: LakehouseConfig
    spark: SparkConfig
    s3: S3Config
    mlflow: MlflowConfig
    redis: RedisConfig
    quality: QualityConfig
    interactions: InteractionsConfig
    features: FeaturesConfig
    splits: SplitsConfig
    synthetic: SyntheticConfig
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)
    backtest: BacktestConfig = Field(default_factory=BacktestConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    default_source: str
    sources: Dict[str, SourceConfig]

    @model_validator(mode="after")
    def _default_source_exists(self) -> "Config":
        if self.default_source not in self.sources:
            raise ValueError(f"default_source '{self.default_source}' is not one of the sources "
                             f"{sorted(self.sources)}")
        return self

    def source(self, name: str) -> SourceConfig:
        try:
            return self.sources[name]
        except KeyError:
            raise ConfigError(f"unknown source '{name}'; configured sources: {sorted(self.sources)} "
                              "(add one under 'sources:' in conf/base.yaml)") from None

    def _local_dir(self, setting: str, value: Optional[str], default: str, when: str = "") -> str:
        """``value`` when set, else ``<lakehouse.root>/<default>``; a remote lakehouse needs it set."""
        if value:
            return value
        if "://" in self.lakehouse.root:
            raise ConfigError(f"{setting} must be set to a local folder when lakehouse.root is remote "
                              f"({self.lakehouse.root}){when}")
        return os.path.join(self.lakehouse.root, default)

    @property
    def training_dir(self) -> str:
        return self._local_dir("training.work_dir", self.training.work_dir, "_training")

    @property
    def redis_dir(self) -> str:
        return self._local_dir("redis.data_dir", self.redis.data_dir, "_redis", " and redis.embedded is true")

    @property
    def airflow_home(self) -> str:
        return self._local_dir("orchestration.airflow_home", self.orchestration.airflow_home, "_airflow")

    @property
    def logs_dir(self) -> str:
        return self._local_dir("orchestration.logs_dir", self.orchestration.logs_dir, "_logs")

    @property
    def redis_password(self) -> Optional[str]:
        return os.environ.get("REDIS_PASSWORD")
