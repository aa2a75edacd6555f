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
from ros2_affect.node.hri import (
    HRI_EXPRESSION_OF,
    HriRoi,
    TrackedIds,
    confirmed_ids,
    crop_box_px,
    face_topic,
    hri_expression,
    hri_roi,
    match_faces_to_rois,
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


def _roi(x1: float, y1: float, x2: float, y2: float) -> HriRoi:
    return HriRoi(x1, y1, x2, y2, 0.9)


def test_our_faces_take_the_face_detectors_ids_by_overlap() -> None:
    # Two people; the detector's boxes are a little larger and shifted, as another model's are.
    ours = [_roi(0.10, 0.20, 0.30, 0.50), _roi(0.60, 0.25, 0.78, 0.52)]
    detector = {"kx3a1": _roi(0.58, 0.22, 0.80, 0.55), "b9q0c": _roi(0.08, 0.18, 0.31, 0.52)}
    assert match_faces_to_rois(ours, detector) == {0: "b9q0c", 1: "kx3a1"}


def test_a_face_the_detector_does_not_know_gets_no_id_and_ids_are_used_once() -> None:
    ours = [_roi(0.10, 0.20, 0.30, 0.50), _roi(0.11, 0.21, 0.31, 0.51), _roi(0.70, 0.70, 0.90, 0.95)]
    detector = {"only1": _roi(0.10, 0.20, 0.30, 0.50)}
    assert match_faces_to_rois(ours, detector) == {0: "only1"}  # best overlap wins; the far face stays out
    assert match_faces_to_rois(ours, {}) == {}
    assert match_faces_to_rois([], detector) == {}
    # barely touching boxes are not the same face
    assert match_faces_to_rois([_roi(0.0, 0.0, 0.2, 0.2)], {"a": _roi(0.15, 0.15, 0.35, 0.35)}) == {}


def test_cropped_box_in_pixels() -> None:
    assert crop_box_px(_roi(0.1, 0.2, 0.5, 0.6), 640, 480) == (64, 96, 320, 288)
    assert crop_box_px(_roi(0.5, 0.5, 0.5, 0.9), 640, 480) is None
