"""Face detection with MediaPipe BlazeFace (the MediaPipe Tasks ``FaceDetector``).

Input is ``(H, W, 3)`` uint8 RGB (other encodings go through
:func:`ros2_affect.core.image.as_rgb`, or pass ``encoding=`` to :meth:`detect`); output is
a list of :class:`~ros2_affect.core.types.FaceDetection` in pixels of the input image,
largest face first. MediaPipe's detector has no cap on the number of faces (its options
have no ``max_results``); the pipeline applies ``DetectorConfig.max_faces`` itself.

:data:`DETECTORS` has one entry per detector model, the name ``detector.model`` takes,
with the model asset it loads: ``short_range`` (faces within about 2 m, about 2-3 ms per
640x480 frame on one CPU core) and ``full_range`` (about 5 m, slower). Both are BlazeFace
models run by :class:`MediaPipeFaceDetector`; the registry is the one list of their names.
"""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401  (registers its shutdown hook before ours: see _close_all)
import threading
import weakref
from typing import List, Optional

import cv2
import numpy as np

from ros2_affect.assets import asset_path
from ros2_affect.config import DetectorConfig
from ros2_affect.core.image import as_rgb
from ros2_affect.core.types import FaceDetection
from ros2_affect.errors import ModelLoadError
from ros2_affect.registry import Registry

#: detector name (``detector.model``) -> the asset name of its model file.
DETECTORS: Registry[str] = Registry("face detector")
DETECTORS.register("short_range")("face_detection_short_range")
DETECTORS.register("full_range")("face_detection_full_range")
DETECTORS.freeze()

# MediaPipe's FaceDetector closes itself in __del__, which at interpreter exit runs after
# its ctypes helpers were torn down and prints "Exception ignored ... NoneType not
# callable". Its close() also goes through a concurrent.futures thread pool, which
# refuses new work once the interpreter starts shutting down threads ("cannot schedule
# new futures after shutdown", a traceback on every exit of a process that did not close
# its pipeline). So live detectors are closed from a threading-shutdown hook registered
# after concurrent.futures' own (those hooks run newest first), and from atexit as well.
_LIVE: weakref.WeakSet[MediaPipeFaceDetector] = weakref.WeakSet()


def _close_all() -> None:
    for detector in list(_LIVE):
        try:
            detector.close()
        except RuntimeError:  # the dispatcher already shut down: nothing left to release safely
            detector.abandon()


atexit.register(_close_all)
_register_thread_shutdown_hook = getattr(threading, "_register_atexit", None)
if _register_thread_shutdown_hook is not None:  # CPython 3.9+
    _register_thread_shutdown_hook(_close_all)


class MediaPipeFaceDetector:
    """BlazeFace via MediaPipe Tasks, IMAGE running mode.

    Args:
        config: thresholds and the downscale factor (``config.model`` picks the model).

    Raises:
        AssetMissingError: the model file is not provisioned.
        ModelLoadError: MediaPipe cannot load it.
    """

    def __init__(self, config: DetectorConfig) -> None:
        config.validate()
        self.config = config
        #: MediaPipe drops detections below this itself: a later config may raise min_score, not lower it.
        self.created_min_score = float(config.min_score)
        self.model_path = asset_path(DETECTORS.get(config.model))
        # Lazy import: mediapipe is heavy and only this stage needs it.
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions

        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=vision.RunningMode.IMAGE,
            min_detection_confidence=float(config.min_score),
        )
        try:
            self._detector = vision.FaceDetector.create_from_options(options)
        except Exception as exc:  # MediaPipe raises RuntimeError/ValueError with its own text
            raise ModelLoadError(
                f"MediaPipe could not load the {config.model} face detector {self.model_path}: {exc}; "
                f"re-provision it with `ros2-affect fetch-assets`"
            ) from exc
        import mediapipe as mp

        self._mp = mp
        self._lock = threading.Lock()  # the task graph is not re-entrant
        _LIVE.add(self)

    def detect(self, image: np.ndarray, encoding: str = "rgb8") -> List[FaceDetection]:
        """Find faces.

        Args:
            image: ``(H, W, 3)`` uint8 RGB, or any encoding :func:`as_rgb` accepts
                together with ``encoding``.
            encoding: the image's encoding (``rgb8`` needs no conversion).

        Returns:
            Detections with ``score >= min_score`` and an (unclipped) box at least
            ``min_face_px`` wide, boxes clipped to the image, sorted by box area, largest
            first. Keypoints and eyes are not clipped (an eye may lie just outside a
            frame that cuts the face). Empty for images too small to hold a face.

        Raises:
            InvalidImageError: the image is empty or of the wrong dtype/shape/encoding.
            RuntimeError: the detector was closed.
        """
        rgb = as_rgb(image, encoding)
        height, width = rgb.shape[:2]
        cfg = self.config
        if self._detector is None:
            raise RuntimeError("this face detector was closed; create a new one with create_detector()")

        small = rgb
        if cfg.detect_scale < 1.0:
            small_w = max(1, int(round(width * cfg.detect_scale)))
            small_h = max(1, int(round(height * cfg.detect_scale)))
            small = cv2.resize(rgb, (small_w, small_h), interpolation=cv2.INTER_AREA)
        # Coordinates come back in the detected image's pixels; map to the original's.
        sx = width / small.shape[1]
        sy = height / small.shape[0]
        if max(small.shape[:2]) * max(sx, sy) < cfg.min_face_px:
            return []

        mp_image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(small))
        with self._lock:
            result = self._detector.detect(mp_image)

        faces: List[FaceDetection] = []
        for det in result.detections:
            score = float(det.categories[0].score) if det.categories else 0.0
            if score < cfg.min_score:
                continue
            box = det.bounding_box
            x1 = box.origin_x * sx
            y1 = box.origin_y * sy
            x2 = (box.origin_x + box.width) * sx
            y2 = (box.origin_y + box.height) * sy
            if x2 - x1 < cfg.min_face_px:
                continue
            clipped = np.clip(np.array([x1, y1, x2, y2], dtype=np.float32), 0.0, [width, height, width, height])
            clipped = clipped.astype(np.float32)
            if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                continue
            # Normalised keypoints are relative to the detected image, hence to the original too.
            keypoints = np.array([[kp.x * width, kp.y * height] for kp in det.keypoints], dtype=np.float32)
            if keypoints.shape != (6, 2):
                continue  # not a BlazeFace result; nothing to align with
            faces.append(
                FaceDetection(
                    bbox_xyxy_px=clipped,
                    score=score,
                    keypoints_px=keypoints,
                    eyes_px=keypoints[:2].copy(),
                    eyes_refined=False,
                )
            )
        faces.sort(key=lambda f: f.area_px, reverse=True)
        return faces

    def close(self) -> None:
        """Release the MediaPipe graph. Safe to call more than once."""
        detector = getattr(self, "_detector", None)
        if detector is not None:
            self._detector = None
            detector.close()
        _LIVE.discard(self)

    def abandon(self) -> None:
        """Forget the MediaPipe graph without closing it (interpreter shutdown, when closing fails).

        Its ``__del__`` would try to close it again and print a traceback; the process is
        ending, so the OS reclaims it.
        """
        detector = getattr(self, "_detector", None)
        self._detector = None
        _LIVE.discard(self)
        if detector is not None:
            detector.close = lambda: None  # type: ignore[method-assign]

    def __enter__(self) -> MediaPipeFaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_detector(config: Optional[DetectorConfig] = None) -> MediaPipeFaceDetector:
    """Build the detector named by ``config.model`` (default config: short range).

    Raises:
        UnknownNameError: ``config.model`` is not registered.
        ConfigError: a threshold is out of range.
        AssetMissingError, ModelLoadError: the model file is missing or unloadable.
    """
    config = config or DetectorConfig()
    DETECTORS.get(config.model)  # an unknown name: the registered ones and the closest match
    return MediaPipeFaceDetector(config)
