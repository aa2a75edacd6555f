"""`python -m ros2_affect.node.bench_node` (make bench-node) still runs end to end; figures are not judged."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.node.conftest import REPO_ROOT, SKIP_REASON

pytest.importorskip("rclpy", reason=SKIP_REASON)
pytest.importorskip("affect_msgs.msg", reason=SKIP_REASON)


def test_node_benchmark_reports_one_row_per_configuration() -> None:
    command = [sys.executable, "-m", "ros2_affect.node.bench_node", "--rates", "10", "--faces", "1",
               "--seconds", "2", "--warmup", "1", "--transport", "shipped", "--markdown"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert row["transport"] == "shipped" and row["faces"] == 1 and row["rate_hz"] == 10.0
    assert 15 <= row["frames_in"] <= 25  # two seconds at 10 Hz
    assert 0 < row["results_out"] <= row["frames_in"]
    assert row["faces_per_result"] >= 0.9  # the scene's face is found
    assert row["latency_p50_ms"] > 0 and row["latency_p95_ms"] >= row["latency_p50_ms"]
    assert row["node_received_total"] <= row["published_total"]
    assert "| transport | faces | rate (Hz) |" in done.stdout
