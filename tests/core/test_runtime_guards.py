"""Runtime guards of the pipeline, on scenes of real faces with the real detector, Face Mesh
and real ONNX graphs:

- non-finite model outputs are never published: the face's affect is None, a counter
  increments, the message says ``has_affect: false`` and carries no NaN;
- a backwards jump in time ends every track (fresh ids, sequences restarted);
- at most ``max_faces`` faces are processed per frame, the largest, the rest counted;
- a malformed frame in the middle of a stream is rejected without disturbing the tracks.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

from ros2_affect.config import DetectorConfig, ModelConfig, PipelineConfig
from ros2_affect.core.pipeline import AffectPipeline, create_pipeline
from ros2_affect.core.types import Frame, FrameResult
from ros2_affect.errors import InvalidImageError
from ros2_affect.msgs.messages import build_face_affect_array, rosbags_message_types
from ros2_affect.msgs.msg_types import create_typestore
from ros2_affect.tools.scenes import FacePatch, Scene, SceneSource
from tests.backends.affect_graphs import write_graph

NS = 33_333_333


@pytest.fixture(scope="module")
def source(afew_clip_dir: Path) -> SceneSource:
    return SceneSource.load()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("guard_models")
    return {
        # logits + log(mean of the normalised crop): NaN for a crop darker than mid-grey.
        "nan_frame": write_graph(root / "nan_frame.onnx", "frame", nan_when_dark=True),
        "frame": write_graph(root / "frame.onnx", "frame"),
        "encoder": write_graph(root / "encoder.onnx", "encoder", length=4, dim=16, model_id="seq-1"),
        "sequence": write_graph(root / "sequence.onnx", "sequence", length=4, dim=16, model_id="seq-1"),
    }


def make_config(models: Dict[str, Path], kind: str, frame: str = "frame", **detector: Any) -> PipelineConfig:
    model = ModelConfig(kind=kind, frame_model=str(models[frame]), encoder_model=str(models["encoder"]),
                        sequence_model=str(models["sequence"]))
    return PipelineConfig(detector=DetectorConfig(**detector), model=model).validate()


def calibrated(scene: Scene, pipeline: AffectPipeline) -> Scene:
    scene.calibrate(lambda rgb: [d.bbox_xyxy_px for d in pipeline.detector.detect(rgb)])
    return scene


def run(pipeline: AffectPipeline, scene: Scene, indices: range, stamp0: int = 0) -> List[FrameResult]:
    return [pipeline.process(Frame(scene.render(i), stamp0 + (i + 1) * NS, "cam")) for i in indices]


def _shaded(patch: FacePatch, gain: float, offset: float) -> FacePatch:
    rgb = np.clip(patch.rgb.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)
    return FacePatch(rgb, patch.alpha, patch.origin + f" x{gain}")


def test_non_finite_outputs_are_dropped_and_counted(source: SceneSource, models: Dict[str, Path]) -> None:
    # Two real faces: one in dim light (crop darker than mid-grey: the graph returns NaN),
    # one brightly lit (finite). Only the dim one may lose its estimate.
    patch = source.patches[0]
    lit = SceneSource([_shaded(patch, 0.45, 0.0), _shaded(patch, 1.5, 90.0)], source.background, "shaded")
    scene = Scene(lit, 2, (640, 480))
    scene.placements = [dataclasses.replace(p, patch_index=k) for k, p in enumerate(scene.placements)]
    store = create_typestore("humble")
    msg_types = rosbags_message_types(store)
    with create_pipeline(make_config(models, "frame", "nan_frame"), tracker_seed=1) as pipeline:
        results = run(pipeline, scene, range(12))
        dim_x = scene.placements[0].centre[0]
        nones = finite = 0
        for result in results:
            assert len(result.faces) == 2
            for face in result.faces:
                is_dim = abs(float(face.detection.bbox_xyxy_px[[0, 2]].mean()) - dim_x) < 100
                mean_crop = float(face.aligned.crop.mean())
                if face.affect is None:
                    nones += 1
                    assert is_dim and mean_crop < 127.5
                else:
                    finite += 1
                    assert np.isfinite(face.affect.probabilities).all()
                    assert np.isfinite([face.affect.valence, face.affect.arousal]).all()
            message = build_face_affect_array(result, None, msg_types)
            for face_msg in message.faces:
                assert np.isfinite(face_msg.probabilities).all()
                assert np.isfinite([face_msg.valence, face_msg.arousal]).all()
                assert face_msg.has_affect == (len(face_msg.probabilities) > 0)
            # Through CDR as a subscriber would receive it.
            store.serialize_cdr(message, "affect_msgs/msg/FaceAffectArray")
        assert nones == 12 and finite == 12
        assert pipeline.rejected_outputs == 12


def test_temporal_model_rejections_match_the_missing_estimates(source: SceneSource, models: Dict[str, Path],
                                                               tmp_path: Path) -> None:
    write_graph(tmp_path / "sequence.onnx", "sequence", length=4, dim=16, model_id="seq-1", nan_when_dark=True)
    config = make_config(dict(models, sequence=tmp_path / "sequence.onnx"), "temporal")
    with create_pipeline(config, tracker_seed=2) as pipeline:
        scene = calibrated(Scene(source, 4, (640, 480)), pipeline)
        results = run(pipeline, scene, range(10))
    missing = sum(face.affect is None for r in results for face in r.faces)
    assert missing == pipeline.rejected_outputs
    for result in results:
        for face in result.faces:
            if face.affect is not None:
                assert np.isfinite(face.affect.probabilities).all()


def test_time_going_backwards_ends_every_track(source: SceneSource, models: Dict[str, Path]) -> None:
    with create_pipeline(make_config(models, "temporal"), tracker_seed=3) as pipeline:
        scene = calibrated(Scene(source, 2, (640, 480)), pipeline)
        before = run(pipeline, scene, range(8), stamp0=10**12)
        ids_before = {f.track_id for f in before[-1].faces}
        assert len(ids_before) == 2 and all(f.track_confirmed for f in before[-1].faces)
        assert all(f.affect is not None and f.affect.frames_used == 4 for f in before[-1].faces)
        # The bag loops: stamps start again from a small value.
        after = run(pipeline, scene, range(8, 12), stamp0=0)
        assert pipeline.tracker.time_jumps == 1
        first = after[0]
        assert len(first.faces) == 2
        assert {f.track_id for f in first.faces}.isdisjoint(ids_before)
        assert not any(f.track_confirmed for f in first.faces)
        assert all(f.affect is not None and f.affect.frames_used == 1 for f in first.faces)
        assert pipeline.buffers is not None and len(pipeline.buffers) == 2
        assert {f.track_id for f in after[-1].faces} == {f.track_id for f in first.faces}


def test_at_most_max_faces_the_largest_and_the_rest_counted(source: SceneSource, models: Dict[str, Path]) -> None:
    with create_pipeline(make_config(models, "frame", max_faces=2), tracker_seed=4) as pipeline:
        scene = Scene(source, 4, (640, 480))
        sides = [200, 120, 180, 140]  # faces 0 and 2 are the largest
        scene.placements = [dataclasses.replace(p, side=s) for p, s in zip(scene.placements, sides, strict=True)]
        calibrated(scene, pipeline)
        results = run(pipeline, scene, range(6))
    for index, result in zip(range(6), results, strict=True):
        assert len(result.faces) == 2 and result.faces_dropped == 2
        kept_x = sorted(float(f.detection.bbox_xyxy_px[[0, 2]].mean()) for f in result.faces)
        want_x = sorted(scene.centre_of(scene.placements[k], index)[0] for k in (0, 2))
        assert np.allclose(kept_x, want_x, atol=40)
    assert pipeline.faces_dropped_total == 12


def test_bad_frame_mid_stream_is_rejected_without_disturbing_tracks(source: SceneSource,
                                                                    models: Dict[str, Path]) -> None:
    with create_pipeline(make_config(models, "temporal"), tracker_seed=5) as pipeline:
        scene = calibrated(Scene(source, 1, (640, 480)), pipeline)
        first = run(pipeline, scene, range(3))
        for bad in (np.zeros((0, 640, 3), np.uint8), np.zeros((480, 640, 3), np.float32), np.zeros((480, 640, 4))):
            with pytest.raises(InvalidImageError, match=r"image (is empty|encoding 'rgb8' needs)"):
                pipeline.process(Frame(bad, 4 * NS, "cam"))
        later = run(pipeline, scene, range(3, 6))
    assert first[-1].faces[0].track_id == later[-1].faces[0].track_id
    assert later[-1].faces[0].affect is not None and later[-1].faces[0].affect.frames_used == 4


def _count_face_mesh_runs(pipeline: AffectPipeline) -> List[int]:
    """Count the landmark interpreter's invocations (instrumentation; the model still runs)."""
    interpreter = pipeline.eye_locator._interpreter
    invoke = interpreter.invoke
    count = [0]

    def counted() -> Any:
        count[0] += 1
        return invoke()

    interpreter.invoke = counted
    return count


@pytest.mark.parametrize("every, runs_per_face", [(1, 1.0), (2, 0.5), (3, 1 / 3)])
def test_eye_refinement_runs_face_mesh_once_per_face_per_n_frames(source: SceneSource, models: Dict[str, Path],
                                                                  every: int, runs_per_face: float) -> None:
    config = make_config(models, "none")
    config = dataclasses.replace(config, landmarks=dataclasses.replace(config.landmarks, every_n_frames=every))
    with create_pipeline(config, tracker_seed=6) as pipeline:
        scene = calibrated(Scene(source, 4, (640, 480)), pipeline)
        run(pipeline, scene, range(3))
        runs = _count_face_mesh_runs(pipeline)
        per_frame = []
        for i in range(3, 27):
            before = runs[0]
            result = pipeline.process(Frame(scene.render(i), (i + 1) * NS, "cam"))
            per_frame.append(runs[0] - before)
            assert len(result.faces) == 4
            for face in result.faces:
                # Refined or carried along with the box: the eyes stay inside the face box.
                assert face.detection.eyes_refined
                x1, y1, x2, y2 = face.detection.bbox_xyxy_px
                assert np.all((face.detection.eyes_px >= [x1, y1]) & (face.detection.eyes_px <= [x2, y2]))
        faces = 4 * len(per_frame)
        # Levelled on the previous frame's eyes, a steady face needs one Face Mesh pass, not two.
        assert sum(per_frame) <= 1.1 * runs_per_face * faces
        assert sum(per_frame) >= runs_per_face * faces * 0.9
        # The work is spread: no frame refines every face when n > 1.
        if every > 1:
            assert max(per_frame) <= -(-4 // every) + 1
        assert set(pipeline._refined_eyes) <= set(pipeline.tracker.live_track_ids)


def test_carried_eyes_follow_the_box() -> None:
    from ros2_affect.core.pipeline import _RefinedEyes

    eyes = np.array([[120.0, 140.0], [160.0, 138.0]], np.float32)
    state = _RefinedEyes(eyes, np.array([100, 100, 180, 200], np.float32), frame_index=3, phase=1)
    np.testing.assert_allclose(state.follow(np.array([100, 100, 180, 200])), eyes)
    np.testing.assert_allclose(state.follow(np.array([110, 95, 190, 195])), eyes + [10, -5])
    # Twice the size around the same centre: offsets from the centre double.
    centre = np.array([140.0, 150.0])
    np.testing.assert_allclose(state.follow(np.array([60, 50, 220, 250])), centre + (eyes - centre) * 2, rtol=1e-6)
