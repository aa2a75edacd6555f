"""``ros2-affect run`` end to end (real detector, alignment, tracker, ONNX Runtime), and its inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import yaml

from ros2_affect import assets
from ros2_affect.assets import default_config_path
from ros2_affect.errors import ConfigError
from ros2_affect.tools.cli import main
from ros2_affect.tools.inputs import SAMPLE_FRAMES, InputOptions, open_input
from tests.backends.affect_graphs import write_graph

T = 4
FACE_KEYS = {"id", "confirmed", "box", "eyes", "keypoints", "score"}
MODEL_KEYS = {
    "expression", "confidence", "probabilities", "valence", "arousal", "va_derived", "frames_used", "model_id"
}
FRAME_KEYS = {"frame", "name", "stamp", "stamp_ns", "width", "height", "faces", "faces_dropped", "stage_ms"}


@pytest.fixture(scope="module")
def parameter_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged affect.yaml with the model paths pointing at contract test graphs."""
    root = tmp_path_factory.mktemp("run_models")
    data = yaml.safe_load(default_config_path().read_text())
    (node,) = data.values()  # the one node entry (affect_node, or /** for any node name)
    model = node["ros__parameters"]["model"]
    model["frame_model"] = str(write_graph(root / "frame.onnx", "frame", va_mode="derived", model_id="frame_t-1"))
    model["encoder_model"] = str(write_graph(root / "encoder.onnx", "encoder", model_id="rnn_t-1"))
    model["sequence_model"] = str(write_graph(root / "sequence.onnx", "sequence", length=T, model_id="rnn_t-1"))
    path = root / "affect.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def read_results(out: Path) -> List[Dict[str, Any]]:
    lines = (out / "results.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def check_face(face: Dict[str, Any], with_model: bool) -> None:
    assert set(face) == FACE_KEYS | (MODEL_KEYS if with_model else set())
    assert len(face["box"]) == 4 and face["box"][0] < face["box"][2] and face["box"][1] < face["box"][3]
    assert np.asarray(face["eyes"]).shape == (2, 2) and np.asarray(face["keypoints"]).shape == (6, 2)
    right_eye, left_eye = face["eyes"]
    assert right_eye[0] < left_eye[0]  # the subject's right eye is on the image's left
    assert 0 < face["score"] <= 1
    if with_model:
        assert abs(sum(face["probabilities"].values()) - 1) < 1e-3
        assert face["expression"] in face["probabilities"]
        assert face["confidence"] == pytest.approx(max(face["probabilities"].values()), abs=1e-4)
        assert -1 <= face["valence"] <= 1 and -1 <= face["arousal"] <= 1


def test_run_on_a_folder_of_afew_frames(tmp_path: Path, afew_clip_dir: Path, parameter_file: Path) -> None:
    import cv2

    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for path in sorted(afew_clip_dir.glob("*.png"))[:5]:
        shutil.copy(path, frames_dir / path.name)
    out = tmp_path / "out"
    code = main(["run", str(frames_dir), "--out", str(out), "--config", str(parameter_file), "--model-kind", "frame",
                 "--sequence"])
    assert code == 0
    records = read_results(out)
    assert [r["frame"] for r in records] == [0, 1, 2, 3, 4]
    assert [r["name"] for r in records] == ["00000", "00001", "00002", "00003", "00004"]
    ids = set()
    for record in records:
        assert set(record) == FRAME_KEYS
        assert (record["width"], record["height"]) == (720, 576)
        assert record["stamp_ns"] == record["frame"] * 40_000_000  # --fps 25 for image folders
        assert record["stamp"] == pytest.approx(record["frame"] / 25.0)
        assert len(record["faces"]) == 1
        face = record["faces"][0]
        check_face(face, with_model=True)
        assert face["model_id"] == "frame_t-1" and face["va_derived"] is True and face["frames_used"] == 1
        ids.add(face["id"])
        annotated = cv2.imread(str(out / "annotated" / f"{record['name']}.jpg"))
        assert annotated is not None and annotated.shape == (576, 720, 3)
    assert len(ids) == 1
    assert not (out / "annotated.mp4").exists()


def test_run_on_the_sample_with_the_temporal_model(tmp_path: Path, parameter_file: Path) -> None:
    import cv2

    out = tmp_path / "out"
    assert main(["run", "sample", "--out", str(out), "--config", str(parameter_file), "--seed", "1"]) == 0
    records = read_results(out)
    assert len(records) == SAMPLE_FRAMES
    used = []
    for record in records:
        assert len(record["faces"]) == 1
        check_face(record["faces"][0], with_model=True)
        used.append(record["faces"][0]["frames_used"])
    assert used[:T] == list(range(1, T + 1)) and set(used[T:]) == {T}
    assert len({r["faces"][0]["id"] for r in records}) == 1, "the sample's one face keeps one id"
    video = cv2.VideoCapture(str(out / "annotated.mp4"))
    count = 0
    while True:
        ok, frame = video.read()
        if not ok:
            break
        assert frame.shape == (480, 640, 3)
        count += 1
    video.release()
    assert count == SAMPLE_FRAMES


def test_run_without_model_and_without_video(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["run", "sample", "--out", str(out), "--model-kind", "none", "--max-frames", "4", "--no-video"]) == 0
    records = read_results(out)
    assert len(records) == 4
    for record in records:
        check_face(record["faces"][0], with_model=False)
    assert sorted(p.name for p in out.iterdir()) == ["results.jsonl"]


def test_missing_input_and_missing_bundled_model(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["run", str(tmp_path / "nothing.mp4"), "--out", str(tmp_path / "o")]) == 1
    assert "error: input" in capsys.readouterr().err
    # the default parameter file asks for the bundled temporal model; without it, say how to run anyway
    monkeypatch.setattr(assets, "MODELS_DIR", tmp_path / "no_models")
    assert main(["run", "sample", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert f"bundled model '{assets.DEFAULT_ENCODER_MODEL}' is missing" in err and "--model-kind none" in err


def test_unreadable_images_are_skipped(tmp_path: Path, afew_clip_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    shutil.copy(afew_clip_dir / "00000.png", frames_dir / "a.png")
    (frames_dir / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    shutil.copy(afew_clip_dir / "00001.png", frames_dir / "c.png")
    out = tmp_path / "out"
    assert main(["run", str(frames_dir), "--out", str(out), "--model-kind", "none"]) == 0
    assert [r["name"] for r in read_results(out)] == ["a", "c"]
    assert "b.png': its PNG header is damaged (no image size), so it is not a readable image" in caplog.text


# -- inputs ---------------------------------------------------------------------------------------


def test_video_input_stamps_and_limits(tmp_path: Path, afew_frames: List[np.ndarray]) -> None:
    import cv2

    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 20.0, (720, 576))
    for frame in afew_frames[:8]:
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()
    with open_input(str(path)) as source:
        assert source.kind == "video" and source.is_sequence and source.fps == pytest.approx(20.0)
        frames = list(source)
    assert len(frames) == 8
    stamps = [f.stamp_ns for f in frames]
    assert stamps == sorted(set(stamps))
    assert stamps[1] - stamps[0] == pytest.approx(50_000_000, rel=0.01)
    assert frames[0].image.shape == (576, 720, 3) and frames[0].image.dtype == np.uint8
    # mp4v is lossy, but the frame is the AFEW frame, in RGB order
    assert np.abs(frames[3].image.astype(int) - afew_frames[3]).mean() < 8
    with open_input(str(path), InputOptions(max_frames=3)) as source:
        assert source.length == 3 and len(list(source)) == 3


def test_image_and_folder_inputs(tmp_path: Path, afew_clip_dir: Path) -> None:
    with open_input(str(afew_clip_dir / "00007.png")) as source:
        (only,) = list(source)
    assert source.kind == "image" and not source.is_sequence
    assert only.index == 0 and only.name == "00007" and only.image.shape == (576, 720, 3)
    with open_input(str(afew_clip_dir), InputOptions(fps=10, max_frames=5)) as source:
        frames = list(source)
    assert [f.name for f in frames] == ["00000", "00001", "00002", "00003", "00004"]
    assert [f.stamp_ns for f in frames] == [i * 100_000_000 for i in range(5)]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"folder .*empty' has no images"):
        open_input(str(empty))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError, match=r"input .*notes.txt' is not a supported file"):
        open_input(str(tmp_path / "notes.txt"))
    with pytest.raises(ConfigError, match=r"--fps = 0 is not accepted"):
        open_input("sample", InputOptions(fps=0))


def test_sample_is_a_moving_clip() -> None:
    with open_input("sample") as source:
        frames = list(source)
    assert len(frames) == SAMPLE_FRAMES and source.is_sequence
    assert all(f.image.shape == (480, 640, 3) for f in frames)
    assert [f.stamp_ns for f in frames] == sorted({f.stamp_ns for f in frames})
    # consecutive frames differ (the camera moves), the clip is deterministic
    assert np.abs(frames[0].image.astype(int) - frames[1].image).mean() > 1
    with open_input("sample") as again:
        assert np.array_equal(next(iter(again)).image, frames[0].image)


# -- photos are not a video ---------------------------------------------------------------------


def extract_photos(tarball: Path, dest: Path, count: int) -> Path:
    """The first ``count`` AffectNet photos (different people) into ``dest`` (a temp folder)."""
    import tarfile

    dest.mkdir()
    with tarfile.open(tarball) as archive:
        members = sorted(
            (m for m in archive.getmembers() if m.isfile() and m.name.endswith(".jpg")), key=lambda m: m.name
        )[:count]
        for member in members:
            data = archive.extractfile(member)
            assert data is not None
            (dest / Path(member.name).name).write_bytes(data.read())
    return dest


def test_a_folder_of_photos_is_processed_photo_by_photo(
    tmp_path: Path, affectnet_tarball: Path, capsys: pytest.CaptureFixture
) -> None:
    photos = extract_photos(affectnet_tarball, tmp_path / "photos", 6)
    out = tmp_path / "out"
    # the bundled temporal model: a sequence shared across photos would show in frames_used
    assert main(["run", str(photos), "--out", str(out), "--model-kind", "temporal", "--no-video"]) == 0
    assert "mode: photos (6 images, each processed on its own" in capsys.readouterr().out
    records = read_results(out)
    assert len(records) == 6 and all(len(r["faces"]) == 1 for r in records), "one face per AffectNet photo"
    faces = [r["faces"][0] for r in records]
    assert len({f["id"] for f in faces}) == 6, "each photo gets its own track"
    assert [f["frames_used"] for f in faces] == [1] * 6, "no sequence state crosses photos"
    # ... and each photo's result is the one it gets when it is run alone (ids aside)
    for record, face in zip(records, faces, strict=True):
        alone = tmp_path / f"alone_{record['name']}"
        assert main(["run", str(photos / f"{record['name']}.jpg"), "--out", str(alone), "--model-kind", "temporal",
                     "--no-video"]) == 0
        (single,) = read_results(alone)
        (single_face,) = single["faces"]
        for key in ("box", "eyes", "expression", "probabilities", "valence", "arousal", "frames_used", "confirmed"):
            assert single_face[key] == face[key], (record["name"], key)


def test_sequence_option_tracks_across_the_files_of_a_folder(
    tmp_path: Path, affectnet_tarball: Path, capsys: pytest.CaptureFixture
) -> None:
    photos = extract_photos(affectnet_tarball, tmp_path / "frames", 4)
    out = tmp_path / "out"
    assert main(["run", str(photos), "--out", str(out), "--model-kind", "temporal", "--no-video", "--sequence"]) == 0
    assert "mode: sequence (4 images read as the frames of one video" in capsys.readouterr().out
    used = [r["faces"][0]["frames_used"] for r in read_results(out)]
    assert used == [1, 2, 3, 4], "--sequence pools the files as frames of one clip"
    with pytest.raises(ConfigError, match=r"--sequence reads a folder of one video's frames, but .* is one image"):
        open_input(str(next(photos.iterdir())), InputOptions(sequence=True))
