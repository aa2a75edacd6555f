"""FER2013 loaders: the image-folder layout and the original ``fer2013.csv``.

Both return a :class:`FerSplit`: all images of one split in memory as one uint8 array
(FER2013 is 48x48 grey, ~28k training images = 65 MB), labels already mapped to the
canonical class order :data:`ros2_affect.core.types.CANONICAL_EXPRESSIONS`.

Layouts
-------
Both are read by :mod:`ros2_affect.bags.photos`, the one reader of each, with the one
class-name table; this module adds decoding, caching and the arrays.

* Image folders (the shared copy, ``fer2013-images.tar.gz``)::

      <root>/fer2013/<Split>/<class>/*.jpg     Split: Training, PublicTest, PrivateTest
                                               class: angry disgust fear happy neutral sad surprise

  ``root`` may also be the ``.tar.gz`` itself; it is extracted once into a cache folder
  outside the repository (``$ROS2_AFFECT_CACHE`` or ``/tmp/ros2_affect_cache``).
* ``fer2013.csv`` (Kaggle / ICML 2013 release): header ``emotion,pixels,Usage``
  (:func:`ros2_affect.bags.photos.read_fer2013_csv`).

Decoded splits are cached as ``.npz`` next to the extracted images, so a second load
takes milliseconds.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple, Union

import cv2
import numpy as np

from ros2_affect.bags.photos import (
    FER2013_IMAGE_SIZE_PX,
    check_fer2013_split,
    fer2013_folder_images,
    read_fer2013_csv,
)
from ros2_affect.core.types import CANONICAL_EXPRESSIONS
from ros2_affect.errors import DatasetError

IMAGE_SIZE_PX = FER2013_IMAGE_SIZE_PX


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
    check_fer2013_split(split)
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
    for f, name in fer2013_folder_images(split_dir):
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise DatasetError(f"Cannot decode image {f}; delete or replace the file.")
        if img.shape != (IMAGE_SIZE_PX, IMAGE_SIZE_PX):
            img = cv2.resize(img, (IMAGE_SIZE_PX, IMAGE_SIZE_PX), interpolation=cv2.INTER_AREA)
        images.append(img)
        labels.append(CANONICAL_EXPRESSIONS.index(name))
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
    images, names = read_fer2013_csv(csv_path, split)
    labels = np.asarray([CANONICAL_EXPRESSIONS.index(n) for n in names], dtype=np.int64)
    return FerSplit(images, labels, CANONICAL_EXPRESSIONS, split)


def load_fer2013(path: Union[str, Path], split: str = "Training") -> FerSplit:
    """Load ``path`` whatever its layout: ``.csv``, ``.tar.gz`` or image folder."""
    p = Path(path)
    if p.suffix.lower() == ".csv":
        return load_fer2013_csv(p, split)
    return load_fer2013_folder(p, split)
