"""The console script keeps the native libraries' log lines (LiteRT, glog, ONNX Runtime, OpenCV)
off the terminal unless --verbose is given; the tool's own output passes unchanged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ros2_affect.tools.quiet import NATIVE_LOG_LINE

#: Lines these libraries printed before the project's own output (copied from real runs).
NATIVE_LINES = [
    "INFO: [environment.cc:36] Creating LiteRT environment with options",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    "WARNING: Logging before InitGoogle() is written to STDERR",
    "WARNING: [model_load.cc:402] Sparsity tensors may not yet be fully supported.",
    "W0000 00:00:1795910081.241250    5223 inference_runner_litert.cc:1418] Input tensor memory is not aligned "
    "according to LiteRt's memory alignment requirements. Reallocating memory and copying data.",
    "\x1b[1;31m2026-11-28 23:57:24.011539003 [E:onnxruntime:, sequential_executor.cc:677 ExecuteKernel] Non-zero "
    "status code returned while running Reshape node.",
    "[ WARN:0@0.125] global loadsave.cpp:268 findDecoder imread_('x.png'): can't open/read file",
    "libpng error: IDAT: CRC error",
    "[h264_v4l2m2m @ 0x55a555fc5040] Could not find a valid device",
    "[ERROR:0@3.652] global cap_ffmpeg_impl.hpp:3585 open VIDEOIO/FFMPEG: Failed to initialize VideoWriter",
    "Corrupt JPEG data: premature end of data segment",
]
OUR_LINES = [
    "WARNING ros2_affect.tools.inputs: skipping image 'a.png': its PNG header declares 30000x30000 pixels",
    "INFO ros2_affect.core.pipeline: pipeline ready: short_range detector",
    "ros2-affect run: error: input 'x' does not exist",
    "Traceback (most recent call last):",
    "2 frames, 2 faces, 0 skipped, 0.1 s",
    "run sample:  40%|####      | 12/30 [00:00<00:00, 90.0frame/s]",
]


def test_native_line_patterns() -> None:
    for line in NATIVE_LINES:
        assert NATIVE_LOG_LINE.match(line.encode()), line
    for line in OUR_LINES:
        assert not NATIVE_LOG_LINE.match(line.encode()), line


def _run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ros2_affect.tools.cli", *extra, "run", "sample", "--max-frames", "3",
               "--no-video", "--out", str(tmp_path / ("v" if extra else "q"))]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_the_command_is_quiet_by_default_and_verbose_on_request(tmp_path: Path) -> None:
    quiet = _run(tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert "3 frames, 3 faces" in quiet.stdout
    assert "pipeline ready" in quiet.stderr  # the project's own log lines stay
    native = [line for line in quiet.stderr.splitlines() if NATIVE_LOG_LINE.match(line.encode())]
    assert native == []
    verbose = _run(tmp_path, "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    assert sum(bool(NATIVE_LOG_LINE.match(line.encode())) for line in verbose.stderr.splitlines()) >= 3
