"""Annotated images: face boxes, track ids, expression label and confidence, a valence/arousal marker.

Used by ``ros2-affect run`` (and the node's debug image). Colours: green box for a
confirmed track, yellow for a new one. The marker is a small square next to the box:
its horizontal axis is valence (-1 left .. 1 right), its vertical axis arousal (1 top ..
-1 bottom), and the dot is the face's estimate (hollow when derived from the classes).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from ros2_affect.core.types import FaceResult, FrameResult

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


def _va_marker(canvas: np.ndarray, face: FaceResult, origin: Tuple[int, int], side: int) -> None:
    import cv2

    affect = face.affect
    if affect is None:
        return
    x, y = origin
    cv2.rectangle(canvas, (x, y), (x + side, y + side), (30, 30, 30), -1)
    cv2.rectangle(canvas, (x, y), (x + side, y + side), (200, 200, 200), 1)
    mid = side // 2
    cv2.line(canvas, (x + mid, y), (x + mid, y + side), (110, 110, 110), 1)
    cv2.line(canvas, (x, y + mid), (x + side, y + mid), (110, 110, 110), 1)
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
        side = max(16, int(round(40 * scale)))
        mx = x2 + 4 if x2 + 4 + side < canvas.shape[1] else max(0, x1 - 4 - side)
        _va_marker(canvas, face, (mx, max(0, y1)), side)
    if result.faces_dropped:
        note = f"+{result.faces_dropped} faces not processed (max_faces)"
        cv2.putText(canvas, note, (8, canvas.shape[0] - 8), font, font_scale, TEXT, 1, cv2.LINE_AA)
    return canvas
