"""Losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import (
    ccc,
    ccc_loss,
    class_weights_from_counts,
    joint_loss_terms,
    weighted_cross_entropy,
)


def test_class_weights_inverse_frequency() -> None:
    # f_min = 10: weights 10/100, 10/10, 10/50
    w = class_weights_from_counts([100, 10, 50])
    assert w.dtype == torch.float32
    assert torch.allclose(w, torch.tensor([0.1, 1.0, 0.2]))


def test_class_weights_absent_class_gets_zero() -> None:
    w = class_weights_from_counts([4, 0, 2])
    assert torch.allclose(w, torch.tensor([0.5, 0.0, 1.0]))


@pytest.mark.parametrize("counts, match", [([0, 0], "all zero"), ([1, -1], ">= 0"), ([[1, 2]], "1-D")])
def test_class_weights_rejects_bad_counts(counts: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        class_weights_from_counts(counts)  # type: ignore[arg-type]


def test_cross_entropy_hand_computed() -> None:
    # row 0: logits (0, 0) target 0 -> -log(1/2) = ln 2
    # row 1: logits (ln 3, 0) target 0 -> p0 = 3/4 -> -log(3/4)
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    targets = torch.tensor([0, 0])
    expected = (math.log(2.0) - math.log(0.75)) / 2
    assert weighted_cross_entropy(logits, targets).item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_weighted_mean_and_ignored_rows() -> None:
    # row 0 target 0 (w=1): ln 2; row 1 target 1 (w=3): logits (ln 3, 0) -> p1 = 1/4 -> ln 4
    # weighted mean = (1*ln2 + 3*ln4) / (1 + 3); row 2 is unlabelled (-1) and ignored.
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [5.0, -5.0]])
    targets = torch.tensor([0, 1, -1])
    w = torch.tensor([1.0, 3.0])
    expected = (math.log(2.0) + 3 * math.log(4.0)) / 4
    assert weighted_cross_entropy(logits, targets, w).item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_label_smoothing_hand_computed() -> None:
    # K=2, eps=0.2: target distribution (0.9, 0.1); logits (0, 0) -> both log-probs ln(1/2)
    logits = torch.tensor([[0.0, 0.0]])
    loss = weighted_cross_entropy(logits, torch.tensor([1]), label_smoothing=0.2)
    assert loss.item() == pytest.approx(math.log(2.0), rel=1e-6)


def test_cross_entropy_all_unlabelled_is_zero_with_grad() -> None:
    logits = torch.randn(3, 7, requires_grad=True)
    loss = weighted_cross_entropy(logits, torch.full((3,), -1))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and torch.all(logits.grad == 0)


def test_cross_entropy_rejects_out_of_range_target() -> None:
    with pytest.raises(ValueError, match=r"targets must be in 0..6 or -1.*\[7\]"):
        weighted_cross_entropy(torch.zeros(2, 7), torch.tensor([0, 7]))


def test_ccc_hand_computed() -> None:
    # x = (1, 2, 3), y = (2, 4, 6): mean x 2, mean y 4; population var x = 2/3, var y = 8/3;
    # cov = (-1*-2 + 0 + 1*2)/3 = 4/3; CCC = 2*(4/3) / (2/3 + 8/3 + (2-4)^2) = (8/3) / (22/3) = 8/22
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    y = torch.tensor([2.0, 4.0, 6.0], dtype=torch.float64)
    assert ccc(x, y).item() == pytest.approx(8 / 22, rel=1e-6)
    # identical -> 1, negated -> -1
    assert ccc(x, x).item() == pytest.approx(1.0, rel=1e-6)
    assert ccc(x - 2, -(x - 2)).item() == pytest.approx(-1.0, rel=1e-6)


def test_ccc_per_column_and_constant_prediction() -> None:
    target = torch.tensor([[1.0, 0.5], [2.0, -0.5], [3.0, 0.0]])
    pred = torch.tensor([[1.0, 0.2], [2.0, 0.2], [3.0, 0.2]])  # column 1 constant
    values = ccc(pred, target)
    assert values.shape == (2,)
    assert values[0].item() == pytest.approx(1.0, abs=1e-6)
    assert values[1].item() == 0.0  # cov = 0 -> 0, not NaN


def test_ccc_loss_hand_computed_and_mask() -> None:
    # column 0: CCC 1 (identical); column 1: 8/22 (as above) -> loss = 1 - (1 + 8/22)/2
    pred = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [9.0, 9.0]])
    target = torch.tensor([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0], [-9.0, -9.0]])
    mask = torch.tensor([True, True, True, False])
    expected = 1 - (1 + 8 / 22) / 2
    assert ccc_loss(pred, target, mask).item() == pytest.approx(expected, rel=1e-5)
    # without a mask, a NaN target row is treated as unlabelled
    target_nan = target.clone()
    target_nan[3] = float("nan")
    assert ccc_loss(pred, target_nan).item() == pytest.approx(expected, rel=1e-5)


def test_ccc_loss_fewer_than_two_rows_is_zero_with_grad() -> None:
    pred = torch.zeros(3, 2, requires_grad=True)
    target = torch.tensor([[0.1, 0.2], [float("nan"), 0.0], [float("nan"), 0.0]])
    loss = ccc_loss(pred, target)
    assert loss.item() == 0.0
    loss.backward()
    assert pred.grad is not None


def test_joint_loss_is_sum_of_parts() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 7, requires_grad=True)
    targets = torch.tensor([0, 1, 2, -1, 4, 6])
    va_pred = torch.tanh(torch.randn(6, 2, requires_grad=True))
    va_target = torch.rand(6, 2) * 2 - 1
    w = class_weights_from_counts([5, 1, 2, 3, 4, 5, 6])
    terms = joint_loss_terms(logits, targets, va_pred, va_target, w, va_weight=0.5)
    expected = weighted_cross_entropy(logits, targets, w) + 0.5 * ccc_loss(va_pred, va_target)
    assert terms["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    terms["total"].backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_joint_loss_without_va_is_cross_entropy() -> None:
    logits = torch.tensor([[0.0, 0.0]])
    assert joint_loss_terms(logits, torch.tensor([0]))["total"].item() == pytest.approx(math.log(2.0), rel=1e-6)
