"""as_rgb: every supported encoding converts exactly; every kind of bad input gets a clear error.
decode_image_file: the declared size is checked before decoding, truncated JPEGs are refused."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ros2_affect.core.image import (
    SUPPORTED_ENCODINGS,
    as_rgb,
    check_declared_size,
    decode_image_file,
    encoded_image_size,
)
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


# -- image files: declared size before decoding, truncated JPEGs ----------------------------------------

SAMPLE_JPEG = Path(__file__).resolve().parents[2] / "ros2_affect" / "data" / "astronaut.jpg"


def huge_png(path: Path, width: int = 30000, height: int = 30000, rows: int = 2000) -> Path:
    """A real PNG declaring ``width`` x ``height`` pixels whose data holds only ``rows`` rows
    (a few hundred KB): decoding it would allocate width * height * 3 bytes first."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    idat = zlib.compress(b"\x00" * ((width * 3 + 1) * rows), 9)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".webp", ".tiff", ".ppm", ".pgm"])
def test_declared_size_is_read_from_every_format(suffix: str) -> None:
    image = cv2.imread(str(SAMPLE_JPEG))[:301, :417]
    ok, data = cv2.imencode(suffix, image if suffix != ".pgm" else image[:, :, 0])
    assert ok
    kind, size = encoded_image_size(data.tobytes())
    assert kind != "unknown" and size == (417, 301)


def test_a_png_declaring_30000x30000_is_refused_before_decoding(tmp_path: Path) -> None:
    path = huge_png(tmp_path / "huge.png")
    assert path.stat().st_size < 1_000_000
    with pytest.raises(InvalidImageError, match=r"huge.png': its PNG header declares 30000x30000 pixels; accepted are "
                                                 r"1 to 134 million pixels, so it was not decoded"):
        decode_image_file(path)
    with pytest.raises(InvalidImageError, match=r"declares frames of 16000x16000 pixels"):
        check_declared_size(16000.0, 16000.0, "video 'x'")
    check_declared_size(0, 0, "a camera that declares nothing")


def test_a_truncated_jpeg_is_refused_and_appended_data_is_not(tmp_path: Path) -> None:
    data = SAMPLE_JPEG.read_bytes()
    whole = decode_image_file(SAMPLE_JPEG)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    assert cv2.imread(str(truncated)) is not None, "OpenCV alone decodes it (half grey)"
    with pytest.raises(InvalidImageError, match=r"truncated.jpg': a truncated JPEG \(\d+ bytes, no end-of-image"):
        decode_image_file(truncated)
    # a phone's motion photo: a JPEG with a video appended after its end marker
    motion = tmp_path / "motion.jpg"
    motion.write_bytes(data + b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    assert np.array_equal(decode_image_file(motion), whole)
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("hello")
    with pytest.raises(InvalidImageError, match=r"notes.jpg' is not a readable image"):
        decode_image_file(not_an_image)
