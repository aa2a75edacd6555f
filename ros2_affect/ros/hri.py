"""REP-155 (ROS4HRI) output: expression names, face regions and per-face topic lifetimes.

Pure Python; the node fills ``hri_msgs`` messages from these values when hri_msgs is
installed. Topics, as in REP-155::

    /humans/faces/tracked            hri_msgs/IdsList        ids of the faces seen now
    /humans/faces/<id>/roi           hri_msgs/NormalizedRegionOfInterest2D
    /humans/faces/<id>/expression    hri_msgs/Expression     (expression, valence, arousal, confidence)

Only confirmed tracks are announced (REP-155 consumers create a face object per id).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Set, Tuple

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
