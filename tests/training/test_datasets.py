"""Training's datasets on top of the runtime's label readers: class lists and AffectNetPhotos.

The table format and its value rule are tested in tests/bags/test_labels.py; here: what
training adds (class indices, NaN arrays, rows left out, crops), on tables written with real
AFEW-VA frames as photos, and the real AffectNet sample against an independent reading.
"""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import pytest

from ros2_affect.bags.labels import LabelError
from ros2_affect.config import AlignmentConfig
from ros2_affect.core.alignment import align_face
from ros2_affect.errors import DatasetError
from training.data import labels
from training.data.affectnet import AffectNetPhotos

ALIGN = AlignmentConfig(output_size_px=48, grayscale=True)
NAN = float("nan")
HEADER = "image,expression,valence,arousal,landmarks_xy"


# -- class lists ----------------------------------------------------------------------------


def test_class_lists_and_names_come_from_the_one_table() -> None:
    assert labels.CLASSES_7 == ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger")
    assert labels.class_names(True) == labels.CLASSES_7 + ("contempt",) == labels.CLASSES_8
    assert labels.canonical_name(" Angry ") == "anger" and labels.canonical_name("HAPPINESS") == "happy"
    for folder, name in labels.FER2013_FOLDERS.items():
        assert labels.canonical_name(folder) == name
    with pytest.raises(DatasetError, match=r"unknown expression 'contempt'; accepted: neutral, happy"):
        labels.canonical_name("contempt", labels.CLASSES_7)
    with pytest.raises(LabelError, match=r"did you mean 'surprise'"):
        labels.canonical_name("suprise")


# -- AffectNetPhotos ------------------------------------------------------------------------


def _lm(afew_annotation: Dict, frame: int) -> str:
    points = afew_annotation["frames"][f"{frame:05d}"]["landmarks"]
    return " ".join(f"{v:.2f}" for xy in points for v in xy)


@pytest.fixture()
def table(afew_clip_dir: Path, afew_annotation: Dict, tmp_path: Path) -> Path:
    """labels.csv over AFEW frames 0-3 saved as photos, one row per case of the format."""
    (tmp_path / "images").mkdir()
    for i in range(4):
        assert cv2.imwrite(str(tmp_path / "images" / f"{i}.png"), cv2.imread(str(afew_clip_dir / f"{i:05d}.png")))
    rows = [
        f"images/0.png,happy,0.5,0.25,{_lm(afew_annotation, 0)}",
        f"images/1.png,contempt,0.1,-0.1,{_lm(afew_annotation, 1)}",
        "images/2.png,9,-2,-2,",  # AffectNet's "Uncertain" and its VA marker: no labels
        f"images/3.png,Surprised,-2,,{_lm(afew_annotation, 3)}",  # alias; VA marker and empty cell
        "images/missing.png,anger,0,0,",
    ]
    path = tmp_path / "labels.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def test_photos_7_and_8_classes(table: Path) -> None:
    ds = AffectNetPhotos(table, alignment=ALIGN)
    assert ds.class_names == labels.CLASSES_7
    assert ds.keys == ["images/0.png", "images/2.png", "images/3.png"]
    assert ds.expressions.tolist() == [1, -1, 3]
    np.testing.assert_array_equal(ds.va, np.float32([[0.5, 0.25], [NAN, NAN], [NAN, NAN]]))
    assert ds.dropped == {"contempt": 1, "missing_image": 1}
    assert [line for line, _ in ds.skipped_rows] == [3, 6]
    assert np.isnan(ds.landmarks[1]).all() and np.isfinite(ds.landmarks[[0, 2]]).all()
    assert ds.class_counts().tolist() == [0, 1, 0, 1, 0, 0, 0]
    ds8 = AffectNetPhotos(table, include_contempt=True)
    assert ds8.expressions.tolist() == [1, 7, -1, 3] and ds8.dropped == {"missing_image": 1}
    np.testing.assert_array_equal(ds8.va[1], np.float32([0.1, -0.1]))
    assert len(AffectNetPhotos(table, include_contempt=True, limit=2)) == 2
    assert AffectNetPhotos(table, check_files=False).keys[-1] == "images/missing.png"
    part = ds8.select([3, 0])
    assert part.keys == ["images/3.png", "images/0.png"] and part.expressions.tolist() == [3, 1]


def test_photo_crops_are_the_runtime_alignment_of_the_landmark_eyes(
    table: Path, afew_frames: List[np.ndarray], afew_eye_centres: np.ndarray
) -> None:
    ds = AffectNetPhotos(table, alignment=ALIGN, crop="landmarks")
    sample = ds[0]
    assert sample.expression == 1 and sample.key == "images/0.png"
    lm = ds.landmarks[0].astype(np.float64)
    box = np.float32([lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()])
    expected, _ = align_face(afew_frames[0], afew_eye_centres[0], box, ALIGN)  # table landmarks: 0.01 px
    assert np.abs(sample.crop.astype(int) - np.asarray(expected).reshape(48, 48, 1).astype(int)).max() <= 1
    with pytest.raises(DatasetError, match=r"no landmarks_xy in .*labels.csv; use crop='resize'"):
        ds.load_crop(1)
    resized = AffectNetPhotos(table, alignment=ALIGN)[1].crop
    assert resized.shape == (48, 48, 1)


def test_a_bad_value_is_an_error_naming_its_line(table: Path, tmp_path: Path) -> None:
    good = table.read_text().splitlines()
    cases = {
        "images/0.png,happy,1.5,0.2,": r"labels.csv line 3: valence = 1.5 is outside the accepted range \[-1, 1\]",
        "images/0.png,happy,0.5,abc,": r"labels.csv line 3: arousal = 'abc' is not a number",
        "images/0.png,joyful-ish,0.5,0.5,": r"labels.csv line 3: unknown expression 'joyful-ish'",
        "images/0.png,12,0.5,0.5,": r"line 3: expression code 12 is outside AffectNet's 0..10",
        "images/0.png,happy,0.5,0.5,1 2 3": r"line 3: landmarks_xy has 3 numbers; expected 136",
        "images/0.png,happy": r"line 3: 2 cells for 5 columns",
        ",happy,0.5,0.5,": r"line 3: the image cell is empty",
    }
    for row, message in cases.items():
        bad = tmp_path / "labels.csv"
        bad.write_text("\n".join([good[0], good[1], row]) + "\n")
        with pytest.raises(LabelError, match=message):
            AffectNetPhotos(bad)
    bad.write_text("image,expression,arousal\nimages/0.png,happy,0.5\n")
    with pytest.raises(DatasetError, match=r"columns \['valence'\] missing"):
        AffectNetPhotos(bad)
    bad.write_text("\n".join([good[0], "images/missing.png,happy,0.5,0.5,"]) + "\n")
    with pytest.raises(DatasetError, match=r"no usable rows \(dropped: \{'missing_image': 1\}\)"):
        AffectNetPhotos(bad)


def test_real_affectnet_sample_reads_as_an_independent_parse(affectnet_tarball: Path, tmp_path: Path) -> None:
    """The 2,999 real rows: every value in range, read exactly as the csv module and float() read them."""
    with tarfile.open(affectnet_tarball) as archive:
        member = archive.extractfile("affectnet-val/labels.csv")
        assert member is not None
        text = member.read().decode()
    (tmp_path / "labels.csv").write_text(text)
    rows = list(csv.DictReader(io.StringIO(text)))
    ds = AffectNetPhotos(tmp_path / "labels.csv", include_contempt=True, check_files=False)
    assert len(ds) == len(rows) == 2999 and ds.dropped == {}
    assert ds.keys == [r["image"] for r in rows]
    assert ds.expressions.tolist() == [labels.CLASSES_8.index(r["expression"]) for r in rows]
    assert ds.class_counts().tolist() == [375] * 7 + [374]
    expected_va = np.float32([[float(r["valence"]), float(r["arousal"])] for r in rows])
    np.testing.assert_array_equal(ds.va, expected_va)
    expected_lm = np.float32([[float(v) for v in r["landmarks_xy"].split()] for r in rows]).reshape(-1, 68, 2)
    np.testing.assert_array_equal(ds.landmarks, expected_lm)
    seven = AffectNetPhotos(tmp_path / "labels.csv", check_files=False)
    assert len(seven) == 2625 and seven.dropped == {"contempt": 374}
