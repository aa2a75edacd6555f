"""FaceTracker on real faces: the AFEW-VA clip, two faces crossing, and the track lifecycle."""

from __future__ import annotations

import logging
import re
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pytest

from ros2_affect.config import DetectorConfig, TrackerConfig
from ros2_affect.core.tracking import FaceTracker, TrackIdGenerator, center_distance_matrix, iou_matrix
from ros2_affect.core.types import FaceDetection

FRAME_NS = 40_000_000  # 25 fps, AFEW-VA's frame rate
ID_PATTERN = re.compile(r"^[a-z][a-z0-9]{4}$")


def detection_from_landmarks(landmarks: np.ndarray, offset: Tuple[float, float] = (0.0, 0.0)) -> FaceDetection:
    """A FaceDetection built from 68 ground-truth landmarks (box: landmark extent, brows raised 20%)."""
    lm = np.asarray(landmarks, dtype=np.float32) + np.asarray(offset, dtype=np.float32)
    x1, y1 = lm.min(axis=0)
    x2, y2 = lm.max(axis=0)
    y1 -= 0.2 * (y2 - y1)
    eyes = np.array([lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)], dtype=np.float32)
    keypoints = np.array([eyes[0], eyes[1], lm[30], lm[48:68].mean(axis=0), lm[0], lm[16]], dtype=np.float32)
    return FaceDetection(np.array([x1, y1, x2, y2], dtype=np.float32), 1.0, keypoints, eyes)


def box_detection(box: Sequence[float]) -> FaceDetection:
    x1, y1, x2, y2 = box
    eye_y = y1 + 0.4 * (y2 - y1)
    eyes = np.array([[x1 + 0.3 * (x2 - x1), eye_y], [x1 + 0.7 * (x2 - x1), eye_y]], np.float32)
    return FaceDetection(np.asarray(box, np.float32), 0.9, np.zeros((6, 2), np.float32), eyes)


@pytest.fixture(scope="module")
def afew_landmarks(afew_annotation: Dict) -> List[np.ndarray]:
    return [np.asarray(afew_annotation["frames"][k]["landmarks"]) for k in sorted(afew_annotation["frames"])]


# -- helpers -------------------------------------------------------------------------------


def test_iou_and_centre_distance_by_hand() -> None:
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[5, 0, 15, 10], [20, 0, 30, 10]], float)
    np.testing.assert_allclose(iou_matrix(a, b), [[50 / 150, 0.0]])
    np.testing.assert_allclose(center_distance_matrix(a, b), [[0.5, 2.0]])


def test_ids_are_short_topic_safe_and_never_repeat() -> None:
    generator = TrackIdGenerator(seed=7)
    ids = [generator.next_id() for _ in range(200_000)]
    assert len(set(ids)) == len(ids)
    assert all(ID_PATTERN.match(i) for i in ids[:1000])
    # a bijection of the counter: the same seed gives the same ids, another seed others
    again = TrackIdGenerator(seed=7)
    assert [again.next_id() for _ in range(100)] == ids[:100]
    other = TrackIdGenerator(seed=8)
    assert [other.next_id() for _ in range(100)] != ids[:100]


def test_id_space_grows_instead_of_wrapping() -> None:
    generator = TrackIdGenerator(seed=3)
    generator._counter = TrackIdGenerator._space(5) - 2  # jump to the end of the 5-character space
    tail = [generator.next_id() for _ in range(4)]
    assert [len(t) for t in tail] == [5, 5, 6, 6]
    assert all(re.match(r"^[a-z][a-z0-9]+$", t) for t in tail)


# -- real faces ------------------------------------------------------------------------------


def test_one_id_through_the_afew_clip_from_landmark_boxes(afew_landmarks: List[np.ndarray]) -> None:
    tracker = FaceTracker(TrackerConfig(min_hits=3), seed=0)
    seen = []
    for index, landmarks in enumerate(afew_landmarks):
        tracks = tracker.update([detection_from_landmarks(landmarks)], index * FRAME_NS)
        assert len(tracks) == 1 and tracks[0].detection_index == 0
        assert tracks[0].confirmed == (index >= 2)
        assert tracks[0].hits == index + 1 and tracks[0].misses == 0
        seen.append(tracks[0].track_id)
    assert len(seen) == 42 and len(set(seen)) == 1
    assert ID_PATTERN.match(seen[0])


@pytest.fixture(scope="module")
def detector():
    detection = pytest.importorskip("ros2_affect.core.detection", reason="helper A's detector is not available")
    with detection.create_detector(DetectorConfig()) as det:
        yield det


def test_one_id_through_the_afew_clip_with_the_real_detector(afew_frames: List[np.ndarray], detector) -> None:
    tracker = FaceTracker(TrackerConfig(), seed=0)
    ids = []
    for index, frame in enumerate(afew_frames):
        detections = detector.detect(frame)
        tracks = tracker.update(detections, index * FRAME_NS)
        ids.extend(t.track_id for t in tracks)
    assert len(ids) == 42, "the detector should find the one face in every AFEW frame"
    assert len(set(ids)) == 1


def crossing_canvas(frames: List[np.ndarray], t: int, n: int, dy: int) -> Tuple[np.ndarray, np.ndarray]:
    """Two real faces (AFEW crops; the second mirrored and from later frames) passing each other.

    Face A moves left to right near the top, face B right to left ``dy`` pixels lower and
    in front, so B partly hides A as they cross. Returns the image and the two true
    face centres (2, 2).
    """
    canvas = np.full((520, 1000, 3), 110, np.uint8)
    a = frames[t % len(frames)][60:300, 130:340]
    b = frames[(t + 20) % len(frames)][60:300, 130:340][:, ::-1]
    xa = int(50 + 700 * t / (n - 1))
    xb = int(750 - 700 * t / (n - 1))
    canvas[40:280, xa : xa + 210] = a
    canvas[40 + dy : 280 + dy, xb : xb + 210] = b
    return canvas, np.array([[xa + 105, 160], [xb + 105, 160 + dy]], float)


@pytest.mark.parametrize("n_frames", [30, 12])
def test_two_real_faces_crossing_keep_their_ids(afew_frames: List[np.ndarray], detector, n_frames: int) -> None:
    tracker = FaceTracker(TrackerConfig(), seed=0)
    ids: Dict[int, List[str]] = {0: [], 1: []}
    for t in range(n_frames):
        image, centres = crossing_canvas(afew_frames, t, n_frames, dy=40)
        detections = detector.detect(image)
        for track in tracker.update(detections, t * FRAME_NS):
            box = detections[track.detection_index].bbox_xyxy_px
            centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
            ids[int(np.argmin(np.linalg.norm(centres - centre, axis=1)))].append(track.track_id)
    # both faces were detected before and after the crossing
    assert len(ids[0]) >= n_frames // 2 and len(ids[1]) >= n_frames // 2
    assert len(set(ids[0])) == 1, f"face A changed id: {ids[0]}"
    assert len(set(ids[1])) == 1, f"face B changed id: {ids[1]}"
    assert ids[0][0] != ids[1][0]


def test_motion_prediction_bridges_an_occlusion_during_a_crossing(afew_landmarks: List[np.ndarray]) -> None:
    """Two faces (real landmark geometry) cross; the front one hides the other for 5 frames.

    With the constant-velocity prediction the hidden face is found where it went; matching
    against its last seen box instead gives it a new id when it reappears.
    """
    lm = afew_landmarks[0]
    n, hidden = 24, range(10, 15)

    def frames() -> List[List[FaceDetection]]:
        out = []
        for t in range(n):
            a = detection_from_landmarks(lm, (40 * t, 0))  # left to right
            b = detection_from_landmarks(lm, (920 - 40 * t, 30))  # right to left, in front
            out.append([b] if t in hidden else [a, b])
        return out

    def run(predict_motion: bool) -> Tuple[List[str], List[str]]:
        tracker = FaceTracker(TrackerConfig(max_misses=10), seed=0, predict_motion=predict_motion)
        a_ids, b_ids = [], []
        for t, detections in enumerate(frames()):
            for track in tracker.update(detections, t * FRAME_NS):
                (b_ids if track.detection_index == len(detections) - 1 else a_ids).append(track.track_id)
        return a_ids, b_ids

    a_ids, b_ids = run(True)
    assert len(set(a_ids)) == 1 and len(set(b_ids)) == 1 and a_ids[0] != b_ids[0]
    a_static, b_static = run(False)
    assert len(set(a_static)) > 1, "without prediction the hidden face should have lost its id"


# -- lifecycle -------------------------------------------------------------------------------


def test_confirmation_and_deletion(afew_landmarks: List[np.ndarray]) -> None:
    tracker = FaceTracker(TrackerConfig(min_hits=3, max_misses=2), seed=0)
    face = detection_from_landmarks(afew_landmarks[0])
    states = [tracker.update([face], i * FRAME_NS)[0] for i in range(3)]
    assert [s.confirmed for s in states] == [False, False, True]
    track_id = states[0].track_id
    # two missed frames: still alive, and the face comes back to the same id
    assert tracker.update([], 3 * FRAME_NS) == [] and tracker.live_track_ids == (track_id,)
    assert tracker.update([], 4 * FRAME_NS) == [] and tracker.ended_track_ids == ()
    back = tracker.update([face], 5 * FRAME_NS)
    assert back[0].track_id == track_id and back[0].confirmed and back[0].hits == 4
    # three misses in a row: deleted on the third, reported once in ended_track_ids
    for i in range(6, 8):
        tracker.update([], i * FRAME_NS)
        assert tracker.ended_track_ids == ()
    tracker.update([], 8 * FRAME_NS)
    assert tracker.ended_track_ids == (track_id,) and len(tracker) == 0
    tracker.update([], 9 * FRAME_NS)
    assert tracker.ended_track_ids == ()
    again = tracker.update([face], 10 * FRAME_NS)
    assert again[0].track_id != track_id and not again[0].confirmed


def test_ids_never_reused_over_thousands_of_tracks() -> None:
    tracker = FaceTracker(TrackerConfig(max_misses=0, min_hits=1), seed=0)
    seen, ended = set(), set()
    for i in range(3000):
        # a new face in a new place every frame; the previous one vanishes and ends
        x = float((i * 137) % 2000)
        tracks = tracker.update([box_detection([x, 0, x + 50, 60])], i * FRAME_NS)
        assert len(tracks) == 1
        assert tracks[0].track_id not in seen
        seen.add(tracks[0].track_id)
        ended.update(tracker.ended_track_ids)
        assert len(tracker) == 1
    assert len(seen) == 3000 and len(ended) == 2999
    assert all(ID_PATTERN.match(i) for i in seen)


def test_backwards_time_jump_ends_all_tracks(
    afew_landmarks: List[np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    tracker = FaceTracker(TrackerConfig(), seed=0)
    face = detection_from_landmarks(afew_landmarks[0])
    first = [tracker.update([face], (100 + i) * FRAME_NS)[0].track_id for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="ros2_affect.core.tracking"):
        after = tracker.update([face], 5 * FRAME_NS)
    assert "time went backwards" in caplog.text
    assert tracker.ended_track_ids == (first[0],)
    assert after[0].track_id != first[0] and after[0].hits == 1 and not after[0].confirmed
    assert tracker.time_jumps == 1
    # an equal stamp is not a jump
    tracker.update([face], 5 * FRAME_NS)
    assert tracker.time_jumps == 1


def test_live_tracks_are_capped() -> None:
    tracker = FaceTracker(TrackerConfig(max_tracks=4, max_misses=50), seed=0)
    faces = [box_detection([100.0 * i, 0, 100.0 * i + 60, 70]) for i in range(6)]
    tracks = tracker.update(faces, 0)
    assert len(tracks) == 4 and len(tracker) == 4
    assert [t.detection_index for t in tracks] == [0, 1, 2, 3]
    assert tracker.untracked_detections == 2
    # the tracked faces vanish; newcomers elsewhere take over the longest-missing tracks' places
    tracker.update([], FRAME_NS)
    newcomers = [box_detection([100.0 * i, 500, 100.0 * i + 60, 570]) for i in range(6)]
    tracks = tracker.update(newcomers, 2 * FRAME_NS)
    assert len(tracks) == 4 and len(tracker) == 4
    assert len(tracker.ended_track_ids) == 4


def test_empty_frames_and_reset() -> None:
    tracker = FaceTracker(TrackerConfig(), seed=0)
    assert tracker.update([], 0) == []
    first = tracker.update([box_detection([0, 0, 50, 50])], FRAME_NS)[0].track_id
    tracker.reset()
    assert tracker.ended_track_ids == (first,) and len(tracker) == 0
    assert tracker.update([box_detection([0, 0, 50, 50])], 0)[0].track_id != first
