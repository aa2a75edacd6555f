"""BlazeFace detection on real frames: counts, eye order, encodings, filters, bad input."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import cv2
import numpy as np
import pytest

from ros2_affect.config import DetectorConfig
from ros2_affect.core.detection import DETECTORS, MediaPipeFaceDetector, create_detector
from ros2_affect.errors import InvalidImageError, UnknownNameError

#: A FER2013 test face the short-range model finds reliably when upscaled.
FER_FACE = "PublicTest/angry/PublicTest_13591263.jpg"


@pytest.fixture(scope="module")
def afew_detections(detector, afew_frames):
    return [detector.detect(frame) for frame in afew_frames]


def test_one_face_per_afew_frame_with_the_subjects_right_eye_first(afew_detections, afew_eye_centres, afew_frames):
    assert [len(d) for d in afew_detections] == [1] * len(afew_frames)
    errors = []
    for (face,), truth, frame in zip(afew_detections, afew_eye_centres, afew_frames, strict=True):
        assert face.bbox_xyxy_px.dtype == np.float32 and face.bbox_xyxy_px.shape == (4,)
        assert face.keypoints_px.dtype == np.float32 and face.keypoints_px.shape == (6, 2)
        assert face.eyes_px.shape == (2, 2) and not face.eyes_refined
        assert 0.5 <= face.score <= 1.0
        x1, y1, x2, y2 = face.bbox_xyxy_px
        assert 0 <= x1 < x2 <= frame.shape[1] and 0 <= y1 < y2 <= frame.shape[0]
        # Both eyes inside the box, and each nearer its own ground-truth eye than the other one.
        assert np.all((face.eyes_px[:, 0] > x1) & (face.eyes_px[:, 0] < x2))
        dist = np.linalg.norm(face.eyes_px[:, None, :] - truth[None, :, :], axis=2)
        assert dist[0, 0] < dist[0, 1] and dist[1, 1] < dist[1, 0]
        errors.append(dist.diagonal().mean() / np.linalg.norm(truth[1] - truth[0]))
    mean_error = float(np.mean(errors))
    print(f"BlazeFace eye keypoints, mean error {mean_error:.3f} IOD over {len(errors)} AFEW frames")
    # Known coarse (about 0.25 IOD); the landmark stage refines it. Guard against regressions.
    assert mean_error < 0.4


def test_bgr_and_mono_inputs_find_the_same_face(detector, afew_frames, afew_detections):
    frame = afew_frames[5]
    reference = afew_detections[5][0].bbox_xyxy_px
    (bgr_face,) = detector.detect(np.ascontiguousarray(frame[:, :, ::-1]), encoding="bgr8")
    np.testing.assert_allclose(bgr_face.bbox_xyxy_px, reference, atol=0.5)
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    (mono_face,) = detector.detect(grey, encoding="mono8")
    # Grey input changes the network's input, so the box moves a little: same face, IoU > 0.6.
    assert _iou(mono_face.bbox_xyxy_px, reference) > 0.6
    assert np.linalg.norm(mono_face.eyes_px - afew_detections[5][0].eyes_px, axis=1).max() < 8


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _three_face_canvas(afew_frames, fer_root):
    canvas = np.zeros((600, 600, 3), np.uint8)
    canvas[:300, :300] = afew_frames[0][40:340, 80:380]
    canvas[:300, 300:] = afew_frames[30][40:340, 80:380]
    fer = cv2.imread(str(fer_root / FER_FACE), cv2.IMREAD_GRAYSCALE)
    assert fer is not None
    canvas[330:570, 330:570] = cv2.resize(fer, (240, 240), interpolation=cv2.INTER_CUBIC)[:, :, None]
    return canvas


def test_several_faces_are_all_found_largest_first(detector, afew_frames, fer_root):
    faces = detector.detect(_three_face_canvas(afew_frames, fer_root))
    assert len(faces) == 3
    areas = [f.area_px for f in faces]
    assert areas == sorted(areas, reverse=True)
    centres = sorted(((f.bbox_xyxy_px[:2] + f.bbox_xyxy_px[2:]) / 2 // 300).astype(int).tolist() for f in faces)
    assert centres == [[0, 0], [1, 0], [1, 1]]  # one face in each filled quadrant


def test_no_cap_on_the_number_of_faces(afew_frames):
    # MediaPipe's FaceDetector has no max_results; 16 faces (more than max_faces' default
    # of 8, which the pipeline applies) are all returned.
    canvas = np.zeros((800, 800, 3), np.uint8)
    for k in range(16):
        row, col = divmod(k, 4)
        face = cv2.resize(afew_frames[k * 2][60:320, 100:360], (200, 200), interpolation=cv2.INTER_AREA)
        canvas[row * 200 : (row + 1) * 200, col * 200 : (col + 1) * 200] = face
    with create_detector(DetectorConfig(model="full_range", min_face_px=8)) as far:
        faces = far.detect(canvas)
    cells = {tuple(((f.bbox_xyxy_px[:2] + f.bbox_xyxy_px[2:]) / 2 // 200).astype(int)) for f in faces}
    assert len(faces) == 16 and len(cells) == 16


def test_min_score_and_min_face_px_filter(afew_frames, fer_root, afew_detections):
    canvas = _three_face_canvas(afew_frames, fer_root)
    with create_detector(DetectorConfig(min_score=0.945)) as strict:
        strict_faces = strict.detect(canvas)
        assert 0 < len(strict_faces) < 3 and all(f.score >= 0.945 for f in strict_faces)
    width = float(np.diff(afew_detections[0][0].bbox_xyxy_px[::2])[0])
    with create_detector(DetectorConfig(min_face_px=int(width) + 2)) as big_only:
        assert big_only.detect(afew_frames[0]) == []
    with create_detector(DetectorConfig(min_face_px=int(width) - 2)) as small_ok:
        assert len(small_ok.detect(afew_frames[0])) == 1


def test_detect_scale_maps_boxes_back_to_full_resolution(afew_frames, afew_detections):
    with create_detector(DetectorConfig(detect_scale=0.5)) as half:
        for index in (0, 20, 41):
            (face,) = half.detect(afew_frames[index])
            reference = afew_detections[index][0]
            np.testing.assert_allclose(face.bbox_xyxy_px, reference.bbox_xyxy_px, atol=6)
            np.testing.assert_allclose(face.eyes_px, reference.eyes_px, atol=6)


def test_boxes_are_clipped_to_the_image(detector, afew_frames, afew_detections):
    x1, y1, x2, y2 = afew_detections[0][0].bbox_xyxy_px
    # Cut the frame through the middle of the face: the box must end at the border.
    cut = np.ascontiguousarray(afew_frames[0][:, : int(x1 + 0.75 * (x2 - x1))])
    faces = detector.detect(cut)
    assert len(faces) == 1
    assert faces[0].bbox_xyxy_px[2] <= cut.shape[1]
    assert faces[0].bbox_xyxy_px[0] == pytest.approx(x1, abs=10)


@pytest.mark.parametrize("shape", [(1, 1, 3), (3, 3, 3), (2, 700, 3), (480, 640, 3)])
def test_tiny_and_blank_images_give_no_faces(detector, shape):
    assert detector.detect(np.zeros(shape, np.uint8)) == []


def test_read_only_and_strided_inputs_work(detector, afew_frames, afew_detections):
    frozen = afew_frames[3].copy()
    frozen.setflags(write=False)
    assert len(detector.detect(frozen)) == 1
    strided = afew_frames[3][::2, ::2]
    (face,) = detector.detect(strided)
    np.testing.assert_allclose(face.bbox_xyxy_px * 2, afew_detections[3][0].bbox_xyxy_px, atol=8)


@pytest.mark.parametrize(
    "image,match",
    [
        (np.zeros((0, 5, 3), np.uint8), r"image is empty"),
        (np.zeros((4, 4, 3), np.float64), r"needs dtype uint8, got .*float64"),
        (np.zeros((4, 4, 2), np.uint8), r"needs 3 channel"),
    ],
)
def test_bad_images_raise_invalid_image_error(detector, image, match):
    with pytest.raises(InvalidImageError, match=match):
        detector.detect(image)


def test_registry_and_full_range_model(afew_frames):
    assert DETECTORS.names() == ("full_range", "short_range")
    with pytest.raises(UnknownNameError, match=r"unknown face detector 'short'; available: full_range, short_range"):
        create_detector(replace(DetectorConfig(), model="short"))
    with create_detector(DetectorConfig(model="full_range")) as far:
        assert isinstance(far, MediaPipeFaceDetector)
        assert len(far.detect(afew_frames[10])) == 1


def test_closed_detector_refuses_and_close_is_idempotent(afew_frames):
    det = create_detector(DetectorConfig())
    det.close()
    det.close()
    with pytest.raises(RuntimeError, match="was closed"):
        det.detect(afew_frames[0])


@pytest.mark.parametrize("mediapipe_first", [False, True], ids=["ours-first", "mediapipe-first"])
def test_interpreter_exit_is_quiet(mediapipe_first: bool) -> None:
    # A process that never closes its detector: MediaPipe's own __del__ ran after its ctypes
    # helpers were gone ("Exception ignored"), and with mediapipe imported first its close
    # went through a thread pool that refuses work at exit ("cannot schedule new futures
    # after shutdown" traceback).
    code = (
        ("import mediapipe\n" if mediapipe_first else "")
        + "import numpy as np\n"
        "from ros2_affect.config import DetectorConfig\n"
        "from ros2_affect.core.detection import create_detector\n"
        "detector = create_detector(DetectorConfig())\n"
        "detector.detect(np.zeros((120, 160, 3), np.uint8))\n"
        "print('detected')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "detected" in done.stdout
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
