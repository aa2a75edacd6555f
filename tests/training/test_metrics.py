"""Metrics against hand-computed values and their documented edge cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from training import metrics

# y_true = [0,0,1,1,2,2], y_pred = [0,1,1,1,0,0]
# confusion (rows true): [[1,1,0],[0,2,0],[2,0,0]]
# precision: col sums (3,3,0) -> (1/3, 2/3, 0 [never predicted])
# recall: row sums (2,2,2) -> (1/2, 1, 0)
# F1: 2PR/(P+R) -> (2*(1/3)*(1/2)/(5/6) = 0.4, 2*(2/3)*1/(5/3) = 0.8, 0)
# accuracy 3/6; mean class accuracy (1/2 + 1 + 0)/3 = 0.5; macro F1 (0.4+0.8+0)/3 = 0.4
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
Y_PRED = np.array([0, 1, 1, 1, 0, 0])


def test_confusion_matrix_hand_computed() -> None:
    cm = metrics.confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [2, 0, 0]]


def test_classification_metrics_hand_computed() -> None:
    cm = metrics.confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert metrics.accuracy(Y_TRUE, Y_PRED) == pytest.approx(0.5)
    assert metrics.per_class_precision(cm) == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert metrics.per_class_recall(cm) == pytest.approx([0.5, 1.0, 0.0])
    assert metrics.per_class_f1(cm) == pytest.approx([0.4, 0.8, 0.0])
    assert metrics.mean_class_accuracy(cm) == pytest.approx(0.5)
    assert metrics.macro_f1(cm) == pytest.approx(0.4)


def test_never_predicted_class_has_zero_precision_not_nan() -> None:
    cm = metrics.confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert metrics.per_class_precision(cm)[2] == 0.0
    assert not np.isnan(metrics.per_class_f1(cm)).any()


def test_class_absent_everywhere_is_left_out_of_the_means() -> None:
    # a 4th class nobody has: per-class values 0, but the means are those of the 3 classes
    cm = metrics.confusion_matrix(Y_TRUE, Y_PRED, 4)
    assert metrics.per_class_recall(cm)[3] == 0.0
    assert metrics.mean_class_accuracy(cm) == pytest.approx(0.5)
    assert metrics.macro_f1(cm) == pytest.approx(0.4)


def test_classification_report_keys_and_values() -> None:
    report = metrics.classification_report(Y_TRUE, Y_PRED, ["a", "b", "c"])
    assert report["n"] == 6
    assert report["accuracy"] == pytest.approx(0.5)
    assert report["per_class_recall"] == pytest.approx({"a": 0.5, "b": 1.0, "c": 0.0})
    assert report["per_class_precision"]["c"] == 0.0
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [2, 0, 0]]
    json.dumps(report)  # serialisable as is


def test_labels_out_of_range_rejected() -> None:
    with pytest.raises(ValueError, match=r"y_pred holds \[3\]; class indices must be in 0..2"):
        metrics.confusion_matrix([0, 1], [0, 3], 3)
    with pytest.raises(ValueError, match="integer class indices"):
        metrics.confusion_matrix([0.0, 1.0], [0.0, 1.0], 3)


def test_ccc_pcc_rmse_hand_computed() -> None:
    # x = (1,2,3), y = (2,4,6): means 2, 4; population variances 2/3, 8/3; cov 4/3
    # CCC = 2*(4/3) / (2/3 + 8/3 + 4) = 8/22; PCC = 1 (y = 2x); RMSE = sqrt((1+4+9)/3)
    x, y = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0]
    assert float(metrics.ccc(x, y)) == pytest.approx(8 / 22)
    assert float(metrics.pcc(x, y)) == pytest.approx(1.0)
    assert float(metrics.rmse(x, y)) == pytest.approx(math.sqrt(14 / 3))


def test_constant_prediction_gives_ccc_zero_and_pcc_nan() -> None:
    x, y = [0.5, 0.5, 0.5], [1.0, 2.0, 3.0]
    assert float(metrics.ccc(x, y)) == 0.0
    assert math.isnan(float(metrics.pcc(x, y)))
    # prediction and target the same constant: denominator 0 -> reported as 0, not NaN
    assert float(metrics.ccc([1.0, 1.0], [1.0, 1.0])) == 0.0


def test_va_report_per_column_with_mask_and_nan_rows() -> None:
    pred = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [0.0, 0.0], [5.0, 5.0]])
    target = np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0], [np.nan, 0.0], [7.0, 7.0]])
    report = metrics.va_report(pred, target, mask=[True, True, True, True, False])
    # rows 0-2 remain: valence identical (CCC 1), arousal y = 2x (CCC 8/22)
    assert report["n_va"] == 3
    assert report["ccc_valence"] == pytest.approx(1.0)
    assert report["ccc_arousal"] == pytest.approx(8 / 22)
    assert report["ccc_mean"] == pytest.approx((1 + 8 / 22) / 2)
    assert report["rmse_valence"] == pytest.approx(0.0)


def test_to_jsonable_replaces_nan() -> None:
    out = metrics.to_jsonable({"a": float("nan"), "b": [np.float32(1.5), float("inf")], "c": np.int64(3)})
    assert out == {"a": None, "b": [1.5, None], "c": 3}
    json.dumps(out, allow_nan=False)
