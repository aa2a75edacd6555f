"""Run affect_node as its own process under a real rclpy and talk to it over DDS.

Used by the node tests and ``ros2-affect bench-node``'s tests. Everything stays on this
machine: each node gets a ROS domain of its own and localhost-only discovery, and the
test side's rclpy context joins that domain.
"""

from __future__ import annotations

import array
import itertools
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGED_CONFIG = REPO_ROOT / "config" / "affect.yaml"
FASTDDS_PROFILE = REPO_ROOT / "config" / "fastdds_large_images.xml"

# Domains 1..100 per process id, then the next ones: parallel test runs on one machine do
# not meet, and neither do two nodes of one run.
_DOMAINS = itertools.count((os.getpid() * 7) % 90)


def next_domain_id() -> int:
    return 1 + next(_DOMAINS) % 100


def ros_environment(domain_id: int, fastdds_profile: Optional[Path] = FASTDDS_PROFILE) -> Dict[str, str]:
    """The environment of a node process: localhost-only DDS on its own domain."""
    env = dict(os.environ)
    env.update(
        ROS_DOMAIN_ID=str(domain_id),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        PYTHONUNBUFFERED="1",
        RCUTILS_COLORIZED_OUTPUT="0",
    )
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated in Jazzy; the discovery range above replaces it
    env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    if fastdds_profile is not None:
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(fastdds_profile)
    return env


class NodeProcess:
    """``affect_node --ros-args --params-file config/affect.yaml ...`` in a subprocess.

    Output (stdout and stderr together) goes to a file, read with :meth:`output` and
    :meth:`wait_for_output`.
    """

    def __init__(
        self,
        workdir: Path,
        domain_id: int,
        parameters: Optional[Dict[str, Any]] = None,
        remaps: Sequence[Tuple[str, str]] = (),
        params_file: Path = PACKAGED_CONFIG,
        fastdds_profile: Optional[Path] = FASTDDS_PROFILE,
    ) -> None:
        self.domain_id = domain_id
        self.log_path = workdir / f"affect_node_{domain_id}_{time.monotonic_ns()}.log"
        args = ["affect_node", "--ros-args", "--params-file", str(params_file)]
        for name, value in (parameters or {}).items():
            args += ["-p", f"{name}:={_param_text(value)}"]
        for old, new in remaps:
            args += ["-r", f"{old}:={new}"]
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=ros_environment(domain_id, fastdds_profile),
            cwd=str(workdir),
        )

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for_output(self, pattern: str, timeout_s: float = 60.0) -> re.Match:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output())
            if match:
                return match
            if self.process.poll() is not None:
                code = self.process.returncode
                raise AssertionError(f"affect_node exited ({code}) before {pattern!r}:\n{self.output()}")
            time.sleep(0.1)
        raise AssertionError(f"affect_node did not print {pattern!r} in {timeout_s} s:\n{self.output()}")

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 20.0) -> int:
        """Send ``sig`` and wait; returns the exit code (kills and fails after ``timeout_s``)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"affect_node ignored signal {sig} for {timeout_s} s:\n{self.output()}") from None
        self._log.close()
        return int(self.process.returncode)

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else "''"
    return repr(value)


class RosClient:
    """The test side: an rclpy context on the node's domain, spun on a background thread."""

    def __init__(self, domain_id: int, name: str = "affect_test") -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # shut down from close()
            pass

    def collector(self, msg_type: Any, topic: str, qos: Any = 10) -> Collector:
        return Collector(self.node, msg_type, topic, qos)

    def publisher(self, msg_type: Any, topic: str, reliable: bool = True, depth: int = 10) -> Any:
        qos = QoSProfile(
            depth=depth, reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
        )
        return self.node.create_publisher(msg_type, topic, qos)

    def wait_for_subscriber(self, publisher: Any, timeout_s: float = 30.0, settle_s: float = 1.0) -> None:
        """Wait until the publisher has matched a subscription, then ``settle_s`` more.

        Matching is seen from the publisher's side first; a best-effort reader that has not
        matched this writer yet drops what arrives, so the first image could vanish.
        """
        wait_until(lambda: publisher.get_subscription_count() > 0, timeout_s, f"a subscriber on {publisher.topic_name}")
        time.sleep(settle_s)

    def call(self, srv_type: Any, name: str, request: Any, timeout_s: float = 20.0) -> Any:
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout_s):
                raise AssertionError(f"service {name} did not appear in {timeout_s} s")
            future = client.call_async(request)
            wait_until(future.done, timeout_s, f"an answer from {name}")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        self._thread.join(timeout=5.0)

    def __enter__(self) -> RosClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Collector:
    """Every message received on a topic, with its arrival time (monotonic seconds)."""

    def __init__(self, node: Node, msg_type: Any, topic: str, qos: Any) -> None:
        self._lock = threading.Lock()
        self._items: List[Tuple[float, Any]] = []
        self.subscription = node.create_subscription(msg_type, topic, self._on_message, qos)

    def _on_message(self, msg: Any) -> None:
        with self._lock:
            self._items.append((time.monotonic(), msg))

    @property
    def messages(self) -> List[Any]:
        with self._lock:
            return [m for _, m in self._items]

    @property
    def timed(self) -> List[Tuple[float, Any]]:
        with self._lock:
            return list(self._items)

    def wait_for(self, count: int, timeout_s: float = 30.0) -> List[Any]:
        what = f"{count} message(s) on {self.subscription.topic_name}"
        wait_until(lambda: len(self.messages) >= count, timeout_s, what)
        return self.messages

    def wait_for_match(self, predicate: Callable[[Any], bool], timeout_s: float = 30.0) -> Any:
        found: List[Any] = []

        def check() -> bool:
            found[:] = [m for m in self.messages if predicate(m)]
            return bool(found)

        wait_until(check, timeout_s, f"a matching message on {self.subscription.topic_name}")
        return found[0]


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


# -- messages --------------------------------------------------------------------------------


def image_msg(image: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> Any:
    """sensor_msgs/Image of an RGB frame in ``encoding`` (rgb8, bgr8 or mono8)."""
    import cv2
    from sensor_msgs.msg import Image

    if encoding == "bgr8":
        image = image[:, :, ::-1]
    elif encoding == "mono8":
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    image = np.ascontiguousarray(image)
    channels = 1 if image.ndim == 2 else image.shape[2]
    msg = Image(height=int(image.shape[0]), width=int(image.shape[1]), encoding=encoding, is_bigendian=0)
    msg.step = int(image.shape[1]) * channels
    set_stamp(msg.header, stamp_ns, frame_id)
    msg.data = array.array("B", image.tobytes())
    return msg


def jpeg_msg(image: np.ndarray, stamp_ns: int, frame_id: str, quality: int = 90) -> Any:
    import cv2
    from sensor_msgs.msg import CompressedImage

    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    msg = CompressedImage(format="jpeg")
    set_stamp(msg.header, stamp_ns, frame_id)
    msg.data = array.array("B", encoded.tobytes())
    return msg


def set_stamp(header: Any, stamp_ns: int, frame_id: str) -> None:
    header.stamp.sec, header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    header.frame_id = frame_id


def stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def diagnostic_values(status: Any) -> Dict[str, str]:
    return {kv.key: kv.value for kv in status.values}
