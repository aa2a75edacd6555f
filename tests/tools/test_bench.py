"""``ros2-affect bench`` and its scenes, on real faces with the real detector and real ONNX graphs.

Only the shape of the output and the checks are asserted here, never the timings (the
machine is shared; timings never gate tests).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

from ros2_affect.config import DetectorConfig
from ros2_affect.core.detection import create_detector
from ros2_affect.tools import bench
from ros2_affect.tools.cli import main
from ros2_affect.tools.scenes import SAMPLE_IMAGE, ChurnScene, Scene, SceneSource
from tests.backends.affect_graphs import write_graph


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("bench_models")
    return {
        "frame": write_graph(root / "frame.onnx", "frame", model_id="gcn-1"),
        "encoder": write_graph(root / "encoder.onnx", "encoder", length=8, dim=16, model_id="rnn-1"),
        "sequence": write_graph(root / "sequence.onnx", "sequence", length=8, dim=16, model_id="rnn-1"),
    }


@pytest.fixture(scope="module")
def source(afew_clip_dir: Path) -> SceneSource:
    return SceneSource.load()


@pytest.fixture(scope="module")
def detector() -> Any:
    with create_detector(DetectorConfig()) as det:
        yield det


def _model_args(models: Dict[str, Path]) -> List[str]:
    return ["--frame-model", str(models["frame"]), "--encoder-model", str(models["encoder"]),
            "--sequence-model", str(models["sequence"])]


def test_scene_source_uses_real_faces_and_a_bag_background(source: SceneSource) -> None:
    assert not source.fallback
    assert "afew-va" in source.description and "rosbag" in source.description
    assert len(source.patches) >= 7
    for patch in source.patches:
        assert patch.rgb.dtype == np.uint8 and patch.rgb.shape[0] == patch.rgb.shape[1] >= 64
        assert patch.alpha.shape == patch.rgb.shape[:2] and 0.0 <= patch.alpha.min() < patch.alpha.max() <= 1.0
    assert source.background.ndim == 3 and source.background.shape[2] == 3


@pytest.mark.parametrize("size_wh, faces", [((640, 480), 1), ((640, 480), 4), ((1280, 720), 2)])
def test_calibrated_scene_has_faces_the_detector_finds(source: SceneSource, detector: Any, size_wh: Any,
                                                       faces: int) -> None:
    scene = Scene(source, faces, size_wh)
    rates = scene.calibrate(lambda rgb: [d.bbox_xyxy_px for d in detector.detect(rgb)])
    assert len(rates) == faces and min(rates) >= 0.8
    found = []
    for index in range(0, 90, 9):  # frames other than the calibration ones
        image = scene.render(index)
        assert image.shape == (size_wh[1], size_wh[0], 3) and image.dtype == np.uint8
        found.append(sum(scene.hits(index, [d.bbox_xyxy_px for d in detector.detect(image)])))
    assert np.mean(found) >= 0.9 * faces
    # Faces move a little between frames but the scene is deterministic.
    assert not np.array_equal(scene.render(0), scene.render(5))
    np.testing.assert_array_equal(scene.render(7), scene.render(7))


def test_churn_scene_faces_come_and_go(source: SceneSource) -> None:
    scene = ChurnScene(source, 4, (640, 480), on_frames=30, off_frames=15)
    counts = [scene.expected_faces(i) for i in range(90)]
    assert min(counts) < max(counts) <= 4
    for k in range(4):  # each face is away for longer than the default tracker max_misses (10)
        shown = [scene.visible(i)[k] for i in range(90)]
        assert 0 < sum(shown) < 90


def test_fallback_to_the_bundled_sample_without_shared_data(tmp_path: Path, detector: Any) -> None:
    if not SAMPLE_IMAGE.is_file():
        pytest.skip(f"bundled sample {SAMPLE_IMAGE} is absent")
    source = SceneSource.load(data_dir=tmp_path / "no_shared_data")
    assert source.fallback and "bundled sample only" in source.description
    assert all(p.origin.startswith("sample/") for p in source.patches)
    scene = Scene(source, 2, (640, 480))
    assert min(scene.calibrate(lambda rgb: [d.bbox_xyxy_px for d in detector.detect(rgb)])) >= 0.8


def test_fallback_bench_counts_one_face_as_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Without ../shared/data the scenes use the bundled photo only; its blurred whole-photo
    background used to add a frame-filling false detection, so "1 face" rows measured 2."""
    monkeypatch.setenv("ROS2_AFFECT_SHARED_DATA", str(tmp_path / "no_shared_data"))
    argv = ["bench", "--frames", "10", "--warmup", "1", "--resolutions", "640x480", "--faces", "1",
            "--models", "none", "--json"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "bundled sample only" in out
    (row,) = json.loads(out.strip().splitlines()[-1])["results"]
    assert row["faces_found_mean"] == 1.0


def test_bench_json_last_line(models: Dict[str, Path], afew_clip_dir: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["bench", "--json", "--frames", "6", "--warmup", "2", "--resolutions", "640x480", "--faces", "1,2",
            "--models", "frame,temporal", "--backends", "onnxruntime,tensorrt", "--encoding", "jpeg", "--markdown"]
    argv += _model_args(models)
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    assert set(report) == {"machine", "overhead_ratio", "results", "memory"}
    assert report["machine"]["cores"] >= 1 and report["machine"]["onnxruntime"]
    assert report["machine"]["input"] == "jpeg"
    assert 0.0 < report["overhead_ratio"] < 1.0
    measured = [r for r in report["results"] if "skipped" not in r]
    assert [(r["faces"], r["model"]) for r in measured] == [(1, "frame"), (1, "temporal"), (2, "frame"),
                                                             (2, "temporal")]
    for r in measured:
        assert r["resolution"] == "640x480" and r["backend"] == "onnxruntime"
        assert r["fps"] > 0 and 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
        assert set(r["stages_ms"]) == set(bench.STAGE_KEYS)
        assert r["stages_ms"]["detect"] > 0 and r["stages_ms"]["landmarks"] > 0 and r["stages_ms"]["infer"] > 0
        assert r["stages_ms"]["decode"] > 0.05  # a 640x480 JPEG decode, not a no-op
        assert r["faces_found_mean"] >= 0.85 * r["faces"]
        assert r["rejected_outputs"] == 0
        assert r["model_id"] == ("rnn-1" if r["model"] == "temporal" else "gcn-1")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        skipped = [r for r in report["results"] if "skipped" in r]
        assert len(skipped) == 4 and all("tensorrt" in r["skipped"] for r in skipped)
    assert report["memory"]["rss_end_mb"] > 0 and report["memory"]["frames"] == 4 * 8
    assert any(line.startswith("overhead_ratio: ") for line in lines)
    table = [line for line in lines if line.startswith("| 640x480 |")]
    assert len(table) == 8 and sum("skipped" in line for line in table) == len(report["results"]) - 4


def test_bench_soak_reports_memory_and_bounded_tracks(models: Dict[str, Path], afew_clip_dir: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    argv = ["bench", "--json", "--frames", "2", "--warmup", "0", "--resolutions", "640x480", "--faces", "1",
            "--models", "temporal", "--soak-frames", "150"] + _model_args(models)
    assert main(argv) == 0
    memory = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["memory"]
    assert memory["frames"] == 150 and memory["warmup_frames"] == 15
    assert memory["rss_start_mb"] > 0 and memory["rss_end_mb"] > 0
    assert memory["track_ids_seen"] > 4  # faces came back as new tracks
    assert 1 <= memory["max_live_tracks"] <= 4 + 4  # the 4 faces and those not yet expired
    assert memory["max_sequence_buffers"] <= memory["max_live_tracks"]


def test_bench_fails_when_the_scene_faces_are_not_found(models: Dict[str, Path], afew_clip_dir: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    # A detector threshold no real face reaches: the figures would describe 0 faces, not 2.
    argv = ["bench", "--frames", "3", "--warmup", "0", "--resolutions", "640x480", "--faces", "2",
            "--models", "none", "--set", "detector.min_score=0.9999"] + _model_args(models)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "CHECK FAILED: 640x480 2 faces (none): the pipeline found 0.0 faces per frame" in err
    assert "fewer or more faces than drawn" in err and "--no-check" in err


def test_bad_arguments_are_rejected(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--resolutions", "640by480"])
    assert "640by480" in capsys.readouterr().err
    assert main(["bench", "--models", "framewise", "--frames", "1"]) == 1
    assert "--models 'framewise': choose from frame, temporal, none" in capsys.readouterr().err
    assert main(["bench", "--faces=-3", "--frames", "1"]) == 1
    assert "--faces -3: pass face counts in 1..64" in capsys.readouterr().err
    # a missing model for onnxruntime is an error (it was a skipped row and exit 0)
    assert main(["bench", "--faces", "1", "--frames", "1", "--warmup", "0", "--resolutions", "640x480",
                 "--models", "frame", "--frame-model", "/nonexistent/frame.onnx"]) == 1
    assert "model file /nonexistent/frame.onnx does not exist" in capsys.readouterr().err


def test_overhead_ratio_is_the_time_outside_detection_landmarks_and_inference() -> None:
    stages = dict.fromkeys(bench.STAGE_KEYS, 0.0)
    a = {"stages_ms": dict(stages, detect=2.0, landmarks=2.0, infer=4.0, align=1.0, message=0.5, other=0.5)}
    b = {"stages_ms": dict(stages, detect=3.0, decode=1.0)}
    assert bench.overhead_ratio([a]) == pytest.approx(2.0 / 10.0)
    # Weighted by frame time: (2 + 1) ms outside the models of (10 + 4) ms.
    assert bench.overhead_ratio([a, b, {"skipped": "no tensorrt"}]) == pytest.approx(3.0 / 14.0, abs=1e-4)
    assert bench.overhead_ratio([]) is None
