"""sensor_msgs/Image and sensor_msgs/CompressedImage -> ``(H, W, 3)`` uint8 RGB.

Duck-typed: they read only the message fields, so they work on rclpy messages on the
robot and on rosbags dataclasses in the offline tools alike.

Why not cv_bridge: it is a compiled ROS package (Boost.Python, pinned to the distro's
OpenCV and numpy), so the bag tools could not use it without a ROS install, and it would
give the node a second, differently behaving conversion. Here the row padding (``step``)
and the byte order of 16-bit images (``is_bigendian``) are handled explicitly and every
malformed message raises :class:`~ros2_affect.errors.InvalidImageError` saying what is
wrong, instead of crashing or producing a shifted image. The final channel conversion is
:func:`ros2_affect.core.image.as_rgb`, the one gate of the pipeline.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import cv2
import numpy as np

from ros2_affect.core.image import as_rgb, encoded_image_size
from ros2_affect.errors import InvalidImageError

#: encoding -> (channels, bytes per channel) of the raw encodings accepted.
RAW_LAYOUTS: Dict[str, Tuple[int, int]] = {
    "rgb8": (3, 1),
    "bgr8": (3, 1),
    "rgba8": (4, 1),
    "bgra8": (4, 1),
    "mono8": (1, 1),
    "mono16": (1, 2),
    "8UC1": (1, 1),
    "16UC1": (1, 2),
}

#: Compression names accepted in CompressedImage.format (image_transport's compressed plugin).
COMPRESSED_FORMATS = ("jpeg", "png")

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

#: Largest CompressedImage accepted, in pixels (8192 x 8192, beyond any robot camera). The
#: size is read from the JPEG/PNG header before decoding: a few KB claiming 20000x20000
#: pixels would otherwise make OpenCV allocate and fill 1.2 GB (seconds of CPU, and an OOM
#: kill on a small robot computer) before it notices that the data ends.
MAX_COMPRESSED_PIXELS = 8192 * 8192

def _check_header_size(buf: np.ndarray, kind: str, fmt: str) -> None:
    # The header parser image files use too (core.image): one reading of JPEG/PNG headers.
    _, size = encoded_image_size(buf[:65536].tobytes())  # headers (EXIF thumbnails too) fit in 64 KB
    if size is None:
        raise InvalidImageError(
            f"CompressedImage ({fmt!r}, {buf.size} bytes) cannot be decoded: no {kind} "
            f"{'frame header (SOF)' if kind == 'JPEG' else 'IHDR chunk'} before the image data; "
            f"the data is corrupt or truncated"
        )
    width, height = size
    if width < 1 or height < 1 or width * height > MAX_COMPRESSED_PIXELS:
        raise InvalidImageError(
            f"CompressedImage ({fmt!r}, {buf.size} bytes): {kind} header says {width}x{height} pixels; "
            f"accepted are images of at least 1x1 and at most {MAX_COMPRESSED_PIXELS} pixels (8192x8192); "
            f"the data is corrupt, or lower the camera resolution"
        )


def _as_bytes(data: Any) -> np.ndarray:
    """The ``data`` field (bytes, array.array('B'), numpy array or list) as a flat uint8 array, no copy if possible."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise InvalidImageError(f"image data has dtype {data.dtype}; expected uint8 bytes")
        return data.reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:  # a plain list of ints (some client libraries)
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def image_msg_to_rgb(msg: Any) -> np.ndarray:
    """Convert a sensor_msgs/Image to ``(H, W, 3)`` uint8 RGB.

    Args:
        msg: any object with ``height``, ``width``, ``encoding``, ``is_bigendian``,
            ``step`` and ``data`` (rclpy or rosbags message). Accepted encodings:
            rgb8, bgr8, rgba8, bgra8, mono8, mono16 (and 8UC1, 16UC1). Rows may be
            padded (``step`` > ``width * bytes_per_pixel``); 16-bit data honours
            ``is_bigendian``.

    Returns:
        ``(H, W, 3)`` uint8 RGB, C-contiguous (mono16 is stretched to 8 bits by
        :func:`~ros2_affect.core.image.as_rgb`).

    Raises:
        InvalidImageError: unknown encoding, zero size, ``step`` smaller than a row,
            or ``data`` shorter or longer than ``step * height``.
    """
    encoding = str(msg.encoding)
    if encoding not in RAW_LAYOUTS:
        raise InvalidImageError(
            f"image encoding {encoding!r} is not supported; accepted: {', '.join(RAW_LAYOUTS)}; "
            f"configure the camera driver for one of them or use image/compressed (compressed:=true)"
        )
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise InvalidImageError(f"image is empty ({width}x{height} pixels); expected width and height of at least 1")
    channels, depth = RAW_LAYOUTS[encoding]
    row_bytes = width * channels * depth
    if step < row_bytes:
        raise InvalidImageError(
            f"image step {step} is smaller than one row of {width} {encoding} pixels ({row_bytes} bytes); "
            f"the message header is inconsistent (step must be >= width * bytes per pixel)"
        )
    buf = _as_bytes(msg.data)
    expected = step * height
    if buf.size < expected:
        raise InvalidImageError(
            f"image data is truncated: {buf.size} bytes for {width}x{height} {encoding} with step {step} "
            f"(expected step * height = {expected})"
        )
    if buf.size > expected:
        raise InvalidImageError(
            f"image data has {buf.size} bytes but {width}x{height} {encoding} with step {step} needs "
            f"step * height = {expected}; height or step in the message is wrong"
        )
    rows = buf.reshape(height, step)[:, :row_bytes]
    if depth == 2:
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
        pixels = np.ascontiguousarray(rows).view(dtype).astype(np.uint16, copy=False)
    else:
        pixels = rows
    return as_rgb(pixels.reshape(height, width, channels), encoding)


def _compression_of(fmt: str) -> str:
    """``"rgb8; jpeg compressed bgr8"`` -> ``"jpeg"``; ``"png"`` -> ``"png"``; ``""`` -> ``""``."""
    text = fmt.strip().lower()
    if ";" in text:
        text = text.split(";", 1)[1].strip()
    word = text.split()[0] if text else ""
    return {"jpg": "jpeg"}.get(word, word)


def compressed_msg_to_rgb(msg: Any) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (JPEG or PNG) to ``(H, W, 3)`` uint8 RGB.

    Args:
        msg: any object with ``format`` and ``data``. ``format`` as written by
            image_transport's compressed plugin (``"rgb8; jpeg compressed bgr8"``,
            ``"mono16; png compressed mono16"``) or plain ``"jpeg"``/``"png"``; an empty
            format is accepted and the data's signature decides.

    Returns:
        ``(H, W, 3)`` uint8 RGB. 8-bit colour is decoded as BGR(A) by OpenCV whatever the
        original encoding was (image_transport always compresses colour as bgr8), so the
        channel order is always right; 16-bit mono PNG is stretched to 8 bits.

    Raises:
        InvalidImageError: empty data, a format other than JPEG/PNG (e.g. compressedDepth,
            theora), bytes that are not a JPEG/PNG, or a JPEG without its end marker
            (truncated in transit: OpenCV would return a half-grey image).
    """
    fmt = str(msg.format)
    if "compresseddepth" in fmt.lower().replace(" ", ""):
        raise InvalidImageError(
            f"CompressedImage format {fmt!r} is a depth image (compressedDepth); expected a colour or mono "
            f"camera image ({', '.join(COMPRESSED_FORMATS)}); subscribe to the colour camera's topic"
        )
    compression = _compression_of(fmt)
    if compression and compression not in COMPRESSED_FORMATS:
        raise InvalidImageError(
            f"CompressedImage format {fmt!r} is not supported; accepted: {', '.join(COMPRESSED_FORMATS)} "
            f"(e.g. 'jpeg', 'rgb8; jpeg compressed bgr8'); republish with image_transport's compressed plugin"
        )
    buf = _as_bytes(msg.data)
    if buf.size == 0:
        raise InvalidImageError(f"CompressedImage ({fmt!r}) has no data; expected JPEG or PNG bytes")
    head = buf[:8].tobytes()
    if head.startswith(_JPEG_MAGIC):
        # A JPEG ends with the EOI marker FFD9 (possibly followed by a few padding bytes).
        if b"\xff\xd9" not in buf[-64:].tobytes():
            raise InvalidImageError(
                f"CompressedImage JPEG of {buf.size} bytes has no end-of-image marker; the data is truncated"
            )
        _check_header_size(buf, "JPEG", fmt)
    elif not head.startswith(_PNG_MAGIC):
        raise InvalidImageError(
            f"CompressedImage ({fmt!r}, {buf.size} bytes) is neither JPEG nor PNG data (starts with {head.hex()}); "
            f"expected JPEG or PNG bytes"
        )
    else:
        _check_header_size(buf, "PNG", fmt)
    try:
        decoded = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise InvalidImageError(f"CompressedImage ({fmt!r}, {buf.size} bytes) cannot be decoded: {exc}") from None
    if decoded is None or decoded.size == 0:
        raise InvalidImageError(
            f"CompressedImage ({fmt!r}, {buf.size} bytes) cannot be decoded; the data is corrupt or truncated"
        )
    if decoded.dtype == np.uint16 and decoded.ndim == 3:
        # 16-bit colour PNG: keep the high byte (as image_transport's bgr16 -> bgr8 would).
        decoded = np.right_shift(decoded, 8).astype(np.uint8)
    if decoded.ndim == 2:
        encoding = "mono16" if decoded.dtype == np.uint16 else "mono8"
    else:
        encoding = {3: "bgr8", 4: "bgra8"}.get(decoded.shape[2], "")
        if not encoding:
            raise InvalidImageError(
                f"CompressedImage ({fmt!r}) decoded to {decoded.shape[2]} channels; expected 1, 3 or 4"
            )
    return as_rgb(decoded, encoding)
