"""Pairing the node's predictions with ground-truth annotations.

Predictions are the ``affect_msgs/msg/FaceAffectArray`` messages of an output bag, read
into :class:`FramePrediction` (one per processed image). Annotations come from
:mod:`ros2_affect.bags.labels`. They are paired

- by **stamp**: an annotation's ``stamp_ns`` (label topics recorded by ``make-bag`` carry
  the image's header stamp) is matched to the prediction with the same header stamp, or
  to the nearest one within ``tolerance_ns``;
- by **frame**: an annotation's ``frame_index`` is the position of the image in the
  input bag's image topic. With the input bag's image stamps (``frame_stamps``) the index
  is turned into a stamp and matched exactly; without, it is the position of the
  prediction message in the output bag (the same when no image was skipped).

Within a frame, the annotation describes the face whose ``track_id`` equals the
annotation's ``face_id``, or else the frame's *main face*: the one with the largest box.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ros2_affect.bags.labels import Annotation, AnnotationSet
from ros2_affect.errors import ConfigError

LOG = logging.getLogger(__name__)

ALIGN_MODES = ("auto", "stamp", "frame")
#: Default stamp tolerance: half a frame period at 30 fps.
DEFAULT_TOLERANCE_NS = 16_000_000


@dataclass(frozen=True)
class FacePrediction:
    """One face of a ``FaceAffectArray`` (the fields evaluation needs)."""

    track_id: str
    track_confirmed: bool
    bbox_xyxy_px: Tuple[float, float, float, float]
    detection_score: float
    has_affect: bool
    expression: str
    class_names: Tuple[str, ...]
    probabilities: Tuple[float, ...]
    valence: float
    arousal: float
    model_id: str

    @property
    def area_px(self) -> float:
        x1, y1, x2, y2 = self.bbox_xyxy_px
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


@dataclass(frozen=True)
class FramePrediction:
    """One ``FaceAffectArray``: position in the bag, header stamp, bag time, faces."""

    index: int
    stamp_ns: int
    bag_time_ns: int
    faces: Tuple[FacePrediction, ...]
    processing_latency_ms: float = 0.0


def face_prediction_from_msg(msg: Any) -> FacePrediction:
    """Read the evaluation fields of one decoded ``affect_msgs/msg/FaceAffect``."""
    return FacePrediction(
        track_id=str(msg.track_id),
        track_confirmed=bool(msg.track_confirmed),
        bbox_xyxy_px=tuple(float(v) for v in msg.bbox_xyxy_px),  # type: ignore[arg-type]
        detection_score=float(msg.detection_score),
        has_affect=bool(msg.has_affect),
        expression=str(msg.expression),
        class_names=tuple(str(c) for c in msg.class_names),
        probabilities=tuple(float(p) for p in msg.probabilities),
        valence=float(msg.valence),
        arousal=float(msg.arousal),
        model_id=str(msg.model_id),
    )


@dataclass(frozen=True)
class AlignedPair:
    """One annotation and what the predictions say about it.

    Attributes:
        annotation: the ground truth.
        frame: the matched prediction message, None when no image was processed there.
        face: the face the annotation describes (see module docstring), None when the
            frame has no (such) face.
        offset_ns: ``frame.stamp_ns - annotation stamp`` when matched by stamp.
    """

    annotation: Annotation
    frame: Optional[FramePrediction]
    face: Optional[FacePrediction]
    offset_ns: Optional[int] = None


def main_face(frame: FramePrediction, face_id: str = "") -> Optional[FacePrediction]:
    """The face an annotation refers to: the face with track id ``face_id`` when one is given
    (None when no face of the frame has it: a label for another person is never scored
    against whoever is largest), else the largest box."""
    if face_id:
        for face in frame.faces:
            if face.track_id == face_id:
                return face
        return None
    if not frame.faces:
        return None
    # ties (equal areas) go to the earlier face, so the choice is deterministic
    return max(frame.faces, key=lambda f: (f.area_px, -frame.faces.index(f)))


def _choose_mode(annotations: AnnotationSet, mode: str) -> str:
    if mode not in ALIGN_MODES:
        raise ConfigError(f"alignment mode {mode!r} is not accepted; choose one of {', '.join(ALIGN_MODES)}")
    if mode != "auto":
        return mode
    if annotations.annotations and all(a.stamp_ns is not None for a in annotations.annotations):
        return "stamp"
    return "frame"


def align(
    predictions: Sequence[FramePrediction],
    annotations: AnnotationSet,
    mode: str = "auto",
    tolerance_ns: int = DEFAULT_TOLERANCE_NS,
    frame_stamps: Optional[Sequence[int]] = None,
) -> Tuple[List[AlignedPair], str]:
    """Pair every annotation with a prediction frame and face.

    Args:
        predictions: the output bag's arrays, in bag order.
        annotations: the ground truth.
        mode: "stamp", "frame", or "auto" (stamp when every annotation has a stamp).
        tolerance_ns: largest ``|prediction stamp - annotation stamp|`` accepted (0: exact).
        frame_stamps: image stamps of the input bag, in order (frame index -> stamp).

    Returns:
        ``(pairs, mode_used)``, pairs in annotation order.

    Raises:
        ConfigError: an unknown mode, or mode "stamp"/"frame" with annotations lacking
            stamps/frame indices (the message says which).
    """
    used = _choose_mode(annotations, mode)
    by_stamp = sorted(predictions, key=lambda p: p.stamp_ns)
    stamps = [p.stamp_ns for p in by_stamp]

    def nearest(stamp: int) -> Tuple[Optional[FramePrediction], Optional[int]]:
        i = bisect.bisect_left(stamps, stamp)
        best: Optional[FramePrediction] = None
        for j in (i - 1, i):
            if 0 <= j < len(by_stamp):
                cand = by_stamp[j]
                if abs(cand.stamp_ns - stamp) <= tolerance_ns and (
                    best is None or abs(cand.stamp_ns - stamp) < abs(best.stamp_ns - stamp)
                ):
                    best = cand
        return best, None if best is None else best.stamp_ns - stamp

    pairs: List[AlignedPair] = []
    for ann in annotations.annotations:
        frame: Optional[FramePrediction] = None
        offset: Optional[int] = None
        if used == "stamp":
            if ann.stamp_ns is None:
                raise ConfigError(
                    f"annotation of frame {ann.frame_index} ({annotations.source}) has no stamp; align by frame instead"
                )
            frame, offset = nearest(ann.stamp_ns)
        else:
            if ann.frame_index is None:
                raise ConfigError(
                    f"an annotation at stamp {ann.stamp_ns} ({annotations.source}) has no frame index; align by stamp"
                )
            if frame_stamps is not None:
                if 0 <= ann.frame_index < len(frame_stamps):
                    frame, offset = nearest(frame_stamps[ann.frame_index])
            elif 0 <= ann.frame_index < len(predictions):
                frame = predictions[ann.frame_index]
        face = main_face(frame, ann.face_id) if frame is not None else None
        pairs.append(AlignedPair(ann, frame, face, offset))
    _warn_unmatched(pairs, annotations, used, tolerance_ns)
    return pairs, used


def _warn_unmatched(pairs: Sequence[AlignedPair], annotations: AnnotationSet, mode: str, tolerance_ns: int) -> None:
    """Log why annotations found no prediction: no frame at all (coverage 0), or face ids that
    match no track in their frame."""
    if not pairs:
        return
    framed = [p for p in pairs if p.frame is not None]
    if not framed:
        how = (
            f"by stamp within {tolerance_ns / 1e6:g} ms" if mode == "stamp" else "by frame index"
        )
        LOG.warning(
            "none of the %d annotations (%s) matched a prediction frame %s: coverage is 0. Check that the labels "
            "belong to this bag (pass the replayed input with --input-bag), or try --align %s / a larger "
            "--tolerance-ms",
            len(pairs), annotations.source, how, "frame" if mode == "stamp" else "stamp",
        )
        return
    strangers = [p for p in framed if p.annotation.face_id and p.face is None and p.frame and p.frame.faces]
    if strangers:
        ids = sorted({p.annotation.face_id for p in strangers})
        LOG.warning(
            "%d of %d annotations name a face id that no track in their frame has (%s); they count as missed, "
            "not scored against another face. Use the track ids of the predictions (or leave the face column empty "
            "for the main face)",
            len(strangers), len(pairs), ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else ""),
        )


def count_id_switches(pairs: Sequence[AlignedPair]) -> int:
    """How often the main face's track id changes between consecutive annotated frames.

    Frames without a face are passed over: a face lost and found again under a new id
    counts as one switch (the track was fragmented), found again under its old id as none.
    """
    switches = 0
    last: Optional[str] = None
    for pair in pairs:
        if pair.face is None:
            continue
        if last is not None and pair.face.track_id != last:
            switches += 1
        last = pair.face.track_id
    return switches


def track_ids(pairs: Sequence[AlignedPair]) -> Dict[str, int]:
    """Main-face track id -> number of annotated frames it covered."""
    out: Dict[str, int] = {}
    for pair in pairs:
        if pair.face is not None:
            out[pair.face.track_id] = out.get(pair.face.track_id, 0) + 1
    return out
