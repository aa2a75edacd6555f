"""REP-155 (ROS4HRI) output: expression names, face regions, id matching and topic lifetimes.

Pure Python; the node fills ``hri_msgs`` messages from these values when hri_msgs is
installed. Two modes (node parameter ``hri_mode``):

``expression`` (default): beside a face detector such as ``hri_face_detect``, which owns
the face ids, ``/humans/faces/tracked`` and each face's ``roi``/``cropped``/``aligned``.
As REP-155's own example of an expression node, this node then only publishes::

    /humans/faces/<id>/expression    hri_msgs/Expression     for the detector's <id>

matching its faces to the detector's by their regions (:func:`match_faces_to_rois`).
Publishing ``tracked`` too would make libhri replace its face set on every message from
either node, so faces would flap.

``standalone``: no face detector runs; this node is one, and publishes the full set::

    /humans/faces/tracked            hri_msgs/IdsList        ids of the live confirmed tracks
    /humans/faces/<id>/roi           hri_msgs/NormalizedRegionOfInterest2D
    /humans/faces/<id>/cropped       sensor_msgs/Image       the face box cut from the image
    /humans/faces/<id>/expression    hri_msgs/Expression     (expression, valence, arousal, confidence)

Per-face topics follow the tracker's live tracks, not one frame's detections, so a face
missed for a frame or two keeps its topics (REP-155 consumers create a face object per id).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from ros2_affect.core.types import FaceResult

#: REP-155 namespace of faces.
HRI_FACES_NS = "/humans/faces"

#: Canonical expression -> hri_msgs/Expression constant value. hri_msgs has no
#: "contempt"; its closest listed expression is "skeptical" (one-sided, dismissive).
HRI_EXPRESSION_OF: Dict[str, str] = {
    "neutral": "neutral",
    "happy": "happy",
    "sad": "sad",
    "surprise": "surprised",
    "fear": "scared",
    "disgust": "disgusted",
    "anger": "angry",
    "contempt": "skeptical",
}


@dataclass(frozen=True)
class HriExpression:
    """The fields of hri_msgs/Expression for one face."""

    expression: str
    valence: float
    arousal: float
    confidence: float


@dataclass(frozen=True)
class HriRoi:
    """The fields of hri_msgs/NormalizedRegionOfInterest2D (all in 0..1)."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float
    c: float


def hri_expression(face: FaceResult) -> Optional[HriExpression]:
    """The face's expression in hri_msgs terms, or None when there is no affect estimate.

    An expression name with no hri_msgs counterpart gives an empty ``expression`` (valence
    and arousal are still reported).
    """
    affect = face.affect
    if affect is None:
        return None
    return HriExpression(
        expression=HRI_EXPRESSION_OF.get(affect.label, ""),
        valence=float(affect.valence),
        arousal=float(affect.arousal),
        confidence=float(affect.confidence),
    )


def hri_roi(face: FaceResult, width_px: int, height_px: int) -> HriRoi:
    """The face box normalised to 0..1 and clipped to the image; ``c`` is the detection score."""
    x1, y1, x2, y2 = (float(v) for v in np.asarray(face.detection.bbox_xyxy_px, dtype=np.float64).reshape(4))
    w, h = float(width_px), float(height_px)

    def clip(v: float) -> float:
        return min(1.0, max(0.0, v))

    return HriRoi(clip(x1 / w), clip(y1 / h), clip(x2 / w), clip(y2 / h), clip(float(face.detection.score)))


def face_topic(face_id: str, leaf: str) -> str:
    """``/humans/faces/<id>/<leaf>``."""
    return f"{HRI_FACES_NS}/{face_id}/{leaf}"


class TrackedIds:
    """Which face ids currently have topics: diff of consecutive frames' confirmed ids.

    A track that stops being reported (deleted by the tracker) loses its topics at once.
    Ids must be valid ROS name tokens (the tracker's ids are short lowercase strings).
    """

    def __init__(self) -> None:
        self._ids: Set[str] = set()

    def update(self, ids: Iterable[str]) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        """Set the current ids; returns ``(added, removed)``, each sorted."""
        current = set(ids)
        added = tuple(sorted(current - self._ids))
        removed = tuple(sorted(self._ids - current))
        self._ids = current
        return added, removed

    @property
    def ids(self) -> Tuple[str, ...]:
        return tuple(sorted(self._ids))


def confirmed_ids(faces: Iterable[FaceResult]) -> Tuple[str, ...]:
    """Ids of the confirmed tracks among ``faces``, in order."""
    return tuple(f.track_id for f in faces if f.track_confirmed)


#: Node parameter ``hri_mode`` values.
HRI_MODES = ("expression", "standalone", "off")

#: Smallest overlap (intersection over union) for one of our faces to be the detector's.
MIN_ROI_IOU = 0.3


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_faces_to_rois(
    faces: Sequence[HriRoi], rois: Mapping[str, HriRoi], min_iou: float = MIN_ROI_IOU
) -> Dict[int, str]:
    """Which face detector id each of our faces is: ``{face index: id}``.

    Greedy by overlap, best pair first, each id and face used once; pairs overlapping
    less than ``min_iou`` stay unmatched (that face gets no expression topic: the
    detector does not know it). Boxes are normalised (``HriRoi``), as both nodes
    publish them for the same image.
    """
    pairs: List[Tuple[float, int, str]] = []
    for index, face in enumerate(faces):
        box = (face.xmin, face.ymin, face.xmax, face.ymax)
        for face_id, roi in rois.items():
            overlap = _iou(box, (roi.xmin, roi.ymin, roi.xmax, roi.ymax))
            if overlap >= min_iou:
                pairs.append((overlap, index, face_id))
    matched: Dict[int, str] = {}
    used: Set[str] = set()
    for _, index, face_id in sorted(pairs, key=lambda p: (-p[0], p[1], p[2])):
        if index not in matched and face_id not in used:
            matched[index] = face_id
            used.add(face_id)
    return matched


def crop_box_px(roi: HriRoi, width_px: int, height_px: int) -> Optional[Tuple[int, int, int, int]]:
    """The integer pixel box ``(x1, y1, x2, y2)`` of a normalised roi, or None when empty."""
    x1, y1 = int(roi.xmin * width_px), int(roi.ymin * height_px)
    x2, y2 = int(np.ceil(roi.xmax * width_px)), int(np.ceil(roi.ymax * height_px))
    if x2 <= x1 or y2 <= y1:
        return None
    return x1, y1, x2, y2
