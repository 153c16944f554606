"""Fitting the two-tower on Spark's data: the examples built in Spark, handed to the trainer through a petastorm
converter, and trained in this process or with TorchDistributor (one process per GPU when the session was given
GPUs, gloo on CPU: :func:`placement`). :mod:`training.experiment` calls :func:`fit_two_tower` for every phase
and search candidate."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from typing import Optional, Union

import numpy as np
import torch
from pyspark.ml.torch.distributor import TorchDistributor
from pyspark.sql import DataFrame, SparkSession

from core.errors import ConfigError
from training.data import Catalog, examples_frame, log_sampling_prob
from training.interactions import Interactions
from training.loader import PetastormSource
from training.model import ModelConfig
from training.trainer import EvalSet, TrainParams, TrainSpec, load_model, train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """Where a fit runs: how many processes, on GPUs (one each, NCCL) or on the CPU (gloo)."""
    processes: int
    use_gpu: bool

    @property
    def device(self) -> str:
        return "cuda" if self.use_gpu else "cpu"


def _conf(spark: SparkSession, key: str) -> Optional[str]:
    return spark.sparkContext.getConf().get(key, None)


def placement(spark: SparkSession, processes: Union[int, str], want_gpu: bool, local_mode: bool = True) -> Placement:
    """Resolve ``training.processes`` (a number or ``"auto"``) and GPU use against the session.

    GPUs are used when the trainer may use them (``optim.use_gpu``) and the session was given GPU
    resources (jobs/spark.py adds them from ``training.gpu``; TorchDistributor with ``use_gpu`` needs
    them): ``spark.driver.resource.gpu.amount`` in local mode, ``spark.task.resource.gpu.amount`` on a
    cluster. Then ``auto`` is one process per GPU: the driver's GPUs that torch also sees (local mode),
    or executors x GPUs per executor / GPUs per task (a cluster; needs ``spark.executor.instances``).
    A number of processes above the driver's GPUs is capped, as TorchDistributor caps it. On the CPU
    ``auto`` is 1 process.
    """
    if local_mode:
        session_gpus = int(_conf(spark, "spark.driver.resource.gpu.amount") or 0)
    else:
        session_gpus = int(float(_conf(spark, "spark.task.resource.gpu.amount") or 0))
    use_gpu = bool(want_gpu and session_gpus > 0)
    if not use_gpu:
        return Placement(1 if processes == "auto" else int(processes), False)
    if local_mode:
        visible = torch.cuda.device_count()
        if visible == 0:
            raise ConfigError(f"Spark was given {session_gpus} GPU(s) (training.gpu, its discovery script) but "
                              "torch sees none: a CPU build of torch, or CUDA_VISIBLE_DEVICES hiding them. Install "
                              "torch with CUDA, or set training.gpu.enabled: false to train on the CPU")
        gpus = min(session_gpus, visible)
        if processes == "auto":
            return Placement(gpus, True)
        if int(processes) > gpus:
            log.warning("training.processes is %s but the driver has %d GPU(s): %d process(es), one per GPU",
                        processes, gpus, gpus)
        return Placement(min(int(processes), gpus), True)
    if processes != "auto":
        return Placement(int(processes), True)
    executors = _conf(spark, "spark.executor.instances")
    if not executors:
        raise ConfigError("training.processes is auto on a cluster, but spark.executor.instances is not set, so "
                          "the driver cannot count the executors' GPUs: set training.processes to that number")
    per_executor = int(_conf(spark, "spark.executor.resource.gpu.amount") or 1)
    return Placement(max(1, int(executors) * per_executor // session_gpus), True)


def launch(spark: SparkSession, spec: TrainSpec, processes: Union[int, str], launcher: str,
           local_mode: bool = True) -> dict:
    """Run :func:`training.trainer.train` in-process or with TorchDistributor, placed by :func:`placement`;
    the result records the device and the number of processes (``device``, ``processes``)."""
    inprocess = launcher == "inprocess"       # one process, on the driver
    where = placement(spark, 1 if inprocess else processes, spec.params.use_gpu, local_mode or inprocess)
    # the ranks decide their device from the spec: the same decision as the distributor's, so a rank never
    # takes a GPU the session was not given (gpu.enabled false on a machine with GPUs)
    spec = replace(spec, params=replace(spec.params, use_gpu=where.use_gpu))
    if inprocess:
        result = train(spec)
    else:
        log.info("TorchDistributor: %d process(es), %s, local_mode=%s", where.processes,
                 "GPU (nccl)" if where.use_gpu else "CPU (gloo)", local_mode)
        result = TorchDistributor(num_processes=where.processes, local_mode=local_mode,
                                  use_gpu=where.use_gpu).run(train, spec)
    result["processes"] = where.processes
    result.setdefault("device", where.device)
    return result


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
                  processes: Union[int, str], launcher: str, local_mode: bool, tag: str) -> dict:
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
