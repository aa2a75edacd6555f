"""AffectPipeline end to end on the real AFEW-VA frames: real detector, Face Mesh, alignment,
tracker and contract ONNX models in ONNX Runtime."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from ros2_affect.config import DetectorConfig, ModelConfig, PipelineConfig
from ros2_affect.core.pipeline import STAGES, AffectPipeline, create_pipeline
from ros2_affect.core.types import Frame, FrameResult
from ros2_affect.errors import InvalidImageError
from tests.backends.affect_graphs import write_graph

FRAME_NS = 40_000_000
T = 4


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "frame": write_graph(root / "frame.onnx", "frame", model_id="frame_test-1"),
        "encoder": write_graph(root / "encoder.onnx", "encoder", length=T, dim=16, model_id="rnn_test-1"),
        "sequence": write_graph(root / "sequence.onnx", "sequence", length=T, dim=16, model_id="rnn_test-1"),
        "rgb64": write_graph(root / "rgb64.onnx", "frame", channels=3, size=64, alignment={"margin": 0.3}),
    }


def config_for(kind: str, files: Dict[str, Path], **detector: int) -> PipelineConfig:
    model = ModelConfig(
        kind=kind,
        frame_model=str(files["frame"]),
        encoder_model=str(files["encoder"]),
        sequence_model=str(files["sequence"]),
    )
    return PipelineConfig(detector=DetectorConfig(**detector), model=model).validate()


def run(pipeline: AffectPipeline, frames: List[np.ndarray], start: int = 0) -> List[FrameResult]:
    return [pipeline.process(Frame(f, (start + i) * FRAME_NS, "camera")) for i, f in enumerate(frames)]


def check_estimate_of(result: FrameResult) -> None:
    assert len(result.faces) == 1
    affect = result.faces[0].affect
    assert affect is not None
    assert affect.probabilities.shape == (7,) and abs(float(affect.probabilities.sum()) - 1) < 1e-5
    assert np.all(affect.probabilities >= 0)
    assert np.isfinite([affect.valence, affect.arousal]).all()
    assert -1 <= affect.valence <= 1 and -1 <= affect.arousal <= 1


def test_frame_model_on_the_afew_clip(model_files: Dict[str, Path], afew_frames: List[np.ndarray]) -> None:
    with create_pipeline(config_for("frame", model_files), tracker_seed=0) as pipeline:
        assert pipeline.model is not None and pipeline.model.kind == "frame" and pipeline.buffers is None
        results = run(pipeline, afew_frames)
    ids = set()
    for result in results:
        check_estimate_of(result)
        face = result.faces[0]
        assert face.affect is not None and face.affect.frames_used == 1 and face.affect.model_id == "frame_test-1"
        assert face.aligned.crop.shape == (48, 48, 1) and face.aligned.crop.dtype == np.uint8
        assert face.detection.eyes_refined
        assert set(result.stage_ms) == set(STAGES)
        assert result.stage_ms["total"] >= result.stage_ms["detect"] > 0
        assert (result.width_px, result.height_px, result.frame_id) == (720, 576, "camera")
        ids.add(face.track_id)
    assert len(ids) == 1
    assert not results[0].faces[0].track_confirmed and results[1].faces[0].track_confirmed  # min_hits 2
    assert pipeline.frames_processed == 42 and pipeline.rejected_outputs == 0


def test_temporal_model_encodes_each_crop_once(model_files: Dict[str, Path], afew_frames: List[np.ndarray]) -> None:
    pipeline = create_pipeline(config_for("temporal", model_files), tracker_seed=0)
    assert pipeline.model is not None and pipeline.buffers is not None
    assert pipeline.config.sequence.length == T  # from the model's metadata (the parameter file says 8)
    # count the encoder's real ONNX Runtime calls and rows
    encoder = pipeline.model.sessions[0]  # the graph that takes the crops
    assert encoder.metadata.role == "encoder"
    calls: List[int] = []
    real_run = encoder.run

    def counting_run(x: np.ndarray) -> Dict[str, np.ndarray]:
        calls.append(len(x))
        return real_run(x)

    encoder.run = counting_run  # type: ignore[method-assign]
    frames_used = []
    for i, frame in enumerate(afew_frames[:12]):
        result = pipeline.process(Frame(frame, i * FRAME_NS))
        check_estimate_of(result)
        assert result.faces[0].affect is not None
        frames_used.append(result.faces[0].affect.frames_used)
        assert calls == [1] * (i + 1), "one encoder batch of one crop per frame"
    assert frames_used == [1, 2, 3, 4] + [4] * 8
    assert len(pipeline.buffers) == 1
    pipeline.close()


def test_buffers_are_freed_when_tracks_end(model_files: Dict[str, Path], afew_frames: List[np.ndarray]) -> None:
    pipeline = create_pipeline(config_for("temporal", model_files), tracker_seed=0)
    assert pipeline.buffers is not None
    first = run(pipeline, afew_frames[:3])
    track_id = first[0].faces[0].track_id
    assert pipeline.buffers.track_ids() == (track_id,)
    empty = np.full_like(afew_frames[0], 127)
    max_misses = pipeline.config.tracker.max_misses
    for i in range(max_misses):
        assert pipeline.process(Frame(empty, (3 + i) * FRAME_NS)).faces == ()
        assert len(pipeline.buffers) == 1  # the track may still come back
    pipeline.process(Frame(empty, (3 + max_misses) * FRAME_NS))
    assert pipeline.tracker.ended_track_ids == (track_id,)
    assert len(pipeline.buffers) == 0
    # the face returns under a new id, and its sequence starts afresh
    back = run(pipeline, afew_frames[:1], start=100)[0]
    assert back.faces[0].track_id != track_id and back.faces[0].affect is not None
    assert back.faces[0].affect.frames_used == 1
    # a backwards jump in time drops every buffer too
    run(pipeline, afew_frames[:1], start=5)
    assert pipeline.tracker.time_jumps == 1 and len(pipeline.buffers) == 1
    pipeline.close()


def two_faces(afew_frames: List[np.ndarray]) -> np.ndarray:
    """A 640x400 image with a real face and a smaller mirrored copy (both found by the detector)."""
    import cv2

    face = afew_frames[0][40:320, 110:360]
    canvas = np.full((400, 640, 3), 120, np.uint8)
    canvas[60:340, 20:270] = face
    small = cv2.resize(face, None, fx=0.8, fy=0.8)[:, ::-1]
    canvas[60 : 60 + small.shape[0], 300 : 300 + small.shape[1]] = small
    return canvas


def test_max_faces_keeps_the_largest(model_files: Dict[str, Path], afew_frames: List[np.ndarray]) -> None:
    image = two_faces(afew_frames)
    with create_pipeline(config_for("frame", model_files, max_faces=2)) as pipeline:
        both = pipeline.process(Frame(image, 0))
    assert len(both.faces) == 2 and both.faces_dropped == 0
    areas = [f.detection.area_px for f in both.faces]
    with create_pipeline(config_for("frame", model_files, max_faces=1)) as pipeline:
        one = pipeline.process(Frame(image, 0))
        pipeline.process(Frame(image, FRAME_NS))
        assert pipeline.faces_dropped_total == 2
    assert len(one.faces) == 1 and one.faces_dropped == 1
    assert one.faces[0].detection.area_px == pytest.approx(max(areas), rel=1e-3)
    assert one.faces[0].detection.bbox_xyxy_px[0] < 300  # the big face on the left


def test_no_model_and_alignment_from_model_metadata(
    model_files: Dict[str, Path], afew_frames: List[np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    with create_pipeline(PipelineConfig(model=ModelConfig(kind="none"))) as pipeline:
        result = pipeline.process(Frame(afew_frames[0], 0))
    assert len(result.faces) == 1 and result.faces[0].affect is None and result.stage_ms["infer"] == 0.0
    assert result.faces[0].aligned.crop.shape == (48, 48, 1)  # the parameter file's alignment

    config = PipelineConfig(model=ModelConfig(kind="frame", frame_model=str(model_files["rgb64"])))
    with caplog.at_level(logging.INFO, logger="ros2_affect.core.pipeline"):
        with create_pipeline(config) as pipeline:
            result = pipeline.process(Frame(afew_frames[0], 0))
    assert pipeline.config.alignment.output_size_px == 64 and not pipeline.config.alignment.grayscale
    assert pipeline.config.alignment.margin == 0.3
    assert result.faces[0].aligned.crop.shape == (64, 64, 3)
    assert "alignment follows model" in caplog.text and "output_size_px=64" in caplog.text


def test_bad_frames_raise_invalid_image(model_files: Dict[str, Path]) -> None:
    with create_pipeline(config_for("frame", model_files)) as pipeline:
        with pytest.raises(InvalidImageError):
            pipeline.process(Frame(np.zeros((0, 0, 3), np.uint8), 0))
        with pytest.raises(InvalidImageError):
            pipeline.process(Frame(np.zeros((48, 48, 3), np.float32), 0))
        # the pipeline keeps working after a bad frame
        assert pipeline.process(Frame(np.full((240, 320, 3), 90, np.uint8), 1)).faces == ()


def test_retune_applies_tuning_without_reloading_models_or_dropping_tracks(
    model_files: Dict[str, Path], afew_frames: List[np.ndarray]
) -> None:
    config = config_for("temporal", model_files)
    with create_pipeline(config) as pipeline:
        model, detector, buffers = pipeline.model, pipeline.detector, pipeline.buffers
        before = run(pipeline, afew_frames[:4])
        tuned = dataclasses.replace(
            config,
            tracker=dataclasses.replace(config.tracker, min_iou=0.3, max_misses=3),
            alignment=dataclasses.replace(config.alignment, margin=0.3),
            sequence=dataclasses.replace(config.sequence, stride=2),
        )
        assert pipeline.retune(tuned)
        assert (pipeline.model, pipeline.detector, pipeline.buffers) == (model, detector, buffers)  # nothing rebuilt
        assert pipeline.tracker.config.min_iou == 0.3 and pipeline.buffers is not None and pipeline.buffers.stride == 2
        after = run(pipeline, afew_frames[4:8], start=4)
        assert {f.track_id for r in before + after for f in r.faces} == {before[0].faces[0].track_id}
        # the sequence was kept: a restarted one would hold 2 items after 4 frames at stride 2
        assert after[-1].faces[0].affect is not None and model is not None
        assert after[-1].faces[0].affect.frames_used == model.sequence_length == 4

        # a stricter detector applies at once; one that would need MediaPipe recreated does not
        assert pipeline.retune(dataclasses.replace(tuned, detector=dataclasses.replace(tuned.detector, min_score=0.99)))
        assert run(pipeline, afew_frames[8:9], start=8)[0].faces == ()
        looser = dataclasses.replace(tuned, detector=dataclasses.replace(tuned.detector, min_score=0.2))
        other_model = dataclasses.replace(tuned, model=dataclasses.replace(tuned.model, kind="frame"))
        more_tracks = dataclasses.replace(tuned, tracker=dataclasses.replace(tuned.tracker, max_tracks=1024))
        for change in (looser, other_model, more_tracks):
            assert not pipeline.retune(change)
        assert pipeline.config.detector.min_score == 0.99  # the refused changes left everything as it was
