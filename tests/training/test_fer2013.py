"""FER2013 loaders on the real tarball and on a fer2013.csv in the published format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ros2_affect.core.types import CANONICAL_EXPRESSIONS
from ros2_affect.errors import DatasetError
from training.data.fer2013 import FerSplit, load_fer2013, load_fer2013_csv, load_fer2013_folder

# Shared data README: Training per class (folder names).
README_TRAINING = {
    "angry": 3864, "disgust": 389, "fear": 3974, "happy": 7158, "neutral": 4913, "sad": 4774, "surprise": 2880,
}  # fmt: skip
FOLDER_TO_CANON = {"angry": "anger"}


@pytest.fixture(scope="module")
def fer_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch) -> Path:
    cache = tmp_path_factory.mktemp("fer_cache")
    monkeypatch_module.setenv("ROS2_AFFECT_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def fer_train(fer_tarball: Path, fer_cache: Path) -> FerSplit:
    return load_fer2013_folder(fer_tarball, "Training")


@pytest.fixture(scope="module")
def fer_public(fer_tarball: Path, fer_cache: Path) -> FerSplit:
    return load_fer2013(fer_tarball, "PublicTest")


def test_training_counts_match_readme(fer_train: FerSplit) -> None:
    counts = fer_train.class_counts()
    for folder, n in README_TRAINING.items():
        assert counts[CANONICAL_EXPRESSIONS.index(FOLDER_TO_CANON.get(folder, folder))] == n, folder
    assert len(fer_train) == 27952
    assert fer_train.images.shape == (27952, 48, 48) and fer_train.images.dtype == np.uint8
    assert fer_train.class_names == CANONICAL_EXPRESSIONS


def test_public_test_split(fer_public: FerSplit, fer_cache: Path) -> None:
    assert len(fer_public) == 3589
    assert fer_public.images.shape[1:] == (48, 48)
    assert set(np.unique(fer_public.labels)) == set(range(7))
    # Real face crops, not blank images: per-image contrast.
    assert float(fer_public.images.reshape(len(fer_public), -1).std(axis=1).mean()) > 20
    # Second load comes from the decoded cache and is identical.
    again = load_fer2013(next(fer_cache.iterdir()), "PublicTest")
    np.testing.assert_array_equal(again.images, fer_public.images)
    np.testing.assert_array_equal(again.labels, fer_public.labels)


def _write_fer_csv(path: Path, rows) -> None:
    lines = ["emotion,pixels,Usage"]
    for code, pixels, usage in rows:
        lines.append(f"{code},{' '.join(str(int(v)) for v in pixels.reshape(-1))},{usage}")
    path.write_text("\n".join(lines) + "\n")


def test_csv_published_format(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(7, 48, 48), dtype=np.uint8)
    # One row per csv code 0..6 (Angry, Disgust, Fear, Happy, Sad, Surprise, Neutral).
    rows = [(code, imgs[code], "Training") for code in range(7)] + [(3, imgs[0], "PublicTest")]
    csv_path = tmp_path / "fer2013.csv"
    _write_fer_csv(csv_path, rows)
    train = load_fer2013_csv(csv_path, "Training")
    expected = ["anger", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert [train.class_names[i] for i in train.labels] == expected
    np.testing.assert_array_equal(train.images, imgs)
    public = load_fer2013(csv_path, "PublicTest")
    assert len(public) == 1 and public.class_names[public.labels[0]] == "happy"


def test_csv_round_trip_of_real_images(fer_public: FerSplit, tmp_path: Path) -> None:
    sub = fer_public.subset(np.arange(0, 3589, 300))
    code_of = {"anger": 0, "disgust": 1, "fear": 2, "happy": 3, "sad": 4, "surprise": 5, "neutral": 6}
    rows = [(code_of[sub.class_names[y]], img, "PublicTest") for img, y in zip(sub.images, sub.labels, strict=True)]
    csv_path = tmp_path / "fer2013.csv"
    _write_fer_csv(csv_path, rows)
    back = load_fer2013_csv(csv_path, "PublicTest")
    np.testing.assert_array_equal(back.images, sub.images)
    np.testing.assert_array_equal(back.labels, sub.labels)


def test_csv_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("emotion,pixels,Usage\n9," + " ".join(["0"] * 2304) + ",Training\n")
    with pytest.raises(DatasetError, match="emotion code 9 not in 0..6"):
        load_fer2013_csv(bad, "Training")
    bad.write_text("emotion,pixels,Usage\n1,0 1 2,Training\n")
    with pytest.raises(DatasetError, match="2304 grey levels"):
        load_fer2013_csv(bad, "Training")
    bad.write_text("label,image\n1,2\n")
    with pytest.raises(DatasetError, match="needs emotion,pixels,Usage"):
        load_fer2013_csv(bad, "Training")
    with pytest.raises(DatasetError, match="did you mean 'PublicTest'"):
        load_fer2013_csv(bad, "PublicTset")
    with pytest.raises(DatasetError, match="does not exist"):
        load_fer2013_folder(tmp_path / "nowhere", "Training")
