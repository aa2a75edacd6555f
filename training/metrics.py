"""Evaluation metrics in plain numpy (so ONNX outputs can be scored without torch).

Classification conventions (documented because libraries differ):

- ``confusion_matrix[i, j]`` counts samples of true class ``i`` predicted as ``j``.
- precision of a class that is never predicted is 0 (not NaN); recall of a class with no
  true sample is 0; F1 is 0 when precision + recall is 0.
- ``mean_class_accuracy`` (mean per-class recall, "balanced accuracy") averages over the
  classes that occur in ``y_true``; ``macro_f1`` averages over the classes that occur in
  ``y_true`` or ``y_pred`` (as scikit-learn does by default). A class that never occurs
  anywhere says nothing about the model and is left out of both means.

Regression (valence/arousal):

- CCC uses population (``1/N``) variances and covariance:
  ``2 cov / (var_x + var_y + (mean_x - mean_y)^2)``. A constant prediction has
  ``cov = 0`` and so CCC 0; when the denominator is 0 (prediction and target the same
  constant) CCC is also reported as 0 — there is no variation to agree on.
- PCC (Pearson) of a constant input is undefined and returned as NaN; :func:`to_jsonable`
  turns NaN into ``None`` for JSON output.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np


def _labels(y_true: Any, y_pred: Any, num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    if t.ndim != 1 or p.ndim != 1 or t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length, got shapes {t.shape} and {p.shape}")
    if t.size and not (np.issubdtype(t.dtype, np.integer) and np.issubdtype(p.dtype, np.integer)):
        raise ValueError(f"labels must be integer class indices, got dtypes {t.dtype} and {p.dtype}")
    t = t.astype(np.int64)
    p = p.astype(np.int64)
    for name, arr in (("y_true", t), ("y_pred", p)):
        bad = (arr < 0) | (arr >= num_classes)
        if bad.any():
            raise ValueError(
                f"{name} holds {sorted(set(arr[bad].tolist()))}; class indices must be in 0..{num_classes - 1}"
            )
    return t, p


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """``(K, K)`` int64 counts, rows true class, columns predicted class."""
    t, p = _labels(y_true, y_pred, num_classes)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of correct predictions; NaN for empty input."""
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have equal shapes, got {t.shape} and {p.shape}")
    return float(np.mean(t == p)) if t.size else float("nan")


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def per_class_precision(cm: np.ndarray) -> np.ndarray:
    """``(K,)`` precision = TP / predicted; 0 for a class that is never predicted."""
    return _safe_div(np.diag(cm).astype(np.float64), cm.sum(axis=0).astype(np.float64))


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    """``(K,)`` recall = TP / true count; 0 for a class with no true sample."""
    return _safe_div(np.diag(cm).astype(np.float64), cm.sum(axis=1).astype(np.float64))


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    """``(K,)`` F1 = 2PR / (P + R); 0 when P + R = 0."""
    p, r = per_class_precision(cm), per_class_recall(cm)
    return _safe_div(2 * p * r, p + r)


def mean_class_accuracy(cm: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true`` (balanced accuracy)."""
    present = cm.sum(axis=1) > 0
    return float(per_class_recall(cm)[present].mean()) if present.any() else float("nan")


def macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over the classes present in ``y_true`` or ``y_pred``."""
    present = (cm.sum(axis=1) + cm.sum(axis=0)) > 0
    return float(per_class_f1(cm)[present].mean()) if present.any() else float("nan")


def classification_report(
    y_true: Any, y_pred: Any, class_names: Sequence[str]
) -> Dict[str, Any]:
    """All classification metrics as a JSON-ready dict.

    Keys: ``n``, ``accuracy``, ``mean_class_accuracy``, ``macro_f1``,
    ``per_class_recall``/``per_class_precision``/``per_class_f1`` (``{name: value}``),
    ``confusion_matrix`` (list of rows), ``class_names``.
    """
    names = list(class_names)
    cm = confusion_matrix(y_true, y_pred, len(names))
    return {
        "n": int(cm.sum()),
        "accuracy": float(np.trace(cm) / cm.sum()) if cm.sum() else float("nan"),
        "mean_class_accuracy": mean_class_accuracy(cm),
        "macro_f1": macro_f1(cm),
        "per_class_recall": dict(zip(names, per_class_recall(cm).tolist(), strict=True)),
        "per_class_precision": dict(zip(names, per_class_precision(cm).tolist(), strict=True)),
        "per_class_f1": dict(zip(names, per_class_f1(cm).tolist(), strict=True)),
        "confusion_matrix": cm.tolist(),
        "class_names": names,
    }


# -- valence / arousal ----------------------------------------------------------------------


def _pair(pred: Any, target: Any) -> Tuple[np.ndarray, np.ndarray]:
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if x.shape != y.shape or x.ndim not in (1, 2) or x.shape[0] == 0:
        raise ValueError(
            f"pred and target must be non-empty (N,) or (N, C) of equal shape, got {x.shape} and {y.shape}"
        )
    return x, y


def ccc(pred: Any, target: Any) -> np.ndarray:
    """Concordance correlation coefficient per column (``()`` for 1-D input); see module doc."""
    x, y = _pair(pred, target)
    mx, my = x.mean(axis=0), y.mean(axis=0)
    vx, vy = x.var(axis=0), y.var(axis=0)  # population variances (ddof=0)
    cov = ((x - mx) * (y - my)).mean(axis=0)
    den = vx + vy + (mx - my) ** 2
    return np.asarray(_safe_div(np.asarray(2 * cov), np.asarray(den)))


def pcc(pred: Any, target: Any) -> np.ndarray:
    """Pearson correlation per column; NaN where either input is constant."""
    x, y = _pair(pred, target)
    dx, dy = x - x.mean(axis=0), y - y.mean(axis=0)
    den = np.sqrt((dx * dx).sum(axis=0) * (dy * dy).sum(axis=0))
    num = (dx * dy).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return np.asarray(out)


def rmse(pred: Any, target: Any) -> np.ndarray:
    """Root mean squared error per column."""
    x, y = _pair(pred, target)
    return np.asarray(np.sqrt(((x - y) ** 2).mean(axis=0)))


def va_report(pred: Any, target: Any, mask: Optional[Any] = None) -> Dict[str, Any]:
    """Valence/arousal metrics for ``(N, 2)`` predictions and labels.

    Rows where ``mask`` is False or the target is not finite are left out.
    Keys: ``n_va``, ``ccc_valence``, ``ccc_arousal``, ``ccc_mean``, ``pcc_valence``,
    ``pcc_arousal``, ``rmse_valence``, ``rmse_arousal``.
    """
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2 or x.shape != y.shape:
        raise ValueError(f"pred and target must be (N, 2), got {x.shape} and {y.shape}")
    rows = np.isfinite(y).all(axis=1)
    if mask is not None:
        rows &= np.asarray(mask, dtype=bool).reshape(-1)
    x, y = x[rows], y[rows]
    if len(x) < 2:
        nan = float("nan")
        return {"n_va": int(len(x)), "ccc_valence": nan, "ccc_arousal": nan, "ccc_mean": nan,
                "pcc_valence": nan, "pcc_arousal": nan, "rmse_valence": nan, "rmse_arousal": nan}
    c, p, r = ccc(x, y), pcc(x, y), rmse(x, y)
    return {
        "n_va": int(len(x)),
        "ccc_valence": float(c[0]),
        "ccc_arousal": float(c[1]),
        "ccc_mean": float(c.mean()),
        "pcc_valence": float(p[0]),
        "pcc_arousal": float(p[1]),
        "rmse_valence": float(r[0]),
        "rmse_arousal": float(r[1]),
    }


def to_jsonable(value: Any) -> Any:
    """Replace NaN/inf floats by ``None`` (JSON has no NaN) and numpy scalars by Python ones."""
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
