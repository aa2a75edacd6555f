"""The stored AffectNet train/val/test split: stratified, disjoint, deterministic, ids only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ros2_affect.errors import DatasetError
from training.data.labels import CLASSES_8
from training.data.splits import (
    AFFECTNET_SPLIT_FILE,
    SPLIT_SEED,
    TEST_PER_CLASS,
    VAL_PER_CLASS,
    image_id,
    load_split_file,
    make_split,
)


def test_make_split_is_stratified_disjoint_and_deterministic() -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(8), 130)
    ids = [str(i) for i in rng.permutation(len(labels)) * 3]  # shuffled, not contiguous
    a = make_split(ids, labels, seed=5, test_per_class=20, val_per_class=10)
    b = make_split(list(reversed(ids)), labels[::-1], seed=5, test_per_class=20, val_per_class=10)
    assert a == b  # the input order does not matter, only the seed
    assert make_split(ids, labels, seed=6, test_per_class=20, val_per_class=10)["test"] != a["test"]
    label_of = dict(zip(ids, labels.tolist(), strict=True))
    for part, per_class in (("test", 20), ("val", 10), ("train", 100)):
        counts = np.bincount([label_of[i] for i in a[part]], minlength=8)
        assert counts.tolist() == [per_class] * 8, part
    assert set(a["train"]) | set(a["val"]) | set(a["test"]) == set(ids)
    assert len(a["train"]) + len(a["val"]) + len(a["test"]) == len(ids)


def test_make_split_refuses_a_class_too_small() -> None:
    with pytest.raises(DatasetError, match=r"class 'happy' has 10 images; the split needs at least 31"):
        make_split([str(i) for i in range(10 + 7 * 40)], [1] * 10 + [0] * 280, test_per_class=20, val_per_class=10)


def test_stored_split_holds_ids_only_and_is_what_the_code_computes(affectnet_tarball: Path) -> None:
    from training.multitask import open_affectnet

    doc = json.loads(AFFECTNET_SPLIT_FILE.read_text())
    parts = load_split_file()
    # ids only: no label, path or value beside the id lists and the recipe
    assert set(doc) == {"dataset", "stratified_by", "seed", "per_class", "use", "counts", "train", "val", "test"}
    assert all(i.isdigit() for p in parts.values() for i in p)
    assert doc["seed"] == SPLIT_SEED and doc["counts"] == {k: len(v) for k, v in parts.items()}
    photos = open_affectnet(affectnet_tarball, include_contempt=True)
    ids = [image_id(k) for k in photos.keys]
    assert parts == make_split(ids, photos.expressions)  # deterministic: recomputed from the data
    label_of = dict(zip(ids, photos.expressions.tolist(), strict=True))
    assert len(parts["test"]) >= 600
    for part, per_class in (("test", TEST_PER_CLASS), ("val", VAL_PER_CLASS)):
        assert np.bincount([label_of[i] for i in parts[part]], minlength=8).tolist() == [per_class] * len(CLASSES_8)
    assert not (set(parts["train"]) & set(parts["val"])) and not (set(parts["train"]) & set(parts["test"]))
    assert not (set(parts["val"]) & set(parts["test"]))
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == sorted(ids)


def test_split_file_with_overlap_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"train": ["1", "2"], "val": ["3"], "test": ["2"]}))
    with pytest.raises(DatasetError, match=r"image id '2' is in both 'train' and 'test'"):
        load_split_file(path)
