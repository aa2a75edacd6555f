"""FER2013 loaders: the image-folder layout and the original ``fer2013.csv``.

Both return a :class:`FerSplit`: all images of one split in memory as one uint8 array
(FER2013 is 48x48 grey, ~28k training images = 65 MB), labels already mapped to the
canonical class order :data:`ros2_affect.core.types.CANONICAL_EXPRESSIONS`.

Layouts
-------
* Image folders (the shared copy, ``fer2013-images.tar.gz``)::

      <root>/fer2013/<Split>/<class>/*.jpg     Split: Training, PublicTest, PrivateTest
                                               class: angry disgust fear happy neutral sad surprise

  ``root`` may also be the ``.tar.gz`` itself; it is extracted once into a cache folder
  outside the repository (``$ROS2_AFFECT_CACHE`` or ``/tmp/ros2_affect_cache``).
* ``fer2013.csv`` (Kaggle / ICML 2013 release): header ``emotion,pixels,Usage``; emotion
  codes 0=Angry 1=Disgust 2=Fear 3=Happy 4=Sad 5=Surprise 6=Neutral; ``pixels`` is 2304
  space-separated grey levels (row-major 48x48); ``Usage`` is ``Training``,
  ``PublicTest`` or ``PrivateTest``.

Decoded splits are cached as ``.npz`` next to the extracted images, so a second load
takes milliseconds.
"""

from __future__ import annotations

import csv
import hashlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import cv2
import numpy as np

from ros2_affect.core.types import CANONICAL_EXPRESSIONS
from ros2_affect.errors import DatasetError, did_you_mean

#: FER2013 folder names -> canonical class names.
FOLDER_TO_CANONICAL: Dict[str, str] = {
    "angry": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "happy",
    "neutral": "neutral",
    "sad": "sad",
    "surprise": "surprise",
}
#: ``fer2013.csv`` emotion code -> canonical class name.
CSV_CODE_TO_CANONICAL: Tuple[str, ...] = ("anger", "disgust", "fear", "happy", "sad", "surprise", "neutral")
SPLITS: Tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")
IMAGE_SIZE_PX = 48


@dataclass(frozen=True)
class FerSplit:
    """One split of FER2013 in memory.

    Attributes:
        images: ``(N, 48, 48)`` uint8 grey images.
        labels: ``(N,)`` int64 indices into ``class_names``.
        class_names: the canonical expression order.
        split: ``"Training"``, ``"PublicTest"`` or ``"PrivateTest"``.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: Tuple[str, ...]
    split: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def class_counts(self) -> np.ndarray:
        """``(K,)`` int64 number of images per class, canonical order."""
        return np.bincount(self.labels, minlength=len(self.class_names)).astype(np.int64)

    def subset(self, indices: np.ndarray) -> FerSplit:
        return FerSplit(self.images[indices], self.labels[indices], self.class_names, self.split)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DatasetError(
            f"Unknown FER2013 split {split!r}; accepted: {', '.join(SPLITS)}{did_you_mean(split, SPLITS)}"
        )


def default_cache_dir() -> Path:
    return Path(os.environ.get("ROS2_AFFECT_CACHE", "/tmp/ros2_affect_cache"))


def _extract_tarball(tar_path: Path, cache_dir: Path) -> Path:
    """Extract once into ``cache_dir/<name>-<hash>/``; return that folder."""
    stat = tar_path.stat()
    key = hashlib.sha1(f"{tar_path.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:10]
    dest = cache_dir / f"{tar_path.name.split('.')[0]}-{key}"
    marker = dest / ".extracted"
    if marker.exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]
        for m in members:
            # Refuse absolute paths and '..' so a crafted archive cannot write outside dest.
            if m.name.startswith("/") or ".." in Path(m.name).parts:
                raise DatasetError(f"Unsafe path {m.name!r} in {tar_path}; the archive is not a FER2013 release.")
        tar.extractall(dest, members=members)
    marker.touch()
    return dest


def _find_split_dir(root: Path, split: str) -> Path:
    for cand in (root / "fer2013" / split, root / split):
        if cand.is_dir():
            return cand
    raise DatasetError(
        f"No FER2013 split folder {split!r} under {root} (looked for fer2013/{split}/ and {split}/). "
        "Pass the folder that contains fer2013/<Split>/<class>/*.jpg, or the .tar.gz."
    )


def load_fer2013_folder(root: Union[str, Path], split: str = "Training", use_cache: bool = True) -> FerSplit:
    """Load one split of the image-folder layout (folder or ``.tar.gz``).

    Images that are not 48x48 are resized (area interpolation); unreadable files raise
    :class:`DatasetError` naming the file.
    """
    _check_split(split)
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"FER2013 path {root} does not exist; pass the image folder or fer2013-images.tar.gz.")
    if root.is_file():
        if not root.name.endswith((".tar.gz", ".tgz")):
            raise DatasetError(f"FER2013 path {root} is a file but not a .tar.gz; pass the folder or the tarball.")
        root = _extract_tarball(root, default_cache_dir())
    split_dir = _find_split_dir(root, split)
    cache = split_dir.parent / f".{split}-uint8.npz"
    if use_cache and cache.exists():
        with np.load(cache) as z:
            return FerSplit(z["images"], z["labels"], CANONICAL_EXPRESSIONS, split)

    images: List[np.ndarray] = []
    labels: List[int] = []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        name = class_dir.name.lower()
        if name not in FOLDER_TO_CANONICAL:
            raise DatasetError(
                f"Unknown FER2013 class folder {class_dir}; accepted: {', '.join(sorted(FOLDER_TO_CANONICAL))}."
            )
        label = CANONICAL_EXPRESSIONS.index(FOLDER_TO_CANONICAL[name])
        for f in sorted(class_dir.iterdir()):
            if f.suffix.lower() not in (".jpg", ".jpeg", ".png"):
                continue
            img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
            if img is None:
                raise DatasetError(f"Cannot decode image {f}; delete or replace the file.")
            if img.shape != (IMAGE_SIZE_PX, IMAGE_SIZE_PX):
                img = cv2.resize(img, (IMAGE_SIZE_PX, IMAGE_SIZE_PX), interpolation=cv2.INTER_AREA)
            images.append(img)
            labels.append(label)
    if not images:
        raise DatasetError(f"No images found under {split_dir}; expected <class>/*.jpg folders.")
    split_data = FerSplit(np.stack(images), np.asarray(labels, dtype=np.int64), CANONICAL_EXPRESSIONS, split)
    if use_cache:
        try:
            tmp = cache.with_suffix(".tmp.npz")
            np.savez(tmp, images=split_data.images, labels=split_data.labels)
            tmp.replace(cache)
        except OSError:
            pass  # read-only data folder: just decode again next time
    return split_data


def load_fer2013_csv(csv_path: Union[str, Path], split: str = "Training") -> FerSplit:
    """Load one split (``Usage`` column) of the original ``fer2013.csv``."""
    _check_split(split)
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"fer2013.csv not found at {csv_path}; pass the path of the Kaggle/ICML csv file.")
    images: List[np.ndarray] = []
    labels: List[int] = []
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"emotion", "pixels", "Usage"}
        if reader.fieldnames is None or not need.issubset(reader.fieldnames):
            raise DatasetError(
                f"{csv_path} has columns {reader.fieldnames}; a fer2013.csv needs emotion,pixels,Usage."
            )
        for line_no, row in enumerate(reader, start=2):
            if row["Usage"] != split:
                continue
            try:
                code = int(row["emotion"])
                pix = np.array(row["pixels"].split(), dtype=np.int64)
            except ValueError as exc:
                raise DatasetError(f"{csv_path}:{line_no}: cannot parse emotion/pixels ({exc}).") from exc
            if not 0 <= code < len(CSV_CODE_TO_CANONICAL):
                raise DatasetError(f"{csv_path}:{line_no}: emotion code {code} not in 0..6.")
            if pix.size != IMAGE_SIZE_PX * IMAGE_SIZE_PX or pix.min() < 0 or pix.max() > 255:
                raise DatasetError(
                    f"{csv_path}:{line_no}: pixels must be 2304 grey levels 0..255, got {pix.size} values."
                )
            images.append(pix.astype(np.uint8).reshape(IMAGE_SIZE_PX, IMAGE_SIZE_PX))
            labels.append(CANONICAL_EXPRESSIONS.index(CSV_CODE_TO_CANONICAL[code]))
    if not images:
        raise DatasetError(f"{csv_path} has no rows with Usage={split!r}.")
    return FerSplit(np.stack(images), np.asarray(labels, dtype=np.int64), CANONICAL_EXPRESSIONS, split)


def load_fer2013(path: Union[str, Path], split: str = "Training") -> FerSplit:
    """Load ``path`` whatever its layout: ``.csv``, ``.tar.gz`` or image folder."""
    p = Path(path)
    if p.suffix.lower() == ".csv":
        return load_fer2013_csv(p, split)
    return load_fer2013_folder(p, split)


def class_names_from_folders(names: Sequence[str]) -> List[str]:
    return [FOLDER_TO_CANONICAL[n] for n in names]
