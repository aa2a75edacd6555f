"""AffectNet photos with a ``labels.csv`` table (the AffectNet validation sample's layout),
as a lazy training dataset. The table is read by the runtime's one reader of the format,
:func:`ros2_affect.bags.photos.read_affectnet_photos`; this module adds the class indices,
the NaN arrays and the crops.

Crops: ``crop="resize"`` takes the photo as the face crop; ``crop="landmarks"`` cuts the
runtime's :func:`~ros2_affect.core.alignment.align_face` crop from the landmark eyes (mean of
points 36-41 and 42-47) and the landmarks' extent.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ros2_affect.bags.photos import read_affectnet_photos
from ros2_affect.config import AlignmentConfig
from ros2_affect.errors import DatasetError
from training.data.faces import (
    FaceDataset,
    PathLike,
    align_crop,
    bbox_from_landmarks,
    eyes_from_landmarks68,
    read_rgb,
    resize_crop,
)
from training.data.labels import DROP, class_names

LOG = logging.getLogger(__name__)


class AffectNetPhotos(FaceDataset):
    """A folder of face photos with a ``labels.csv`` table (one row per photo), read by
    :func:`ros2_affect.bags.photos.read_affectnet_photos` (format and value rule there)::

        image,expression,valence,arousal,landmarks_xy
        images/0.jpg,neutral,-0.176846,-0.077640,-0.01 81.50 2.81 107.94 ...

    Any image format OpenCV reads (``.jpg``, ``.png``, ``.tif``/``.tiff``, ...). Training's
    arrays: expression index into :attr:`class_names`, -1 when the row has none;
    valence/arousal NaN when not annotated; landmarks NaN when absent (only
    :meth:`load_crop` with ``crop="landmarks"`` needs them).

    Rows left out are counted in :attr:`dropped` (``contempt`` without
    ``include_contempt``; ``missing_image`` with ``check_files``); the first lines of each
    are in :attr:`skipped_rows` for messages. A bad value in the table raises.

    Args:
        csv_path: the table.
        images_root: folder ``image`` is relative to (default: the CSV's folder).
        alignment: crop geometry for :meth:`load_crop` (use the model's).
        include_contempt: 8 classes instead of 7.
        crop: ``"resize"``: the photo is the face crop, resized to the model's input
            (:func:`~training.data.faces.resize_crop`); ``"landmarks"``: the runtime's
            aligned crop from the landmark eyes and the landmarks' extent.
        check_files: drop rows whose image file is missing.
        limit: read at most this many usable rows.

    Raises:
        DatasetError: the CSV is unreadable, lacks a column, has a bad value (a
            :class:`~ros2_affect.bags.labels.LabelError` naming the line), or has no usable row.
    """

    def __init__(
        self,
        csv_path: PathLike,
        images_root: Optional[PathLike] = None,
        alignment: Optional[AlignmentConfig] = None,
        include_contempt: bool = False,
        crop: str = "resize",
        check_files: bool = True,
        limit: Optional[int] = None,
    ) -> None:
        if crop not in ("resize", "landmarks"):
            raise ValueError(f"crop = {crop!r}; choose 'resize' or 'landmarks'")
        self.csv_path = Path(csv_path)
        self.images_root = Path(images_root) if images_root is not None else self.csv_path.parent
        self.alignment = alignment if alignment is not None else AlignmentConfig()
        self.crop = crop
        self.class_names = class_names(include_contempt)
        index = {name: i for i, name in enumerate(self.class_names)}
        self.dropped: Dict[str, int] = {}
        #: ``(csv line, reason)`` of the first few rows left out per reason.
        self.skipped_rows: List[Tuple[int, str]] = []
        paths: List[str] = []
        keys: List[str] = []
        expressions: List[int] = []
        va: List[List[float]] = []
        landmarks: List[np.ndarray] = []

        def drop(reason: str, line: int, detail: str) -> None:
            self.dropped[reason] = self.dropped.get(reason, 0) + 1
            if self.dropped[reason] <= 3:
                self.skipped_rows.append((line, f"{reason}: {detail}"))

        for row in read_affectnet_photos(self.csv_path):
            if row.expression is not None and row.expression not in index:
                drop(row.expression, row.line, f"expression {row.expression!r}")  # contempt in 7-class mode
                continue
            path = self.images_root / row.image
            if check_files and not path.is_file():
                drop("missing_image", row.line, str(path))
                continue
            paths.append(str(path))
            keys.append(row.image)
            expressions.append(DROP if row.expression is None else index[row.expression])
            va.append([np.nan if v is None else v for v in (row.valence, row.arousal)])
            landmarks.append(np.full((68, 2), np.nan, np.float32) if row.landmarks is None else row.landmarks)
            if limit is not None and len(paths) >= limit:
                break
        if not paths:
            raise DatasetError(
                f"{self.csv_path}: no usable rows (dropped: {self.dropped}); check the file and the images folder "
                f"{str(self.images_root)!r}"
            )
        if self.dropped:
            LOG.warning(
                "%s: %d rows kept, left out %s, e.g. line %d: %s",
                self.csv_path,
                len(paths),
                self.dropped,
                *self.skipped_rows[0],
            )
        self.paths = paths
        self.keys = keys
        self.expressions = np.asarray(expressions, dtype=np.int64)
        self.va = np.asarray(va, dtype=np.float32).reshape(-1, 2)
        self.landmarks = np.asarray(landmarks, dtype=np.float32).reshape(-1, 68, 2)

    def select(self, indices: Sequence[int]) -> AffectNetPhotos:
        """A copy holding only the rows ``indices`` (in that order), e.g. one part of a split."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = copy.copy(self)
        out.paths = [self.paths[i] for i in idx]
        out.keys = [self.keys[i] for i in idx]
        out.expressions = self.expressions[idx]
        out.va = self.va[idx]
        out.landmarks = self.landmarks[idx]
        return out

    def read_image(self, index: int) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB photo ``index`` (raises DatasetError when unreadable)."""
        return read_rgb(self.paths[index])

    def load_crop(self, index: int) -> np.ndarray:
        image = self.read_image(index)
        if self.crop == "resize":
            return resize_crop(image, self.alignment.output_size_px, self.alignment.grayscale)
        lm = self.landmarks[index]
        if not np.isfinite(lm).all():
            raise DatasetError(f"{self.paths[index]}: no landmarks_xy in {self.csv_path}; use crop='resize'")
        return align_crop(image, eyes_from_landmarks68(lm), bbox_from_landmarks(lm), self.alignment)
