"""Dataset loaders on fixtures in the datasets' published formats, with real face images.

Images are never committed: the AFEW-VA clip in ../shared/data provides real frames, written
under the names the fixture annotations expect into a temp folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest

from ros2_affect.config import AlignmentConfig
from ros2_affect.core.alignment import align_face
from ros2_affect.errors import DatasetError
from training.data import labels
from training.data.afew_va import AfewVaFrames, afew_va_sequences
from training.data.affectnet import AffectNet, parse_landmarks
from training.data.affwild2 import AffWild2Frames, affwild2_sequences, read_va_file, runtime_eye_finder
from training.data.faces import sequence_windows

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ALIGN = AlignmentConfig(output_size_px=48, grayscale=True)
NAN = float("nan")


# -- label maps -----------------------------------------------------------------------------


def test_label_tables_map_each_dataset_to_canonical_order() -> None:
    canonical = labels.CLASSES_7
    assert canonical == ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger")
    # AffectNet codes 0-6 are the canonical order; 7 contempt; 8-10 dropped
    assert labels.affectnet_table(False).tolist() == [0, 1, 2, 3, 4, 5, 6, -1, -1, -1, -1]
    assert labels.affectnet_table(True).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, -1, -1, -1]
    # Aff-Wild2: Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other
    assert labels.affwild2_table(False).tolist() == [0, 6, 5, 4, 1, 2, 3, -1]
    assert labels.affwild2_table(True).tolist() == [0, 6, 5, 4, 1, 2, 3, 7]
    # fer2013.csv: Angry,Disgust,Fear,Happy,Sad,Surprise,Neutral
    assert labels.fer2013_csv_table().tolist() == [6, 5, 4, 1, 2, 3, 0]
    for folder, name in labels.FER2013_FOLDERS.items():
        assert labels.canonical_name(folder) == name


def test_canonical_name_aliases_and_error() -> None:
    assert labels.canonical_name(" Angry ") == "anger"
    assert labels.canonical_name("HAPPINESS") == "happy"
    with pytest.raises(DatasetError, match=r"'contempt' is not one of the accepted classes"):
        labels.canonical_name("contempt", labels.CLASSES_7)
    with pytest.raises(DatasetError, match=r"did you mean 'surprise'"):
        labels.canonical_name("suprise")


def test_map_codes_drops_unknown_and_unannotated() -> None:
    out = labels.map_codes(np.array([-1, 0, 7, 4, 12]), labels.affwild2_table(), "Aff-Wild2")
    assert out.tolist() == [-1, 0, -1, 1, -1]


# -- windows ----------------------------------------------------------------------------------


def test_sequence_windows_respect_stride_hop_and_gaps() -> None:
    frames = [1, 2, 3, 4, 6, 7, 8, 9, 10]  # frame 5 missing
    # T=3, stride 1, hop 1: a window may not bridge the missing frame 5
    pos = sequence_windows(frames, 3, stride=1, hop=1)
    assert [[frames[i] for i in w] for w in pos] == [[1, 2, 3], [2, 3, 4], [6, 7, 8], [7, 8, 9], [8, 9, 10]]
    # stride 2, default hop T*stride = 6: start 1 needs 1, 3, 5 (5 missing), start 7 needs 7, 9, 11
    assert sequence_windows(frames, 3, stride=2).shape == (0, 3)
    # max_gap 2 lets a window step over one missing frame
    pos = sequence_windows(frames, 3, stride=1, hop=1, max_gap=2)
    assert [frames[i] for i in pos[2]] == [3, 4, 6]


def test_sequence_windows_stride_two_exact() -> None:
    frames = list(range(1, 12))
    pos = sequence_windows(frames, 3, stride=2, hop=3)
    # starts 1, 4, 7 (hop 3); items every 2nd frame; start 7 needs 11 -> ok; start 10 would need 14
    assert [[frames[i] for i in w] for w in pos] == [[1, 3, 5], [4, 6, 8], [7, 9, 11]]


# -- AFEW-VA ----------------------------------------------------------------------------------


def test_afew_va_reads_real_clip(afew_clip_dir: Path, afew_annotation: dict) -> None:
    ds = AfewVaFrames(afew_clip_dir, ALIGN)
    assert len(ds) == 42 and ds.dropped == {}
    # valence 0, arousal 5 on -10..10 -> (0.0, 0.5)
    np.testing.assert_allclose(ds.va, np.tile([0.0, 0.5], (42, 1)))
    assert (ds.expressions == -1).all()
    assert ds.frame_numbers.tolist() == list(range(42))
    assert ds.keys[0] == "001/00000"
    # the parent folder works as a dataset root too
    assert len(AfewVaFrames(afew_clip_dir.parent, ALIGN, clips=["001"])) == 42


def test_afew_va_crops_are_the_runtime_alignment_of_the_landmark_eyes(
    afew_clip_dir: Path, afew_frames: List[np.ndarray], afew_eye_centres: np.ndarray
) -> None:
    ds = AfewVaFrames(afew_clip_dir, ALIGN)
    for i in (0, 20, 41):
        sample = ds[i]
        assert sample.crop.shape == (48, 48, 1) and sample.crop.dtype == np.uint8
        assert sample.va.tolist() == pytest.approx([0.0, 0.5]) and sample.expression == -1
        box = ds.landmarks[i].min(axis=0).tolist() + ds.landmarks[i].max(axis=0).tolist()
        expected, _ = align_face(afew_frames[i], afew_eye_centres[i], box, ALIGN)
        # the loader keeps landmarks in float32: at most a grey level of rounding difference
        assert np.abs(sample.crop.astype(int) - expected.astype(int)).max() <= 1
        # the eye order matters: swapped eyes give a different (upside-down) crop
        swapped, _ = align_face(afew_frames[i], afew_eye_centres[i][::-1], None, ALIGN)
        assert np.abs(sample.crop.astype(int) - swapped.astype(int)).mean() > 10


def test_afew_va_sequences_cut_per_clip(afew_clip_dir: Path) -> None:
    # 42 frames (0..41), T=8, default hop 8: starts 0, 8, 16, 24, 32 (start 40 would need frame 47)
    seqs = afew_va_sequences(afew_clip_dir, ALIGN, length=8)
    assert seqs.windows.shape == (5, 8)
    assert seqs.frames.frame_numbers[seqs.windows[:, 0]].tolist() == [0, 8, 16, 24, 32]
    # stride 2 (the runtime keeps every 2nd frame): a window spans 15 frames, hop 16
    seqs = afew_va_sequences(afew_clip_dir, ALIGN, length=8, stride=2)
    assert seqs.frames.frame_numbers[seqs.windows[0]].tolist() == [0, 2, 4, 6, 8, 10, 12, 14]
    assert len(seqs) == 2  # starts 0, 16 (32 would need frame 46)


def test_afew_va_rejects_a_folder_without_clips(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no AFEW-VA clip under .*<clip>/<clip>.json"):
        AfewVaFrames(tmp_path, ALIGN)


def test_afew_va_drops_bad_records(afew_clip_dir: Path, afew_annotation: dict, tmp_path: Path) -> None:
    import json

    clip = tmp_path / "002"
    clip.mkdir()
    frames = {}
    for key in ("00000", "00001", "00002"):
        frames[key] = dict(afew_annotation["frames"][key])
        shutil.copy(afew_clip_dir / f"{key}.png", clip / f"{key}.png")
    frames["00001"]["valence"] = 11  # outside -10..10
    frames["00002"]["landmarks"] = frames["00002"]["landmarks"][:60]
    frames["00003"] = dict(afew_annotation["frames"]["00003"])  # no image file
    (clip / "002.json").write_text(json.dumps({"actor": "x", "video_id": "002", "frames": frames}))
    ds = AfewVaFrames(clip, ALIGN)
    assert len(ds) == 1
    assert ds.dropped == {"va_out_of_range": 1, "bad_landmarks": 1, "missing_image": 1}


# -- AffectNet ------------------------------------------------------------------------------


@pytest.fixture()
def affectnet_images(afew_clip_dir: Path, tmp_path: Path) -> Path:
    """The fixture CSV's images: AFEW frames 00000-00003 saved as JPEG under its paths."""
    root = tmp_path / "Manually_Annotated_Images"
    for key, rel in (
        ("00000", "689/afew001_00000.jpg"),
        ("00001", "689/afew001_00001.jpg"),
        ("00002", "690/afew001_00002.jpg"),
        ("00003", "690/afew001_00003.jpg"),
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        image = cv2.imread(str(afew_clip_dir / f"{key}.png"))
        assert cv2.imwrite(str(root / rel), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return root


def test_parse_landmarks_real_format() -> None:
    first = (FIXTURES / "affectnet" / "training.csv").read_text().splitlines()[1]
    lm = parse_landmarks(first.split(",")[5])
    assert lm.shape == (68, 2)
    assert lm[0].tolist() == pytest.approx([181.42, 170.11], abs=1e-3)
    with pytest.raises(ValueError, match="has 4 numbers; expected 136"):
        parse_landmarks("1;2;3;4")


def test_affectnet_7_class(affectnet_images: Path) -> None:
    ds = AffectNet(FIXTURES / "affectnet" / "training.csv", affectnet_images, ALIGN)
    # rows: happy (kept), contempt (dropped in 7-class), uncertain (dropped),
    # surprise without VA (kept, NaN), anger with a missing image (dropped)
    assert ds.class_names == labels.CLASSES_7
    assert ds.expressions.tolist() == [1, 3]
    np.testing.assert_allclose(ds.va, [[0.5, 0.25], [NAN, NAN]])
    assert ds.dropped == {"contempt": 1, "not_an_expression": 1, "missing_image": 1}
    assert ds.keys == ["689/afew001_00000.jpg", "690/afew001_00003.jpg"]
    np.testing.assert_allclose(ds.boxes[0], [181, 95, 181 + 90, 95 + 161])
    assert ds.class_counts().tolist() == [0, 1, 0, 1, 0, 0, 0]


def test_affectnet_crops_use_landmark_eyes_and_box(
    affectnet_images: Path, afew_eye_centres: np.ndarray
) -> None:
    ds = AffectNet(FIXTURES / "affectnet" / "training.csv", affectnet_images, ALIGN)
    sample = ds[0]
    assert sample.expression == 1 and sample.key == "689/afew001_00000.jpg"
    image = cv2.imread(str(affectnet_images / sample.key))[:, :, ::-1]
    # landmarks in the CSV are rounded to 0.01 px
    expected, _ = align_face(np.ascontiguousarray(image), afew_eye_centres[0], ds.boxes[0], ALIGN)
    assert np.abs(sample.crop.astype(int) - expected.astype(int)).max() <= 1
    # box mode uses the annotated face box
    box_mode = AlignmentConfig(output_size_px=48, grayscale=True, eye_distance_ratio=0.0, margin=0.1)
    ds_box = AffectNet(FIXTURES / "affectnet" / "training.csv", affectnet_images, box_mode)
    expected, _ = align_face(np.ascontiguousarray(image), afew_eye_centres[0], ds.boxes[0], box_mode)
    assert np.abs(ds_box[0].crop.astype(int) - expected.astype(int)).max() <= 1
    images, expressions, va = ds.materialize()
    assert images.shape == (2, 48, 48, 1) and expressions.tolist() == [1, 3]


def test_affectnet_8_class_and_require_va(affectnet_images: Path) -> None:
    ds = AffectNet(FIXTURES / "affectnet" / "training.csv", affectnet_images, ALIGN, include_contempt=True)
    assert ds.class_names[-1] == "contempt" and len(ds.class_names) == 8
    assert ds.expressions.tolist() == [1, 7, 3]
    ds = AffectNet(
        FIXTURES / "affectnet" / "training.csv", affectnet_images, ALIGN, include_contempt=True, require_va=True
    )
    assert ds.expressions.tolist() == [1, 7]
    assert ds.dropped["no_va"] == 1


def test_affectnet_bad_header(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("path,expression\nx.jpg,1\n")
    with pytest.raises(DatasetError, match=r"columns \['subDirectory_filePath', 'face_x'"):
        AffectNet(bad, tmp_path, ALIGN)


# -- Aff-Wild2 ------------------------------------------------------------------------------


def _affwild2_root(afew_frames: List[np.ndarray], afew_annotation: dict, tmp_path: Path) -> Path:
    """Fixture annotations + 112x112 face crops cut from real AFEW frames (video1/00006.jpg left out)."""
    root = tmp_path / "affwild2"
    shutil.copytree(FIXTURES / "affwild2" / "annotations", root / "annotations")
    keys = sorted(afew_annotation["frames"])
    for video, n in (("video1", 10), ("video2_left", 6)):
        (root / "cropped_aligned" / video).mkdir(parents=True)
        for i in range(1, n + 1):
            if video == "video1" and i == 6:
                continue
            lm = np.asarray(afew_annotation["frames"][keys[i]]["landmarks"])
            x1, y1 = lm.min(axis=0).astype(int)
            x2, y2 = lm.max(axis=0).astype(int)
            face = afew_frames[i][max(0, y1 - 20) : y2 + 10, max(0, x1 - 15) : x2 + 15]
            crop = cv2.resize(face, (112, 112), interpolation=cv2.INTER_AREA)
            assert cv2.imwrite(str(root / "cropped_aligned" / video / f"{i:05d}.jpg"), crop[:, :, ::-1])
    return root


@pytest.fixture()
def affwild2_root(afew_frames: List[np.ndarray], afew_annotation: dict, tmp_path: Path) -> Path:
    return _affwild2_root(afew_frames, afew_annotation, tmp_path)


def test_read_va_file_marks_unannotated_and_out_of_range() -> None:
    va = read_va_file(FIXTURES / "affwild2" / "annotations" / "VA_Set" / "Train_Set" / "video1.txt")
    assert va.shape == (10, 2)
    assert np.isnan(va[[0, 3, 7]]).all()  # -5, 1.5 (out of range), -5
    assert va[1].tolist() == pytest.approx([0.1, 0.2])


# video1 codes per frame 1..10: -1, Neutral, Happiness, Happiness, Other, Sadness, Surprise, Anger, Disgust, Fear
#   -> canonical: -, 0, 1, 1, other, 2, 3, 6, 5, 4; frame 6 has no crop
# video1 VA: frames 1, 4 (1.5 out of range), 8 unannotated
# video2_left codes: Neutral, Neutral, Happiness, -1, Sadness, Surprise -> 0, 0, 1, -, 2, 3; no VA file


def test_affwild2_expr(affwild2_root: Path) -> None:
    ds = AffWild2Frames(affwild2_root, "train", ALIGN, task="expr")
    assert ds.keys == [f"video1/{i:05d}" for i in (2, 3, 4, 7, 8, 9, 10)] + [
        f"video2_left/{i:05d}" for i in (1, 2, 3, 5, 6)
    ]
    assert ds.expressions.tolist() == [0, 1, 1, 3, 6, 5, 4, 0, 0, 1, 2, 3]
    assert ds.dropped == {"unlabelled": 2, "other": 1, "no_face_crop": 1}
    # VA rides along where present
    assert ds.va[0].tolist() == pytest.approx([0.1, 0.2])
    assert np.isnan(ds.va[2]).all()  # frame 4: out of range
    assert np.isnan(ds.va[7:]).all()  # video2_left: no VA file


def test_affwild2_keep_other_va_joint_any(affwild2_root: Path) -> None:
    ds = AffWild2Frames(affwild2_root, "Train_Set", ALIGN, task="expr", keep_other=True)
    assert ds.class_names[-1] == "other"
    assert ds.keys[3] == "video1/00005" and ds.expressions[3] == 7

    ds = AffWild2Frames(affwild2_root, "train", ALIGN, task="va")
    assert ds.frame_numbers.tolist() == [2, 3, 5, 7, 9, 10]
    np.testing.assert_allclose(ds.va, [[0.1, 0.2], [0.35, -0.4], [-0.25, 0.5], [-0.6, 0.9], [0.3, -0.1], [-1, 1]])

    ds = AffWild2Frames(affwild2_root, "train", ALIGN, task="joint")
    assert ds.keys == [f"video1/{i:05d}" for i in (2, 3, 7, 9, 10)]

    ds = AffWild2Frames(affwild2_root, "train", ALIGN, task="any")
    assert len(ds) == 13
    i5 = ds.keys.index("video1/00005")  # Other with VA: kept, expression unlabelled
    assert ds.expressions[i5] == -1 and ds.va[i5].tolist() == pytest.approx([-0.25, 0.5])


def test_affwild2_errors(affwild2_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no VA_Set/validation folder"):
        AffWild2Frames(affwild2_root, "validation", ALIGN, task="va")
    with pytest.raises(DatasetError, match=r"task = 'both'; choose one of expr, va, joint, any"):
        AffWild2Frames(affwild2_root, "train", ALIGN, task="both")
    bad = affwild2_root / "annotations" / "EXPR_Set" / "Train_Set" / "video3.txt"
    bad.write_text("Neutral,Happy\n1\n")
    with pytest.raises(DatasetError, match=r"video3.txt: first line 'Neutral,Happy' is not the EXPR header"):
        AffWild2Frames(affwild2_root, "train", ALIGN, task="expr")


def test_affwild2_sequences_per_video(affwild2_root: Path) -> None:
    seqs = affwild2_sequences(affwild2_root, "train", ALIGN, length=3, stride=1, hop=1, task="expr")
    keys = [[seqs.frames.keys[i] for i in w] for w in seqs.windows]
    assert keys == [
        ["video1/00002", "video1/00003", "video1/00004"],
        ["video1/00007", "video1/00008", "video1/00009"],
        ["video1/00008", "video1/00009", "video1/00010"],
        ["video2_left/00001", "video2_left/00002", "video2_left/00003"],
    ]
    # a window's target is its last frame's label
    assert seqs.expressions.tolist() == [1, 5, 4, 1]
    sample = seqs[0]
    assert sample.crops.shape == (3, 48, 48, 1) and sample.crops.dtype == np.uint8
    assert sample.expression == 1 and sample.frame_expressions.tolist() == [0, 1, 1]


def test_affwild2_resized_crops_are_the_provided_faces(affwild2_root: Path) -> None:
    ds = AffWild2Frames(affwild2_root, "train", AlignmentConfig(output_size_px=64, grayscale=False), task="expr")
    sample = ds[0]
    assert sample.crop.shape == (64, 64, 3) and sample.crop.dtype == np.uint8
    source = cv2.imread(str(affwild2_root / "cropped_aligned" / "video1" / "00002.jpg"))[:, :, ::-1]
    expected = cv2.resize(source, (64, 64), interpolation=cv2.INTER_AREA)
    assert np.abs(sample.crop.astype(int) - expected.astype(int)).max() == 0


def test_affwild2_realign_with_the_runtime_eye_finder(
    affwild2_root: Path, afew_annotation: dict
) -> None:
    finder = runtime_eye_finder()
    ds = AffWild2Frames(affwild2_root, "train", ALIGN, task="joint", eye_finder=finder)
    keys = sorted(afew_annotation["frames"])
    for i in range(len(ds)):
        frame = int(ds.frame_numbers[i])
        path = affwild2_root / "cropped_aligned" / "video1" / f"{frame:05d}.jpg"
        image = np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])
        face = finder(image)
        assert face is not None and face.eyes_refined
        # the found eyes agree with the AFEW annotation mapped into this 112x112 crop
        lm = np.asarray(afew_annotation["frames"][keys[frame]]["landmarks"])
        x0, y0 = max(0, int(lm[:, 0].min()) - 15), max(0, int(lm[:, 1].min()) - 20)
        w = int(lm[:, 0].max()) + 15 - x0
        h = int(lm[:, 1].max()) + 10 - y0
        gt = (np.stack([lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)]) - [x0, y0]) * [112 / w, 112 / h]
        iod = float(np.linalg.norm(gt[1] - gt[0]))
        assert np.abs(face.eyes_px - gt).max() < 0.2 * iod
        expected, _ = align_face(image, face.eyes_px, face.bbox_xyxy_px, ALIGN)
        np.testing.assert_array_equal(ds[i].crop, expected)
