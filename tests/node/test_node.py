"""affect_node under a real rclpy (ROS 2 Jazzy wheels, Fast DDS): real frames in, messages out.

Each test starts the node the way a robot does (its console script, the packaged
config/affect.yaml as ``--params-file``, remapped topics) as a separate process on a
ROS domain of its own, and talks to it over DDS from this process.
"""

from __future__ import annotations

import array
import math
import signal
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pytest

from tests.node.conftest import SKIP_REASON

pytest.importorskip("rclpy", reason=SKIP_REASON)
pytest.importorskip("affect_msgs.msg", reason=SKIP_REASON)

import psutil  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import GetParameters, SetParameters  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from affect_msgs.msg import FaceAffectArray  # noqa: E402
from ros2_affect.assets import DEFAULT_ENCODER_MODEL  # noqa: E402
from tests.node.harness import (  # noqa: E402
    NodeProcess,
    RosClient,
    diagnostic_values,
    image_msg,
    jpeg_msg,
    next_domain_id,
    set_stamp,
    stamp_ns,
    wait_until,
)

CAMERA = "/cam/image_raw"
FRAME_ID = "cam_optical"
FACES = "/affect_node/faces"
BASE_STAMP_NS = 1_700_000_000 * 1_000_000_000
FRAME_PERIOD_NS = 40_000_000


Started = Tuple[NodeProcess, RosClient]


@pytest.fixture
def start_node(workdir: Path) -> Iterator[Callable[..., Started]]:
    """Start affect_node (remapped onto CAMERA) and a client on its domain; both stopped at the end."""
    running: List[Started] = []

    def start(parameters: Optional[Dict[str, Any]] = None, **kwargs: Any) -> Started:
        domain = next_domain_id()
        remaps = [("image", CAMERA), ("image/compressed", f"{CAMERA}/compressed"), ("camera_info", "/cam/camera_info")]
        node = NodeProcess(workdir, domain, parameters=parameters, remaps=remaps, **kwargs)
        client = RosClient(domain)
        running.append((node, client))
        node.wait_for_output(r"listening on ")
        return node, client

    yield start
    for node, client in running:
        client.close()
        node.stop(signal.SIGINT)


def _faces_collector(client: RosClient) -> Any:
    faces = client.collector(FaceAffectArray, FACES)
    wait_until(lambda: faces.subscription.get_publisher_count() > 0, 30, f"affect_node's {FACES}")
    return faces


def _stamp(index: int) -> int:
    return BASE_STAMP_NS + index * FRAME_PERIOD_NS


def _assert_clean_exit(node: NodeProcess, code: int) -> None:
    output = node.output()
    assert code == 0, output
    assert "Traceback" not in output, output


def _assert_affect(face: Any) -> None:
    assert face.has_affect
    probabilities = np.asarray(face.probabilities, dtype=np.float64)
    assert len(face.class_names) == probabilities.size == 7
    assert abs(probabilities.sum() - 1.0) < 1e-3 and np.all(probabilities >= 0)
    assert face.expression == face.class_names[int(np.argmax(probabilities))]
    assert math.isfinite(face.valence) and math.isfinite(face.arousal)
    assert -1.0 <= face.valence <= 1.0 and -1.0 <= face.arousal <= 1.0
    assert not face.va_derived  # the shipped models 2.0 regress valence/arousal


# -- start and stop -----------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_starts_says_what_it_listens_to_and_stops_cleanly(workdir: Path, sig: int) -> None:
    domain = next_domain_id()
    with NodeProcess(workdir, domain, remaps=[("image", CAMERA)]) as node:
        started = node.wait_for_output(r"listening on (\S+) \(Image\); publishing (\S+); model (\S+ model \S+)")
        assert started.group(1) == CAMERA and started.group(2) == FACES
        assert DEFAULT_ENCODER_MODEL.replace("_encoder.onnx", "") in started.group(3)
        with RosClient(domain) as client:  # a real participant sees its topics
            wait_until(lambda: FACES in dict(client.node.get_topic_names_and_types()), 30, f"{FACES} in the graph")
            topics = dict(client.node.get_topic_names_and_types())
            assert topics[FACES] == ["affect_msgs/msg/FaceAffectArray"]
            assert topics[CAMERA] == ["sensor_msgs/msg/Image"]
        _assert_clean_exit(node, node.stop(sig))


# -- images in, FaceAffectArray out -------------------------------------------------------------


def test_a_looping_recording_restarts_tracks_and_says_so_once_in_the_ros_log(
    start_node: Callable[..., Started], clip_frames: List[np.ndarray]
) -> None:
    """Stamps going backwards (a bag played with --loop): the tracker ends every track and its
    reason reaches the node's ROS logger (one WARN line naming the node), not bare stderr."""
    node, client = start_node({})
    faces = _faces_collector(client)
    publisher = client.publisher(Image, CAMERA)
    client.wait_for_subscriber(publisher)
    frames = clip_frames[:12]
    for index, frame in enumerate(frames + frames[:4]):
        stamp = _stamp(index % len(frames))  # the second pass starts over at the first stamp
        publisher.publish(image_msg(frame, "rgb8", stamp, FRAME_ID))
        faces.wait_for(index + 1, timeout_s=20)
    results = faces.messages
    assert [stamp_ns(r.header) for r in results] == [_stamp(i % len(frames)) for i in range(len(frames) + 4)]
    first = {f.track_id for r in results[: len(frames)] for f in r.faces}
    second = {f.track_id for r in results[len(frames) :] for f in r.faces}
    assert second and not (first & second)  # fresh ids after the jump, never matched across it
    lines = [line for line in node.output().splitlines() if "time went backwards" in line]
    assert len(lines) == 1 and "[affect_node]" in lines[0] and "WARN" in lines[0], lines


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8", "jpeg"])
def test_one_result_per_image_with_the_source_header_and_a_stable_track(
    start_node: Callable[..., Started], clip_frames: List[np.ndarray], encoding: str
) -> None:
    compressed = encoding == "jpeg"
    node, client = start_node({"compressed": compressed})
    faces = _faces_collector(client)
    topic = f"{CAMERA}/compressed" if compressed else CAMERA
    publisher = client.publisher(CompressedImage if compressed else Image, topic)
    client.wait_for_subscriber(publisher)
    for index, frame in enumerate(clip_frames):  # one at a time: every image is processed
        stamp = _stamp(index)
        msg = jpeg_msg(frame, stamp, FRAME_ID) if compressed else image_msg(frame, encoding, stamp, FRAME_ID)
        publisher.publish(msg)
        faces.wait_for(index + 1, timeout_s=20)
    results = faces.messages
    assert [stamp_ns(r.header) for r in results] == [_stamp(i) for i in range(len(clip_frames))]
    assert all(r.header.frame_id == FRAME_ID for r in results)
    # this dark film face is found in every colour frame and in 39 of the 42 grey ones
    assert sum(len(r.faces) >= 1 for r in results) >= 0.9 * len(clip_frames), [len(r.faces) for r in results]
    confirmed = [f for r in results for f in r.faces if f.track_confirmed]
    ids = [f.track_id for f in confirmed]
    person = max(set(ids), key=ids.count)
    assert ids.count(person) >= 0.85 * len(clip_frames)  # one person, one id for the whole clip
    assert sum(len(r.faces) > 1 for r in results) <= 4  # grey frames of this film hold brief false detections
    for result in results:
        for face in result.faces:
            assert stamp_ns(face.header) == stamp_ns(result.header)
            assert face.image_width == clip_frames[0].shape[1] and face.image_height == clip_frames[0].shape[0]
            assert not face.has_direction  # no camera_info asked for
            _assert_affect(face)
    assert max(f.frames_used for f in confirmed) == 8  # the temporal model saw a full sequence
    assert "Traceback" not in node.output()


def test_real_bags_replayed_onto_topics_give_one_result_per_image(
    start_node: Callable[..., Started], rosbags_dir: Path
) -> None:
    # Real camera recordings (JPEG CompressedImage + CameraInfo, no faces) from other tools'
    # bags, in both storage formats, published as their recorder saw them.
    from rosbags.highlevel import AnyReader

    node, client = start_node({"compressed": True, "use_camera_info": True})
    faces = _faces_collector(client)
    image_pub = client.publisher(CompressedImage, CAMERA + "/compressed")
    info_pub = client.publisher(CameraInfo, "/cam/camera_info")
    client.wait_for_subscriber(image_pub)
    client.wait_for_subscriber(info_pub)
    sent: List[Tuple[int, str]] = []
    for bag in ("ros2_aruco_images_mcap", "ros2_aruco_images_sqlite3"):
        with AnyReader([rosbags_dir / bag]) as reader:
            infos = [c for c in reader.connections if c.msgtype == "sensor_msgs/msg/CameraInfo"]
            images = [c for c in reader.connections if c.msgtype == "sensor_msgs/msg/CompressedImage"]
            assert images and infos
            info = reader.deserialize(next(reader.messages(connections=infos))[2], infos[0].msgtype)
            for _, _, raw in reader.messages(connections=images):
                image = reader.deserialize(raw, images[0].msgtype)
                stamp = int(image.header.stamp.sec) * 1_000_000_000 + int(image.header.stamp.nanosec) + len(sent)
                camera_info = CameraInfo(
                    height=int(info.height), width=int(info.width), distortion_model=str(info.distortion_model),
                    d=[float(v) for v in info.d], k=[float(v) for v in info.k], r=[float(v) for v in info.r],
                    p=[float(v) for v in info.p], binning_x=int(info.binning_x), binning_y=int(info.binning_y),
                )
                set_stamp(camera_info.header, stamp, image.header.frame_id)
                info_pub.publish(camera_info)
                msg = CompressedImage(format=str(image.format), data=bytes(image.data))
                set_stamp(msg.header, stamp, image.header.frame_id)
                time.sleep(0.05)  # camera_info first, as a driver publishes them
                image_pub.publish(msg)
                sent.append((stamp, image.header.frame_id))
                faces.wait_for(len(sent), timeout_s=20)
    results = faces.messages
    assert [(stamp_ns(r.header), r.header.frame_id) for r in results] == sent
    assert all(len(r.faces) == 0 for r in results)  # nobody in these recordings
    assert "Traceback" not in node.output()


# -- overload: the newest frame, never a queue ----------------------------------------------------


def test_a_fast_publisher_gets_results_for_its_newest_frames_and_drops_in_diagnostics(
    start_node: Callable[..., Started], clip_frames: List[np.ndarray]
) -> None:
    node, client = start_node({"diagnostics_period_s": 0.5})
    faces = _faces_collector(client)
    diagnostics = client.collector(DiagnosticArray, "/diagnostics")
    publisher = client.publisher(Image, CAMERA, depth=50)
    client.wait_for_subscriber(publisher)
    messages = [image_msg(clip_frames[i % len(clip_frames)], "rgb8", _stamp(i), FRAME_ID) for i in range(120)]
    for msg in messages:  # as fast as this process can: far faster than the node works
        publisher.publish(msg)
    last_stamp = _stamp(len(messages) - 1)
    faces.wait_for_match(lambda r: stamp_ns(r.header) == last_stamp, timeout_s=30)
    time.sleep(1.0)
    results = faces.messages
    stamps = [stamp_ns(r.header) for r in results]
    assert stamps == sorted(set(stamps))  # in order, each image at most once
    assert stamps[-1] == last_stamp  # the newest image was processed last: nothing stale behind it
    assert len(results) < len(messages) // 2  # the rest were dropped, not queued

    def dropped_total(array: Any) -> int:
        values = diagnostic_values(array.status[0])
        return int(values["dropped frames (total)"])

    report = diagnostics.wait_for_match(lambda a: dropped_total(a) > 0, timeout_s=10)
    values = diagnostic_values(report.status[0])
    received = int(values["received frames (total)"])
    assert dropped_total(report) + int(values["processed frames (total)"]) <= received <= len(messages)
    assert report.status[0].hardware_id == CAMERA  # the remapped topic, not the parameter's 'image'


# -- camera_info ---------------------------------------------------------------------------------


def _camera_info(width: int, height: int, stamp: int) -> Any:
    fx = fy = 0.9 * width
    info = CameraInfo(height=height, width=width, distortion_model="plumb_bob", d=[0.0] * 5)
    info.k = [fx, 0.0, width / 2.0, 0.0, fy, height / 2.0, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, width / 2.0, 0.0, 0.0, fy, height / 2.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    set_stamp(info.header, stamp, FRAME_ID)
    return info


def _run_with_camera_info(
    client: RosClient, frames: Sequence[np.ndarray], info_size: Optional[Tuple[int, int]]
) -> List[Any]:
    faces = _faces_collector(client)
    image_pub = client.publisher(Image, CAMERA)
    info_pub = client.publisher(CameraInfo, "/cam/camera_info")
    client.wait_for_subscriber(image_pub)
    client.wait_for_subscriber(info_pub)
    for index, frame in enumerate(frames):
        if info_size is not None:
            info_pub.publish(_camera_info(*info_size, _stamp(index)))
            time.sleep(0.05)
        image_pub.publish(image_msg(frame, "rgb8", _stamp(index), FRAME_ID))
        faces.wait_for(index + 1, timeout_s=20)
    return faces.messages


def test_camera_info_gives_every_face_a_unit_viewing_ray(
    start_node: Callable[..., Started], clip_frames: List[np.ndarray]
) -> None:
    node, client = start_node({"use_camera_info": True})
    height, width = clip_frames[0].shape[:2]
    results = _run_with_camera_info(client, clip_frames[:12], (width, height))
    faces = [f for r in results for f in r.faces]
    assert len(faces) >= 11
    for face in faces:
        assert face.has_direction
        ray = np.array([face.direction.x, face.direction.y, face.direction.z])
        assert abs(np.linalg.norm(ray) - 1.0) < 1e-5 and ray[2] > 0  # in front of the camera
        # the ray points at the eye midpoint: its pixel, reprojected with the same K
        eyes = (np.asarray(face.right_eye_px) + np.asarray(face.left_eye_px)) / 2.0
        pixel = np.array([0.9 * width * ray[0] / ray[2] + width / 2.0, 0.9 * width * ray[1] / ray[2] + height / 2.0])
        assert np.allclose(pixel, eyes, atol=0.5)


@pytest.mark.parametrize(
    ("info_size", "reason"),
    [(None, "no camera_info received yet"), ((1280, 960), "describes a 1280x960 image")],
    ids=["missing", "mismatched"],
)
def test_missing_or_mismatched_camera_info_is_a_diagnostic_not_silence(
    start_node: Callable[..., Started], clip_frames: List[np.ndarray], info_size: Any, reason: str
) -> None:
    node, client = start_node({"use_camera_info": True, "diagnostics_period_s": 0.5})
    diagnostics = client.collector(DiagnosticArray, "/diagnostics")
    results = _run_with_camera_info(client, clip_frames[:6], info_size)
    assert len(results) == 6 and sum(len(r.faces) for r in results) >= 5  # still processed
    assert not any(f.has_direction for r in results for f in r.faces)
    report = diagnostics.wait_for_match(lambda a: reason in a.status[0].message, timeout_s=10)
    assert report.status[0].level == b"\x01"  # WARN
    assert "/cam/camera_info" in diagnostic_values(report.status[0])["camera_info"]
    assert node.output().count("faces have no viewing direction") == 1  # logged once, not per image


# -- parameters at run time ----------------------------------------------------------------------


def _set(client: RosClient, **values: Any) -> List[Any]:
    request = SetParameters.Request()
    for name, value in values.items():
        name = name.replace("__", ".")
        if isinstance(value, bool):
            pv = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
        elif isinstance(value, int):
            pv = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
        elif isinstance(value, float):
            pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
        else:
            pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        request.parameters.append(Parameter(name=name, value=pv))
    return list(client.call(SetParameters, "/affect_node/set_parameters", request).results)


def _get(client: RosClient, name: str) -> Any:
    response = client.call(GetParameters, "/affect_node/get_parameters", GetParameters.Request(names=[name]))
    value = response.values[0]
    return {
        ParameterType.PARAMETER_BOOL: value.bool_value,
        ParameterType.PARAMETER_INTEGER: value.integer_value,
        ParameterType.PARAMETER_DOUBLE: value.double_value,
        ParameterType.PARAMETER_STRING: value.string_value,
    }[value.type]


def test_parameter_changes_are_applied_or_refused_with_the_reason(start_node: Callable[..., Started]) -> None:
    node, client = start_node()
    (ok,) = _set(client, detector__min_score=0.6)
    assert ok.successful, ok.reason
    assert _get(client, "detector.min_score") == pytest.approx(0.6)

    (out_of_range,) = _set(client, detector__min_score=1.5)
    assert not out_of_range.successful and "1.5" in out_of_range.reason and "0" in out_of_range.reason
    assert _get(client, "detector.min_score") == pytest.approx(0.6)

    (wrong_type,) = _set(client, detector__min_score="high")
    assert not wrong_type.successful and "type" in wrong_type.reason.lower()

    (read_only,) = _set(client, model__backend="tensorrt")
    assert not read_only.successful and "read-only" in read_only.reason
    assert _get(client, "model.backend") == "onnxruntime"

    (warn_above_error,) = _set(client, latency_warn_ms=500.0)
    assert not warn_above_error.successful and "latency_error_ms" in warn_above_error.reason
    assert "Traceback" not in node.output()


def test_tuning_while_images_flow_keeps_the_track_and_the_models(
    start_node: Callable[..., Started], clip_frames: List[np.ndarray]
) -> None:
    node, client = start_node()
    faces = _faces_collector(client)
    publisher = client.publisher(Image, CAMERA)
    client.wait_for_subscriber(publisher)

    def send(index: int) -> Any:
        publisher.publish(image_msg(clip_frames[index], "rgb8", _stamp(index), FRAME_ID))
        return faces.wait_for(index + 1, timeout_s=20)[-1]

    before = [send(i) for i in range(6)]
    results = _set(client, tracker__min_iou=0.3, alignment__margin=0.3, sequence__stride=1)
    assert len(results) == 3 and all(r.successful for r in results), [r.reason for r in results]
    after = [send(i) for i in range(6, 14)]
    ids = {f.track_id for r in before + after for f in r.faces if f.track_confirmed}
    assert len(ids) == 1  # a parameter change used to rebuild the pipeline: new ids, empty sequences
    assert max(f.frames_used for f in after[-1].faces) == 8
    output = node.output()
    assert "pipeline settings applied (models and tracks kept)" in output and "rebuilt" not in output


def test_debug_image_toggled_while_images_flow(
    start_node: Callable[..., Started], clip_frames: List[np.ndarray]
) -> None:
    node, client = start_node()
    faces = _faces_collector(client)
    debug = client.collector(Image, "/affect_node/debug_image")
    publisher = client.publisher(Image, CAMERA)
    client.wait_for_subscriber(publisher)
    published = 0
    toggles = 0
    deadline = time.monotonic() + 12.0
    while time.monotonic() < deadline:  # images at ~60 Hz while the publisher comes and goes
        publisher.publish(image_msg(clip_frames[published % len(clip_frames)], "rgb8", _stamp(published), FRAME_ID))
        published += 1
        time.sleep(1 / 60)
        if published % 15 == 0:
            (result,) = _set(client, publish_debug_image=toggles % 2 == 0)
            assert result.successful, result.reason
            toggles += 1
    assert toggles >= 10
    (result,) = _set(client, publish_debug_image=True)
    wait_until(lambda: debug.subscription.get_publisher_count() > 0, 10, "the debug image publisher")
    before = len(debug.messages)
    publisher.publish(image_msg(clip_frames[0], "rgb8", _stamp(published), FRAME_ID))
    debug.wait_for(before + 1, timeout_s=10)
    image = debug.messages[-1]
    assert (image.width, image.height, image.encoding) == (clip_frames[0].shape[1], clip_frames[0].shape[0], "rgb8")
    assert stamp_ns(image.header) == _stamp(published)
    assert node.process.poll() is None, node.output()
    assert len(faces.messages) > published // 4
    assert "Traceback" not in node.output() and "processing failed" not in node.output()


# -- bad input -------------------------------------------------------------------------------------


def test_bad_images_are_skipped_with_one_warning_each_and_diagnostics(
    start_node: Callable[..., Started], clip_frames: List[np.ndarray]
) -> None:
    node, client = start_node({"diagnostics_period_s": 0.5})
    faces = _faces_collector(client)
    diagnostics = client.collector(DiagnosticArray, "/diagnostics")
    raw_pub = client.publisher(Image, CAMERA)
    client.wait_for_subscriber(raw_pub)
    good = image_msg(clip_frames[0], "rgb8", _stamp(0), FRAME_ID)

    wrong_step = image_msg(clip_frames[0], "rgb8", _stamp(1), FRAME_ID)
    wrong_step.step = wrong_step.width * 3 - 7
    truncated = image_msg(clip_frames[0], "rgb8", _stamp(2), FRAME_ID)
    truncated.data = truncated.data[: len(truncated.data) // 2]
    unsupported = image_msg(clip_frames[0], "rgb8", _stamp(3), FRAME_ID)
    unsupported.encoding = "yuv422_yuy2"
    bad = [wrong_step, truncated, unsupported]
    for _ in range(3):  # every kind three times: one warning per kind
        for msg in bad:
            raw_pub.publish(msg)
            time.sleep(0.1)
    raw_pub.publish(good)
    result = faces.wait_for_match(lambda r: stamp_ns(r.header) == _stamp(0), timeout_s=20)
    assert len(result.faces) == 1  # still working
    assert len(faces.messages) == 1  # nothing published for the bad ones

    report = diagnostics.wait_for_match(
        lambda a: int(diagnostic_values(a.status[0])["conversion errors (total)"]) == 9, timeout_s=10
    )
    assert "could not be converted" in report.status[0].message or report.status[0].level == b"\x00"
    output = node.output()
    warnings = [line for line in output.splitlines() if "skipping image" in line]
    assert len(warnings) == 3, output
    assert "Traceback" not in output
    assert node.process.poll() is None


def test_a_corrupt_jpeg_is_skipped_and_the_node_keeps_running(
    start_node: Callable[..., Started], clip_frames: List[np.ndarray]
) -> None:
    node, client = start_node({"compressed": True})
    faces = _faces_collector(client)
    publisher = client.publisher(CompressedImage, CAMERA + "/compressed")
    client.wait_for_subscriber(publisher)
    corrupt = jpeg_msg(clip_frames[0], _stamp(0), FRAME_ID)
    corrupt.data = array.array("B", bytes(corrupt.data[:200]) + bytes(range(256)) * 4)
    not_an_image = CompressedImage(format="jpeg", data=b"this is not a jpeg")
    set_stamp(not_an_image.header, _stamp(1), FRAME_ID)
    for msg in (corrupt, not_an_image, corrupt):
        publisher.publish(msg)
        time.sleep(0.1)
    publisher.publish(jpeg_msg(clip_frames[1], _stamp(2), FRAME_ID))
    result = faces.wait_for_match(lambda r: stamp_ns(r.header) == _stamp(2), timeout_s=20)
    assert len(result.faces) == 1
    output = node.output()
    assert "skipping image" in output and "Traceback" not in output
    assert node.process.poll() is None


# -- long runs -------------------------------------------------------------------------------------


def test_faces_coming_and_going_keep_memory_and_publishers_bounded(
    start_node: Callable[..., Started], clip_frames: List[np.ndarray]
) -> None:
    node, client = start_node({"tracker.max_misses": 2})
    faces = _faces_collector(client)
    publisher = client.publisher(Image, CAMERA)
    client.wait_for_subscriber(publisher)
    empty = np.zeros_like(clip_frames[0])
    process = psutil.Process(node.process.pid)

    def node_publishers() -> int:
        return sum(1 for _ in client.node.get_publisher_names_and_types_by_node("affect_node", "/"))

    rss: List[int] = []
    publishers: List[int] = []
    index = 0
    for cycle in range(30):  # a face for 6 frames, then nobody for 4: a new track every cycle
        for frame in clip_frames[cycle % 30 : cycle % 30 + 6] + [empty] * 4:
            publisher.publish(image_msg(frame, "rgb8", _stamp(index), FRAME_ID))
            index += 1
            faces.wait_for(index, timeout_s=20)
        if cycle in (5, 29):
            rss.append(process.memory_info().rss)
            publishers.append(node_publishers())
    ids = {f.track_id for r in faces.messages for f in r.faces}
    assert len(ids) >= 25  # faces really came and went
    assert publishers[0] == publishers[1]
    growth_mb = (rss[1] - rss[0]) / 2**20
    assert growth_mb < 8.0, f"resident memory grew {growth_mb:.1f} MB over 240 frames"
