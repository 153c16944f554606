"""The training loop: one function that runs alone, under torchrun, or under
TorchDistributor (each process reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``
from the environment those launchers set).

* DDP with NCCL on GPU, gloo on CPU; a GPU is used when one is visible and
  ``params.use_gpu`` allows it.
* Each rank trains on its own shard of the examples (see ``training.loader``);
  all ranks take the same number of steps per epoch (the smallest shard's).
* Seeds fixed: the same data and seed give the same model on the same
  hardware and process count.
* After every epoch: validation NDCG@K (full ranking) computed identically on
  every rank, a checkpoint (rank 0), early stopping after ``patience`` epochs
  without improvement; the best epoch's weights are returned (with
  ``ema_decay``, those of the weights' moving average: see ``WeightAverage``).
* Every rank returns the same result (TorchDistributor may hand back any
  rank's value).
"""
from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import scipy.sparse as sp
import torch

from training import losses
from training.featurize import ItemMeta
from training.loader import ExampleSource
from training.metrics import evaluate, format_metrics
from training.model import ModelConfig, TwoTower

log = logging.getLogger(__name__)
NEGATIVES = ("in_batch", "all_items", "auto")
# negatives=auto: a full softmax up to this many items (the item tower then runs over the whole catalog
# every step: about 1.7x the in-batch step on UCI's 3.7k items), in-batch negatives beyond
ALL_ITEMS_MAX = 20000


@dataclass
class TrainParams:
    loss: str = "softmax"             # softmax | bpr | mse
    temperature: float = 0.05
    logq_correction: bool = True
    uniform_negatives: int = 0        # extra uniformly sampled negatives per batch (softmax)
    lr: float = 0.005
    weight_decay: float = 0.0
    batch_size: int = 1024
    max_epochs: int = 20
    patience: int = 3
    seed: int = 42
    eval_k: int = 10
    use_gpu: bool = True              # use a GPU when one is visible
    cpu_threads: int = 1              # torch threads per process on CPU (0: cores / processes); small
                                      # models run fastest single-threaded, and DDP ranks share the cores
    fixed_epochs: Optional[int] = None  # exactly this many epochs, no early stopping (the last is kept;
                                        # validation, when given, is only recorded)
    others_share: float = 0.0         # share of examples whose history is the user's other items
                                      # (training.featurize.sequence_examples); chosen on validation
    repeat_weight: float = 1.0        # weight of examples whose target is already in their history
    negatives: str = "in_batch"       # softmax negatives: in_batch (the batch's other positives, logQ-corrected,
                                      # + uniform_negatives) | all_items (a full softmax over the catalog: one
                                      # item-tower pass over every item per step; small catalogs) | auto
                                      # (all_items up to ALL_ITEMS_MAX items)
    ema_decay: float = 0.0            # > 0: validate, early-stop on and keep an exponential moving
                                      # average of the weights (decay per step) instead of the raw weights

    def __post_init__(self):
        if self.loss not in losses.LOSSES:
            raise ValueError(f"training loss must be one of {losses.LOSSES}, got {self.loss!r}")
        if self.negatives not in NEGATIVES:
            raise ValueError(f"training negatives must be one of {NEGATIVES}, got {self.negatives!r}")
        if self.negatives == "all_items" and self.loss != "softmax":
            raise ValueError(f"negatives=all_items needs loss=softmax, got loss={self.loss!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0 turns the weight average off), got {self.ema_decay}")

    def full_softmax(self, n_items: int) -> bool:
        """Whether training takes every item as a negative (a softmax loss with all_items, or auto on a
        catalog of at most ``ALL_ITEMS_MAX`` items)."""
        return self.loss == "softmax" and (self.negatives == "all_items"
                                           or (self.negatives == "auto" and n_items <= ALL_ITEMS_MAX))


@dataclass
class EvalSet:
    """Users to evaluate and everything needed to score them."""
    users: np.ndarray                 # int64 user indices
    history: np.ndarray               # int64 [n_users, H]: every user's history at the cut
    feats: np.ndarray                 # float32 [n_users, F]
    truth: sp.csr_matrix              # n_users x n_items relevant pairs
    exclude: Optional[sp.csr_matrix] = None
    segments: Optional[Dict[str, np.ndarray]] = None


@dataclass
class TrainSpec:
    model: ModelConfig
    meta: ItemMeta
    params: TrainParams
    log_q: np.ndarray                 # float32 [n_items]: log of each item's share of the examples
    source: ExampleSource
    valid: Optional[EvalSet] = None
    checkpoint_dir: Optional[str] = None
    info: Dict[str, object] = field(default_factory=dict)


def _dist():
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


def score_fn(model: TwoTower, ev: EvalSet, device, item_vecs: torch.Tensor):
    def fn(users: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            # a user without any event in the fitted data never trained their id row: the OOV row stands in
            cold = ev.feats[users][:, -1] == 0
            u = torch.as_tensor(np.where(cold, model.cfg.n_users, users), device=device)
            uv = model.user_vectors(u, torch.as_tensor(ev.history[users], device=device),
                                    torch.as_tensor(ev.feats[users], device=device), item_vecs=item_vecs)
            return (uv @ item_vecs.T).float().cpu().numpy()
    return fn


def evaluate_model(model: TwoTower, ev: EvalSet, ks=(10, 20), device="cpu", return_topk=False) -> dict:
    model.eval()
    with torch.no_grad():
        item_vecs = model.all_item_vectors()
    return evaluate(score_fn(model, ev, device, item_vecs), ev.users, ev.truth, ks=ks, exclude=ev.exclude,
                    segments=ev.segments, return_topk=return_topk)


def _adamw(model: TwoTower, p: TrainParams) -> torch.optim.Optimizer:
    """AdamW, fused (one kernel over all parameters) where this torch supports it: on CPU a step took
    89 ms instead of 116 (the embedding tables get dense updates every step)."""
    try:
        return torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError) as e:
        log.info("fused AdamW unavailable (%s); using the plain one", e)
        return torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)


def _fits_on_gpu(tensors: Dict[str, torch.Tensor], device, share: float = 0.25) -> bool:
    """Whether the shard takes at most ``share`` of the GPU's free memory (the rest: model, activations)."""
    free, _ = torch.cuda.mem_get_info(device)
    return sum(v.numel() * v.element_size() for v in tensors.values()) <= share * free


def _batch_loss(ddp, model: TwoTower, spec: TrainSpec, b: Dict[str, torch.Tensor], log_q: torch.Tensor,
                gen: torch.Generator, device) -> torch.Tensor:
    p = spec.params
    n_items = spec.model.n_items
    extra = None
    if p.full_softmax(n_items):
        u, all_v = ddp(b["user"], b["hist"], b["feats"], None, None, all_items=True)
        return losses.full_softmax(u, all_v, b["item"], p.temperature, b["weight"])
    if p.loss == "mse":
        extra = torch.randint(0, n_items, (len(b["item"]),), generator=gen).to(device)
    elif p.uniform_negatives:
        extra = torch.randint(0, n_items, (p.uniform_negatives,), generator=gen).to(device)
    u, v, ev = ddp(b["user"], b["hist"], b["feats"], b["item"], extra)
    if p.loss == "softmax":
        lq = log_q[b["item"]] if p.logq_correction else None
        elq = (torch.full((len(extra),), -math.log(n_items), device=device)
               if extra is not None and p.logq_correction else None)
        return losses.sampled_softmax(u, v, b["item"], lq, p.temperature, b["weight"], ev, extra, elq)
    if p.loss == "bpr":
        return losses.bpr(u, v, b["item"], b["weight"], p.temperature)
    return losses.pointwise_mse(u, v, ev, b["weight"])


class WeightAverage:
    """An exponential moving average of a model's weights, updated after every optimiser step.

    Under a constant learning rate the weights keep jumping around the optimum, and validation
    metrics jump with them from epoch to epoch; the average sits nearer the middle, so its curve is
    smoother and early stopping does not latch onto a lucky epoch. The decay warms up as
    ``min(decay, (1 + t) / (10 + t))`` at step ``t``, so the random initial weights fade fast. Every
    rank holds the same average: DDP keeps the weights themselves identical.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)
        self.decay = decay
        self.steps = 0
        self._src = list(model.parameters())
        self._dst = list(self.model.parameters())

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        torch._foreach_lerp_(self._dst, self._src, 1.0 - d)


class _Towers(torch.nn.Module):
    """DDP wrapper target: one forward computing every vector a loss needs."""

    def __init__(self, model: TwoTower):
        super().__init__()
        self.model = model

    def forward(self, users, hist, feats, items, extra_items=None, all_items=False):
        if all_items:
            return self.model.forward_all(users, hist, feats)
        return self.model(users, hist, feats, items, extra_items)


def train(spec: TrainSpec) -> dict:
    """Train (or refit) the two-tower model; returns the best weights and the history."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    rank, world, local = _dist()
    if not logging.getLogger().handlers:   # a TorchDistributor / torchrun child: show progress per epoch
        logging.basicConfig(level=logging.INFO, format="%(asctime)s [rank " + str(rank) + "] %(message)s",
                            datefmt="%H:%M:%S")
        logging.getLogger("petastorm").setLevel(logging.WARNING)
    p = spec.params
    use_cuda = p.use_gpu and torch.cuda.is_available()
    device = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    # a launcher's rank (torchrun, TorchDistributor) on a GPU joins an NCCL group even alone, so one
    # GPU runs the same DDP path as eight; a lone CPU rank skips DDP (its gradient copies cost time)
    distributed = world > 1 or (use_cuda and "MASTER_ADDR" in os.environ)
    if distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    torch.manual_seed(p.seed)
    np.random.seed(p.seed)
    if not use_cuda:
        torch.set_num_threads(p.cpu_threads or max(1, (os.cpu_count() or 1) // world))

    model = TwoTower(spec.model, spec.meta).to(device)
    towers = _Towers(model)
    ddp = DDP(towers, device_ids=[local] if use_cuda else None) if distributed else towers
    opt = _adamw(model, p)
    ema = WeightAverage(model, p.ema_decay) if p.ema_decay else None
    kept = ema.model if ema else model     # the weights validated, early-stopped on and returned
    log_q = torch.as_tensor(spec.log_q, dtype=torch.float32, device=device)

    shard = spec.source.load_shard(rank, world)
    tensors = {k: torch.as_tensor(v) for k, v in shard.items()}
    if use_cuda and _fits_on_gpu(tensors, device):   # index batches on the GPU: no copy per step
        tensors = {k: v.to(device) for k, v in tensors.items()}
    n = len(tensors["user"])
    steps = max(1, n // p.batch_size)
    if distributed:
        t = torch.tensor([steps], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        steps = int(t.item())
    gen = torch.Generator().manual_seed(p.seed * 1009 + rank)

    history: List[dict] = []
    best = {"metric": -1.0, "epoch": 0, "state": None}
    epochs = p.fixed_epochs or p.max_epochs
    metric_key = f"ndcg@{p.eval_k}"
    bad_epochs = 0
    t_train = time.time()
    for epoch in range(1, epochs + 1):
        model.train()
        t0 = time.time()
        perm = torch.randperm(n, generator=gen).to(tensors["user"].device)
        total = torch.zeros((), dtype=torch.float64, device=device)   # summed on the device: no sync per step
        for s in range(steps):
            idx = perm[s * p.batch_size:(s + 1) * p.batch_size]
            b = {k: v[idx].to(device, non_blocking=True) for k, v in tensors.items()}
            loss = _batch_loss(ddp, model, spec, b, log_q, gen, device)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema:
                ema.update()
            total += loss.detach()
        train_loss = float(total) / steps
        seconds = time.time() - t0
        row = {"epoch": epoch, "train_loss": train_loss, "epoch_s": seconds,
               "examples_per_s": steps * p.batch_size * world / max(seconds, 1e-9)}
        improved = True                  # fixed epochs (or no validation): the last epoch is the one kept
        if spec.valid is not None:
            m = evaluate_model(kept, spec.valid, ks=(p.eval_k,), device=device)
            row[f"valid_{metric_key}"] = m[metric_key]
            row[f"valid_recall@{p.eval_k}"] = m[f"recall@{p.eval_k}"]
            # a NaN metric (no countable validation user) never improves, but the first epoch is kept
            if p.fixed_epochs is None:
                improved = best["state"] is None or m[metric_key] > best["metric"] + 1e-6
        if distributed:  # every rank must take the same decision
            flag = torch.tensor([1 if improved else 0], device=device)
            dist.broadcast(flag, src=0)
            improved = bool(flag.item())
        if improved:
            best = {"metric": row.get(f"valid_{metric_key}", float("nan")), "epoch": epoch,
                    "state": {k: v.detach().cpu().clone() for k, v in kept.state_dict().items()}}
            bad_epochs = 0
        else:
            bad_epochs += 1
        history.append(row)
        if rank == 0:
            log.info("epoch %d/%d loss %.4f %s %.0f examples/s%s", epoch, epochs, row["train_loss"],
                     format_metrics({k: v for k, v in row.items() if k.startswith("valid_")}),
                     row["examples_per_s"], " *" if improved else "")
            if spec.checkpoint_dir:
                os.makedirs(spec.checkpoint_dir, exist_ok=True)
                ckpt = {"epoch": epoch, "state_dict": model.state_dict(), "optimizer": opt.state_dict(),
                        "history": history}
                if ema:
                    ckpt.update(ema_state_dict=ema.model.state_dict(), ema_steps=ema.steps)
                torch.save(ckpt, os.path.join(spec.checkpoint_dir, f"epoch_{epoch:03d}.pt"))
        if bad_epochs >= p.patience:
            break
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return {"state_dict": best["state"], "best_epoch": best["epoch"], "best_metric": best["metric"],
            "history": history, "world_size": world, "device": str(device.type),
            "train_seconds": time.time() - t_train, "examples_per_rank": n, "steps_per_epoch": steps}


def load_model(spec_model: ModelConfig, meta: ItemMeta, state_dict) -> TwoTower:
    model = TwoTower(spec_model, meta)
    model.load_state_dict(state_dict)
    model.eval()
    return model
