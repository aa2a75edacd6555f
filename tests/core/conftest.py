"""Fixtures shared by the core tests: one real detector per test session."""

from __future__ import annotations

from typing import Iterator

import pytest

from ros2_affect.config import DetectorConfig
from ros2_affect.core.detection import MediaPipeFaceDetector, create_detector


@pytest.fixture(scope="session")
def detector() -> Iterator[MediaPipeFaceDetector]:
    """The default short-range BlazeFace detector."""
    det = create_detector(DetectorConfig())
    yield det
    det.close()
