"""Fixtures shared by the bag tool tests (replay, evaluate): built once per session, read only."""

from __future__ import annotations

from pathlib import Path

import pytest

from ros2_affect.tools.make_bag import make_bag
from tests.bags.helpers import make_frame_model


@pytest.fixture(scope="session")
def frame_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeded contract frame graph of tests/bags/helpers.py (regressed valence/arousal)."""
    return make_frame_model(tmp_path_factory.mktemp("model") / "frame.onnx")


@pytest.fixture(scope="session")
def afew_bag(afew_clip_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The AFEW-VA clip as JPEG CompressedImage + its labels, MCAP (make-bag's defaults otherwise)."""
    out = tmp_path_factory.mktemp("afew_bag") / "afew_in"
    make_bag(afew_clip_dir, out, compression="jpeg", storage="mcap")
    return out
