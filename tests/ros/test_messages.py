"""FrameResult -> FaceAffectArray (rosbags flavour), stamps, and viewing rays from CameraInfo."""

from __future__ import annotations

import logging
from typing import Any, Optional

import cv2
import numpy as np
import pytest

from ros2_affect.core.types import (
    CANONICAL_EXPRESSIONS,
    AffectEstimate,
    AlignedFace,
    FaceDetection,
    FaceResult,
    FrameResult,
)
from ros2_affect.errors import InvalidCameraInfoError, InvalidImageError
from ros2_affect.msgs import messages
from ros2_affect.msgs.messages import (
    CameraModel,
    build_face_affect_array,
    camera_model_from_info,
    header_for,
    latency_ms_of,
    rosbags_message_types,
    split_stamp_ns,
    stamp_ns_of,
    to_time,
)
from ros2_affect.msgs.msg_types import create_typestore

ARRAY = "affect_msgs/msg/FaceAffectArray"
W, H = 640, 480


@pytest.fixture(scope="module")
def store() -> Any:
    return create_typestore("humble")


@pytest.fixture(scope="module")
def mt(store: Any) -> Any:
    return rosbags_message_types(store)


def _face(track_id: str, bbox: Any, eyes: Any, affect: Optional[AffectEstimate], confirmed: bool = True) -> FaceResult:
    det = FaceDetection(
        bbox_xyxy_px=np.asarray(bbox, np.float32),
        score=0.875,
        keypoints_px=np.zeros((6, 2), np.float32),
        eyes_px=np.asarray(eyes, np.float32),
        eyes_refined=True,
    )
    aligned = AlignedFace(crop=np.zeros((48, 48, 1), np.uint8), detection=det, roll_deg=-4.25)
    return FaceResult(track_id=track_id, detection=det, aligned=aligned, affect=affect, track_confirmed=confirmed)


def _affect() -> AffectEstimate:
    probs = np.array([0.05, 0.6, 0.05, 0.2, 0.04, 0.03, 0.03], np.float32)
    return AffectEstimate(CANONICAL_EXPRESSIONS, probs, 0.55, 0.25, False, 8, "cnn_rnn_v1")


def _result(*faces: FaceResult, dropped: int = 0, stage_ms: Optional[dict] = None) -> FrameResult:
    return FrameResult(
        stamp_ns=1_700_000_000_987_654_321,
        frame_id="head_camera_optical",
        width_px=W,
        height_px=H,
        faces=tuple(faces),
        faces_dropped=dropped,
        stage_ms=stage_ms if stage_ms is not None else {"detect": 4.0, "model": 6.5},
    )


def _round_trip(store: Any, msg: Any) -> Any:
    return store.deserialize_cdr(store.serialize_cdr(msg, ARRAY), ARRAY)


def test_faces_carry_box_eyes_and_affect(store: Any, mt: Any) -> None:
    face = _face("f3k9a", [-20, 100, 140, 260], [[40, 160], [100, 158]], _affect())
    msg = _round_trip(store, build_face_affect_array(_result(face, dropped=2), None, mt))

    assert stamp_ns_of(msg.header.stamp) == 1_700_000_000_987_654_321
    assert msg.header.frame_id == "head_camera_optical"
    assert msg.faces_dropped == 2
    assert msg.processing_latency_ms == pytest.approx(10.5)  # sum of stages when there is no "total"
    (out,) = msg.faces
    assert out.header.stamp.nanosec == 987_654_321
    assert out.track_id == "f3k9a" and out.track_confirmed
    assert (out.image_width, out.image_height) == (W, H)
    np.testing.assert_allclose(out.bbox_xyxy_px, [-20, 100, 140, 260])
    # normalised box is clipped to the image (REP-155 ROI style)
    np.testing.assert_allclose(out.bbox_xyxy_norm, [0.0, 100 / H, 140 / W, 260 / H], rtol=1e-6)
    np.testing.assert_allclose(out.right_eye_px, [40, 160])
    np.testing.assert_allclose(out.left_eye_px, [100, 158])
    assert out.eyes_refined and out.roll_deg == pytest.approx(-4.25)
    assert out.detection_score == pytest.approx(0.875)
    assert out.has_affect and out.expression == "happy"
    assert out.expression_confidence == pytest.approx(0.6)
    assert out.class_names == list(CANONICAL_EXPRESSIONS)
    np.testing.assert_allclose(out.probabilities, _affect().probabilities)
    assert (out.valence, out.arousal) == (pytest.approx(0.55), pytest.approx(0.25))
    assert not out.va_derived and out.frames_used == 8 and out.model_id == "cnn_rnn_v1"
    assert not out.has_direction


def test_face_without_model_output_has_empty_affect_fields(store: Any, mt: Any) -> None:
    face = _face("b", [10, 10, 60, 60], [[20, 30], [45, 30]], None, confirmed=False)
    (out,) = _round_trip(store, build_face_affect_array(_result(face), None, mt)).faces
    assert not out.has_affect and not out.track_confirmed
    assert out.expression == "" and out.class_names == [] and len(out.probabilities) == 0
    assert out.frames_used == 0 and out.model_id == ""


def test_no_face_gives_an_empty_array_not_nothing(store: Any, mt: Any) -> None:
    msg = _round_trip(store, build_face_affect_array(_result(stage_ms={"total": 3.25, "detect": 2.0}), None, mt))
    assert msg.faces == []
    assert msg.processing_latency_ms == pytest.approx(3.25)  # "total" wins over the stage sum
    assert stamp_ns_of(msg.header.stamp) == 1_700_000_000_987_654_321


def test_source_header_is_reused_verbatim(store: Any, mt: Any) -> None:
    header = mt.Header(stamp=mt.Time(sec=12, nanosec=34), frame_id="from_the_image_msg")
    face = _face("a", [10, 10, 60, 60], [[20, 30], [45, 30]], _affect())
    msg = build_face_affect_array(_result(face), header, mt, latency_ms=7.0)
    assert msg.header is header and msg.faces[0].header is header
    assert msg.processing_latency_ms == 7.0


def test_zero_size_result_is_rejected(mt: Any) -> None:
    bad = FrameResult(stamp_ns=0, frame_id="", width_px=0, height_px=480)
    with pytest.raises(InvalidImageError, match=r"FrameResult image size 0x480 is not valid"):
        build_face_affect_array(bad, None, mt)


@pytest.mark.parametrize(
    "stamp_ns, sec, nanosec",
    [(0, 0, 0), (1_500_000_001, 1, 500_000_001), (-1, -1, 999_999_999), ((2**31 - 1) * 10**9 + 5, 2**31 - 1, 5)],
)
def test_stamps_split_like_builtin_interfaces_time(mt: Any, stamp_ns: int, sec: int, nanosec: int) -> None:
    assert split_stamp_ns(stamp_ns) == (sec, nanosec)
    t = to_time(stamp_ns, mt)
    assert (t.sec, t.nanosec) == (sec, nanosec)
    assert stamp_ns_of(t) == stamp_ns


def test_stamp_beyond_int32_seconds_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"stamp_ns = 2147483648000000000 is out of range"):
        split_stamp_ns(2**31 * 10**9)


def test_header_for_uses_result_stamp_and_frame(mt: Any) -> None:
    h = header_for(_result(), mt)
    assert h.frame_id == "head_camera_optical" and stamp_ns_of(h.stamp) == 1_700_000_000_987_654_321


def test_latency_of_empty_stage_dict_is_zero() -> None:
    assert latency_ms_of(_result(stage_ms={})) == 0.0


# -- viewing rays ------------------------------------------------------------------------------

K = np.array([[610.0, 0.0, 318.5], [0.0, 612.0, 241.0], [0.0, 0.0, 1.0]])
D_PLUMB = np.array([-0.28, 0.09, 0.0012, -0.0007, -0.012])
POINTS_3D = np.array([[0.0, 0.0, 2.0], [0.35, -0.2, 1.5], [-0.5, 0.3, 2.5], [0.1, 0.25, 0.8]])


def _info(store: Any, **overrides: Any) -> Any:
    t = store.types
    fields = dict(
        header=t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id="cam"),
        height=H,
        width=W,
        distortion_model="plumb_bob",
        d=D_PLUMB.copy(),
        k=K.reshape(-1).copy(),
        r=np.eye(3).reshape(-1),
        p=np.array([600.0, 0, 320.0, 0, 0, 600.0, 240.0, 0, 0, 0, 1, 0]),
        binning_x=0,
        binning_y=0,
        roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )
    fields.update(overrides)
    return t["sensor_msgs/msg/CameraInfo"](**fields)


def _unit(points: np.ndarray) -> np.ndarray:
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def test_rays_invert_opencv_projection_with_plumb_bob_distortion(store: Any) -> None:
    pixels, _ = cv2.projectPoints(POINTS_3D, np.zeros(3), np.zeros(3), K, D_PLUMB)
    model = camera_model_from_info(_info(store), W, H)
    rays = model.rays(pixels.reshape(-1, 2))
    np.testing.assert_allclose(rays, _unit(POINTS_3D), atol=2e-4)
    # Ignoring the distortion would be visibly wrong off-centre (the check above can fail).
    pinhole = camera_model_from_info(_info(store, d=np.zeros(5)), W, H).rays(pixels.reshape(-1, 2))
    assert np.max(np.abs(pinhole - _unit(POINTS_3D))) > 5e-3


def test_rays_with_equidistant_fisheye_model(store: Any) -> None:
    d = np.array([0.05, -0.01, 0.002, -0.0005])
    pixels, _ = cv2.fisheye.projectPoints(POINTS_3D.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, d)
    model = camera_model_from_info(_info(store, distortion_model="equidistant", d=d), W, H)
    np.testing.assert_allclose(model.rays(pixels.reshape(-1, 2)), _unit(POINTS_3D), atol=2e-4)


def test_rectified_images_use_p(store: Any) -> None:
    p = np.array([[600.0, 0, 320.0], [0, 600.0, 240.0], [0, 0, 1]])
    pixels, _ = cv2.projectPoints(POINTS_3D, np.zeros(3), np.zeros(3), p, None)
    model = camera_model_from_info(_info(store), W, H, rectified=True)
    np.testing.assert_allclose(model.rays(pixels.reshape(-1, 2)), _unit(POINTS_3D), atol=1e-9)


def test_binning_and_roi_map_back_to_the_sensor(store: Any) -> None:
    # Sensor 1280x960 calibrated; the camera publishes the 800x600 ROI at (200, 100), binned by 2.
    k_full = np.array([[1220.0, 0, 637.0], [0, 1224.0, 482.0], [0, 0, 1]])
    t = store.types
    roi = t["sensor_msgs/msg/RegionOfInterest"](x_offset=200, y_offset=100, height=600, width=800, do_rectify=False)
    info = _info(store, width=1280, height=960, k=k_full.reshape(-1), d=np.zeros(5), binning_x=2, binning_y=2, roi=roi)
    full_px, _ = cv2.projectPoints(POINTS_3D, np.zeros(3), np.zeros(3), k_full, None)
    published_px = (full_px.reshape(-1, 2) - [200, 100]) / 2
    model = camera_model_from_info(info, 400, 300)
    np.testing.assert_allclose(model.rays(published_px), _unit(POINTS_3D), atol=1e-9)


def test_uncalibrated_camera_info_is_rejected(store: Any) -> None:
    with pytest.raises(InvalidCameraInfoError, match=r"K has focal lengths fx=0.0, fy=0.0; .* not calibrated"):
        camera_model_from_info(_info(store, k=np.zeros(9), d=np.zeros(0), distortion_model=""), W, H)


def test_camera_info_of_another_resolution_is_rejected(store: Any) -> None:
    with pytest.raises(InvalidCameraInfoError, match=r"describes a 640x480 image .* but the image is 1280x720"):
        camera_model_from_info(_info(store), 1280, 720)


def test_unknown_distortion_model_is_rejected(store: Any) -> None:
    with pytest.raises(InvalidCameraInfoError, match=r"distortion_model 'kannala' with non-zero coefficients"):
        camera_model_from_info(_info(store, distortion_model="kannala"), W, H)


def test_array_gets_rays_through_the_eye_midpoint(store: Any, mt: Any) -> None:
    pixels, _ = cv2.projectPoints(POINTS_3D[1:2], np.zeros(3), np.zeros(3), K, D_PLUMB)
    mid = pixels.reshape(2)
    face = _face("r", [mid[0] - 50, mid[1] - 60, mid[0] + 50, mid[1] + 80], [mid - [25, 0], mid + [25, 0]], _affect())
    msg = _round_trip(store, build_face_affect_array(_result(face), None, mt, camera_info=_info(store)))
    (out,) = msg.faces
    assert out.has_direction
    got = np.array([out.direction.x, out.direction.y, out.direction.z])
    np.testing.assert_allclose(got, _unit(POINTS_3D[1:2])[0], atol=1e-3)


def test_unusable_camera_info_logs_once_and_still_publishes(
    store: Any, mt: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(messages, "_warned_camera_problems", set())
    face = _face("u", [10, 10, 60, 60], [[20, 30], [45, 30]], _affect())
    info = _info(store, k=np.zeros(9), d=np.zeros(0))
    with caplog.at_level(logging.WARNING, logger="ros2_affect.msgs.messages"):
        for _ in range(3):
            msg = build_face_affect_array(_result(face), None, mt, camera_info=info)
            assert len(msg.faces) == 1 and not msg.faces[0].has_direction
    warnings = [r for r in caplog.records if "no viewing rays" in r.getMessage()]
    assert len(warnings) == 1  # once per distinct problem, not once per frame
    assert "fx=0.0, fy=0.0" in warnings[0].getMessage()


def test_prepared_camera_model_is_accepted(store: Any, mt: Any) -> None:
    model = CameraModel(camera_matrix=K, distortion=np.zeros(0), distortion_model="none")
    face = _face("c", [280, 200, 360, 290], [[303.5, 241.0], [333.5, 241.0]], None)  # eye midpoint on the axis
    (out,) = build_face_affect_array(_result(face), None, mt, camera_info=model).faces
    assert out.has_direction
    np.testing.assert_allclose([out.direction.x, out.direction.y, out.direction.z], [0, 0, 1], atol=1e-12)
