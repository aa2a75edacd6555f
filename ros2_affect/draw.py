"""Annotated images: face boxes, track ids, expression label and confidence, a valence/arousal marker.

Used by ``ros2-affect run`` (and the node's debug image). Colours: green box for a
confirmed track, yellow for a new one. The marker is a small square next to the box:
its horizontal axis is valence (-1 left .. 1 right, labelled V), its vertical axis arousal
(1 top .. -1 bottom, labelled A), and the dot is the face's estimate (hollow when derived
from the classes), with its two values written under the square.

:func:`open_video_writer` picks the codec of annotated videos: H.264 where the installed
OpenCV has an encoder for it, else VP9 (both play in browsers), else MPEG-4 Part 2.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Tuple

import numpy as np

from ros2_affect.core.types import FaceResult, FrameResult
from ros2_affect.errors import ConfigError

LOG = logging.getLogger(__name__)

#: ``--video-codec`` name -> (fourcc, description), in the order ``auto`` tries them.
VIDEO_CODECS = {
    "h264": ("avc1", "H.264"),
    "vp9": ("vp09", "VP9"),
    "mp4v": ("mp4v", "MPEG-4 Part 2"),
}
#: Codecs that browsers and common players open (MPEG-4 Part 2 needs VLC or similar).
BROWSER_PLAYABLE = ("h264", "vp9")

CONFIRMED = (60, 200, 60)  # RGB
TENTATIVE = (230, 200, 40)
TEXT = (255, 255, 255)
EYES = (0, 170, 255)


def _scale_for(image: np.ndarray) -> float:
    """Line and font scale for the image size (readable from 320 px to 4K)."""
    return float(max(0.4, min(image.shape[:2]) / 720.0))


def _label(face: FaceResult) -> str:
    if face.affect is None:
        return face.track_id
    return f"{face.track_id} {face.affect.label} {face.affect.confidence:.0%}"


def va_marker_size(side: int, font_scale: float) -> Tuple[int, int]:
    """``(width, height)`` in pixels that :func:`_va_marker` draws for a square of ``side``."""
    import cv2

    (_, th), base = cv2.getTextSize("V+0.00", cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    return side, side + 2 * (th + base + 2)


def _va_marker(canvas: np.ndarray, face: FaceResult, origin: Tuple[int, int], side: int,
               font_scale: float = 0.35) -> None:
    import cv2

    affect = face.affect
    if affect is None:
        return
    x, y = origin
    font = cv2.FONT_HERSHEY_SIMPLEX
    small = font_scale * 0.85
    cv2.rectangle(canvas, (x, y), (x + side, y + side), (30, 30, 30), -1)
    cv2.rectangle(canvas, (x, y), (x + side, y + side), (200, 200, 200), 1)
    mid = side // 2
    cv2.line(canvas, (x + mid, y), (x + mid, y + side), (110, 110, 110), 1)
    cv2.line(canvas, (x, y + mid), (x + side, y + mid), (110, 110, 110), 1)
    # axis names at the positive ends: V(alence) right, A(rousal) top
    (vw, vh), _ = cv2.getTextSize("V", font, small, 1)
    cv2.putText(canvas, "V", (x + side - vw - 1, y + mid + vh + 2), font, small, (170, 170, 170), 1, cv2.LINE_AA)
    cv2.putText(canvas, "A", (x + mid + 2, y + vh + 1), font, small, (170, 170, 170), 1, cv2.LINE_AA)
    # the numbers under the square, on a dark band so they read on any image
    (tw, th), base = cv2.getTextSize("V+0.00", font, font_scale, 1)
    line_h = th + base + 2
    band_w = max(side, tw + 4)
    cv2.rectangle(canvas, (x, y + side + 1), (x + band_w, y + side + 1 + 2 * line_h), (30, 30, 30), -1)
    for row, (name, value) in enumerate((("V", affect.valence), ("A", affect.arousal))):
        cv2.putText(canvas, f"{name}{value:+.2f}", (x + 2, y + side + 1 + row * line_h + th + 1), font, font_scale,
                    (235, 235, 235), 1, cv2.LINE_AA)
    px = x + int(round((affect.valence + 1) / 2 * side))
    py = y + int(round((1 - affect.arousal) / 2 * side))
    radius = max(2, side // 10)
    # red for unpleasant, green for pleasant
    colour = (int(255 * (1 - affect.valence) / 2), int(255 * (1 + affect.valence) / 2), 60)
    cv2.circle(canvas, (px, py), radius, colour, 1 if affect.va_derived else -1, cv2.LINE_AA)


def annotate(image_rgb: np.ndarray, result: FrameResult) -> np.ndarray:
    """Draw ``result`` on a copy of ``image_rgb``.

    Args:
        image_rgb: ``(H, W, 3)`` uint8 RGB, the frame the result was computed on.
        result: the pipeline's output for that frame.

    Returns:
        ``(H, W, 3)`` uint8 RGB, annotated.
    """
    import cv2

    canvas: np.ndarray = np.array(image_rgb, dtype=np.uint8, order="C", copy=True)
    scale = _scale_for(canvas)
    thickness = max(1, int(round(2 * scale)))
    font = cv2.FONT_HERSHEY_SIMPLEX
    font_scale = 0.5 * scale
    for face in result.faces:
        colour = CONFIRMED if face.track_confirmed else TENTATIVE
        x1, y1, x2, y2 = (int(round(float(v))) for v in face.detection.bbox_xyxy_px)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        for ex, ey in face.detection.eyes_px:
            cv2.circle(canvas, (int(round(float(ex))), int(round(float(ey)))), thickness + 1, EYES, -1, cv2.LINE_AA)
        text = _label(face)
        (tw, th), base = cv2.getTextSize(text, font, font_scale, max(1, thickness - 1))
        ty = y1 - 4 if y1 - th - base - 4 >= 0 else y2 + th + 4
        cv2.rectangle(canvas, (x1, ty - th - base), (x1 + tw + 4, ty + base), colour, -1)
        cv2.putText(canvas, text, (x1 + 2, ty), font, font_scale, (0, 0, 0), max(1, thickness - 1), cv2.LINE_AA)
        side = max(24, int(round(48 * scale)))
        marker_font = max(0.3, 0.4 * scale)
        width, height = va_marker_size(side, marker_font)
        mx = x2 + 4 if x2 + 4 + width < canvas.shape[1] else max(0, x1 - 4 - width)
        _va_marker(canvas, face, (mx, max(0, min(y1, canvas.shape[0] - height))), side, marker_font)
    if result.faces_dropped:
        note = f"+{result.faces_dropped} faces not processed (max_faces)"
        cv2.putText(canvas, note, (8, canvas.shape[0] - 8), font, font_scale, TEXT, 1, cv2.LINE_AA)
    return canvas


def open_video_writer(path: Path, fps: float, size_wh: Tuple[int, int], codec: str = "auto") -> Tuple[Any, str]:
    """An open ``cv2.VideoWriter`` for ``path`` and the name of the codec it writes.

    ``auto`` tries H.264, then VP9 (both play in browsers and common players; the pip
    builds of OpenCV encode VP9 but not H.264, and VP9 encoding costs some 100-200 ms per
    640x480 frame on a small CPU), then MPEG-4 Part 2, and logs which one it took.

    Raises:
        ConfigError: an unknown ``codec``, or none of the codecs can be written here.
    """
    import cv2

    if codec != "auto" and codec not in VIDEO_CODECS:
        raise ConfigError(f"--video-codec {codec!r} is not accepted; choose auto, {', '.join(VIDEO_CODECS)}")
    names = list(VIDEO_CODECS) if codec == "auto" else [codec]
    for name in names:
        fourcc, description = VIDEO_CODECS[name]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), float(fps), tuple(size_wh))
        if writer.isOpened():
            if name not in BROWSER_PLAYABLE:
                LOG.warning(
                    "annotated video %s is %s: VLC and ffmpeg play it, browsers do not (this OpenCV build has no "
                    "H.264 or VP9 encoder)", Path(path).name, description,
                )
            elif codec == "auto" and name != names[0]:
                LOG.info("annotated video %s is %s (no H.264 encoder in this OpenCV build; --video-codec mp4v is "
                         "faster to write but browsers do not play it)", Path(path).name, description)
            return writer, description
        writer.release()
        Path(path).unlink(missing_ok=True)
    raise ConfigError(
        f"cannot write the video {path}: this OpenCV build has no encoder for "
        f"{' / '.join(VIDEO_CODECS[n][1] for n in names)} (or the folder is not writable); use --no-video, or "
        "--video-codec auto"
    )
