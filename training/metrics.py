"""Evaluation reports for training and ``training.evaluate``, in plain numpy.

The metric formulas live once, in :mod:`ros2_affect.metrics` (re-exported here); this
module only assembles them into the JSON-ready reports the training loop and the
evaluation tool print, and handles unlabelled rows.

Conventions (see :mod:`ros2_affect.metrics` for the formulas):

- ``confusion_matrix[i, j]`` counts samples of true class ``i`` predicted as ``j``.
- precision of a class that is never predicted is 0 (not NaN); recall of a class with no
  true sample is 0; F1 is 0 when precision + recall is 0.
- ``mean_class_accuracy`` (mean per-class recall, "balanced accuracy") averages over the
  classes that occur in ``y_true``; ``macro_f1`` averages over the classes that occur in
  ``y_true`` or ``y_pred`` (scikit-learn's default). A class that occurs nowhere says
  nothing about the model and is left out of both means.
- CCC uses population variances; a constant prediction has ``cov = 0`` and so CCC 0
  (unless the target is that same constant: 1). PCC of a constant input is NaN;
  :func:`to_jsonable` turns NaN into ``None`` (JSON has no NaN).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence

import numpy as np

from ros2_affect.metrics import (
    accuracy,
    ccc,
    confusion_matrix,
    expected_calibration_error,
    macro_f1,
    mae,
    pcc,
    per_class_scores,
    rmse,
    sign_agreement,
)

__all__ = [
    "accuracy",
    "ccc",
    "classification_report",
    "confusion_matrix",
    "expected_calibration_error",
    "macro_f1",
    "mae",
    "mean_class_accuracy",
    "pcc",
    "per_class_scores",
    "rmse",
    "sign_agreement",
    "to_jsonable",
    "va_report",
]


def mean_class_accuracy(y_true: Any, y_pred: Any, num_classes: Optional[int] = None) -> float:
    """Mean recall over the classes present in ``y_true`` (balanced accuracy)."""
    scores = per_class_scores(y_true, y_pred, num_classes)
    return float(np.mean(scores.recall[scores.support > 0]))


def classification_report(y_true: Any, y_pred: Any, class_names: Sequence[str]) -> Dict[str, Any]:
    """All classification metrics of one evaluation as a JSON-ready dict.

    Args:
        y_true, y_pred: ``(N,)`` int class indices into ``class_names``, ``N >= 1``.
        class_names: the model's class names (canonical order).

    Returns:
        ``n``, ``accuracy``, ``mean_class_accuracy``, ``macro_f1``, ``per_class_recall``,
        ``per_class_precision``, ``per_class_f1`` (each ``{name: value}``),
        ``per_class_support`` (``{name: count}``), ``confusion_matrix`` (rows true class),
        ``class_names``.
    """
    names = [str(n) for n in class_names]
    k = len(names)
    cm = confusion_matrix(y_true, y_pred, k)
    scores = per_class_scores(y_true, y_pred, k)
    return {
        "n": int(cm.sum()),
        "accuracy": accuracy(y_true, y_pred),
        "mean_class_accuracy": float(np.mean(scores.recall[scores.support > 0])),
        "macro_f1": macro_f1(y_true, y_pred, k),
        "per_class_recall": {n: float(v) for n, v in zip(names, scores.recall, strict=True)},
        "per_class_precision": {n: float(v) for n, v in zip(names, scores.precision, strict=True)},
        "per_class_f1": {n: float(v) for n, v in zip(names, scores.f1, strict=True)},
        "per_class_support": {n: int(v) for n, v in zip(names, scores.support, strict=True)},
        "confusion_matrix": cm.tolist(),
        "class_names": names,
    }


def va_report(pred: Any, target: Any, mask: Optional[Any] = None) -> Dict[str, Any]:
    """Valence/arousal metrics for ``(N, 2)`` predictions and labels (column 0 valence).

    Rows where ``mask`` is False or the target is not finite are left out (unlabelled).
    With fewer than 2 labelled rows every metric is NaN (a correlation needs two).

    Returns:
        ``n_va``, ``ccc_valence``, ``ccc_arousal``, ``ccc_mean``, ``pcc_valence``,
        ``pcc_arousal``, ``rmse_valence``, ``rmse_arousal``.
    """
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2 or x.shape != y.shape:
        raise ValueError(f"pred and target must both be (N, 2), got {x.shape} and {y.shape}")
    rows = np.isfinite(y).all(axis=1)
    if mask is not None:
        m = np.asarray(mask, dtype=bool).reshape(-1)
        if m.shape != rows.shape:
            raise ValueError(f"mask has {m.size} entries for {rows.size} rows")
        rows &= m
    if not np.isfinite(x[rows]).all():
        raise ValueError("valence/arousal predictions hold NaN or infinite values; the model output is broken")
    x, y = x[rows], y[rows]
    out: Dict[str, Any] = {"n_va": int(len(x))}
    for i, dim in enumerate(("valence", "arousal")):
        if len(x) < 2:
            out.update({f"ccc_{dim}": math.nan, f"pcc_{dim}": math.nan, f"rmse_{dim}": math.nan})
            continue
        out[f"ccc_{dim}"] = ccc(x[:, i], y[:, i])
        out[f"pcc_{dim}"] = pcc(x[:, i], y[:, i])
        out[f"rmse_{dim}"] = rmse(x[:, i], y[:, i])
    out["ccc_mean"] = (out["ccc_valence"] + out["ccc_arousal"]) / 2
    return out


def to_jsonable(value: Any) -> Any:
    """Replace NaN/inf floats by ``None`` and numpy scalars/arrays by Python values."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
