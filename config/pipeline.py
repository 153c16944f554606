"""How the pipeline runs and what it accepts: orchestration, backtest, quality, interactions, features,
splits and the synthetic generator's sections."""
from __future__ import annotations

from typing import Dict, List, Literal, Optional

from pydantic import Field, field_validator, model_validator

from config.base import Strict
from core.contract import STRENGTH_TYPES, ActionType, StrengthType


class SparkSubmitSection(Strict):
    """How SparkSubmitOperator runs a job (``orchestration.executor: spark_submit``)."""
    conn_id: str = "spark_default"      # Airflow connection holding the master URL (e.g. spark://host:7077, yarn, k8s://...)
    deploy_mode: Literal["client", "cluster"] = "client"
    packages: List[str] = Field(default_factory=lambda: ["io.delta:delta-spark_2.13:4.4.0"])
    conf: Dict[str, str] = Field(default_factory=dict)
    py_files: Optional[str] = None      # e.g. a zip of the project for cluster deploy mode
    env_vars: Dict[str, str] = Field(default_factory=dict)


class OrchestrationConfig(Strict):
    """The Airflow DAGs (``dags/``): how tasks run, when, and what guards them."""
    executor: Literal["inprocess", "spark_submit"] = "inprocess"   # inprocess: the Airflow worker runs the job
    spark_submit: SparkSubmitSection = Field(default_factory=SparkSubmitSection)
    source: Optional[str] = None        # source the DAGs ingest (default: default_source)
    nightly_schedule: str = "0 2 * * *"  # cron; each run covers the day before (its data interval)
    hourly_schedule: str = "10 * * * *"  # cron; each run covers the hour before
    # the hourly DAG's tasks: "steps" = ingest >> refresh >> score >> publish, a task (a process, a Spark
    # driver) each; "one" = one task `reco hourly all` running the four in one process. Under a scheduler
    # each task starts its own driver: on a small machine "one" saves those starts (docs/AIRFLOW.md)
    hourly_tasks: Literal["steps", "one"] = "one"
    # cron of the table maintenance (OPTIMIZE + VACUUM of every table), once a day after the nightly
    maintenance_schedule: str = "30 5 * * *"
    start_date: str = "2026-07-01"      # first data interval (backfills can start here)
    pool: str = "reco_pipeline"         # one slot: nightly, hourly and maintenance tasks never overlap
    pool_slots: int = Field(1, gt=0)
    retries: int = Field(2, ge=0)
    retry_delay_s: int = Field(30, ge=0)  # doubled on each retry (exponential backoff) ...
    max_retry_delay_s: int = Field(600, ge=0)  # ... up to this
    task_timeout_min: int = Field(60, gt=0)    # execution_timeout of each task ...
    train_timeout_min: int = Field(180, gt=0)  # ... except training
    parallelism: int = Field(2, gt=0)   # Airflow core parallelism for `make airflow` (2-core machine: 2)
    airflow_home: Optional[str] = None  # default <lakehouse.root>/_airflow (local only)
    # `reco run`'s full output (Spark, Ivy, Airflow), the console keeps progress lines and the summary;
    # default <lakehouse.root>/_logs (local only)
    logs_dir: Optional[str] = None


class BacktestConfig(Strict):
    """``reco backtest`` and the nightly's backtest task (``jobs/backtest.py``): the served lists of a day
    against what customers did in the days after."""
    enabled: bool = True                # the nightly DAG has a backtest task
    days: int = Field(1, gt=0)          # the window: the days after the lists' date (the nightly: lists of D - days)
    ks: List[int] = Field(default_factory=lambda: [10, 20])
    # the "any" group: event types that count as acting on an item; the "purchase" group: those that are purchases
    actions: List[ActionType] = Field(default_factory=lambda: ["purchase", "cart", "view"])
    purchases: List[ActionType] = Field(default_factory=lambda: ["purchase"])

    @field_validator("ks")
    @classmethod
    def _ks(cls, v: List[int]) -> List[int]:
        if not v or any(k < 1 for k in v):
            raise ValueError("needs one or more cut-offs of 1 or more")
        return sorted(set(v))

    @field_validator("actions", "purchases")
    @classmethod
    def _types(cls, v: List[str]) -> List[str]:
        if not v:
            raise ValueError("needs one or more event types (view, cart, purchase, rating)")
        return list(dict.fromkeys(v))

    def groups(self) -> Dict[str, List[str]]:
        """The event-type groups scored on their own: ``purchase`` and ``any``."""
        return {"purchase": list(self.purchases), "any": list(self.actions)}


class QualityConfig(Strict):
    max_bad_row_share: float = Field(ge=0.0, le=1.0)
    min_event_time: str
    future_tolerance_hours: int = Field(ge=0)
    max_string_length: int = Field(gt=0)
    max_quantity: float = Field(gt=0)
    max_price: float = Field(gt=0)
    quality_dir: str
    # batches of at most this many rows are validated by GX's pandas engine (Spark's metric jobs
    # cost seconds even on a hundred rows); 0 = always Spark
    pandas_max_rows: int = Field(default=50000, ge=0)


class InteractionsConfig(Strict):
    strength: Dict[StrengthType, float]
    rating_max: float = Field(gt=0)
    non_product_items: List[str] = Field(default_factory=list)

    @field_validator("strength")
    @classmethod
    def _all_grades(cls, v: Dict[str, float]) -> Dict[str, float]:
        missing = set(STRENGTH_TYPES) - set(v)
        if missing:
            raise ValueError(f"needs a strength for every event type; missing {sorted(missing)}")
        return v


class FeaturesConfig(Strict):
    short_window_days: int = Field(gt=0)
    long_window_days: int = Field(gt=0)

    @model_validator(mode="after")
    def _short_below_long(self) -> "FeaturesConfig":
        if self.short_window_days >= self.long_window_days:
            raise ValueError("short_window_days must be smaller than long_window_days")
        return self


class SplitsConfig(Strict):
    valid_days: int = Field(gt=0)
    test_days: int = Field(gt=0)
    random_test_fraction: float = Field(gt=0.0, lt=1.0)
    random_seed: int


class SyntheticConfig(Strict):
    seed: int
    n_users: int = Field(gt=0)
    n_items: int = Field(gt=0)
    n_events: int = Field(gt=0)
    start_date: str
    days: int = Field(gt=0)
    countries: List[str] = Field(min_length=1)
    n_segments: int = Field(gt=0)
    popularity_exponent: float = Field(gt=0)
    return_rate: float = Field(ge=0.0, lt=1.0)
