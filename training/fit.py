"""Fitting the two-tower on Spark's data: the examples built in Spark, handed to the trainer through a petastorm
converter, and trained in this process or with TorchDistributor (one process per GPU when GPUs are present, gloo
on CPU). :mod:`training.experiment` calls :func:`fit_two_tower` for every phase and search candidate."""
from __future__ import annotations

import logging
import os
import time
from typing import Optional

import numpy as np
import torch
from pyspark.sql import DataFrame, SparkSession

from training.data import Catalog, examples_frame, log_sampling_prob
from training.interactions import Interactions
from training.loader import PetastormSource
from training.model import ModelConfig
from training.trainer import EvalSet, TrainParams, TrainSpec, load_model, train

log = logging.getLogger(__name__)


def launch(spark: SparkSession, spec: TrainSpec, processes: int, launcher: str, local_mode: bool = True) -> dict:
    """Run :func:`training.trainer.train` in-process or with TorchDistributor (GPUs when present)."""
    use_gpu = spec.params.use_gpu and torch.cuda.is_available()
    if launcher == "inprocess":
        return train(spec)
    from pyspark.ml.torch.distributor import TorchDistributor
    if use_gpu:
        processes = min(processes, torch.cuda.device_count()) if local_mode else processes
    log.info("TorchDistributor: %d process(es), %s, local_mode=%s", processes, "GPU (nccl)" if use_gpu
             else "CPU (gloo)", local_mode)
    return TorchDistributor(num_processes=processes, local_mode=local_mode, use_gpu=use_gpu).run(train, spec)


class _Petastorm:
    """A petastorm converter for one DataFrame, deleted afterwards."""

    def __init__(self, spark: SparkSession, df: DataFrame, cache_dir: str):
        from petastorm.spark import SparkDatasetConverter, make_spark_converter
        os.makedirs(cache_dir, exist_ok=True)
        spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, "file://" + os.path.abspath(cache_dir))
        self.converter = make_spark_converter(df)

    def __enter__(self):
        return self.converter

    def __exit__(self, *exc):
        try:
            self.converter.delete()
        except OSError as e:    # the cache is only a cache: never fail a finished run over it
            log.warning("could not delete the petastorm cache %s: %s", self.converter.cache_dir_url, e)


def fit_two_tower(spark: SparkSession, fit_df: DataFrame, fit: Interactions, catalog: Catalog,
                  model_cfg: ModelConfig, params: TrainParams, work_dir: str, valid: Optional[EvalSet],
                  processes: int, launcher: str, local_mode: bool, tag: str) -> dict:
    """Build the examples (Spark), hand them to the trainer through petastorm, train, return the result
    with the loaded model under ``"model"``."""
    counts = np.bincount(fit.item, minlength=fit.n_items).astype(np.float64)
    meta = catalog.item_meta(fit.n_items, counts, model_cfg)
    examples = examples_frame(fit_df, fit.n_users, fit.n_items, model_cfg.history_len, params.others_share,
                              params.seed, params.repeat_weight)
    with _Petastorm(spark, examples, os.path.join(work_dir, "petastorm")) as conv:
        log.info("[%s] %d training examples via petastorm (%s)", tag, len(conv), conv.cache_dir_url)
        spec = TrainSpec(model=model_cfg, meta=meta, params=params, log_q=log_sampling_prob(counts),
                         source=PetastormSource(conv), valid=valid,
                         checkpoint_dir=os.path.join(work_dir, "checkpoints", tag))
        t0 = time.time()
        result = launch(spark, spec, processes, launcher, local_mode)
        result["fit_s"] = time.time() - t0
        result["examples"] = len(conv)
    result["model"] = load_model(model_cfg, meta, result["state_dict"])
    return result
