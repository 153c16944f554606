"""Known-answer tests of the training losses (training.losses) on tiny hand-made tensors.

Every expected value is computed here by hand (torch.logsumexp / softplus on the explicit logits), not by
calling the function under test a second way."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training import losses
from training.losses import bpr, logq_correct, pointwise_mse, sampled_softmax


def _unit(rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float64), dim=1)


def _ce_row(logits_row: torch.Tensor, target: int) -> float:
    """-log softmax(logits_row)[target], ignoring -inf columns."""
    return float(torch.logsumexp(logits_row, dim=0) - logits_row[target])


# ------------------------------------------------------------------ logQ correction

def test_logq_correct_popular_item_is_corrected_down_by_log_ratio():
    logits = torch.tensor([[2.0, 2.0]], dtype=torch.float64)          # item A, item B: equal raw logit
    log_q = torch.log(torch.tensor([0.5, 0.01], dtype=torch.float64))  # A popular, B rare
    out = logq_correct(logits, log_q)
    assert out.shape == (1, 2)
    a, b = float(out[0, 0]), float(out[0, 1])
    assert a < b
    assert b - a == pytest.approx(math.log(0.5 / 0.01), abs=1e-12)
    assert a == pytest.approx(2.0 - math.log(0.5), abs=1e-12)
    assert b == pytest.approx(2.0 - math.log(0.01), abs=1e-12)


def test_logq_correct_broadcasts_over_rows():
    logits = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    log_q = torch.tensor([-1.0, -2.0, -3.0], dtype=torch.float64)
    torch.testing.assert_close(logq_correct(logits, log_q), logits + torch.tensor([[1.0, 2.0, 3.0]]).double())


def test_sampled_softmax_logq_known_value_and_direction():
    # 2 rows; row 0's positive is a RARE item (q=0.01), row 1's a POPULAR one (q=0.5). Raw logits are
    # equal off the diagonal, so the correction alone moves each row's loss.
    u = _unit([[1.0, 0.0], [0.0, 1.0]])
    v = _unit([[1.0, 0.2], [0.2, 1.0]])
    items = torch.tensor([3, 8])
    log_q = torch.log(torch.tensor([0.01, 0.5], dtype=torch.float64))
    T = 0.5
    raw = u @ v.T / T
    corrected = raw - log_q.unsqueeze(0)

    no_corr = sampled_softmax(u, v, items, None, temperature=T)
    with_corr = sampled_softmax(u, v, items, log_q, temperature=T)
    exp_no = (_ce_row(raw[0], 0) + _ce_row(raw[1], 1)) / 2
    exp_with = (_ce_row(corrected[0], 0) + _ce_row(corrected[1], 1)) / 2
    assert float(no_corr) == pytest.approx(exp_no, rel=1e-9)
    assert float(with_corr) == pytest.approx(exp_with, rel=1e-9)

    # row 0 alone (weight 0 on row 1): its positive is rare and its only negative popular, so the
    # correction raises the positive's logit relative to the negative: the loss goes DOWN ...
    w0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    r0_no = float(sampled_softmax(u, v, items, None, temperature=T, weight=w0))
    r0_with = float(sampled_softmax(u, v, items, log_q, temperature=T, weight=w0))
    assert r0_with < r0_no
    # exactly: the negative's margin shrinks by log(0.5/0.01)
    margin = float(raw[0, 1] - raw[0, 0])
    assert r0_no == pytest.approx(math.log1p(math.exp(margin)), rel=1e-9)
    assert r0_with == pytest.approx(math.log1p(math.exp(margin - math.log(0.5 / 0.01))), rel=1e-9)
    # ... and row 1 (popular positive, rare negative) goes UP
    w1 = torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert float(sampled_softmax(u, v, items, log_q, temperature=T, weight=w1)) > \
        float(sampled_softmax(u, v, items, None, temperature=T, weight=w1))


def test_sampled_softmax_3x3_hand_computed():
    u = _unit([[1.0, 0.0, 0.5], [0.0, 1.0, 0.1], [0.3, 0.3, 1.0]])
    v = _unit([[0.9, 0.1, 0.0], [0.2, 1.0, 0.0], [0.0, 0.5, 1.0]])
    items = torch.tensor([0, 1, 2])
    log_q = torch.tensor([-0.5, -2.0, -4.0], dtype=torch.float64)
    T = 0.1
    logits = u @ v.T / T - log_q.unsqueeze(0)
    expected = sum(_ce_row(logits[b], b) for b in range(3)) / 3
    assert float(sampled_softmax(u, v, items, log_q, temperature=T)) == pytest.approx(expected, rel=1e-9)


# ------------------------------------------------------------------ accidental hits

def test_sampled_softmax_masks_accidental_hits():
    # rows 0 and 1 share the positive item 4: neither is the other's negative
    u = _unit([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    v = _unit([[0.8, 0.6], [1.0, 0.0], [0.3, 1.0]])
    items = torch.tensor([4, 4, 7])
    T = 0.2
    s = u @ v.T / T
    row0 = _ce_row(torch.stack([s[0, 0], s[0, 2]]), 0)          # column 1 (item 4 again) excluded
    row1 = _ce_row(torch.stack([s[1, 1], s[1, 2]]), 0)          # column 0 (item 4 again) excluded
    row2 = _ce_row(s[2], 2)                                     # item 7: both other columns are negatives
    expected = (row0 + row1 + row2) / 3
    got = sampled_softmax(u, v, items, None, temperature=T)
    assert float(got) == pytest.approx(expected, rel=1e-9)
    # not the unmasked value
    unmasked = sum(_ce_row(s[b], b) for b in range(3)) / 3
    assert float(got) != pytest.approx(unmasked, rel=1e-3)


def test_sampled_softmax_all_rows_same_item_gives_zero_loss():
    u = _unit([[1.0, 0.0], [0.0, 1.0]])
    v = _unit([[0.0, 1.0], [1.0, 0.0]])       # the positives score badly, but there is no negative at all
    got = sampled_softmax(u, v, torch.tensor([5, 5]), None, temperature=0.05)
    assert float(got) == pytest.approx(0.0, abs=1e-12)
    assert torch.isfinite(got)


# ------------------------------------------------------------------ temperature, weights, extra negatives

def test_sampled_softmax_temperature_divides_logits():
    u = _unit([[1.0, 0.2], [0.1, 1.0]])
    v = _unit([[1.0, 0.0], [0.5, 1.0]])
    items = torch.tensor([0, 1])
    for T in (1.0, 0.05):
        s = u @ v.T / T
        expected = (_ce_row(s[0], 0) + _ce_row(s[1], 1)) / 2
        assert float(sampled_softmax(u, v, items, None, temperature=T)) == pytest.approx(expected, rel=1e-9)
    # a lower temperature sharpens: these positives beat the negatives, so the loss falls
    assert float(sampled_softmax(u, v, items, None, temperature=0.05)) < \
        float(sampled_softmax(u, v, items, None, temperature=1.0))


def test_sampled_softmax_weighted_mean():
    u = _unit([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    v = _unit([[1.0, 0.3], [0.2, 1.0], [0.0, 1.0]])
    items = torch.tensor([0, 1, 2])
    w = torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64)
    s = u @ v.T / 0.5
    per_row = [_ce_row(s[b], b) for b in range(3)]
    expected = (1.0 * per_row[0] + 3.0 * per_row[1] + 0.5 * per_row[2]) / 4.5
    got = sampled_softmax(u, v, items, None, temperature=0.5, weight=w)
    assert float(got) == pytest.approx(expected, rel=1e-9)
    # uniform weights = plain mean
    assert float(sampled_softmax(u, v, items, None, temperature=0.5, weight=torch.ones(3, dtype=torch.float64))) \
        == pytest.approx(sum(per_row) / 3, rel=1e-9)


def test_sampled_softmax_extra_negatives_appended_and_masked():
    u = _unit([[1.0, 0.0], [0.0, 1.0]])
    v = _unit([[1.0, 0.1], [0.3, 1.0]])
    items = torch.tensor([2, 6])
    extra_v = _unit([[0.7, 0.7], [1.0, -0.5], [0.9, 0.1]])
    extra_items = torch.tensor([9, 11, 2])      # the third extra is row 0's own positive: an accidental hit
    log_q = torch.tensor([-1.0, -3.0], dtype=torch.float64)
    extra_log_q = torch.full((3,), -math.log(20.0), dtype=torch.float64)
    T = 0.25
    inb = u @ v.T / T - log_q.unsqueeze(0)
    ext = u @ extra_v.T / T - extra_log_q.unsqueeze(0)
    row0 = _ce_row(torch.cat([inb[0], ext[0, :2]]), 0)                  # extra item 2 masked for row 0
    row1 = _ce_row(torch.cat([inb[1], ext[1]]), 1)                      # all three extras are negatives
    expected = (row0 + row1) / 2
    got = sampled_softmax(u, v, items, log_q, temperature=T, extra_v=extra_v, extra_items=extra_items,
                          extra_log_q=extra_log_q)
    assert float(got) == pytest.approx(expected, rel=1e-9)

    # without extra_log_q the extra columns are not corrected
    ext_raw = u @ extra_v.T / T
    expected_raw = (_ce_row(torch.cat([inb[0], ext_raw[0, :2]]), 0) + _ce_row(torch.cat([inb[1], ext_raw[1]]), 1)) / 2
    got_raw = sampled_softmax(u, v, items, log_q, temperature=T, extra_v=extra_v, extra_items=extra_items)
    assert float(got_raw) == pytest.approx(expected_raw, rel=1e-9)


def test_sampled_softmax_gradient_flows_and_is_finite_with_masks():
    u = _unit([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]).requires_grad_(True)
    v = _unit([[1.0, 0.2], [0.2, 1.0], [0.7, 0.1]]).requires_grad_(True)
    loss = sampled_softmax(u, v, torch.tensor([1, 1, 3]), torch.zeros(3, dtype=torch.float64), temperature=0.05)
    loss.backward()
    assert torch.isfinite(u.grad).all() and torch.isfinite(v.grad).all()


# ------------------------------------------------------------------ BPR

def test_bpr_known_value():
    u = torch.eye(2, dtype=torch.float64)
    v = torch.eye(2, dtype=torch.float64)
    # s = I: every row's positive scores 1, its one negative 0 -> softplus(-1) = log(1 + e^-1)
    got = bpr(u, v, torch.tensor([0, 1]), temperature=1.0)
    assert float(got) == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-12)


def test_bpr_three_rows_with_duplicate_item_and_weights():
    u = _unit([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    v = _unit([[0.9, 0.3], [0.1, 1.0], [1.0, 1.0]])
    items = torch.tensor([5, 5, 6])          # rows 0 and 1 share an item: not each other's negative
    T = 0.5
    s = u @ v.T / T
    sp = lambda x: math.log1p(math.exp(float(x)))  # noqa: E731  softplus
    row0 = sp(-(s[0, 0] - s[0, 2]))                                   # only column 2 is a negative
    row1 = sp(-(s[1, 1] - s[1, 2]))
    row2 = (sp(-(s[2, 2] - s[2, 0])) + sp(-(s[2, 2] - s[2, 1]))) / 2
    assert float(bpr(u, v, items, temperature=T)) == pytest.approx((row0 + row1 + row2) / 3, rel=1e-9)
    w = torch.tensor([2.0, 0.0, 1.0], dtype=torch.float64)
    assert float(bpr(u, v, items, weight=w, temperature=T)) == pytest.approx((2 * row0 + row2) / 3, rel=1e-9)


# ------------------------------------------------------------------ pointwise MSE

def test_pointwise_mse_known_value():
    u = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    v = torch.tensor([[0.8, 0.6], [0.6, 0.8]], dtype=torch.float64)       # pos dots 0.8, 1.0
    neg = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)     # neg dots 0.0, 0.6
    row0 = (0.8 - 1.0) ** 2 + 0.0 ** 2
    row1 = (1.0 - 1.0) ** 2 + 0.6 ** 2
    assert float(pointwise_mse(u, v, neg)) == pytest.approx((row0 + row1) / 2, rel=1e-12)
    w = torch.tensor([3.0, 1.0], dtype=torch.float64)
    assert float(pointwise_mse(u, v, neg, weight=w)) == pytest.approx((3 * row0 + row1) / 4, rel=1e-12)
    t = torch.tensor([0.5, 2.0], dtype=torch.float64)
    expected_t = ((0.8 - 0.5) ** 2 + 0.0 + (1.0 - 2.0) ** 2 + 0.36) / 2
    assert float(pointwise_mse(u, v, neg, target=t)) == pytest.approx(expected_t, rel=1e-12)


def test_loss_names():
    assert losses.LOSSES == ("softmax", "bpr", "mse")


def test_full_softmax_known_value_over_the_whole_catalog():
    # two users, three items: row b's loss is -log softmax(u_b . v / T)[target_b]
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    all_v = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    items = torch.tensor([0, 2])
    T = 0.5
    logits = torch.tensor([[2.0, 0.0, 1.2], [0.0, 2.0, 1.6]])
    expected = torch.stack([-torch.log_softmax(logits[0], 0)[0], -torch.log_softmax(logits[1], 0)[2]])
    got = losses.full_softmax(u, all_v, items, T)
    torch.testing.assert_close(got, expected.mean())
    w = torch.tensor([3.0, 1.0])
    torch.testing.assert_close(losses.full_softmax(u, all_v, items, T, w), (3 * expected[0] + expected[1]) / 4)
