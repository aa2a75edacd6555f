"""to_model_input: exact normalisation, layout, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from ros2_affect.backends.preprocess import flip_horizontal, to_model_input
from ros2_affect.errors import InvalidImageError


def test_exact_values_and_layout_rgb():
    crops = np.zeros((2, 3, 3, 3), np.uint8)
    crops[0, 0, 0] = [0, 51, 255]
    crops[1, 2, 1] = [255, 102, 0]
    out = to_model_input(crops, mean=[0.5, 0.2, 0.0], std=[0.5, 0.1, 2.0])
    assert out.shape == (2, 3, 3, 3) and out.dtype == np.float32 and out.flags.c_contiguous
    # Channel c at [n, c, y, x] = (x / 255 - mean[c]) / std[c]
    np.testing.assert_allclose(out[0, :, 0, 0], [-1.0, 0.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(out[1, :, 2, 1], [1.0, 2.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(out[0, :, 1, 1], [-1.0, -2.0, 0.0], atol=1e-6)  # zero pixels


def test_list_of_grey_crops_matches_the_formula_everywhere():
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (48, 48, 1), dtype=np.uint8) for _ in range(5)]
    out = to_model_input(crops, mean=[0.5], std=[0.25])
    expected = (np.stack(crops).astype(np.float64) / 255.0 - 0.5) / 0.25
    np.testing.assert_allclose(out, expected.transpose(0, 3, 1, 2), atol=1e-5)


def test_channel_mismatch_and_bad_batches_raise():
    grey = np.zeros((1, 8, 8, 1), np.uint8)
    with pytest.raises(InvalidImageError, match=r"crops have 1 channel\(s\) but mean has 3"):
        to_model_input(grey, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    with pytest.raises(InvalidImageError, match=r"must be uint8 .*float32"):
        to_model_input(grey.astype(np.float32), mean=[0.5], std=[0.5])
    with pytest.raises(InvalidImageError, match=r"\(N, S, S, C\) or a list of \(S, S, C\), got shape \(8, 8\)"):
        to_model_input(np.zeros((8, 8), np.uint8), mean=[0.5], std=[0.5])
    with pytest.raises(InvalidImageError, match=r"same shape .*\(8, 8, 1\).*\(9, 9, 1\)"):
        to_model_input([np.zeros((8, 8, 1), np.uint8), np.zeros((9, 9, 1), np.uint8)], mean=[0.5], std=[0.5])
    with pytest.raises(InvalidImageError, match=r"no crops"):
        to_model_input([], mean=[0.5], std=[0.5])
    with pytest.raises(InvalidImageError, match=r"std values must be > 0"):
        to_model_input(grey, mean=[0.5], std=[0.0])


def test_flip_horizontal_reverses_width():
    batch = np.arange(2 * 1 * 2 * 3, dtype=np.float32).reshape(2, 1, 2, 3)
    flipped = flip_horizontal(batch)
    np.testing.assert_array_equal(flipped[0, 0, 0], [2, 1, 0])
    assert flipped.flags.c_contiguous
    np.testing.assert_array_equal(flip_horizontal(flipped), batch)
