"""The real-rclpy tier: affect_node as a process under ROS 2 Jazzy (PyPI wheels), over Fast DDS.

These tests need rclpy and the built affect_msgs; `make test-node` (part of `make test`)
makes that environment (scripts/ros_env.sh -> .venv-ros) and runs them there. Anywhere
else they skip with that reason.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator, List

import numpy as np
import pytest

#: Why a test module of this tier skips (each starts with pytest.importorskip(..., reason=SKIP_REASON)).
SKIP_REASON = "needs rclpy and the built affect_msgs: `make test-node` runs this tier in .venv-ros (scripts/ros_env.sh)"


REPO_ROOT = Path(__file__).resolve().parents[2]

# This process is the camera and the consumer: DDS traffic stays on this machine, and its
# participants use the Fast DDS profile the package ships for large images (the shared
# memory segment that carries an image is the publisher's; see config/fastdds_large_images.xml).
# Read when the first participant is created, so set before any test creates one.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_LOCALHOST_ONLY", None)
os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(REPO_ROOT / "config" / "fastdds_large_images.xml")

SHARED_DATA = Path(os.environ.get("ROS2_AFFECT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def clip_frames() -> List[np.ndarray]:
    """The AFEW-VA clip (42 real 720x576 film frames, one face) as RGB frames.

    Without ../shared/data: 42 frames of the bundled sample photograph, panned and zoomed
    as `ros2-affect run sample` does.
    """
    import cv2

    clip = SHARED_DATA / "afew-va-sample" / "001"
    paths = sorted(clip.glob("*.png"))
    if paths:
        return [np.ascontiguousarray(cv2.imread(str(p), cv2.IMREAD_COLOR)[:, :, ::-1]) for p in paths]
    from ros2_affect.tools.inputs import sample_frame, sample_path

    photo = np.ascontiguousarray(cv2.imread(str(sample_path()), cv2.IMREAD_COLOR)[:, :, ::-1])
    return [sample_frame(photo, t) for t in np.linspace(0.0, 1.0, 42)]


@pytest.fixture(scope="session")
def rosbags_dir() -> Path:
    path = SHARED_DATA / "rosbags"
    if not path.is_dir():
        pytest.skip(f"real ROS 2 bags not found at {path} (set ROS2_AFFECT_SHARED_DATA to the shared data folder)")
    return path


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)
