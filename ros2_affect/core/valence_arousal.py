"""Valence and arousal derived from expression probabilities.

For models trained only on categories (FER2013 has no valence/arousal labels) the
pipeline reports valence and arousal as the expectation of fixed per-category
coordinates under the predicted class distribution::

    valence = sum_k p_k * V_k,   arousal = sum_k p_k * A_k

The coordinates are the pleasure (P) and arousal (A) factor scores of the matching
emotion terms in

    Russell, J. A., & Mehrabian, A. (1977). Evidence for a three-factor theory of
    emotions. Journal of Research in Personality, 11(3), 273-294.
    (Table of P, A, D scores, each on -1..1, for 151 emotion terms.)

=========  ============  =====  =====
class      term          P      A
=========  ============  =====  =====
neutral    (origin)       0.00   0.00
happy      "happy"        0.81   0.51
sad        "sad"         -0.63  -0.27
surprise   "surprised"    0.40   0.67
fear       "fearful"     -0.64   0.60
disgust    "disgust"     -0.60   0.35
anger      "angry"       -0.51   0.59
=========  ============  =====  =====

The study rated emotion *words*, not faces, so these are the typical positions of the
named emotions in the pleasure-arousal plane, not calibrated facial-valence values:
an estimate flagged ``va_derived`` is a coarse summary of the class probabilities, and
models that regress valence/arousal (``va_mode = "regressed"``) should be preferred
where such labels exist. "neutral" is not one of the rated terms; it is placed at the
origin of the plane, the neutral point of the bipolar scales. The table has no term
for AffectNet's eighth class, contempt, so a model with that class cannot derive
valence/arousal (see :func:`check_mapping`).
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

#: class name -> (valence, arousal), from Russell & Mehrabian (1977), see module docstring.
RUSSELL_MEHRABIAN_1977: Dict[str, Tuple[float, float]] = {
    "neutral": (0.0, 0.0),
    "happy": (0.81, 0.51),
    "sad": (-0.63, -0.27),
    "surprise": (0.40, 0.67),
    "fear": (-0.64, 0.60),
    "disgust": (-0.60, 0.35),
    "anger": (-0.51, 0.59),
}


def check_mapping(
    class_names: Sequence[str], mapping: Optional[Mapping[str, Tuple[float, float]]] = None
) -> np.ndarray:
    """The ``(K, 2)`` float64 coordinates of ``class_names``.

    Raises:
        ValueError: a class has no coordinates; the message lists those that have.
    """
    table = RUSSELL_MEHRABIAN_1977 if mapping is None else mapping
    missing = [c for c in class_names if c not in table]
    if missing:
        raise ValueError(
            f"no valence/arousal coordinates for classes {missing}; derived valence/arousal is defined for "
            f"{sorted(table)} (Russell & Mehrabian 1977); use a model that regresses valence/arousal "
            "(va_mode 'regressed') for other classes"
        )
    return np.array([table[c] for c in class_names], dtype=np.float64)


def derive_valence_arousal(
    probabilities: np.ndarray,
    class_names: Sequence[str],
    mapping: Optional[Mapping[str, Tuple[float, float]]] = None,
) -> np.ndarray:
    """Expected valence and arousal under the class distribution.

    Args:
        probabilities: ``(N, K)`` class probabilities (each row sums to 1).
        class_names: the K class names, in the order of the columns.
        mapping: class -> (valence, arousal); default :data:`RUSSELL_MEHRABIAN_1977`.

    Returns:
        ``(N, 2)`` float64 ``[valence, arousal]`` in -1..1.

    Raises:
        ValueError: shapes disagree, or a class has no coordinates.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(class_names):
        raise ValueError(
            f"probabilities have shape {probs.shape}; expected (N, {len(class_names)}) for classes {list(class_names)}"
        )
    coords = check_mapping(class_names, mapping)
    result: np.ndarray = np.clip(probs @ coords, -1.0, 1.0)
    return result
