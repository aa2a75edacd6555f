"""What training's face datasets share (:class:`training.data.affectnet.AffectNetPhotos`,
and the image-folder evaluation of :mod:`training.evaluate`).

- :class:`FaceSample`: one crop with its labels, in the conventions of
  :mod:`training.losses`: expression ``-1`` means "no label", valence/arousal ``NaN``
  means "no label".
- :func:`align_crop`: the face crop, made by the runtime's own
  :func:`ros2_affect.core.alignment.align_face` from the dataset's eye positions, so a
  model sees at training time exactly the crops it gets on the robot;
  :func:`resize_crop` for images that are face crops already.
- :class:`FaceDataset`: a lazy, indexable set of face records (torch's ``DataLoader``
  accepts it as a map-style dataset; no torch import here).

Labels are read by the runtime's readers (:mod:`ros2_affect.bags.labels`,
:mod:`ros2_affect.bags.photos`); temporal training cuts its sequences in
:mod:`training.sequences`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from ros2_affect.config import AlignmentConfig
from ros2_affect.errors import DatasetError

LOG = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: 0-based indices of the two eyes in the 68-point (iBUG/Multi-PIE) landmark scheme,
#: subject's right eye first (it is on the image's left for a frontal face).
RIGHT_EYE_68 = slice(36, 42)
LEFT_EYE_68 = slice(42, 48)


@dataclass(frozen=True)
class FaceSample:
    """One face.

    Attributes:
        crop: ``(S, S, C)`` uint8, C 1 (grey) or 3 (RGB), as the runtime would crop it.
        expression: index into the dataset's ``class_names``, or -1 (no label).
        va: ``(2,)`` float32 valence, arousal in -1..1; NaN where there is no label.
        key: where it came from (``video/frame`` or the image path), for debugging.
    """

    crop: np.ndarray
    expression: int
    va: np.ndarray
    key: str = ""


def eyes_from_landmarks68(landmarks: np.ndarray) -> np.ndarray:
    """``(2, 2)`` float32 eye centres from ``(68, 2)`` landmarks: subject's right eye
    (mean of points 36-41) first, then the left (42-47), as :class:`FaceDetection.eyes_px`."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise DatasetError(f"expected 68 (x, y) landmarks, got an array of shape {lm.shape}")
    return np.stack([lm[RIGHT_EYE_68].mean(axis=0), lm[LEFT_EYE_68].mean(axis=0)]).astype(np.float32)


def bbox_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """``(4,)`` float32 ``[x1, y1, x2, y2]``: the extent of the 68 landmarks (jaw line to
    brows), the face box for datasets that give landmarks but no box."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return np.array([lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()], dtype=np.float32)


def read_rgb(path: PathLike) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB image from disk.

    Raises:
        DatasetError: the file is missing or cannot be decoded.
    """
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        state = "does not exist" if not Path(path).exists() else "cannot be decoded as an image"
        raise DatasetError(f"image {str(path)!r} {state}; check the dataset root and that the download is complete")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def align_crop(
    image: np.ndarray, eyes_px: np.ndarray, bbox_xyxy_px: np.ndarray, alignment: AlignmentConfig
) -> np.ndarray:
    """The runtime's aligned face crop for a face with known eyes and box.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        eyes_px: ``(2, 2)`` eye centres, subject's right eye first.
        bbox_xyxy_px: ``(4,)`` face box.
        alignment: the crop geometry (margin, eye_distance_ratio, output size, grey).

    Returns:
        ``(S, S, C)`` uint8 crop (C = 1 when ``alignment.grayscale`` else 3).
    """
    from ros2_affect.core.alignment import align_face  # lazy: the runtime stage, one implementation

    eyes = np.asarray(eyes_px, dtype=np.float32).reshape(2, 2)
    bbox = np.asarray(bbox_xyxy_px, dtype=np.float32).reshape(4)
    crop, _roll = align_face(image, eyes, bbox, alignment)
    crop = np.asarray(crop)
    if crop.ndim == 2:
        crop = crop[:, :, None]
    return crop


def resize_crop(image: np.ndarray, size_px: int, grayscale: bool) -> np.ndarray:
    """Resize an already aligned face crop to ``(S, S, C)`` uint8 (C 1 or 3).

    Used for images that are face crops already (evaluation folders, Aff-Wild2's
    ``cropped_aligned``): area interpolation when shrinking, linear when enlarging.
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (1, 3):
        raise DatasetError(f"expected a uint8 (H, W, 1|3) image, got shape {img.shape} dtype {img.dtype}")
    if grayscale and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[:, :, None]
    elif not grayscale and img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    h, w = img.shape[:2]
    if (h, w) != (size_px, size_px):
        interp = cv2.INTER_AREA if size_px < min(h, w) else cv2.INTER_LINEAR
        resized = cv2.resize(img, (size_px, size_px), interpolation=interp)
        img = resized[:, :, None] if resized.ndim == 2 else resized
    return np.ascontiguousarray(img)


class FaceDataset:
    """Lazy indexable face records: ``dataset[i]`` reads, aligns and returns one face.

    Subclasses fill :attr:`expressions` (``(N,)`` int64, -1 none), :attr:`va`
    (``(N, 2)`` float32, NaN none), :attr:`keys` and implement :meth:`load_crop`.

    Attributes:
        class_names: names of the expression indices, canonical order.
        dropped: number of annotation rows left out, by reason (for the training log).
    """

    class_names: Tuple[str, ...]
    expressions: np.ndarray
    va: np.ndarray
    keys: List[str]
    dropped: Dict[str, int]

    def __len__(self) -> int:
        return int(self.expressions.shape[0])

    def load_crop(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, index: int) -> FaceSample:
        i = int(index)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        i %= len(self)
        return FaceSample(self.load_crop(i), int(self.expressions[i]), self.va[i].copy(), self.keys[i])

    def class_counts(self) -> np.ndarray:
        """``(K,)`` int64 number of labelled samples per class (for class weights)."""
        labelled = self.expressions[self.expressions >= 0]
        return np.bincount(labelled, minlength=len(self.class_names)).astype(np.int64)

    def materialize(self, indices: Optional[Sequence[int]] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Load crops into memory: ``(images (N, S, S, C) uint8, expressions (N,), va (N, 2))``."""
        idx = range(len(self)) if indices is None else [int(i) for i in indices]
        crops = [self.load_crop(i) for i in idx]
        sel = np.asarray(list(idx), dtype=np.int64)
        images = np.stack(crops) if crops else np.zeros((0, 1, 1, 1), np.uint8)
        return images, self.expressions[sel].copy(), self.va[sel].copy()
