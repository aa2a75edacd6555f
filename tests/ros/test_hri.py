"""REP-155 mapping: expression names, normalised regions and per-id topic lifetimes."""

from __future__ import annotations

import numpy as np
import pytest

from ros2_affect.core.types import (
    CANONICAL_EXPRESSIONS,
    CONTEMPT,
    AffectEstimate,
    AlignedFace,
    FaceDetection,
    FaceResult,
)
from ros2_affect.ros.hri import (
    HRI_EXPRESSION_OF,
    TrackedIds,
    confirmed_ids,
    face_topic,
    hri_expression,
    hri_roi,
)

# The string constants of hri_msgs/Expression (ros4hri/hri_msgs, ROS 2 releases).
HRI_MSGS_EXPRESSIONS = {
    "neutral", "angry", "sad", "happy", "surprised", "disgusted", "scared", "pleading", "vulnerable", "despaired",
    "guilty", "disappointed", "embarrassed", "horrified", "skeptical", "annoyed", "furious", "suspicious", "rejected",
    "bored", "tired", "asleep", "confused", "amazed", "excited",
}


def _face(track_id: str, probs: list, confirmed: bool = True, bbox=(-10.0, 50.0, 150.0, 700.0)) -> FaceResult:
    det = FaceDetection(np.asarray(bbox, np.float32), 0.8, np.zeros((6, 2), np.float32), np.zeros((2, 2), np.float32))
    aligned = AlignedFace(np.zeros((48, 48, 1), np.uint8), det, 0.0)
    names = CANONICAL_EXPRESSIONS + ((CONTEMPT,) if len(probs) == 8 else ())
    affect = AffectEstimate(names, np.asarray(probs, np.float32), -0.4, 0.6, True, 1, "m") if probs else None
    return FaceResult(track_id, det, aligned, affect, confirmed)


def test_every_model_class_maps_to_an_hri_msgs_constant() -> None:
    for name in CANONICAL_EXPRESSIONS + (CONTEMPT,):
        assert HRI_EXPRESSION_OF[name] in HRI_MSGS_EXPRESSIONS, name


@pytest.mark.parametrize("index, expected", [(0, "neutral"), (3, "surprised"), (4, "scared"), (6, "angry")])
def test_expression_fields(index: int, expected: str) -> None:
    probs = [0.05] * 7
    probs[index] = 0.7
    out = hri_expression(_face("a", probs))
    assert out is not None
    assert out.expression == expected and out.confidence == pytest.approx(0.7)
    assert (out.valence, out.arousal) == (pytest.approx(-0.4), pytest.approx(0.6))


def test_no_affect_gives_no_expression() -> None:
    assert hri_expression(_face("a", [])) is None


def test_roi_is_normalised_and_clipped() -> None:
    roi = hri_roi(_face("a", []), 640, 480)
    assert (roi.xmin, roi.ymin, roi.xmax, roi.ymax) == (0.0, pytest.approx(50 / 480), pytest.approx(150 / 640), 1.0)
    assert roi.c == pytest.approx(0.8)


def test_tracked_ids_diff_creates_and_removes_topics() -> None:
    ids = TrackedIds()
    assert ids.update(["b", "a"]) == (("a", "b"), ())
    assert ids.update(["b", "c"]) == (("c",), ("a",))
    assert ids.update([]) == ((), ("b", "c"))
    assert ids.ids == ()


def test_only_confirmed_tracks_are_announced() -> None:
    faces = [_face("a", [], True), _face("b", [], False), _face("c", [], True)]
    assert confirmed_ids(faces) == ("a", "c")
    assert face_topic("a", "roi") == "/humans/faces/a/roi"
