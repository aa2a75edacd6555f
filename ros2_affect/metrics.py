"""Evaluation metrics for expression classification and valence/arousal regression.

The single implementation used by the runtime tools (``ros2-affect evaluate``) and by
``training`` (which imports it from here: training may depend on ``ros2_affect``, never
the reverse). Numpy only, so it runs anywhere the runtime runs.

Conventions:

- Class labels are integer indices ``0..K-1`` into a class-name list (for this package,
  :data:`ros2_affect.core.types.CANONICAL_EXPRESSIONS`).
- Regression inputs are 1-D sequences of finite floats of equal length.
- All results are plain Python floats / numpy arrays, computed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np

ArrayLike = Union[Sequence[float], Sequence[int], np.ndarray]


# -- input checks --------------------------------------------------------------------------------


def _as_labels(values: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of class indices, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype} with non-integer values")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} holds a negative class index ({int(arr.min())}); indices must be 0..K-1")
    return arr


def _label_pair(y_true: ArrayLike, y_pred: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    t = _as_labels(y_true, "y_true")
    p = _as_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length ({t.size} vs {p.size}); pass one prediction per label")
    if t.size == 0:
        raise ValueError("no samples: y_true and y_pred are empty; a metric needs at least one labelled sample")
    return t, p


def _value_pair(x: ArrayLike, y: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"expected two 1-D sequences, got shapes {a.shape} and {b.shape}")
    if a.shape != b.shape:
        raise ValueError(f"the two sequences differ in length ({a.size} vs {b.size}); pass paired values")
    if a.size == 0:
        raise ValueError("no samples: both sequences are empty; a metric needs at least one pair")
    bad = ~(np.isfinite(a) & np.isfinite(b))
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} of {a.size} pairs hold NaN or infinite values (first at index "
            f"{int(np.argmax(bad))}); drop unannotated samples before computing metrics"
        )
    return a, b


def _num_classes(t: np.ndarray, p: np.ndarray, num_classes: Optional[int]) -> int:
    needed = int(max(t.max(), p.max())) + 1
    if num_classes is None:
        return needed
    if num_classes < needed:
        raise ValueError(
            f"num_classes = {num_classes} but a label index {needed - 1} occurs; pass num_classes >= {needed}"
        )
    return int(num_classes)


# -- classification ------------------------------------------------------------------------------


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of samples whose predicted class equals the true class."""
    t, p = _label_pair(y_true, y_pred)
    return float(np.mean(t == p))


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, num_classes: Optional[int] = None) -> np.ndarray:
    """``(K, K)`` int64 counts; row = true class, column = predicted class.

    ``K`` is ``num_classes`` or, when omitted, one more than the largest index seen.
    """
    t, p = _label_pair(y_true, y_pred)
    k = _num_classes(t, p, num_classes)
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


@dataclass(frozen=True)
class PerClassScores:
    """Per-class scores, each ``(K,)``; a class never predicted has precision 0, one never
    present has recall 0 (the scikit-learn ``zero_division=0`` convention)."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray  #: number of true samples of each class (int64)
    predicted: np.ndarray  #: number of predictions of each class (int64)


def per_class_scores(y_true: ArrayLike, y_pred: ArrayLike, num_classes: Optional[int] = None) -> PerClassScores:
    """Precision, recall and F1 of every class (one-vs-rest)."""
    cm = confusion_matrix(y_true, y_pred, num_classes).astype(np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
    return PerClassScores(precision, recall, f1, support.astype(np.int64), predicted.astype(np.int64))


def macro_f1(y_true: ArrayLike, y_pred: ArrayLike, num_classes: Optional[int] = None) -> float:
    """Unweighted mean of the per-class F1 over the classes that occur in ``y_true`` or
    ``y_pred`` (as scikit-learn's ``f1_score(average="macro")``): classes absent from both
    do not pull the score down, so a clip with three emotions is scored on those three."""
    scores = per_class_scores(y_true, y_pred, num_classes)
    present = (scores.support > 0) | (scores.predicted > 0)
    return float(np.mean(scores.f1[present]))


# -- regression ----------------------------------------------------------------------------------


def ccc(x: ArrayLike, y: ArrayLike) -> float:
    """Concordance correlation coefficient (Lin 1989), in -1..1.

    ``2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)`` with population (1/N)
    variances and covariance, as used by the AVEC / ABAW valence-arousal challenges.
    Two identical constant sequences agree perfectly and score 1.0 (the formula is 0/0).
    """
    a, b = _value_pair(x, y)
    mean_a, mean_b = a.mean(), b.mean()
    var_a, var_b = a.var(), b.var()
    cov = np.mean((a - mean_a) * (b - mean_b))
    denom = var_a + var_b + (mean_a - mean_b) ** 2
    if denom == 0.0:
        return 1.0
    return float(2.0 * cov / denom)


def pcc(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson correlation coefficient; NaN when either sequence is constant (undefined)."""
    a, b = _value_pair(x, y)
    da, db = a - a.mean(), b - b.mean()
    denom = np.sqrt(np.sum(da * da) * np.sum(db * db))
    if denom == 0.0:
        return float("nan")
    return float(np.sum(da * db) / denom)


def rmse(x: ArrayLike, y: ArrayLike) -> float:
    """Root mean squared difference."""
    a, b = _value_pair(x, y)
    return float(np.sqrt(np.mean((a - b) ** 2)))


def mae(x: ArrayLike, y: ArrayLike) -> float:
    """Mean absolute difference."""
    a, b = _value_pair(x, y)
    return float(np.mean(np.abs(a - b)))


def sign_agreement(x: ArrayLike, y: ArrayLike) -> float:
    """Fraction of pairs whose signs agree (negative, zero, positive: ``sign(x) == sign(y)``).

    For valence/arousal: how often the prediction is on the right side of neutral
    (pleasant vs unpleasant, excited vs calm). A value of exactly 0 only agrees with 0.
    """
    a, b = _value_pair(x, y)
    return float(np.mean(np.sign(a) == np.sign(b)))


def expected_calibration_error(confidence: ArrayLike, correct: ArrayLike, n_bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017) of top-1 confidences, in 0..1.

    The confidences are put into ``n_bins`` equal-width bins over ``[0, 1]`` (bin ``b``
    holds ``b/n < c <= (b+1)/n``, a confidence of 0 goes to the first bin); ECE is the
    sample-weighted mean over the bins of ``|accuracy(bin) - mean confidence(bin)|``.

    Args:
        confidence: ``(N,)`` top-1 probability of each prediction, in 0..1.
        correct: ``(N,)`` bool (or 0/1), whether that prediction was right.
        n_bins: number of bins (15 is the usual choice).
    """
    c, k = _value_pair(confidence, np.asarray(correct, dtype=np.float64))
    if n_bins < 1:
        raise ValueError(f"n_bins = {n_bins}; pass at least 1 bin")
    if c.min() < 0.0 or c.max() > 1.0 + 1e-6:
        raise ValueError(f"confidences must lie in 0..1, got {c.min():.4g}..{c.max():.4g}; pass probabilities")
    if not np.all((k == 0.0) | (k == 1.0)):
        raise ValueError("correct must hold booleans (or 0/1), one per confidence")
    bins = np.clip(np.ceil(c * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        rows = bins == b
        total += rows.sum() * abs(float(k[rows].mean()) - float(c[rows].mean()))
    return float(total / c.size)
