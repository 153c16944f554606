"""How every customer's list is built: the ``scoring:`` section (``serving:`` is in :mod:`config.serving`)."""
from __future__ import annotations

from typing import Dict, Literal, Optional

from pydantic import Field, field_validator, model_validator

from config.base import Strict
from config.serving import ServingConfig  # noqa: F401  (config.schema imports it from here)


class DiversitySection(Strict):
    mmr_strength: float = Field(0.2, ge=0.0, le=1.0)   # 0 = relevance order only
    max_per_category: Optional[int] = Field(None, gt=0)  # also settable in the rules file


class ListsSection(Strict):
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


class ExploreSection(Strict):
    new_item_days: int = Field(14, ge=0)   # an item first seen this recently ...
    max_events: int = Field(5, ge=0)       # ... with at most this many events is "new"


class ScoringConfig(Strict):
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
