"""as_rgb: every supported encoding converts exactly; every kind of bad input gets a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from ros2_affect.core.image import SUPPORTED_ENCODINGS, as_rgb
from ros2_affect.errors import InvalidImageError


@pytest.fixture(scope="module")
def rgb(afew_frames):
    return afew_frames[0]


def test_rgb8_passes_through_unchanged(rgb):
    out = as_rgb(rgb)
    assert out.dtype == np.uint8 and out.shape == rgb.shape and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize(
    "encoding,make",
    [
        ("bgr8", lambda x: x[:, :, ::-1]),
        ("rgba8", lambda x: np.dstack([x, np.full(x.shape[:2], 7, np.uint8)])),
        ("bgra8", lambda x: np.dstack([x[:, :, ::-1], np.full(x.shape[:2], 200, np.uint8)])),
    ],
)
def test_colour_encodings_give_the_same_rgb(rgb, encoding, make):
    out = as_rgb(make(rgb), encoding)
    assert out.flags.c_contiguous and out.shape == rgb.shape
    np.testing.assert_array_equal(out, rgb)


def test_mono8_replicates_the_grey_channel(rgb):
    grey = rgb[:, :, 1].copy()
    for image, encoding in ((grey, "mono8"), (grey[:, :, None], "mono8"), (grey, "rgb8"), (grey, "8UC1")):
        out = as_rgb(image, encoding)
        assert out.shape == grey.shape + (3,)
        for c in range(3):
            np.testing.assert_array_equal(out[:, :, c], grey)


def test_mono16_is_stretched_over_its_own_range():
    # A 12-bit sensor image: values 100..4000 use only the low bits of uint16.
    image = np.array([[100, 4000], [2050, 100]], dtype=np.uint16)
    out = as_rgb(image, "mono16")
    np.testing.assert_array_equal(out[:, :, 0], [[0, 255], [128, 0]])
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 2])
    constant = as_rgb(np.full((4, 4), 999, np.uint16), "16UC1")
    assert constant.shape == (4, 4, 3) and not constant.any()


def test_non_contiguous_and_read_only_inputs_are_copied(rgb):
    strided = rgb[::2, ::3]
    assert not strided.flags.c_contiguous
    out = as_rgb(strided)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, strided)
    frozen = rgb[:, :, ::-1].copy()
    frozen.setflags(write=False)
    np.testing.assert_array_equal(as_rgb(frozen, "bgr8"), rgb)
    np.testing.assert_array_equal(as_rgb(frozen[::2, ::2], "bgr8"), rgb[::2, ::2])


@pytest.mark.parametrize(
    "image,encoding,match",
    [
        (np.zeros((0, 10, 3), np.uint8), "rgb8", r"image is empty .*\(0, 10, 3\)"),
        (np.zeros((10, 0), np.uint8), "mono8", r"image is empty"),
        (np.zeros((0,), np.uint8), "rgb8", r"2 \(H, W\) or 3 \(H, W, C\) dimensions"),
        (np.zeros((2, 4, 4, 3), np.uint8), "rgb8", r"dimensions, got an array of shape \(2, 4, 4, 3\)"),
        (np.zeros((4, 4, 3)), "rgb8", r"needs dtype uint8, got .*float64"),
        (np.zeros((4, 4, 3), np.int32), "bgr8", r"needs dtype uint8, got .*int32"),
        (np.zeros((4, 4), np.uint8), "mono16", r"needs dtype uint16"),
        (np.zeros((4, 4, 3), np.uint16), "rgb8", r"needs dtype uint8"),
        (np.zeros((4, 4, 2), np.uint8), "rgb8", r"'rgb8' needs 3 channel\(s\), got .*\(4, 4, 2\)"),
        (np.zeros((4, 4, 5), np.uint8), "rgba8", r"'rgba8' needs 4 channel"),
        (np.zeros((4, 4, 3), np.uint8), "mono8", r"'mono8' needs 1 channel"),
        (np.zeros((4, 4, 3), np.uint8), "yuv422", r"'yuv422' is not supported; accepted: rgb8, bgr8"),
        ([[0, 1], [2, 3]], "rgb8", r"must be a numpy array, got list"),
    ],
)
def test_bad_input_is_rejected_with_a_specific_message(image, encoding, match):
    with pytest.raises(InvalidImageError, match=match):
        as_rgb(image, encoding)


def test_supported_encodings_all_convert():
    for encoding in SUPPORTED_ENCODINGS:
        channels = {"rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 1}.get(encoding, 3)
        dtype = np.uint16 if encoding == "mono16" else np.uint8
        out = as_rgb(np.ones((3, 5, channels), dtype), encoding)
        assert out.shape == (3, 5, 3) and out.dtype == np.uint8
