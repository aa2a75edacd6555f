"""Soak: many frames of real faces coming and going, through the whole path a node runs
(sensor_msgs/Image -> decode -> pipeline -> FaceAffectArray), with bounded memory.

Faces are visible for 30 frames and away for 15 (longer than ``tracker.max_misses``), so
every return is a new track and ids churn all the time. After a warm-up, the process RSS
may not grow by more than 5 MB and the numbers of live tracks and sequence buffers may
not grow at all. The 10,000-frame run uses small frames and no Face Mesh to stay within
CI time (``ros2-affect bench --soak-frames 10000`` runs the full-size one); a shorter run
covers the default pipeline with eye refinement.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest

from ros2_affect.config import DetectorConfig, LandmarksConfig, ModelConfig, PipelineConfig, TrackerConfig
from ros2_affect.core.pipeline import create_pipeline
from ros2_affect.tools.bench import MessageKit, detector_boxes, soak
from ros2_affect.tools.scenes import ChurnScene, SceneSource
from tests.backends.affect_graphs import write_graph

MAX_GROWTH_MB = 5.0


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("soak_models")
    return {
        "encoder": write_graph(root / "encoder.onnx", "encoder", length=8, dim=16, model_id="soak-1"),
        "sequence": write_graph(root / "sequence.onnx", "sequence", length=8, dim=16, model_id="soak-1"),
    }


@pytest.fixture(scope="module")
def source(afew_clip_dir: Path) -> SceneSource:
    return SceneSource.load()


def _soak(source: SceneSource, models: Dict[str, Path], size_wh: Any, faces: int, frames: int, warmup: int,
          landmarks: bool) -> Dict[str, Any]:
    config = PipelineConfig(
        detector=DetectorConfig(max_faces=8),
        landmarks=LandmarksConfig(enabled=landmarks),
        tracker=TrackerConfig(max_misses=10),
        model=ModelConfig(kind="temporal", encoder_model=str(models["encoder"]),
                          sequence_model=str(models["sequence"])),
    ).validate()
    with create_pipeline(config, tracker_seed=0) as pipeline:
        scene = ChurnScene(source, faces, size_wh, on_frames=30, off_frames=15)
        scene.calibrate(detector_boxes(pipeline))
        report = soak(pipeline, scene, MessageKit("bgr8"), frames, warmup)
        assert pipeline.frames_processed == frames
    return report


def _check(report: Dict[str, Any], faces: int, frames: int) -> None:
    # Each face leaves and comes back every 45 frames: a new id each time.
    assert report["track_ids_seen"] >= 0.8 * faces * frames / 45
    # A departed face's track lives max_misses (10) more frames: never more than 2x the faces.
    assert 1 <= report["max_live_tracks"] <= 2 * faces
    assert report["max_sequence_buffers"] <= report["max_live_tracks"]
    assert report["live_tracks_end"] <= 2 * faces and report["sequence_buffers_end"] <= report["live_tracks_end"]
    assert report["rss_growth_mb"] <= MAX_GROWTH_MB, report


@pytest.mark.slow
def test_10000_frames_of_churning_faces_keep_memory_bounded(source: SceneSource, models: Dict[str, Path]) -> None:
    report = _soak(source, models, (320, 240), 3, 10_000, 1000, landmarks=False)
    _check(report, 3, 10_000)


@pytest.mark.slow
def test_default_pipeline_with_eye_refinement_keeps_memory_bounded(source: SceneSource,
                                                                   models: Dict[str, Path]) -> None:
    report = _soak(source, models, (640, 480), 3, 900, 300, landmarks=True)
    _check(report, 3, 900)
