"""Shared fixtures: real data from ../shared/data (skipped with a reason when absent).

The data folder is ``shared/data`` beside the repository (``../shared/data`` from its root),
or wherever ``$ROS2_AFFECT_SHARED_DATA`` points. It is not part of the repository (licences):
README.md ("Tests: the data") lists what goes in it and where each part comes from. Without
it, the tests that need it skip with that pointer; tests/test_bundled_end_to_end.py and the
other tests on the bundled photo still run the whole pipeline.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ROS2_AFFECT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
AFEW_CLIP_DIR = SHARED_DATA / "afew-va-sample" / "001"
FER_TARBALL = SHARED_DATA / "fer2013" / "fer2013-images.tar.gz"
ROSBAGS_DIR = SHARED_DATA / "rosbags"
AFFECTNET_TARBALL = SHARED_DATA / "affectnet-val" / "affectnet-val-dev.tar.gz"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(
            f"real test data not found at {path}: put the data folder at ../shared/data beside the repository or "
            f"set ROS2_AFFECT_SHARED_DATA to it (what goes in it and where to get it: README.md, 'Tests: the data')"
        )
    return path


@pytest.fixture(scope="session")
def afew_clip_dir() -> Path:
    return _require(AFEW_CLIP_DIR)


@pytest.fixture(scope="session")
def afew_frames(afew_clip_dir: Path) -> List[np.ndarray]:
    """The 42 AFEW-VA frames as (576, 720, 3) uint8 RGB arrays, in frame order."""
    import cv2

    frames = []
    for path in sorted(afew_clip_dir.glob("*.png")):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert bgr is not None, path
        frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
    return frames


@pytest.fixture(scope="session")
def afew_annotation(afew_clip_dir: Path) -> Dict:
    return json.loads((afew_clip_dir / "001.json").read_text())


@pytest.fixture(scope="session")
def afew_eye_centres(afew_annotation: Dict) -> np.ndarray:
    """(42, 2, 2) ground-truth eye centres per frame: subject's right eye (points 36-41) first."""
    centres = []
    for key in sorted(afew_annotation["frames"]):
        lm = np.asarray(afew_annotation["frames"][key]["landmarks"], dtype=np.float64)
        centres.append([lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)])
    return np.asarray(centres)


@pytest.fixture(scope="session")
def fer_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FER2013 extracted once per test session into a temp dir (Training/ and PublicTest/)."""
    tarball = _require(FER_TARBALL)
    root = tmp_path_factory.mktemp("fer")
    with tarfile.open(tarball) as archive:
        archive.extractall(root, filter="data")
    return root / "fer2013"


@pytest.fixture(scope="session")
def affectnet_tarball() -> Path:
    """The AffectNet validation sample: affectnet-val/images/<n>.jpg (224x224 face photos) + labels.csv."""
    return _require(AFFECTNET_TARBALL)


@pytest.fixture(scope="session")
def rosbags_dir() -> Path:
    return _require(ROSBAGS_DIR)


@pytest.fixture(scope="session")
def fer_tarball() -> Path:
    """The FER2013 image tarball itself (loaders extract it once into their cache)."""
    return _require(FER_TARBALL)
