"""ros2_affect.metrics against hand-computed values and independent implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from ros2_affect import metrics


def test_confusion_matrix_rows_are_true_classes() -> None:
    cm = metrics.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], num_classes=4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    assert cm.dtype == np.int64


def test_accuracy_and_macro_f1_by_hand() -> None:
    y_true = [0, 0, 1, 2, 2, 2]
    y_pred = [0, 1, 1, 2, 0, 2]
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    # class 0: P=1/2 R=1/2 F1=1/2; class 1: P=1/2 R=1 F1=2/3; class 2: P=1 R=2/3 F1=4/5
    # class 3 never occurs in either and is left out of the mean
    assert metrics.macro_f1(y_true, y_pred, num_classes=4) == pytest.approx((1 / 2 + 2 / 3 + 4 / 5) / 3)
    scores = metrics.per_class_scores(y_true, y_pred, num_classes=4)
    assert scores.support.tolist() == [2, 1, 3, 0]
    assert scores.precision[3] == 0.0 and scores.recall[3] == 0.0


def test_class_never_predicted_scores_zero_f1() -> None:
    assert metrics.macro_f1([0, 1], [0, 0]) == pytest.approx((2 / 3 + 0.0) / 2)


def test_ccc_by_formula_and_special_cases() -> None:
    x = np.array([0.1, 0.4, -0.2, 0.3])
    y = np.array([0.0, 0.5, -0.1, 0.1])
    cov = np.mean((x - x.mean()) * (y - y.mean()))
    expected = 2 * cov / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)
    assert metrics.ccc(x, y) == pytest.approx(expected)
    assert metrics.ccc(x, x) == pytest.approx(1.0)
    centred = x - x.mean()
    assert metrics.ccc(centred, -centred) == pytest.approx(-1.0)
    # a constant offset costs concordance but not correlation
    assert metrics.ccc(x, x + 1.0) < 0.2
    assert metrics.pcc(x, x + 1.0) == pytest.approx(1.0)
    # constant ground truth: no covariance, so 0 unless the prediction matches it exactly
    assert metrics.ccc([0.2, 0.3, 0.1], [0.5, 0.5, 0.5]) == pytest.approx(0.0, abs=1e-12)
    assert metrics.ccc([0.5, 0.5], [0.5, 0.5]) == 1.0
    assert math.isnan(metrics.pcc([1.0, 2.0], [3.0, 3.0]))


def test_rmse_and_mae() -> None:
    assert metrics.rmse([0.0, 0.0], [3.0, 4.0]) == pytest.approx(math.sqrt(12.5))
    assert metrics.mae([0.0, 0.0], [3.0, -4.0]) == pytest.approx(3.5)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-1, 1, allow_nan=False), st.floats(-1, 1, allow_nan=False)), min_size=3, max_size=40
    )
)
def test_pcc_matches_scipy_and_ccc_is_bounded(pairs: list) -> None:
    x = np.array([p[0] for p in pairs])
    y = np.array([p[1] for p in pairs])
    value = metrics.ccc(x, y)
    assert -1.0 - 1e-9 <= value <= 1.0 + 1e-9
    if x.std() > 1e-6 and y.std() > 1e-6:
        assert metrics.pcc(x, y) == pytest.approx(scipy.stats.pearsonr(x, y)[0], abs=1e-9)
        assert abs(value) <= abs(metrics.pcc(x, y)) + 1e-9  # CCC never exceeds |PCC|


def test_bad_inputs_are_rejected_with_the_reason() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        metrics.ccc([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="empty"):
        metrics.rmse([], [])
    with pytest.raises(ValueError, match="NaN or infinite.*index 1"):
        metrics.ccc([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="negative class index"):
        metrics.accuracy([0, -1], [0, 0])
    with pytest.raises(ValueError, match="num_classes = 2 but a label index 2"):
        metrics.confusion_matrix([0, 2], [0, 1], num_classes=2)
    with pytest.raises(ValueError, match="integer class indices"):
        metrics.accuracy([0.5], [0])


def test_sign_agreement_by_hand() -> None:
    assert metrics.sign_agreement([0.5, -0.2, 0.1, 0.0], [0.1, -0.9, -0.3, 0.0]) == 0.75


def test_expected_calibration_error_by_hand_and_loop() -> None:
    # two bins used (of 15): 0.9 -> bin 13 (0.8667, 0.9333], 0.3 -> bin 4 (0.2667, 0.3333]
    conf = [0.9, 0.9, 0.9, 0.9, 0.3, 0.3]
    right = [1, 1, 1, 0, 0, 1]
    expected = (4 * abs(0.75 - 0.9) + 2 * abs(0.5 - 0.3)) / 6
    assert metrics.expected_calibration_error(conf, right) == pytest.approx(expected)
    rng = np.random.default_rng(0)
    c = rng.uniform(0, 1, 500)
    k = rng.uniform(0, 1, 500) < c
    edges = np.linspace(0, 1, 16)
    naive = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):  # independent loop over (lo, hi]
        rows = (c > lo) & (c <= hi) | ((lo == 0) & (c == 0))
        if rows.any():
            naive += rows.sum() / c.size * abs(k[rows].mean() - c[rows].mean())
    assert metrics.expected_calibration_error(c, k) == pytest.approx(naive)
    assert metrics.expected_calibration_error([1.0, 1.0], [True, True]) == 0.0
    with pytest.raises(ValueError, match=r"confidences must lie in 0..1"):
        metrics.expected_calibration_error([1.5], [1])
    with pytest.raises(ValueError, match=r"correct must hold booleans"):
        metrics.expected_calibration_error([0.5], [0.5])
