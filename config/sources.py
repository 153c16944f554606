"""The ``sources:`` section: how each source's files map onto the data contract (core/contract.py)."""
from __future__ import annotations

from typing import Dict, List, Literal, Optional

from pydantic import Field, model_validator

from config.base import Strict
from core.contract import EventType


class EventTypeMapping(Strict):
    """Either every row has one event type, or a column's values map onto the contract's."""
    constant: Optional[EventType] = None
    column: Optional[str] = None
    values: Dict[str, EventType] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_of(self) -> "EventTypeMapping":
        if (self.constant is None) == (self.column is None):
            raise ValueError("set exactly one of 'constant' or 'column' (+ 'values')")
        if self.column is not None and not self.values:
            raise ValueError("'values' must map the column's values onto view/cart/purchase/rating/return")
        return self


class CancellationRule(Strict):
    column: str
    prefix: str


CATALOG_FIELDS = ("item_id", "title", "category", "price", "available")


CONTRACT_FIELDS = ("user_id", "item_id", "event_type", "value", "price", "event_time",
                   "country", "session_id", "title", "category")


class CatalogMapping(Strict):
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


class SourceConfig(Strict):
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
