"""The fixed train / validation / test split of the AffectNet validation sample.

``../shared/data/affectnet-val/affectnet-val-dev.tar.gz`` holds 2,999 AffectNet faces
(375 per class, contempt 374), the only real valence/arousal face data here. It is split
by image (each photo is a different person) into three disjoint parts, stratified by the
8 expression classes, with a fixed seed:

- ``test``: 75 per class (600 images), held out: only reported, never used to select a
  model, stop training or fit a temperature;
- ``val``: 40 per class (320 images): model selection (with FER2013 PublicTest) and the
  calibration temperature (:mod:`training.calibrate`);
- ``train``: the rest (2,079 images).

The split is stored as image ids only (``training/splits/affectnet_val_dev.json``, the
file stem of each ``images/<id>.jpg``): no image data and no labels leave the dataset.
``python -m training.data.splits --data <tarball or folder>`` recomputes it; the test
``tests/training/test_splits.py`` checks that the stored file is what this code computes.

Algorithm: per class (in :data:`~training.data.labels.CLASSES_8` order), the class's ids
sorted numerically are permuted with ``numpy.random.default_rng(seed)`` (one generator,
drawn class after class); the first ``test_per_class`` go to ``test``, the next
``val_per_class`` to ``val``, the rest to ``train``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from ros2_affect.errors import DatasetError
from training.data.labels import CLASSES_8

SPLIT_DIR = Path(__file__).resolve().parents[1] / "splits"
AFFECTNET_SPLIT_FILE = SPLIT_DIR / "affectnet_val_dev.json"
SPLIT_SEED = 20210
TEST_PER_CLASS = 75
VAL_PER_CLASS = 40
PARTS = ("train", "val", "test")


def image_id(key: str) -> str:
    """``"images/123.jpg"`` -> ``"123"`` (the id stored in split files)."""
    return Path(key).stem


def _id_order(ids: Sequence[str]) -> List[str]:
    return sorted(ids, key=lambda s: (0, int(s), s) if s.isdigit() else (1, 0, s))


def make_split(
    ids: Sequence[str],
    labels: Sequence[int],
    seed: int = SPLIT_SEED,
    test_per_class: int = TEST_PER_CLASS,
    val_per_class: int = VAL_PER_CLASS,
) -> Dict[str, List[str]]:
    """Stratified split of ``ids`` by class ``labels`` (see the module docstring).

    Args:
        ids: image ids, unique.
        labels: class index per id (0..7, :data:`CLASSES_8` order).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each sorted by id.

    Raises:
        DatasetError: duplicate ids, or a class with fewer than ``test + val + 1`` images.
    """
    ids = [str(i) for i in ids]
    lab = np.asarray(labels, dtype=np.int64)
    if len(set(ids)) != len(ids) or lab.shape != (len(ids),):
        raise DatasetError(f"make_split needs unique ids and one label each ({len(ids)} ids, {lab.shape} labels)")
    rng = np.random.default_rng(seed)
    parts: Dict[str, List[str]] = {p: [] for p in PARTS}
    for c in range(len(CLASSES_8)):
        members = _id_order([ids[i] for i in np.flatnonzero(lab == c)])
        if len(members) < test_per_class + val_per_class + 1:
            raise DatasetError(
                f"class {CLASSES_8[c]!r} has {len(members)} images; the split needs at least "
                f"{test_per_class + val_per_class + 1} ({test_per_class} test + {val_per_class} val + training)"
            )
        order = [members[i] for i in rng.permutation(len(members))]
        parts["test"] += order[:test_per_class]
        parts["val"] += order[test_per_class : test_per_class + val_per_class]
        parts["train"] += order[test_per_class + val_per_class :]
    return {p: _id_order(v) for p, v in parts.items()}


def load_split_file(path: Union[str, Path] = AFFECTNET_SPLIT_FILE) -> Dict[str, List[str]]:
    """``{"train", "val", "test"}`` id lists from a split file.

    Raises:
        DatasetError: missing file or parts, or parts that overlap.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read the split file {str(p)!r}: {exc}") from None
    missing = [k for k in PARTS if not isinstance(data.get(k), list)]
    if missing:
        raise DatasetError(f"split file {p} lacks the id lists {missing}; expected keys {list(PARTS)}")
    parts = {k: [str(i) for i in data[k]] for k in PARTS}
    seen: Dict[str, str] = {}
    for k, v in parts.items():
        for i in v:
            if i in seen:
                raise DatasetError(f"split file {p}: image id {i!r} is in both {seen[i]!r} and {k!r}")
            seen[i] = k
    return parts


def split_document(parts: Dict[str, List[str]], seed: int, test_per_class: int, val_per_class: int) -> Dict:
    return {
        "dataset": "AffectNet validation sample (affectnet-val-dev.tar.gz, 2,999 images); ids = images/<id>.jpg",
        "stratified_by": "expression, 8 classes (contempt included)",
        "seed": seed,
        "per_class": {"test": test_per_class, "val": val_per_class, "train": "the rest"},
        "use": {
            "train": "training",
            "val": "model selection and the calibration temperature",
            "test": "held out: reported only",
        },
        "counts": {k: len(v) for k, v in parts.items()},
        **parts,
    }


def format_split_document(doc: Dict) -> str:
    """JSON with one line per key (an id list on one line), so diffs stay readable."""
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in doc.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    from training.multitask import open_affectnet

    parser = argparse.ArgumentParser(prog="python -m training.data.splits", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="affectnet-val-dev.tar.gz or the extracted affectnet-val folder")
    parser.add_argument("--out", type=Path, default=AFFECTNET_SPLIT_FILE)
    parser.add_argument("--seed", type=int, default=SPLIT_SEED)
    parser.add_argument("--test-per-class", type=int, default=TEST_PER_CLASS)
    parser.add_argument("--val-per-class", type=int, default=VAL_PER_CLASS)
    args = parser.parse_args(argv)
    photos = open_affectnet(args.data, include_contempt=True)
    parts = make_split([image_id(k) for k in photos.keys], photos.expressions, args.seed, args.test_per_class,
                       args.val_per_class)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = split_document(parts, args.seed, args.test_per_class, args.val_per_class)
    args.out.write_text(format_split_document(doc))
    print(f"wrote {args.out}: " + ", ".join(f"{k} {len(v)}" for k, v in parts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
