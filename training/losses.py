"""Training losses for the two-tower model.

All losses take L2-normalised user vectors ``u`` [B, d] and the positive items'
vectors ``v`` [B, d] (row b of ``v`` is user b's positive), plus the batch's item
indices, and return a scalar (weighted mean over rows).

* :func:`sampled_softmax` (default): in-batch sampled softmax. Every other row's
  positive is a negative for this row. Items are sampled into a batch in
  proportion to their frequency q_j in the training examples, so popular items
  are over-represented as negatives; the logQ correction (Yi et al., RecSys
  2019) subtracts ``log q_j`` from each logit so that the loss estimates a full
  softmax: a popular item's logit is corrected *down*. Logits are divided by a
  temperature. Rows whose item equals this row's positive (accidental hits)
  are masked out. Optional extra negatives (e.g. uniformly sampled items) are
  appended as further columns; uniform negatives have equal q, so they get no
  correction of their own beyond ``log q_uniform``.
* :func:`bpr`: Bayesian personalised ranking against the in-batch negatives.
* :func:`pointwise_mse`: the reference design's loss (a dot product regressed to
  1 for positives and 0 for sampled negatives), kept as a baseline.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

LOSSES = ("softmax", "bpr", "mse")


def full_softmax(u: torch.Tensor, all_v: torch.Tensor, items: torch.Tensor, temperature: float = 0.05,
                 weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Softmax over the whole catalog: row b's logits are ``u_b . v_j / temperature`` for every item j,
    its target the positive's index. No sampling, so no logQ correction and no accidental hits."""
    logits = u @ all_v.T / temperature
    return _weighted_mean(F.cross_entropy(logits, items, reduction="none"), weight)


def logq_correct(logits: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Subtract each column item's log sampling probability: ``logits - log_q``.

    ``log_q`` [C] holds log q_j for the candidate columns. A popular item (large
    q_j, log q_j closer to 0) is corrected down relative to a rare one."""
    return logits - log_q.unsqueeze(0)


def _weighted_mean(per_row: torch.Tensor, weight: Optional[torch.Tensor]) -> torch.Tensor:
    if weight is None:
        return per_row.mean()
    return (per_row * weight).sum() / weight.sum().clamp_min(1e-12)


def sampled_softmax(u: torch.Tensor, v: torch.Tensor, items: torch.Tensor, log_q: Optional[torch.Tensor],
                    temperature: float = 0.05, weight: Optional[torch.Tensor] = None,
                    extra_v: Optional[torch.Tensor] = None, extra_items: Optional[torch.Tensor] = None,
                    extra_log_q: Optional[torch.Tensor] = None) -> torch.Tensor:
    """In-batch sampled softmax with logQ correction.

    ``items`` [B]: the positives' item indices; ``log_q`` [B]: log sampling
    probability of each positive (None: no correction). ``extra_v`` [M, d] /
    ``extra_items`` [M] / ``extra_log_q`` [M]: more negatives shared by all rows."""
    logits = u @ v.T / temperature                                     # [B, B]
    if log_q is not None:
        logits = logq_correct(logits, log_q)
    # accidental hits: another row with the same positive item is not a negative
    same = items.unsqueeze(0) == items.unsqueeze(1)
    eye = torch.eye(len(items), dtype=torch.bool, device=items.device)
    logits = logits.masked_fill(same & ~eye, float("-inf"))
    if extra_v is not None:
        ext = u @ extra_v.T / temperature                              # [B, M]
        if extra_log_q is not None:
            ext = logq_correct(ext, extra_log_q)
        ext = ext.masked_fill(extra_items.unsqueeze(0) == items.unsqueeze(1), float("-inf"))
        logits = torch.cat([logits, ext], dim=1)
    target = torch.arange(len(items), device=u.device)
    return _weighted_mean(F.cross_entropy(logits, target, reduction="none"), weight)


def bpr(u: torch.Tensor, v: torch.Tensor, items: torch.Tensor, weight: Optional[torch.Tensor] = None,
        temperature: float = 0.05) -> torch.Tensor:
    """BPR: -log sigmoid(s_pos - s_neg), averaged over the in-batch negatives of each row."""
    s = u @ v.T / temperature
    pos = s.diagonal().unsqueeze(1)
    valid = (items.unsqueeze(0) != items.unsqueeze(1)).float()          # excludes the diagonal too
    per_pair = F.softplus(-(pos - s)) * valid
    per_row = per_pair.sum(1) / valid.sum(1).clamp_min(1.0)
    return _weighted_mean(per_row, weight)


def pointwise_mse(u: torch.Tensor, v: torch.Tensor, neg_v: torch.Tensor, weight: Optional[torch.Tensor] = None,
                  target: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The reference design's pointwise loss: (u.v - 1)^2 for the positive (or ``target``, e.g.
    the graded strength) and (u.v_neg - 0)^2 for one sampled negative per row."""
    pos = (u * v).sum(1)
    neg = (u * neg_v).sum(1)
    t = torch.ones_like(pos) if target is None else target
    return _weighted_mean((pos - t) ** 2 + neg ** 2, weight)
