"""Image validation and conversion to the pipeline's one image format.

Every stage downstream of the camera works on ``(H, W, 3)`` uint8 RGB, C-contiguous
(:class:`ros2_affect.core.types.Frame`). :func:`as_rgb` is the single gate: it turns
any supported ROS image encoding into that format, or raises
:class:`~ros2_affect.errors.InvalidImageError` naming what is wrong and what is accepted.
"""

from __future__ import annotations

from typing import Dict, Tuple

import cv2
import numpy as np

from ros2_affect.errors import InvalidImageError

#: Encodings :func:`as_rgb` accepts, as named by ``sensor_msgs/Image.encoding``.
SUPPORTED_ENCODINGS: Tuple[str, ...] = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16")

#: Unambiguous aliases (OpenCV-style type names used by some drivers).
_ALIASES: Dict[str, str] = {"8UC1": "mono8", "16UC1": "mono16"}

#: encoding -> (channels, dtype)
_LAYOUT: Dict[str, Tuple[int, np.dtype]] = {
    "rgb8": (3, np.dtype(np.uint8)),
    "bgr8": (3, np.dtype(np.uint8)),
    "rgba8": (4, np.dtype(np.uint8)),
    "bgra8": (4, np.dtype(np.uint8)),
    "mono8": (1, np.dtype(np.uint8)),
    "mono16": (1, np.dtype(np.uint16)),
}


def _describe(image: np.ndarray) -> str:
    return f"array of shape {image.shape} and dtype {image.dtype}"


def as_rgb(image: np.ndarray, encoding: str = "rgb8") -> np.ndarray:
    """Convert an image of a supported encoding to ``(H, W, 3)`` uint8 RGB, C-contiguous.

    Args:
        image: ``(H, W, C)`` or ``(H, W)`` array. ``C`` must match ``encoding`` (3 for
            rgb8/bgr8, 4 for rgba8/bgra8, 1 for mono8/mono16). A 2-D array is always read
            as single-channel: mono8 when uint8 (whatever 8-bit ``encoding`` was given,
            since a 2-D array cannot be colour), mono16 when ``encoding`` is mono16.
            Non-contiguous and read-only arrays are accepted (they are copied).
        encoding: one of :data:`SUPPORTED_ENCODINGS` (or the aliases 8UC1, 16UC1).

    Returns:
        ``(H, W, 3)`` uint8 RGB, C-contiguous. When the input already is contiguous
        rgb8 it is returned as is (not copied); treat it as read-only.

        mono16 is stretched from the image's own min..max range to 0..255 rather than
        shifted right by 8 bits: many 16-bit cameras (IR, 10/12-bit sensors) use only
        the low bits, and ``>> 8`` would leave such images nearly black and the
        detector blind. A constant image maps to all zeros.

    Raises:
        InvalidImageError: not an array, empty or zero-size, wrong number of
            dimensions, a channel count or dtype that does not match ``encoding``, or an
            unknown ``encoding``.
    """
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(
            f"image must be a numpy array, got {type(image).__name__}; decode the message into an (H, W, C) array first"
        )
    encoding_name = _ALIASES.get(encoding, encoding)
    if encoding_name not in _LAYOUT:
        raise InvalidImageError(
            f"image encoding {encoding!r} is not supported; accepted: {', '.join(SUPPORTED_ENCODINGS)} "
            f"(and {', '.join(_ALIASES)}); convert the image to one of them (e.g. with cv_bridge)"
        )
    if image.ndim not in (2, 3):
        raise InvalidImageError(f"image must have 2 (H, W) or 3 (H, W, C) dimensions, got an {_describe(image)}")
    if image.size == 0 or image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidImageError(f"image is empty ({_describe(image)}); expected height and width of at least 1 pixel")

    if image.ndim == 2:
        # A 2-D array can only be single-channel; 8-bit colour encodings fall back to mono8.
        if encoding_name != "mono16":
            encoding_name = "mono8"
        image = image[:, :, None]

    channels, dtype = _LAYOUT[encoding_name]
    if image.shape[2] != channels:
        raise InvalidImageError(
            f"image encoding {encoding_name!r} needs {channels} channel(s), got an {_describe(image)}; "
            f"pass the encoding that matches the data (3 channels: rgb8/bgr8, 4: rgba8/bgra8, 1: mono8/mono16)"
        )
    if image.dtype != dtype:
        raise InvalidImageError(
            f"image encoding {encoding_name!r} needs dtype {dtype}, got an {_describe(image)}; "
            f"convert it first (e.g. float 0..1 images: (img * 255).clip(0, 255).astype(np.uint8))"
        )

    if encoding_name == "rgb8":
        return np.ascontiguousarray(image)
    # cv2 needs contiguous input; ascontiguousarray copies only when necessary.
    src = np.ascontiguousarray(image)
    if encoding_name == "bgr8":
        return cv2.cvtColor(src, cv2.COLOR_BGR2RGB)
    if encoding_name == "rgba8":
        return cv2.cvtColor(src, cv2.COLOR_RGBA2RGB)
    if encoding_name == "bgra8":
        return cv2.cvtColor(src, cv2.COLOR_BGRA2RGB)
    if encoding_name == "mono16":
        src = _stretch_to_uint8(src[:, :, 0])
    else:
        src = src[:, :, 0]
    return cv2.cvtColor(np.ascontiguousarray(src), cv2.COLOR_GRAY2RGB)


def _stretch_to_uint8(mono16: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint16 -> ``(H, W)`` uint8, linearly from the image's min..max to 0..255."""
    low = int(mono16.min())
    high = int(mono16.max())
    if high == low:
        return np.zeros(mono16.shape, dtype=np.uint8)
    scaled = (mono16.astype(np.float32) - low) * (255.0 / (high - low))
    out: np.ndarray = np.rint(scaled).astype(np.uint8)
    return out
