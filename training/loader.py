"""Where training examples come from: one small interface, two implementations.

The trainer asks an :class:`ExampleSource` for its rank's shard once
(``load_shard(rank, world)``) and then shuffles it in memory per epoch with a
seeded generator, so an epoch's order depends only on the seed, never on
reader threads. Each rank holds only its own shard.

* :class:`PetastormSource` (the pipeline's path): a petastorm Spark converter
  (``make_spark_converter``) over the examples DataFrame; each rank reads its
  shard through ``make_torch_dataloader(cur_shard=rank, shard_count=world)``.
  The converter materialises the DataFrame once as Parquet under
  ``petastorm.spark.converter.parentCacheDirUrl`` and is picklable, so it
  travels to TorchDistributor's processes.
* :class:`ArraySource`: numpy arrays in memory (unit tests, in-memory experiments),
  sharded by row stride.

Replacing petastorm (a plain ``pyarrow.dataset`` reader over the same Parquet
files is the obvious candidate) means adding one class here.
"""
from __future__ import annotations

import logging
import warnings
from typing import Dict, Protocol

import numpy as np

log = logging.getLogger(__name__)
# petastorm 0.12 drives pyarrow 14 through APIs deprecated since pyarrow 2-11 (see ../shared/STACK.md for
# why these pins); the warnings say nothing a user can act on
warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm(\..*)?$")

COLUMNS = ("user", "item", "weight", "hist", "feats")


class ExampleSource(Protocol):
    def load_shard(self, rank: int, world: int) -> Dict[str, np.ndarray]: ...

    def describe(self) -> Dict[str, object]: ...


class ArraySource:
    def __init__(self, arrays: Dict[str, np.ndarray]):
        self.arrays = {k: np.asarray(arrays[k]) for k in COLUMNS}

    def load_shard(self, rank: int, world: int) -> Dict[str, np.ndarray]:
        return {k: v[rank::world] for k, v in self.arrays.items()}

    def describe(self) -> Dict[str, object]:
        return {"loader": "arrays", "rows": int(len(self.arrays["user"]))}


class PetastormSource:
    """Reads a petastorm ``SparkDatasetConverter`` shard into arrays."""

    def __init__(self, converter, batch_size: int = 8192):
        self.converter = converter
        self.batch_size = batch_size

    def load_shard(self, rank: int, world: int) -> Dict[str, np.ndarray]:
        parts = {k: [] for k in COLUMNS}
        # one pass, no shuffling queue and one reader thread: the shard's content is what matters,
        # the trainer shuffles it with its own seeded generator
        with self.converter.make_torch_dataloader(batch_size=self.batch_size, num_epochs=1, cur_shard=rank,
                                                  shard_count=world, shuffling_queue_capacity=0,
                                                  workers_count=1, shuffle_row_groups=False) as loader:
            for batch in loader:
                for k in COLUMNS:
                    parts[k].append(batch[k].numpy())
        if not parts["user"]:
            raise RuntimeError(f"petastorm shard {rank}/{world} is empty: the examples DataFrame has fewer "
                               f"row groups than processes; use fewer processes or more data")
        out = {k: np.concatenate(v) for k, v in parts.items()}
        # rows arrive in reader order; sort by content (user, item, weight, prior events) so the shard's
        # content, not the reader's order, decides the epoch order after the seeded shuffle
        order = np.lexsort((out["feats"][:, 1], out["weight"], out["item"], out["user"]))
        log.info("petastorm shard %d/%d: %d examples", rank, world, len(order))
        return {k: v[order] for k, v in out.items()}

    def describe(self) -> Dict[str, object]:
        return {"loader": "petastorm", "rows": int(len(self.converter)),
                "cache_url": self.converter.cache_dir_url}
