"""Derived valence/arousal against hand computation with the published coordinates."""

from __future__ import annotations

import numpy as np
import pytest

from ros2_affect.core.types import CANONICAL_EXPRESSIONS, CONTEMPT
from ros2_affect.core.valence_arousal import RUSSELL_MEHRABIAN_1977, derive_valence_arousal


def test_one_hot_rows_give_the_published_coordinates() -> None:
    eye = np.eye(len(CANONICAL_EXPRESSIONS))
    va = derive_valence_arousal(eye, CANONICAL_EXPRESSIONS)
    # Russell & Mehrabian (1977): happy P .81 A .51, sad -.63 -.27, surprised .40 .67,
    # fearful -.64 .60, disgust -.60 .35, angry -.51 .59; neutral at the origin.
    expected = [[0, 0], [0.81, 0.51], [-0.63, -0.27], [0.40, 0.67], [-0.64, 0.60], [-0.60, 0.35], [-0.51, 0.59]]
    np.testing.assert_allclose(va, expected)


def test_expectation_by_hand() -> None:
    names = ("happy", "sad", "neutral")
    probs = np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]])
    va = derive_valence_arousal(probs, names)
    # 0.5*0.81 + 0.25*(-0.63) = 0.2475 ; 0.5*0.51 + 0.25*(-0.27) = 0.1875
    # 0.1*0.81 + 0.8*(-0.63) = -0.423 ; 0.1*0.51 + 0.8*(-0.27) = -0.165
    np.testing.assert_allclose(va, [[0.2475, 0.1875], [-0.423, -0.165]])


def test_class_order_follows_the_names() -> None:
    probs = np.array([[0.0, 1.0]])
    assert derive_valence_arousal(probs, ("anger", "fear")).tolist() == [[-0.64, 0.60]]
    assert derive_valence_arousal(probs, ("fear", "anger")).tolist() == [[-0.51, 0.59]]


def test_unmapped_class_and_bad_shape_are_refused() -> None:
    names = CANONICAL_EXPRESSIONS + (CONTEMPT,)
    with pytest.raises(ValueError, match=r"no valence/arousal coordinates for classes \['contempt'\]"):
        derive_valence_arousal(np.full((1, 8), 1 / 8), names)
    with pytest.raises(ValueError, match=r"probabilities have shape \(2, 3\); expected \(N, 7\)"):
        derive_valence_arousal(np.zeros((2, 3)), CANONICAL_EXPRESSIONS)


def test_every_canonical_class_is_mapped_within_range() -> None:
    assert set(RUSSELL_MEHRABIAN_1977) == set(CANONICAL_EXPRESSIONS)
    assert all(-1 <= v <= 1 and -1 <= a <= 1 for v, a in RUSSELL_MEHRABIAN_1977.values())
