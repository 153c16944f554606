"""The ``training:`` section: the two-tower, its optimiser and search, the baselines and the gate."""
from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import Field, PositiveInt, field_validator, model_validator

from config.base import Strict
from config.scoring import DiversitySection, ScoringConfig


class ModelSection(Strict):
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
    history_dropout: float = Field(0.0, ge=0.0, lt=1.0)   # share of history slots hidden in training
    item_id_init: float = Field(0.0, ge=0.0)   # std of seen items' id rows at the start (0: zeros)
    towers: Literal["mlp", "linear"] = "mlp"   # linear: normalised sums of embeddings, no MLPs


class OptimSection(Strict):
    loss: Literal["softmax", "bpr", "mse"] = "softmax"
    temperature: float = Field(0.05, gt=0.0)
    logq_correction: bool = True
    # softmax negatives: in_batch (the batch's other positives, logQ-corrected, + uniform_negatives) or
    # all_items (a full softmax over the catalog: one item-tower pass over every item per step) or auto
    # (all_items up to 20,000 items, training.trainer.ALL_ITEMS_MAX; in_batch beyond)
    negatives: Literal["in_batch", "all_items", "auto"] = "in_batch"
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
    # others_share or search) and model fields as model.<field> (e.g. model.towers: linear), and is
    # tried with every others_share value; the best is kept
    search: List[Dict[str, Any]] = Field(default_factory=list)

    @field_validator("search")
    @classmethod
    def _search(cls, v: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        allowed = set(cls.model_fields) - {"others_share", "search"}
        model_allowed = {"model." + k for k in ModelSection.model_fields}
        for i, entry in enumerate(v):
            unknown = sorted(set(entry) - allowed - model_allowed)
            if unknown:
                raise ValueError(f"search[{i}] sets {unknown}, which are not optim settings nor model.<field>; "
                                 f"allowed: {sorted(allowed)} and model.<one of {sorted(ModelSection.model_fields)}>")
            # each value must be valid too
            cls.model_validate({k: val for k, val in entry.items() if not k.startswith("model.")})
            ModelSection.model_validate({k[6:]: val for k, val in entry.items() if k.startswith("model.")})
        return v

    @field_validator("others_share")
    @classmethod
    def _shares(cls, v: List[float]) -> List[float]:
        if not v or any(not 0.0 <= x <= 1.0 for x in v):
            raise ValueError("needs one or more values in [0, 1]")
        return v


class GateSection(Strict):
    metric: str = "ndcg@10"             # on the validation split
    # "all": every baseline of training.baselines that ran; or a list, each of which must run
    baselines: Union[Literal["all"], List[str]] = "all"
    # served: the list customers get (training/served.py) when evaluated; model: the two-tower alone
    challenger: Literal["served", "model"] = "served"
    margin: float = Field(0.0, ge=0.0)  # relative: 0.01 = the challenger must be 1% better


class GpuSection(Strict):
    """Training on GPUs through TorchDistributor: jobs/spark.py turns this into Spark's GPU resource
    settings, and training/fit.py gives each training process one GPU of those (docs/TRAINING.md,
    "Distributed training")."""
    # auto: when the discovery script finds GPUs on the driver, where the ranks run in local mode (ranks
    # on a cluster's executors: off, the driver cannot see their GPUs; say true); true: always (ranks on
    # the driver whose script finds none fail at start); false: never, even with GPUs visible
    enabled: Union[Literal["auto"], bool] = "auto"
    # GPUs per training process (spark.task.resource.gpu.amount); the trainer drives one (cuda:LOCAL_RANK)
    per_process: int = Field(1, gt=0)
    per_executor: int = Field(1, gt=0)  # cluster: GPUs per executor (spark.executor.resource.gpu.amount)
    # prints {"name": "gpu", "addresses": [...]} (Spark's discovery script contract); relative paths
    # are the project's; on a cluster the path must exist on every executor's node
    discovery_script: str = "conf/gpu_discovery.sh"
    # NCCL_* variables for the training processes, e.g. {NCCL_DEBUG: INFO} to debug a hang (unset,
    # NCCL_DEBUG is off) or NCCL_SOCKET_IFNAME on a cluster; an environment variable of the same name wins
    nccl_env: Dict[str, str] = Field(default_factory=dict)

    @field_validator("per_process")
    @classmethod
    def _one_gpu_per_process(cls, v: int) -> int:
        if v != 1:
            raise ValueError(f"is {v}; the trainer drives one GPU per process (cuda:LOCAL_RANK), so a second "
                             "GPU per process would sit idle: keep 1 and let training.processes count the GPUs")
        return v

    @field_validator("nccl_env")
    @classmethod
    def _nccl_only(cls, v: Dict[str, str]) -> Dict[str, str]:
        other = sorted(k for k in v if not k.startswith("NCCL_"))
        if other:
            raise ValueError(f"sets {other}: only NCCL_* variables belong here")
        return v


class TrainingConfig(Strict):
    model: ModelSection = Field(default_factory=ModelSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    # TorchDistributor processes. auto: one per GPU the session was given (training.gpu), else 1;
    # a number: that many (capped at the driver's GPUs in local mode)
    processes: Union[Literal["auto"], PositiveInt] = "auto"
    gpu: GpuSection = Field(default_factory=GpuSection)
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
    def _gpu_wanted(self) -> "TrainingConfig":
        if self.gpu.enabled is True and not self.optim.use_gpu:
            raise ValueError("gpu.enabled is true but optim.use_gpu is false: the GPUs would be reserved and "
                             "left idle; set one of them to what you mean")
        return self

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
