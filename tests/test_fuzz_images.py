"""Property-based tests of the image gates: ``as_rgb`` and the ROS message conversions.

Every input either converts to ``(H, W, 3)`` uint8 RGB or is rejected with an
:class:`InvalidImageError` whose message says what is wrong; nothing else may escape
(no cv2.error, no numpy ValueError, no crash, no multi-GB allocation). The compressed
cases start from real encoded frames (an AFEW-VA frame, JPEG and PNG) and truncate or
corrupt them; the raw cases take a real frame's bytes and lie about the header fields.
Example counts are kept small (CI has two cores); deadlines are off because the shared
machine's timing is noisy.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, Dict, List

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ros2_affect.core.image import SUPPORTED_ENCODINGS, as_rgb
from ros2_affect.errors import InvalidImageError
from ros2_affect.msgs.conversions import RAW_LAYOUTS, compressed_msg_to_rgb, image_msg_to_rgb
from ros2_affect.msgs.msg_types import create_typestore

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_STORE = create_typestore("humble")
_Image = _STORE.types["sensor_msgs/msg/Image"]
_CompressedImage = _STORE.types["sensor_msgs/msg/CompressedImage"]
_Header = _STORE.types["std_msgs/msg/Header"]
_Time = _STORE.types["builtin_interfaces/msg/Time"]


def _header() -> Any:
    return _Header(stamp=_Time(sec=1, nanosec=0), frame_id="cam")


def _image_msg(height: int, width: int, encoding: str, step: int, data: Any, bigendian: int = 0) -> Any:
    return _Image(header=_header(), height=height, width=width, encoding=encoding, is_bigendian=bigendian,
                  step=step, data=data)


def _compressed_msg(fmt: str, data: Any) -> Any:
    return _CompressedImage(header=_header(), format=fmt, data=data)


@pytest.fixture(scope="module")
def real(afew_frames: List[np.ndarray]) -> Dict[str, Any]:
    """A real face frame, downscaled (fuzzing speed), raw and JPEG/PNG-encoded."""
    small = cv2.resize(afew_frames[0], (96, 80), interpolation=cv2.INTER_AREA)
    bgr = np.ascontiguousarray(small[:, :, ::-1])
    jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    png = cv2.imencode(".png", bgr)[1].tobytes()
    return {"rgb": small, "jpeg": jpeg, "png": png}


def _check_rgb(out: Any) -> None:
    assert isinstance(out, np.ndarray)
    assert out.ndim == 3 and out.shape[2] == 3 and out.shape[0] >= 1 and out.shape[1] >= 1
    assert out.dtype == np.uint8 and out.flags["C_CONTIGUOUS"]


# -- as_rgb ------------------------------------------------------------------------------------

_DTYPES = [np.uint8, np.uint16, np.int8, np.float32, np.float64, np.bool_, np.int32]


@FUZZ
@given(
    shape=st.lists(st.integers(0, 6), min_size=0, max_size=4),
    dtype=st.sampled_from(_DTYPES),
    encoding=st.one_of(st.sampled_from(SUPPORTED_ENCODINGS + ("8UC1", "16UC1")), st.text(max_size=8)),
    transpose=st.booleans(),
)
def test_as_rgb_converts_exactly_the_valid_inputs(shape: List[int], dtype: Any, encoding: str, transpose: bool) -> None:
    image = np.zeros(shape, dtype=dtype)
    if transpose and image.ndim >= 2:
        image = np.swapaxes(image, 0, 1)  # non-contiguous views must be accepted too
    canonical = {"8UC1": "mono8", "16UC1": "mono16"}.get(encoding, encoding)
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 1}.get(canonical)
    valid = channels is not None and image.ndim in (2, 3) and image.size > 0
    if valid and image.ndim == 2:
        want_dtype = np.uint16 if canonical == "mono16" else np.uint8
        valid = image.dtype == want_dtype
    elif valid:
        want_dtype = np.uint16 if canonical == "mono16" else np.uint8
        valid = image.shape[2] == channels and image.dtype == want_dtype
    if valid:
        out = as_rgb(image, encoding)
        _check_rgb(out)
        assert out.shape[:2] == image.shape[:2]
    else:
        with pytest.raises(
            InvalidImageError,
            match=r"not supported; accepted|must have 2 \(H, W\) or 3 \(H, W, C\) dimensions|is empty|"
            r"needs \d channel\(s\)|needs dtype",
        ):
            as_rgb(image, encoding)


@FUZZ
@given(obj=st.one_of(st.none(), st.integers(), st.binary(max_size=16), st.lists(st.integers(0, 255), max_size=12)))
def test_as_rgb_rejects_non_arrays(obj: Any) -> None:
    with pytest.raises(InvalidImageError, match=r"image must be a numpy array, got \w+"):
        as_rgb(obj)


# -- sensor_msgs/Image -------------------------------------------------------------------------


@FUZZ
@given(
    encoding=st.one_of(st.sampled_from(sorted(RAW_LAYOUTS)), st.sampled_from(["yuv422", "bayer_rggb8", "", "RGB8"])),
    d_height=st.integers(-80, 40),
    d_width=st.integers(-96, 40),
    d_step=st.integers(-300, 300),
    bigendian=st.integers(0, 1),
    container=st.sampled_from(["bytes", "numpy", "list"]),
)
def test_image_msg_with_lying_header_is_converted_or_rejected(
    real: Dict[str, Any], encoding: str, d_height: int, d_width: int, d_step: int, bigendian: int, container: str
) -> None:
    rgb = real["rgb"]
    raw = rgb.reshape(-1)  # the real frame's rgb8 bytes, 80 rows of 96 * 3 bytes
    height, width = rgb.shape[0] + d_height, rgb.shape[1] + d_width
    step = rgb.shape[1] * 3 + d_step
    data: Any = {"bytes": raw.tobytes(), "numpy": raw, "list": raw[:4000].tolist()}[container]
    msg = _image_msg(height, width, encoding, step, data, bigendian)
    size = len(data)
    layout = RAW_LAYOUTS.get(encoding)
    if layout is None:
        with pytest.raises(InvalidImageError, match=rf"image encoding {encoding!r} is not supported; accepted: rgb8"):
            image_msg_to_rgb(msg)
    elif height <= 0 or width <= 0:
        with pytest.raises(InvalidImageError, match=rf"image is empty \({width}x{height} pixels\)"):
            image_msg_to_rgb(msg)
    elif step < width * layout[0] * layout[1]:
        with pytest.raises(InvalidImageError, match=rf"image step {step} is smaller than one row of {width}"):
            image_msg_to_rgb(msg)
    elif size < step * height:
        with pytest.raises(InvalidImageError, match=rf"image data is truncated: {size} bytes for {width}x{height}"):
            image_msg_to_rgb(msg)
    elif size > step * height:
        with pytest.raises(InvalidImageError, match=rf"has {size} bytes but {width}x{height} .* height or step"):
            image_msg_to_rgb(msg)
    else:
        out = image_msg_to_rgb(msg)
        _check_rgb(out)
        assert out.shape == (height, width, 3)
        if encoding == "rgb8" and step == width * 3:
            np.testing.assert_array_equal(out.reshape(-1), raw[: height * width * 3])


@pytest.mark.parametrize("height, width", [(20000, 20000), (1, 2**31 - 1), (2**31 - 1, 2**31 - 1)])
def test_huge_image_header_with_little_data_is_rejected_before_allocating(
    real: Dict[str, Any], height: int, width: int
) -> None:
    # step * height would be terabytes; the size check must come before any allocation.
    msg = _image_msg(height, width, "rgb8", width * 3, real["rgb"].tobytes())
    with pytest.raises(InvalidImageError, match=rf"image data is truncated: 23040 bytes for {width}x{height} rgb8"):
        image_msg_to_rgb(msg)


# -- sensor_msgs/CompressedImage ---------------------------------------------------------------


def _jpeg_sof_offset(data: bytes) -> int:
    """Offset of the baseline SOF0 segment in an OpenCV-written JPEG."""
    offset = data.find(b"\xff\xc0")
    assert offset > 0
    return offset


def _with_png_size(png: bytes, width: int, height: int) -> bytes:
    """``png`` with its IHDR width/height replaced (and the chunk CRC recomputed, so only the size lies)."""
    b = bytearray(png)
    b[16:24] = struct.pack(">II", width, height)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    return bytes(b)


def _with_jpeg_size(jpeg: bytes, width: int, height: int) -> bytes:
    b = bytearray(jpeg)
    sof = _jpeg_sof_offset(jpeg)
    b[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(b)


@FUZZ
@given(kind=st.sampled_from(["jpeg", "png"]), cut=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_real_images_are_rejected(real: Dict[str, Any], kind: str, cut: float) -> None:
    data = real[kind]
    truncated = data[: int(len(data) * cut)]
    # A JPEG's last bytes are its end marker and a PNG's the IEND chunk: any cut loses them.
    assume(len(truncated) < len(data) - (2 if kind == "jpeg" else 12))
    with pytest.raises(
        InvalidImageError,
        match=r"has no data|no end-of-image marker; the data is truncated|cannot be decoded|neither JPEG nor PNG|"
        r"header is (truncated|corrupt)",
    ):
        compressed_msg_to_rgb(_compressed_msg(kind, truncated))


@FUZZ
@given(
    kind=st.sampled_from(["jpeg", "png"]),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=8),
)
def test_corrupted_real_images_decode_or_are_rejected(real: Dict[str, Any], kind: str, flips: List[Any]) -> None:
    data = bytearray(real[kind])
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    try:
        out = compressed_msg_to_rgb(_compressed_msg(kind, bytes(data)))
    except InvalidImageError as exc:
        assert "CompressedImage" in str(exc)
    else:
        # JPEG has no checksum, so some corruptions decode to a damaged picture; it must
        # still be a proper image no larger than the limit.
        _check_rgb(out)
        assert out.shape[0] * out.shape[1] <= 8192 * 8192


@FUZZ
@given(data=st.binary(min_size=0, max_size=300), prefix=st.sampled_from([b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"]),
       fmt=st.sampled_from(["jpeg", "png", "", "rgb8; jpeg compressed bgr8"]))
def test_random_bytes_never_escape_as_other_errors(data: bytes, prefix: bytes, fmt: str) -> None:
    try:
        out = compressed_msg_to_rgb(_compressed_msg(fmt, prefix + data))
    except InvalidImageError as exc:
        assert "CompressedImage" in str(exc)
    else:
        _check_rgb(out)


@pytest.mark.parametrize("kind", ["jpeg", "png"])
@pytest.mark.parametrize("width, height", [(20000, 20000), (65535, 65535)])
def test_huge_compressed_header_is_rejected_before_decoding(real: Dict[str, Any], kind: str, width: int,
                                                            height: int) -> None:
    # A few KB claiming 400M+ pixels: OpenCV would allocate (and zero) >1 GB before noticing
    # the data ends. The header is read first and the message rejected.
    resize = _with_jpeg_size if kind == "jpeg" else _with_png_size
    data = resize(real[kind], width, height)
    with pytest.raises(InvalidImageError, match=rf"{kind.upper()} header says {width}x{height} pixels.*at most"):
        compressed_msg_to_rgb(_compressed_msg(kind, data))


@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_zero_size_compressed_header_is_rejected(real: Dict[str, Any], kind: str) -> None:
    data = _with_jpeg_size(real["jpeg"], 0, 80) if kind == "jpeg" else _with_png_size(real["png"], 0, 80)
    with pytest.raises(InvalidImageError, match=rf"{kind.upper()} header says 0x80 pixels"):
        compressed_msg_to_rgb(_compressed_msg(kind, data))


@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_real_images_within_the_limit_still_decode(real: Dict[str, Any], kind: str) -> None:
    out = compressed_msg_to_rgb(_compressed_msg(kind, real[kind]))
    _check_rgb(out)
    assert out.shape == real["rgb"].shape
    if kind == "png":
        np.testing.assert_array_equal(out, real["rgb"])
