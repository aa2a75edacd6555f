"""affect_node end to end under launch_testing: real images in, FaceAffectArray out.

Needs a ROS 2 installation (rclpy, launch_ros, launch_testing) with this workspace built
and sourced (see docker/Dockerfile); skipped elsewhere. It publishes frames of the
package's sample clip (a real photograph, panned, zoomed and rolled) and of AFEW-VA
when ../shared/data is present, and checks that ``~/faces`` reports the face with the
source image's header, that an image without a face gives an empty array, that a bad
image is skipped without killing the node, that diagnostics are published and that a
parameter change is range-checked.
"""

from __future__ import annotations

import array
import os
import time
import unittest
from pathlib import Path
from typing import Any, Callable, List

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not importable: no ROS 2 here (run it in docker/Dockerfile)")
pytest.importorskip("launch_testing", reason="launch_testing (ROS 2) is not installed")

import launch_ros.actions  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import numpy as np  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

import launch  # noqa: E402
from affect_msgs.msg import FaceAffectArray  # noqa: E402
from ros2_affect.config import load_parameter_file  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_IMAGE = REPO_ROOT / "ros2_affect" / "data" / "astronaut.jpg"
SHARED_DATA = Path(os.environ.get("ROS2_AFFECT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
AFEW_DIR = SHARED_DATA / "afew-va-sample" / "001"
IMAGE_TOPIC = "/test_camera/image_raw"
FRAME_ID = "test_camera_optical"
FACES_TOPIC = "/affect_node/faces"


def _frames() -> List[np.ndarray]:
    """Real face images as (H, W, 3) uint8 RGB: the bundled sample clip, then AFEW-VA frames if present."""
    import cv2

    from ros2_affect.tools.inputs import sample_frame

    frames: List[np.ndarray] = []
    photo = cv2.imread(str(SAMPLE_IMAGE), cv2.IMREAD_COLOR)
    if photo is not None:
        photo = np.ascontiguousarray(photo[:, :, ::-1])
        frames += [sample_frame(photo, t) for t in np.linspace(0.0, 1.0, 15)]
    for path in sorted(AFEW_DIR.glob("*.png"))[:15]:
        frames.append(np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]))
    return frames


def _image_msg(rgb: np.ndarray, sec: int, nanosec: int) -> Image:
    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
    msg.header.frame_id = FRAME_ID
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding, msg.is_bigendian, msg.step = "rgb8", 0, int(rgb.shape[1]) * 3
    msg.data = array.array("B", np.ascontiguousarray(rgb).tobytes())
    return msg


def _node_parameters() -> dict:
    params = load_parameter_file(REPO_ROOT / "config" / "affect.yaml")
    params["tracker"] = dict(params.get("tracker", {}), min_hits=1)
    if not any((REPO_ROOT / "ros2_affect" / "models").glob("*.onnx")):
        params["model"] = dict(params.get("model", {}), kind="none")  # no trained model shipped yet
    return params


@pytest.mark.launch_test
def generate_test_description():  # type: ignore[no-untyped-def]
    node = launch_ros.actions.Node(
        package="ros2_affect",
        executable="affect_node",
        name="affect_node",
        parameters=[_node_parameters()],
        remappings=[("image", IMAGE_TOPIC)],
        output="screen",
    )
    return launch.LaunchDescription([node, launch_testing.actions.ReadyToTest()]), {"affect_node": node}


class TestAffectNode(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        rclpy.init()
        cls.frames = _frames()

    @classmethod
    def tearDownClass(cls) -> None:
        rclpy.shutdown()

    def setUp(self) -> None:
        self.node = rclpy.create_node("affect_node_test_client")
        self.pub = self.node.create_publisher(Image, IMAGE_TOPIC, qos_profile_sensor_data)
        self.received: List[Any] = []
        self.sub = self.node.create_subscription(FaceAffectArray, FACES_TOPIC, self.received.append, 10)

    def tearDown(self) -> None:
        self.node.destroy_node()

    def _publish_until(self, make: Callable[[int], Image], done: Callable[[], bool], timeout_s: float) -> None:
        """Publish ``make(i)`` at ~5 Hz, spinning, until ``done()`` (models load at startup: allow time)."""
        deadline = time.monotonic() + timeout_s
        i = 0
        while time.monotonic() < deadline and not done():
            self.pub.publish(make(i))
            end = time.monotonic() + 0.2
            while time.monotonic() < end:
                rclpy.spin_once(self.node, timeout_sec=0.05)
            i += 1

    def test_faces_carry_the_source_header(self) -> None:
        self.assertTrue(self.frames, f"no test images found ({SAMPLE_IMAGE})")
        sent = {}

        def make(i: int) -> Image:
            sent[(2000 + i, 123_456_789)] = i
            return _image_msg(self.frames[i % len(self.frames)], 2000 + i, 123_456_789)

        self._publish_until(make, lambda: any(m.faces for m in self.received), timeout_s=120.0)
        with_faces = [m for m in self.received if m.faces]
        self.assertTrue(with_faces, f"no face reported on {FACES_TOPIC} ({len(self.received)} messages received)")
        msg = with_faces[0]
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        self.assertIn(key, sent, "the FaceAffectArray stamp is not one of the published image stamps")
        self.assertEqual(msg.header.frame_id, FRAME_ID)
        rgb = self.frames[sent[key] % len(self.frames)]
        face = msg.faces[0]
        self.assertEqual((face.header.stamp.sec, face.header.stamp.nanosec), key)
        self.assertEqual((face.image_width, face.image_height), (rgb.shape[1], rgb.shape[0]))
        x1, y1, x2, y2 = face.bbox_xyxy_px
        self.assertTrue(0 <= x1 < x2 <= rgb.shape[1] + 20 and 0 <= y1 < y2 <= rgb.shape[0] + 20)
        self.assertGreater(face.detection_score, 0.5)
        self.assertTrue(face.track_id)
        if face.has_affect:
            self.assertEqual(len(face.class_names), len(face.probabilities))
            self.assertAlmostEqual(float(sum(face.probabilities)), 1.0, places=3)
            self.assertTrue(-1.0 <= face.valence <= 1.0 and -1.0 <= face.arousal <= 1.0)

    def test_no_face_gives_an_empty_array(self) -> None:
        black = np.zeros((240, 320, 3), np.uint8)

        def done() -> bool:
            return any(m.header.stamp.sec >= 3000 and not m.faces for m in self.received)

        self._publish_until(lambda i: _image_msg(black, 3000 + i, 0), done, timeout_s=60.0)
        self.assertTrue(done(), "no empty FaceAffectArray for an image without a face")

    def test_bad_image_is_skipped_and_the_node_keeps_running(self, proc_output: Any) -> None:
        bad = _image_msg(np.zeros((10, 10, 3), np.uint8), 4000, 0)
        bad.encoding = "yuv422"
        for _ in range(3):
            self.pub.publish(bad)
            rclpy.spin_once(self.node, timeout_sec=0.1)
        proc_output.assertWaitFor("image encoding 'yuv422' is not supported", timeout=30)
        black = np.zeros((240, 320, 3), np.uint8)
        self._publish_until(
            lambda i: _image_msg(black, 5000 + i, 0),
            lambda: any(m.header.stamp.sec >= 5000 for m in self.received),
            timeout_s=30.0,
        )
        self.assertTrue(any(m.header.stamp.sec >= 5000 for m in self.received), "node stopped after a bad image")

    def test_diagnostics_are_published(self) -> None:
        statuses: List[Any] = []
        self.node.create_subscription(
            DiagnosticArray, "/diagnostics", lambda m: statuses.extend(m.status), 10
        )
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and not any("affect_node" in s.name for s in statuses):
            rclpy.spin_once(self.node, timeout_sec=0.1)
        ours = [s for s in statuses if "affect_node" in s.name]
        self.assertTrue(ours, "no diagnostics from affect_node")
        keys = {kv.key for kv in ours[-1].values}
        self.assertTrue({"input rate (Hz)", "latency p95 (ms)", "dropped frames (total)", "backend"} <= keys)

    def test_parameter_changes_are_validated(self) -> None:
        client = self.node.create_client(SetParameters, "/affect_node/set_parameters")
        self.assertTrue(client.wait_for_service(timeout_sec=30.0))

        def set_double(name: str, value: float) -> Any:
            request = SetParameters.Request()
            request.parameters = [
                Parameter(name=name, value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value))
            ]
            future = client.call_async(request)
            rclpy.spin_until_future_complete(self.node, future, timeout_sec=30.0)
            return future.result().results[0]

        refused = set_double("detector.min_score", 1.5)
        self.assertFalse(refused.successful)
        accepted = set_double("detector.min_score", 0.6)
        self.assertTrue(accepted.successful, accepted.reason)
        inconsistent = set_double("latency_error_ms", 10.0)  # below latency_warn_ms
        self.assertFalse(inconsistent.successful)
        self.assertIn("latency_warn_ms", inconsistent.reason)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_code(self, proc_info: Any) -> None:
        # SIGINT from launch: rclpy returns 0 after KeyboardInterrupt (or -2 on some distros)
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15])
