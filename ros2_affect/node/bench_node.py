"""Node-level benchmark: affect_node as a process, fed 640x480 camera images over real DDS.

    python -m ros2_affect.node.bench_node [--rates 15 30] [--faces 1 4] [--seconds 20]
                                          [--transport default shipped] [--markdown]
    (``make bench-node`` runs it in the real-rclpy environment, .venv-ros)

For each transport, face count and rate, one worker process starts ``affect_node`` with the
packaged parameter file, publishes rgb8 frames of real faces (the bench scenes) with
sensor-data QoS at the rate, as a camera driver does, and measures from ``~/faces``:
frames published, results received, the drop rate, and the latency from the image stamp
(wall clock at publish) to the result's arrival, p50/p95. The node's own diagnostics split
the drops: lost in transport (published but never received by the node) vs. dropped by the
node (received while busy; it keeps the newest frame). Transports: ``default`` (Fast DDS
built-ins: 512 KB shared-memory segment, UDP beyond) and ``shipped``
(``config/fastdds_large_images.xml`` for both processes). Prints figures; gates nothing.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

TRANSPORT_PROFILES = {"default": None, "shipped": "fastdds_large_images.xml"}


def _config_dir() -> Path:
    from ros2_affect.assets import default_config_path

    return default_config_path().parent


def _environment(domain_id: int, transport: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    env.pop("ROS_LOCALHOST_ONLY", None)
    env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    profile = TRANSPORT_PROFILES[transport]
    if profile is not None:
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(_config_dir() / profile)
    return env


def run_worker(
    transport: str, faces: int, rate_hz: float, seconds: float, warmup_s: float, domain_id: int
) -> Dict[str, Any]:
    """One configuration, in this process (its environment already set by :func:`main`)."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from affect_msgs.msg import FaceAffectArray  # type: ignore[attr-defined]  # generated, untyped
    from ros2_affect.config import load_pipeline_config
    from ros2_affect.core.pipeline import create_pipeline
    from ros2_affect.tools.bench import detector_boxes
    from ros2_affect.tools.scenes import Scene, SceneSource

    width, height = 640, 480
    scene = Scene(SceneSource.load(), faces, (width, height))
    with create_pipeline(load_pipeline_config()) as pipeline:
        scene.calibrate(detector_boxes(pipeline))
    frames = [np.ascontiguousarray(scene.render(i)) for i in range(30)]
    payloads = [array.array("B", f.tobytes()) for f in frames]

    log = tempfile.NamedTemporaryFile(prefix="affect_node_bench_", suffix=".log", delete=False)
    node = subprocess.Popen(
        ["affect_node", "--ros-args", "--params-file", str(_config_dir() / "affect.yaml"), "-r", "image:=/bench/image"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
    )
    try:
        deadline = time.monotonic() + 60
        while "listening on" not in Path(log.name).read_text(errors="replace"):
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"affect_node did not start:\n{Path(log.name).read_text(errors='replace')}")
            time.sleep(0.1)

        rclpy.init(domain_id=domain_id)
        client = rclpy.create_node("affect_bench")
        received: List[Tuple[float, Any]] = []
        diagnostics: List[Any] = []
        client.create_subscription(
            FaceAffectArray, "/affect_node/faces", lambda m: received.append((time.time(), m)), 50
        )
        client.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
        publisher = client.create_publisher(Image, "/bench/image", qos_profile_sensor_data)
        executor = SingleThreadedExecutor()
        executor.add_node(client)
        while publisher.get_subscription_count() == 0 or client.count_publishers("/affect_node/faces") == 0:
            executor.spin_once(timeout_sec=0.05)
        executor.spin_once(timeout_sec=1.0)

        period = 1.0 / rate_hz
        published: Dict[int, float] = {}
        start = time.monotonic()
        measure_from = start + warmup_s
        end = measure_from + seconds
        index = 0
        next_tick = start
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if now >= next_tick:
                stamp = time.time()
                msg = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3)
                sec, nanosec = divmod(int(stamp * 1e9), 1_000_000_000)
                msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
                msg.header.frame_id = "bench_camera"
                msg.data = payloads[index % len(payloads)]
                publisher.publish(msg)
                if now >= measure_from:
                    published[sec * 1_000_000_000 + nanosec] = stamp
                index += 1
                next_tick += period
            executor.spin_once(timeout_sec=max(0.0, min(next_tick, end) - time.monotonic()))
        settle = time.monotonic() + 1.5
        while time.monotonic() < settle:
            executor.spin_once(timeout_sec=0.05)

        latencies = []
        faces_seen = []
        for arrival, msg in received:
            key = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            if key in published:
                latencies.append((arrival - published[key]) * 1000.0)
                faces_seen.append(len(msg.faces))
        values = {kv.key: kv.value for kv in diagnostics[-1].status[0].values} if diagnostics else {}
        out = len(latencies)
        result = {
            "transport": transport,
            "faces": faces,
            "rate_hz": rate_hz,
            "frames_in": len(published),
            "results_out": out,
            "drop_rate": round(1.0 - out / len(published), 4) if published else None,
            "latency_p50_ms": round(float(np.percentile(latencies, 50)), 1) if latencies else None,
            "latency_p95_ms": round(float(np.percentile(latencies, 95)), 1) if latencies else None,
            "faces_per_result": round(float(np.mean(faces_seen)), 2) if faces_seen else None,
            "node_received_total": int(values.get("received frames (total)", -1)),
            "node_dropped_total": int(values.get("dropped frames (total)", -1)),
            "published_total": index,
        }
        executor.shutdown()
        client.destroy_node()
        rclpy.shutdown()
        return result
    finally:
        if node.poll() is None:
            node.send_signal(signal.SIGINT)
            try:
                node.wait(20)
            except subprocess.TimeoutExpired:
                node.kill()
        log.close()
        os.unlink(log.name)


def _markdown(rows: Sequence[Dict[str, Any]]) -> str:
    lines = [
        "| transport | faces | rate (Hz) | frames in | results out | dropped | lost in transport | dropped by node "
        "| latency p50 (ms) | p95 (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lost = r["published_total"] - r["node_received_total"] if r["node_received_total"] >= 0 else "n/a"
        lines.append(
            f"| {r['transport']} | {r['faces']} | {r['rate_hz']:g} | {r['frames_in']} | {r['results_out']} | "
            f"{100 * r['drop_rate']:.1f} % | {lost} | {r['node_dropped_total']} | {r['latency_p50_ms']} | "
            f"{r['latency_p95_ms']} |"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ros2_affect.node.bench_node", description=__doc__.split("\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[15.0, 30.0], help="publish rates, Hz")
    parser.add_argument("--faces", type=int, nargs="+", default=[1, 4], help="faces per frame")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per configuration")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds published before measuring")
    parser.add_argument(
        "--transport", nargs="+", choices=sorted(TRANSPORT_PROFILES), default=["shipped", "default"],
        help="Fast DDS set-up of both processes: built-in transports or the shipped large-image profile",
    )
    parser.add_argument("--markdown", action="store_true", help="also print the BENCHMARKS.md table")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        transport, faces, rate, seconds, warmup, domain = args.worker
        print(json.dumps(run_worker(transport, int(faces), float(rate), float(seconds), float(warmup), int(domain))))
        return 0
    rows = []
    domain = 1 + (os.getpid() * 7) % 90
    for transport in args.transport:
        for faces in args.faces:
            for rate in args.rates:
                domain = 1 + domain % 100
                worker = [sys.executable, "-m", "ros2_affect.node.bench_node", "--worker", transport, str(faces),
                          str(rate), str(args.seconds), str(args.warmup), str(domain)]
                done = subprocess.run(worker, capture_output=True, text=True, env=_environment(domain, transport))
                lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
                if done.returncode != 0 or not lines:
                    print(f"bench-node: {transport} {faces} face(s) {rate:g} Hz failed:\n{done.stderr[-2000:]}")
                    return 1
                row = json.loads(lines[-1])
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.markdown:
        print(_markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
