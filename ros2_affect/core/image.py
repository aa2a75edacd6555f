"""Image validation and conversion to the pipeline's one image format.

Every stage downstream of the camera works on ``(H, W, 3)`` uint8 RGB, C-contiguous
(:class:`ros2_affect.core.types.Frame`). :func:`as_rgb` is the single gate: it turns
any supported ROS image encoding into that format, or raises
:class:`~ros2_affect.errors.InvalidImageError` naming what is wrong and what is accepted.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

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


# -- image files: the declared size is checked before anything is decoded ---------------------------

#: Largest image file accepted, in pixels (16384 x 8192 = 134 MP: a 108 MP phone photo fits). The
#: size is read from the file's header first: a PNG of a few hundred KB can declare 30000x30000
#: pixels, and decoding it would allocate gigabytes (a crash on a small computer) before the
#: decoder notices anything.
MAX_IMAGE_PIXELS = 16384 * 8192

#: JPEG start-of-frame markers (baseline, extended, progressive, lossless, arithmetic).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> Optional[Tuple[int, int]]:
    """``(width, height)`` from the first SOF segment, or None when none precedes the scan."""
    i, n = 2, min(len(data), 1 << 20)  # headers (incl. EXIF thumbnails) fit in the first MB
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # segments without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        if marker in _JPEG_SOF:
            if i + 9 > n:
                return None
            return (data[i + 7] << 8) | data[i + 8], (data[i + 5] << 8) | data[i + 6]
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
    return None


def _jpeg_complete(data: bytes) -> bool:
    """Whether the JPEG's image data ends with an end-of-image marker (FFD9).

    Usually the last bytes; but phones append data after it (motion photos, maker
    trailers), so the marker is searched after the first start-of-scan (entropy-coded data
    cannot contain FFD9, and an EXIF thumbnail's own marker lies before the scan).
    """
    if b"\xff\xd9" in data[-64:]:
        return True
    i, n = 2, len(data)
    while i + 4 <= n and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD8:
            i += 1 if marker == 0xFF else 2
            continue
        if marker == 0xDA:
            return data.find(b"\xff\xd9", i) >= 0
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
    return False


def _tiff_size(data: bytes) -> Optional[Tuple[int, int]]:
    """``(width, height)`` from the first IFD's ImageWidth/ImageLength tags, or None."""
    order = "<" if data[:2] == b"II" else ">"
    try:
        (offset,) = struct.unpack_from(order + "I", data, 4)
        (count,) = struct.unpack_from(order + "H", data, offset)
        size: Dict[int, int] = {}
        for k in range(count):
            tag, kind, _, value = struct.unpack_from(order + "HHI4s", data, offset + 2 + 12 * k)
            if tag in (256, 257):
                size[tag] = struct.unpack_from(order + ("H" if kind == 3 else "I"), value)[0]
    except struct.error:
        return None
    return (size[256], size[257]) if len(size) == 2 else None


def _pnm_size(data: bytes) -> Optional[Tuple[int, int]]:
    """``(width, height)`` of a PBM/PGM/PPM header (comments allowed), or None."""
    text = re.sub(rb"#[^\n]*", b" ", data[2:4096])
    parts = text.split()
    if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    return int(parts[0]), int(parts[1])


def _webp_size(data: bytes) -> Optional[Tuple[int, int]]:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and len(data) >= 30:
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    return None


def encoded_image_size(data: bytes) -> Tuple[str, Optional[Tuple[int, int]]]:
    """The format of encoded image bytes and the ``(width, height)`` its header declares.

    Knows JPEG, PNG, BMP, GIF, WebP, TIFF and PBM/PGM/PPM; returns ``("unknown", None)`` for
    anything else and ``(format, None)`` for a header too damaged to read.
    """
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG", _jpeg_size(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        ok = len(data) >= 24 and data[12:16] == b"IHDR"
        return "PNG", (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) if ok else None
    if data[:2] == b"BM":
        if len(data) < 26:
            return "BMP", None
        width, height = struct.unpack_from("<ii", data, 18)
        return "BMP", (abs(width), abs(height))
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF", struct.unpack_from("<HH", data, 6) if len(data) >= 10 else None
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP", _webp_size(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF", _tiff_size(data)
    if len(data) > 2 and data[:1] == b"P" and data[1:2] in b"123456":
        return "PNM", _pnm_size(data)
    return "unknown", None


def decode_image_file(path: Union[str, Path], max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an image file into ``(H, W, 3)`` uint8 **BGR** (OpenCV's order), safely.

    Before decoding, the size the file's header declares must be at most ``max_pixels``
    (a small file can declare a huge image), and a JPEG must end with its end-of-image
    marker (a truncated JPEG decodes to a half-grey image without any error).

    Raises:
        InvalidImageError: unreadable, not an image, a header declaring too many (or zero)
            pixels, a truncated JPEG, or data OpenCV cannot decode; the message names the file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidImageError(f"image {str(path)!r} cannot be read ({exc.strerror}); check the file") from None
    kind, size = encoded_image_size(data)
    if size is not None:
        width, height = size
        if width < 1 or height < 1 or width * height > max_pixels:
            raise InvalidImageError(
                f"image {str(path)!r}: its {kind} header declares {width}x{height} pixels; accepted are 1 to "
                f"{max_pixels / 1e6:.0f} million pixels, so it was not decoded; the file is corrupt, or downscale it"
            )
    elif kind != "unknown":
        raise InvalidImageError(
            f"image {str(path)!r}: its {kind} header is damaged (no image size), so it is not a readable image; "
            "replace the file"
        )
    if kind == "JPEG" and not _jpeg_complete(data):
        raise InvalidImageError(
            f"image {str(path)!r}: a truncated JPEG ({len(data)} bytes, no end-of-image marker) would decode half "
            "grey, so it is not used; copy the file again"
        )
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR) if data else None
    if bgr is None or bgr.size == 0:
        raise InvalidImageError(
            f"image {str(path)!r} is not a readable image (OpenCV could not decode it: not an image, or truncated); "
            "remove or replace it"
        )
    out: np.ndarray = bgr
    return out


def check_declared_size(width: float, height: float, source: str, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Refuse a frame size declared by a container or device (a video's stream header) before
    any frame is decoded; sizes of 0 (not declared) pass, the frames are checked when decoded.

    Raises:
        InvalidImageError: more than ``max_pixels`` pixels declared, naming ``source``.
    """
    if width * height > max_pixels:
        raise InvalidImageError(
            f"{source} declares frames of {int(width)}x{int(height)} pixels; accepted are at most "
            f"{max_pixels / 1e6:.0f} million pixels, so nothing was decoded; the file is corrupt, or downscale it"
        )


def check_capture_size(capture: Any, source: str) -> None:
    """:func:`check_declared_size` for an open ``cv2.VideoCapture``; releases it when refused.

    Raises:
        InvalidImageError: as :func:`check_declared_size`.
    """
    import cv2

    try:
        check_declared_size(
            capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0, capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0, source
        )
    except InvalidImageError:
        capture.release()
        raise
