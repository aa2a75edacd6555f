"""ros2-affect make-bag on the real AFEW-VA clip, image folders, a video and an Aff-Wild2-style folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import pytest

from ros2_affect.bags.labels import LabelError
from ros2_affect.bags.reader import BagReader
from ros2_affect.errors import BagError
from ros2_affect.tools.cli import main
from ros2_affect.tools.make_bag import DEFAULT_START_NS, make_bag

FRAME_NS = 40_000_000  # 25 fps


def _read_back(path: Path) -> Dict:
    with BagReader(path) as bag:
        info = bag.select_image_topic()
        images = list(bag.images(info.name))
        labels = bag.read_annotations() if bag.annotation_topics() else None
        return {"bag": bag.storage, "topic": info, "images": images, "labels": labels, "topics": bag.topics}


@pytest.mark.parametrize(
    "compression,storage,encoding",
    [("none", "sqlite3", "rgb8"), ("none", "mcap", "bgr8"), ("png", "sqlite3", "rgb8"), ("jpeg", "mcap", "rgb8")],
)
def test_afew_clip_becomes_a_bag_with_its_labels(
    afew_clip_dir: Path,
    afew_frames: List[np.ndarray],
    afew_annotation: Dict,
    tmp_path: Path,
    compression: str,
    storage: str,
    encoding: str,
) -> None:
    out = tmp_path / "afew"
    result = make_bag(afew_clip_dir, out, compression=compression, storage=storage, encoding=encoding)
    assert (result.kind, result.images, result.annotations) == ("afew-va", 42, 42)
    got = _read_back(out)
    assert got["bag"] == storage
    expected_topic = "/camera/image_raw" + ("/compressed" if compression != "none" else "")
    assert got["topic"].name == expected_topic
    assert got["topic"].msgtype == (
        "sensor_msgs/msg/Image" if compression == "none" else "sensor_msgs/msg/CompressedImage"
    )
    images = got["images"]
    assert [im.stamp_ns for im in images] == [DEFAULT_START_NS + i * FRAME_NS for i in range(42)]
    assert all(im.bag_time_ns == im.stamp_ns and im.frame_id == "camera" for im in images)
    if compression == "none":
        assert images[0].msg.encoding == encoding and images[0].msg.step == 720 * 3
    for index in (0, 17, 41):
        rgb = images[index].to_rgb()
        diff = np.abs(rgb.astype(np.int16) - afew_frames[index].astype(np.int16))
        if compression == "jpeg":
            assert diff.mean() < 3.0  # JPEG quality 95
        else:
            assert diff.max() == 0  # raw and PNG are lossless
    # the clip's own JSON, recorded on the label topic with the images' stamps
    labels = got["labels"]
    assert len(labels) == 42
    for i, ann in enumerate(labels.annotations):
        entry = afew_annotation["frames"][f"{i:05d}"]
        assert ann.frame_index == i and ann.stamp_ns == images[i].stamp_ns
        assert ann.valence == pytest.approx(entry["valence"] / 10) and ann.arousal == pytest.approx(
            entry["arousal"] / 10
        )
        assert ann.expression is None


def test_plain_folder_in_natural_order_with_an_unreadable_file_skipped(
    afew_clip_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "shots"
    folder.mkdir()
    pngs = sorted(afew_clip_dir.glob("*.png"))
    for name, src in zip(["img1.png", "img2.png", "img10.png"], pngs[:3], strict=True):
        shutil.copy(src, folder / name)
    (folder / "img3.png").write_bytes(pngs[3].read_bytes()[:500])  # truncated PNG
    (folder / "notes.txt").write_text("not an image")
    result = make_bag(folder, tmp_path / "bag", fps=10)
    assert result.kind == "folder" and result.images == 3 and result.annotation_topic is None
    assert result.skipped == [str(folder / "img3.png")]
    assert "img3.png" in caplog.text and "is not a readable image" in caplog.text
    got = _read_back(tmp_path / "bag")
    assert got["labels"] is None
    # natural order: img1, img2, img3 (skipped, keeps its slot), img10
    assert [im.stamp_ns - DEFAULT_START_NS for im in got["images"]] == [0, 100_000_000, 300_000_000]
    first = cv2.cvtColor(cv2.imread(str(pngs[2])), cv2.COLOR_BGR2RGB)
    assert np.array_equal(got["images"][2].to_rgb(), first)


def test_video_keeps_its_frame_rate_and_csv_labels_are_recorded(afew_frames: List[np.ndarray], tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (720, 576))
    for rgb in afew_frames[:6]:
        writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
    writer.release()
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "# hand labels\nframe,expression,valence,arousal\n0,happy,0.5,0.2\n2,Angry,,\n5,neutral,-0.1,0.0\n"
    )
    result = make_bag(video, tmp_path / "bag", labels=[labels], compression="jpeg", storage="mcap")
    assert (result.kind, result.images, result.fps, result.annotations) == ("video", 6, 10.0, 3)
    got = _read_back(tmp_path / "bag")
    assert [im.stamp_ns - DEFAULT_START_NS for im in got["images"]] == [i * 100_000_000 for i in range(6)]
    anns = got["labels"].annotations
    assert [(a.frame_index, a.expression, a.valence, a.arousal) for a in anns] == [
        (0, "happy", pytest.approx(0.5), pytest.approx(0.2)),
        (2, "anger", None, None),
        (5, "neutral", pytest.approx(-0.1), 0.0),
    ]
    assert [a.stamp_ns for a in anns] == [got["images"][i].stamp_ns for i in (0, 2, 5)]


def test_affwild2_frames_folder_with_its_txt_annotations(afew_clip_dir: Path, tmp_path: Path) -> None:
    # Aff-Wild2 layout: cropped_aligned/<video>/00001.jpg ..., EXPR_Set/<split>/<video>.txt, VA_Set/...
    frames = tmp_path / "cropped_aligned" / "video7"
    frames.mkdir(parents=True)
    pngs = sorted(afew_clip_dir.glob("*.png"))
    for number in (1, 2, 4):  # image 3 missing: no face crop for that video frame
        cv2.imwrite(str(frames / f"{number:05d}.jpg"), cv2.imread(str(pngs[number])))
    annotations = tmp_path / "annotations"
    (annotations / "EXPR_Set" / "Train_Set").mkdir(parents=True)
    (annotations / "VA_Set" / "Train_Set").mkdir(parents=True)
    (annotations / "EXPR_Set" / "Train_Set" / "video7.txt").write_text(
        "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n4\n-1\n1\n7\n"
    )
    (annotations / "VA_Set" / "Train_Set" / "video7.txt").write_text(
        "valence,arousal\n0.5,0.25\n-5,-5\n0.1,0.2\n-0.3,0.4\n"
    )
    result = make_bag(frames, tmp_path / "bag", labels=[annotations])
    assert (result.kind, result.images) == ("aff-wild2", 3)
    got = _read_back(tmp_path / "bag")
    # image k is video frame k - 1; the missing image keeps its time slot
    assert [im.stamp_ns - DEFAULT_START_NS for im in got["images"]] == [0, FRAME_NS, 3 * FRAME_NS]
    anns = {a.frame_index: a for a in got["labels"].annotations}
    assert sorted(anns) == [0, 3]  # frame 1: both unannotated; frame 2: no image
    assert (anns[0].expression, anns[0].valence, anns[0].arousal) == ("happy", 0.5, 0.25)
    assert (anns[3].expression, anns[3].valence) == (None, pytest.approx(-0.3))  # "Other" is no label


def test_make_bag_is_deterministic(afew_clip_dir: Path, tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        make_bag(afew_clip_dir, tmp_path / name, compression="jpeg", storage="sqlite3")
        with BagReader(tmp_path / name) as bag:
            runs.append([(m.topic, m.bag_time_ns, m.data) for m in bag.messages()])
    assert runs[0] == runs[1] and len(runs[0]) == 84


def test_cli_writes_a_bag_and_reports_bad_input(
    afew_clip_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "bag"
    assert main(["make-bag", str(afew_clip_dir), "--out", str(out), "--compressed", "png", "--storage", "mcap"]) == 0
    printed = capsys.readouterr().out
    assert "42 images on /camera/image_raw/compressed at 25 fps, 42 annotations on /affect_annotations" in printed
    meta = (out / "metadata.yaml").read_text()
    assert "storage_identifier: mcap" in meta and "affect_msgs/msg/AffectAnnotation" in meta

    assert main(["make-bag", str(afew_clip_dir), "--out", str(out)]) == 1
    assert "already exists; remove it, choose another path or pass --overwrite" in capsys.readouterr().err
    assert main(["make-bag", str(afew_clip_dir), "--out", str(out), "--overwrite", "--fps", "12.5"]) == 0
    assert "at 12.5 fps" in capsys.readouterr().out


def test_bad_inputs_are_reported(afew_clip_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(BagError, match="does not exist; pass a video file or a folder of images"):
        make_bag(tmp_path / "missing", tmp_path / "bag")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match=r"holds no images \(\.png"):
        make_bag(tmp_path / "empty", tmp_path / "bag")
    with pytest.raises(BagError, match=r"--fps 0.0 is out of range; expected 0.1..1000"):
        make_bag(afew_clip_dir, tmp_path / "bag", fps=0.0)
    bad = tmp_path / "bad.csv"
    bad.write_text("frame,expression\n0,bored\n")
    with pytest.raises(LabelError, match=r"bad.csv line 2: unknown expression 'bored'; accepted: neutral, happy"):
        make_bag(afew_clip_dir, tmp_path / "bag", labels=[bad])
    notes = tmp_path / "notes.dat"
    notes.write_text(json.dumps({}))
    with pytest.raises(LabelError, match=r"unrecognised file type '\.dat'"):
        make_bag(afew_clip_dir, tmp_path / "bag", labels=[notes])
    assert not (tmp_path / "bag").exists()  # nothing half-written
