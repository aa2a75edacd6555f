"""training.metrics reports against hand-computed values and their documented edge cases.

The formulas themselves are tested in tests/test_metrics.py (ros2_affect.metrics).
"""

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


def test_classification_report_hand_computed() -> None:
    report = metrics.classification_report(Y_TRUE, Y_PRED, ["a", "b", "c"])
    assert report["n"] == 6
    assert report["accuracy"] == pytest.approx(0.5)
    assert report["mean_class_accuracy"] == pytest.approx(0.5)
    assert report["macro_f1"] == pytest.approx(0.4)
    assert report["per_class_precision"] == pytest.approx({"a": 1 / 3, "b": 2 / 3, "c": 0.0})
    assert report["per_class_recall"] == pytest.approx({"a": 0.5, "b": 1.0, "c": 0.0})
    assert report["per_class_f1"] == pytest.approx({"a": 0.4, "b": 0.8, "c": 0.0})
    assert report["per_class_support"] == {"a": 2, "b": 2, "c": 2}
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [2, 0, 0]]
    json.dumps(report, allow_nan=False)


def test_class_absent_everywhere_is_left_out_of_the_means() -> None:
    # a 4th class nobody has: per-class values 0 (not NaN), the means are those of the 3 classes
    report = metrics.classification_report(Y_TRUE, Y_PRED, ["a", "b", "c", "d"])
    assert report["per_class_precision"]["d"] == 0.0 and report["per_class_recall"]["d"] == 0.0
    assert report["mean_class_accuracy"] == pytest.approx(0.5)
    assert report["macro_f1"] == pytest.approx(0.4)
    assert metrics.mean_class_accuracy(Y_TRUE, Y_PRED, 4) == pytest.approx(0.5)


def test_class_predicted_but_never_true_counts_in_macro_f1_only() -> None:
    # y_true [0,0], y_pred [0,1]: class 0 P=1 R=1/2 F1=2/3; class 1 P=0 R=0 F1=0 (support 0)
    # macro F1 over {0,1} = 1/3; mean class accuracy over {0} = 1/2
    report = metrics.classification_report([0, 0], [0, 1], ["a", "b"])
    assert report["macro_f1"] == pytest.approx(1 / 3)
    assert report["mean_class_accuracy"] == pytest.approx(0.5)


def test_report_rejects_label_beyond_class_names() -> None:
    with pytest.raises(ValueError, match="num_classes = 3 but a label index 3"):
        metrics.classification_report([0, 1], [0, 3], ["a", "b", "c"])


def test_va_report_per_column_with_mask_and_nan_rows() -> None:
    pred = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [0.0, 0.0], [5.0, 5.0]])
    target = np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0], [np.nan, 0.0], [7.0, 7.0]])
    report = metrics.va_report(pred, target, mask=[True, True, True, True, False])
    # rows 0-2 remain (row 3 NaN target, row 4 masked). Valence identical: CCC 1, RMSE 0.
    # Arousal x = (1,2,3), y = (2,4,6): means 2, 4; population variances 2/3, 8/3; cov 4/3;
    # CCC = 2*(4/3) / (2/3 + 8/3 + (2-4)^2) = 8/22; PCC 1; RMSE sqrt((1+4+9)/3)
    assert report["n_va"] == 3
    assert report["ccc_valence"] == pytest.approx(1.0)
    assert report["rmse_valence"] == pytest.approx(0.0)
    assert report["ccc_arousal"] == pytest.approx(8 / 22)
    assert report["pcc_arousal"] == pytest.approx(1.0)
    assert report["rmse_arousal"] == pytest.approx(math.sqrt(14 / 3))
    assert report["ccc_mean"] == pytest.approx((1 + 8 / 22) / 2)


def test_va_report_constant_prediction() -> None:
    # constant prediction: cov 0 -> CCC 0; PCC undefined -> NaN -> null in JSON
    pred = np.full((3, 2), 0.5)
    target = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    report = metrics.va_report(pred, target)
    assert report["ccc_valence"] == 0.0 and report["ccc_arousal"] == 0.0
    assert math.isnan(report["pcc_valence"])
    assert metrics.to_jsonable(report)["pcc_valence"] is None


def test_va_report_too_few_rows_and_bad_predictions() -> None:
    report = metrics.va_report(np.zeros((2, 2)), np.array([[0.1, 0.2], [np.nan, np.nan]]))
    assert report["n_va"] == 1 and math.isnan(report["ccc_mean"])
    with pytest.raises(ValueError, match="predictions hold NaN"):
        metrics.va_report(np.array([[np.nan, 0.0], [0.0, 0.0]]), np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"must both be \(N, 2\)"):
        metrics.va_report(np.zeros((2, 3)), np.zeros((2, 3)))


def test_to_jsonable_replaces_nan() -> None:
    out = metrics.to_jsonable({"a": float("nan"), "b": [np.float32(1.5), float("inf")], "c": np.int64(3)})
    assert out == {"a": None, "b": [1.5, None], "c": 3}
    json.dumps(out, allow_nan=False)
