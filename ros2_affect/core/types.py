"""Value types passed between the pipeline stages.

Data flows one way through these types::

    Frame -> FaceDetection -> Track -> AlignedFace -> AffectEstimate -> FaceResult

(a temporal model keeps each track's recent crops as encoder features in its own ring
buffers, :mod:`ros2_affect.core.sequence`, and reads them as one batch per frame).

Every type is a frozen dataclass. Arrays inside them are treated as read-only by
convention: a stage that needs to change an array copies it first. Coordinates are
pixels of the source image (x to the right, y down) unless a name says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np

#: Canonical expression order used everywhere in the package (runtime, training,
#: messages). Loaders of datasets with another order map their labels onto it.
CANONICAL_EXPRESSIONS: Tuple[str, ...] = (
    "neutral",
    "happy",
    "sad",
    "surprise",
    "fear",
    "disgust",
    "anger",
)
#: Optional eighth class (AffectNet); appended after the canonical seven when used.
CONTEMPT = "contempt"


@dataclass(frozen=True)
class Frame:
    """One camera image entering the pipeline.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB, C-contiguous. Use
            :func:`ros2_affect.core.image.as_rgb` to build it from BGR, mono,
            RGBA or 16-bit input.
        stamp_ns: acquisition time in nanoseconds (the image header stamp).
        frame_id: the camera's optical frame (ROS ``header.frame_id``), may be empty.
    """

    image: np.ndarray
    stamp_ns: int
    frame_id: str = ""

    @property
    def height_px(self) -> int:
        return int(self.image.shape[0])

    @property
    def width_px(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True)
class FaceDetection:
    """A face found in one frame.

    Attributes:
        bbox_xyxy_px: ``(4,)`` float32, ``[x1, y1, x2, y2]`` in pixels.
        score: detector confidence in 0..1.
        keypoints_px: ``(6, 2)`` float32 BlazeFace keypoints in pixels, in
            MediaPipe's order: subject's right eye, left eye, nose tip, mouth
            centre, right ear tragion, left ear tragion.
        eyes_px: ``(2, 2)`` float32, the eye centres used for alignment, the
            subject's right eye first (it appears on the image's left for a
            frontal face). Refined by a landmark model when one is configured,
            else the detector's eye keypoints.
        eyes_refined: True when ``eyes_px`` came from the landmark model.
    """

    bbox_xyxy_px: np.ndarray
    score: float
    keypoints_px: np.ndarray
    eyes_px: np.ndarray
    eyes_refined: bool = False

    @property
    def area_px(self) -> float:
        x1, y1, x2, y2 = (float(v) for v in self.bbox_xyxy_px)
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


@dataclass(frozen=True)
class AlignedFace:
    """A face crop rotated so the eyes are level, ready for a model.

    Attributes:
        crop: ``(S, S, C)`` uint8 with ``C`` 1 (grayscale) or 3 (RGB).
        detection: the detection the crop was cut from.
        roll_deg: rotation that was removed (positive: the face was tilted
            counter-clockwise in the image).
        affine_2x3: ``(2, 3)`` float64 matrix mapping source-image pixels to crop
            pixels (so any image point, e.g. a landmark, can be located in the crop).
    """

    crop: np.ndarray
    detection: FaceDetection
    roll_deg: float
    affine_2x3: Optional[np.ndarray] = None


@dataclass(frozen=True)
class Track:
    """The state of one tracked face after the current frame's update.

    Attributes:
        track_id: short string id in the REP-155 style (e.g. ``"f3k9a"``), never
            reused within one tracker instance.
        bbox_xyxy_px: ``(4,)`` float32 box of the latest matched detection.
        confirmed: True once the track has had ``min_hits`` matches.
        hits: number of frames matched so far.
        misses: consecutive frames without a match (0 when matched this frame).
        age_frames: frames since the track was created.
        detection_index: index into the frame's detection list that this track
            matched, or -1 when it was not matched in this frame.
    """

    track_id: str
    bbox_xyxy_px: np.ndarray
    confirmed: bool
    hits: int
    misses: int
    age_frames: int
    detection_index: int = -1


@dataclass(frozen=True)
class AffectEstimate:
    """Model outputs for one face.

    Attributes:
        class_names: expression names in the order of ``probabilities``.
        probabilities: ``(K,)`` float32, sums to 1.
        valence: in -1..1 (negative: unpleasant).
        arousal: in -1..1 (negative: calm).
        va_derived: True when valence/arousal were computed from the class
            probabilities with a fixed mapping, False when a model regressed them.
        frames_used: number of frames the estimate is based on (1 for a frame model).
        model_id: identifier of the model that produced the estimate.
    """

    class_names: Tuple[str, ...]
    probabilities: np.ndarray
    valence: float
    arousal: float
    va_derived: bool
    frames_used: int
    model_id: str

    @property
    def label(self) -> str:
        return self.class_names[int(np.argmax(self.probabilities))]

    @property
    def confidence(self) -> float:
        return float(np.max(self.probabilities))


@dataclass(frozen=True)
class FaceResult:
    """Everything the pipeline knows about one face in one frame.

    Attributes:
        track_id: id of the track this face belongs to.
        detection: the face's detection in this frame.
        aligned: the aligned crop.
        affect: model outputs, or None when no model is attached or the model's
            output was rejected (non-finite values are never passed on).
        track_confirmed: whether the track had enough hits to be trusted.
    """

    track_id: str
    detection: FaceDetection
    aligned: AlignedFace
    affect: Optional[AffectEstimate] = None
    track_confirmed: bool = True


@dataclass(frozen=True)
class FrameResult:
    """The pipeline's answer for one frame.

    Attributes:
        stamp_ns: the source frame's stamp.
        frame_id: the source frame's optical frame id.
        width_px, height_px: source image size.
        faces: one entry per tracked face, in detection order.
        faces_dropped: faces detected beyond ``max_faces`` (smallest dropped first).
        stage_ms: wall time per stage for this frame, in milliseconds.
    """

    stamp_ns: int
    frame_id: str
    width_px: int
    height_px: int
    faces: Tuple[FaceResult, ...] = ()
    faces_dropped: int = 0
    stage_ms: Dict[str, float] = field(default_factory=dict)
