"""Training losses: class-weighted cross-entropy and the CCC loss for valence/arousal.

Missing labels are common in the affect datasets (Aff-Wild2 frames with only one of the
two annotations, AffectNet rows without valence/arousal), so every loss here accepts them:

- expression targets of ``-1`` (:data:`IGNORE_INDEX`) are ignored;
- valence/arousal rows are ignored where ``va_mask`` is False, or, without a mask, where
  the target is not finite (loaders may store NaN for "no label").

A loss over a batch with no usable label is an exact ``0`` that is still attached to the
graph (so ``backward()`` works and contributes nothing) instead of NaN.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

#: Expression target value meaning "no label for this sample".
IGNORE_INDEX = -1
#: Added to the CCC denominator: keeps the loss finite for constant predictions/targets.
CCC_EPS = 1e-8


def class_weights_from_counts(counts: Union[Sequence[int], np.ndarray, torch.Tensor]) -> torch.Tensor:
    """Inverse-frequency class weights ``w_i = f_min / f_i`` (the rarest class gets 1).

    Args:
        counts: ``(K,)`` number of training samples per class (canonical order).

    Returns:
        ``(K,)`` float32 weights in ``(0, 1]``. A class with no samples gets weight 0 (it
        never occurs as a target, so its weight has no effect; 0 avoids a division by 0).

    Raises:
        ValueError: ``counts`` is not 1-D, has a negative value, or is all zeros.
    """
    c = torch.as_tensor(np.asarray(counts, dtype=np.float64) if not isinstance(counts, torch.Tensor) else counts)
    c = c.to(torch.float64)
    if c.ndim != 1 or c.numel() == 0:
        raise ValueError(f"counts must be a non-empty 1-D sequence (one count per class), got shape {tuple(c.shape)}")
    if bool((c < 0).any()) or not bool(torch.isfinite(c).all()):
        raise ValueError(f"counts must be finite and >= 0, got {c.tolist()}")
    present = c > 0
    if not bool(present.any()):
        raise ValueError(f"counts are all zero ({c.tolist()}); the training set has no labelled sample")
    f_min = c[present].min()
    weights = torch.where(present, f_min / torch.where(present, c, torch.ones_like(c)), torch.zeros_like(c))
    return weights.to(torch.float32)


def _zero_like_graph(t: torch.Tensor) -> torch.Tensor:
    """A scalar 0 connected to ``t``'s graph (backward() works, gradient is 0)."""
    return t.sum() * 0.0


def weighted_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    class_weights: Optional[torch.Tensor] = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean cross-entropy over the labelled samples.

    Args:
        logits: ``(N, K)`` float.
        targets: ``(N,)`` int64 class indices in ``0..K-1``, or ``-1`` for "no label".
        class_weights: optional ``(K,)`` weights (see :func:`class_weights_from_counts`).
            As in ``torch.nn.functional.cross_entropy`` the mean is weighted: the sum of
            ``w[y_i] * ce_i`` divided by the sum of ``w[y_i]``.
        label_smoothing: in ``[0, 1)``.

    Returns:
        Scalar tensor; 0 (attached to the graph) when no sample is labelled.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, K), got shape {tuple(logits.shape)}")
    targets = targets.long().reshape(-1)
    if targets.shape[0] != logits.shape[0]:
        raise ValueError(f"targets have {targets.shape[0]} entries for {logits.shape[0]} logits rows")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing = {label_smoothing} must be in [0, 1)")
    labelled = targets != IGNORE_INDEX
    if not bool(labelled.any()):
        return _zero_like_graph(logits)
    k = logits.shape[1]
    bad = labelled & ((targets < 0) | (targets >= k))
    if bool(bad.any()):
        raise ValueError(
            f"expression targets must be in 0..{k - 1} or {IGNORE_INDEX} (no label), "
            f"got {sorted(set(targets[bad].tolist()))}"
        )
    weight = None
    if class_weights is not None:
        weight = class_weights.to(device=logits.device, dtype=logits.dtype)
        if weight.shape != (k,):
            raise ValueError(f"class_weights has shape {tuple(weight.shape)}; expected ({k},) for {k} classes")
    return F.cross_entropy(
        logits[labelled], targets[labelled], weight=weight, label_smoothing=float(label_smoothing)
    )


def ccc(pred: torch.Tensor, target: torch.Tensor, eps: float = CCC_EPS) -> torch.Tensor:
    """Lin's concordance correlation coefficient per column.

    ``CCC = 2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)`` with population
    (biased, ``1/N``) variances and covariance. ``eps`` is added to the denominator so a
    constant prediction against a constant target gives 0 instead of NaN.

    Args:
        pred, target: ``(N,)`` or ``(N, C)`` float, same shape.

    Returns:
        ``()`` or ``(C,)`` CCC in ``[-1, 1]``.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    x = pred.to(torch.float32) if not pred.is_floating_point() else pred
    y = target.to(x.dtype)
    mx, my = x.mean(dim=0), y.mean(dim=0)
    dx, dy = x - mx, y - my
    vx, vy = (dx * dx).mean(dim=0), (dy * dy).mean(dim=0)
    cov = (dx * dy).mean(dim=0)
    return 2.0 * cov / (vx + vy + (mx - my) ** 2 + eps)


def _va_rows(va_target: torch.Tensor, va_mask: Optional[torch.Tensor]) -> torch.Tensor:
    if va_mask is None:
        return torch.isfinite(va_target).all(dim=1)
    mask = va_mask.to(torch.bool, copy=False).to(va_target.device)
    if mask.ndim == 2:
        mask = mask.all(dim=1)
    if mask.shape != (va_target.shape[0],):
        raise ValueError(f"va_mask has shape {tuple(va_mask.shape)}; expected ({va_target.shape[0]},)")
    return mask & torch.isfinite(va_target).all(dim=1)


def ccc_loss(pred: torch.Tensor, target: torch.Tensor, va_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``1 - (CCC_valence + CCC_arousal) / 2`` over the rows that have a label.

    Args:
        pred: ``(N, 2)`` predicted valence, arousal.
        target: ``(N, 2)`` labels in -1..1; non-finite rows count as unlabelled.
        va_mask: optional ``(N,)`` bool, True where the row is labelled.

    Returns:
        Scalar in ``[0, 2]``; 0 (attached to the graph) when fewer than 2 rows are
        labelled (a correlation needs at least two samples).
    """
    if pred.ndim != 2 or pred.shape[1] != 2 or pred.shape != target.shape:
        raise ValueError(f"pred and target must both be (N, 2), got {tuple(pred.shape)} and {tuple(target.shape)}")
    rows = _va_rows(target, va_mask)
    if int(rows.sum()) < 2:
        return _zero_like_graph(pred)
    return 1.0 - ccc(pred[rows], target[rows]).mean()


def joint_loss_terms(
    logits: torch.Tensor,
    targets: torch.Tensor,
    va_pred: Optional[torch.Tensor] = None,
    va_target: Optional[torch.Tensor] = None,
    class_weights: Optional[torch.Tensor] = None,
    va_weight: float = 1.0,
    label_smoothing: float = 0.0,
    va_mask: Optional[torch.Tensor] = None,
) -> Dict[str, torch.Tensor]:
    """The joint loss and its parts: ``{"total", "ce", "ccc"}`` (scalars).

    ``total = ce + va_weight * ccc``. Without ``va_pred``/``va_target`` (a model whose
    valence/arousal are derived from the class probabilities) ``ccc`` is 0.
    """
    ce = weighted_cross_entropy(logits, targets, class_weights, label_smoothing)
    if va_pred is None or va_target is None or va_weight == 0.0:
        va = torch.zeros((), dtype=ce.dtype, device=ce.device)
    else:
        va = ccc_loss(va_pred, va_target.to(va_pred.dtype), va_mask)
    return {"total": ce + float(va_weight) * va, "ce": ce, "ccc": va}
