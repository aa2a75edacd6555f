"""AffectNet (Mollahosseini et al. 2017), manually annotated part.

Layout (official release)::

    <images_root>/<subDirectory_filePath>          e.g. Manually_Annotated_Images/689/abc.jpg
    training.csv / validation.csv                  one row per image, header:
        subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal

- ``face_x, face_y, face_width, face_height``: the face box in pixels (top-left, size).
- ``facial_landmarks``: 68 points as ``"x0;y0;x1;y1;...;x67;y67"`` (136 numbers).
- ``expression``: 0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger,
  7 Contempt, 8 None, 9 Uncertain, 10 No-Face. Codes 0-6 are the canonical order
  already; 7 is kept as the 8th class with ``include_contempt`` and dropped otherwise;
  8-10 are not expressions and always dropped.
- ``valence``, ``arousal``: -1..1, ``-2`` where there is no value (stored as NaN here).

Crops are cut with the runtime's :func:`~ros2_affect.core.alignment.align_face` from the
landmark eyes (mean of points 36-41 and 42-47) and the annotated face box.
"""

from __future__ import annotations

import copy
import csv
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

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
from training.data.labels import AFFECTNET_CODES, CLASSES_8, DROP, affectnet_table, canonical_name, class_names

LOG = logging.getLogger(__name__)

COLUMNS = (
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "facial_landmarks",
    "expression",
    "valence",
    "arousal",
)
#: valence/arousal value meaning "not annotated".
NO_VA = -2.0


def parse_landmarks(text: str) -> np.ndarray:
    """``(68, 2)`` float32 from AffectNet's ``"x0;y0;...;x67;y67"``.

    Raises:
        ValueError: not 136 numbers.
    """
    values = [float(v) for v in text.strip().strip(";").split(";") if v.strip()]
    if len(values) != 136:
        raise ValueError(f"facial_landmarks has {len(values)} numbers; expected 136 (68 x;y pairs)")
    return np.asarray(values, dtype=np.float32).reshape(68, 2)


class AffectNet(FaceDataset):
    """One AffectNet annotation file.

    Args:
        csv_path: ``training.csv`` or ``validation.csv``.
        images_root: folder that ``subDirectory_filePath`` is relative to
            (``Manually_Annotated_Images``).
        alignment: crop geometry (use the model's).
        include_contempt: 8 classes (canonical 7 + contempt) instead of 7.
        require_va: drop rows without valence/arousal (for joint training).
        check_files: drop rows whose image file is missing (counted in :attr:`dropped`).
        limit: read at most this many usable rows (quick experiments).

    Attributes:
        boxes: ``(N, 4)`` float32 face boxes ``[x1, y1, x2, y2]``.
        landmarks: ``(N, 68, 2)`` float32.
        dropped: rows left out, by reason.
    """

    def __init__(
        self,
        csv_path: PathLike,
        images_root: PathLike,
        alignment: AlignmentConfig,
        include_contempt: bool = False,
        require_va: bool = False,
        check_files: bool = True,
        limit: Optional[int] = None,
    ) -> None:
        self.csv_path = Path(csv_path)
        self.images_root = Path(images_root)
        self.alignment = alignment
        self.class_names = class_names(include_contempt)
        table = affectnet_table(include_contempt)
        self.dropped: Dict[str, int] = {}
        paths: List[str] = []
        boxes: List[List[float]] = []
        landmarks: List[np.ndarray] = []
        expressions: List[int] = []
        va: List[List[float]] = []

        def drop(reason: str) -> None:
            self.dropped[reason] = self.dropped.get(reason, 0) + 1

        try:
            handle = self.csv_path.open(newline="")
        except OSError as exc:
            raise DatasetError(f"cannot open the AffectNet annotation file {str(self.csv_path)!r}: {exc}") from None
        with handle:
            reader = csv.DictReader(handle)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DatasetError(
                    f"{self.csv_path}: columns {missing} missing; an AffectNet annotation file has the header "
                    f"{','.join(COLUMNS)} (found {reader.fieldnames})"
                )
            for line, row in enumerate(reader, start=2):
                try:
                    code = int(float(row["expression"]))
                    x, y, w, h = (float(row[k]) for k in ("face_x", "face_y", "face_width", "face_height"))
                    v, a = float(row["valence"]), float(row["arousal"])
                except (TypeError, ValueError):
                    drop("unparsable_row")
                    LOG.debug("%s:%d: unparsable row %r", self.csv_path, line, row)
                    continue
                if not 0 <= code < len(table) or table[code] == DROP:
                    drop("contempt" if code == 7 else "not_an_expression" if 8 <= code <= 10 else "bad_code")
                    continue
                try:
                    lm = parse_landmarks(row["facial_landmarks"] or "")
                except ValueError:
                    drop("no_landmarks")
                    continue
                if w <= 0 or h <= 0:
                    drop("bad_box")
                    continue
                has_va = -1.0 <= v <= 1.0 and -1.0 <= a <= 1.0
                if not has_va:
                    drop_reason = "no_va" if (v == NO_VA or a == NO_VA) else "va_out_of_range"
                    if require_va:
                        drop(drop_reason)
                        continue
                    if drop_reason == "va_out_of_range":
                        drop("va_out_of_range_kept_as_nan")  # the row stays, its VA is NaN
                path = self.images_root / row["subDirectory_filePath"]
                if check_files and not path.is_file():
                    drop("missing_image")
                    continue
                paths.append(str(path))
                boxes.append([x, y, x + w, y + h])
                landmarks.append(lm)
                expressions.append(int(table[code]))
                va.append([v, a] if has_va else [np.nan, np.nan])
                if limit is not None and len(paths) >= limit:
                    break
        if not paths:
            raise DatasetError(
                f"{self.csv_path}: no usable rows (dropped: {self.dropped}); check the file and images_root"
            )
        if self.dropped:
            LOG.info("AffectNet %s: %d rows kept, dropped %s", self.csv_path.name, len(paths), self.dropped)
        self.paths = paths
        self.keys = [str(Path(p).relative_to(self.images_root)) for p in paths]
        self.boxes = np.asarray(boxes, dtype=np.float32)
        self.landmarks = np.asarray(landmarks, dtype=np.float32)
        self.expressions = np.asarray(expressions, dtype=np.int64)
        self.va = np.asarray(va, dtype=np.float32)

    def load_crop(self, index: int) -> np.ndarray:
        eyes = eyes_from_landmarks68(self.landmarks[index])
        return align_crop(read_rgb(self.paths[index]), eyes, self.boxes[index], self.alignment)


# -- photo folders with a labels.csv (the AffectNet validation sample's layout) ----------------

#: Columns of a ``labels.csv`` photo table; ``landmarks_xy`` is optional.
PHOTO_COLUMNS = ("image", "expression", "valence", "arousal")


def parse_landmarks_xy(text: str) -> np.ndarray:
    """``(68, 2)`` float32 from ``labels.csv``'s ``"x0 y0 x1 y1 ... x67 y67"`` (spaces).

    Raises:
        ValueError: not 136 numbers.
    """
    values = [float(v) for v in text.split()]
    if len(values) != 136:
        raise ValueError(f"landmarks_xy has {len(values)} numbers; expected 136 (68 'x y' pairs)")
    return np.asarray(values, dtype=np.float32).reshape(68, 2)


class AffectNetPhotos(FaceDataset):
    """A folder of face photos with a ``labels.csv`` table (one row per photo)::

        image,expression,valence,arousal,landmarks_xy
        images/0.jpg,neutral,-0.176846,-0.077640,-0.01 81.50 2.81 107.94 ...

    - ``image``: path relative to ``images_root`` (default: the CSV's folder); any format
      OpenCV reads (``.jpg``, ``.png``, ``.tif``/``.tiff``, ...).
    - ``expression``: a class name (aliases like ``angry`` accepted,
      :func:`~training.data.labels.canonical_name`) or an AffectNet code 0..10
      (:data:`~training.data.labels.AFFECTNET_CODES`); empty: no label (-1). Contempt is the
      8th class with ``include_contempt`` and dropped otherwise, as :class:`AffectNet` does.
    - ``valence``, ``arousal``: -1..1; empty or AffectNet's ``-2``: not annotated (NaN).
    - ``landmarks_xy`` (optional): 68 points as ``x y`` pairs in pixels of the photo;
      NaN when absent or malformed (only :meth:`load_crop` with ``crop="landmarks"`` needs them).

    Rows that cannot be used are left out and counted in :attr:`dropped` (reasons:
    ``unparsable_row``, ``unknown_expression``, ``contempt``, ``not_an_expression``,
    ``missing_image``, ``va_out_of_range_kept_as_nan``, ``bad_landmarks_kept``); the first
    lines of each are in :attr:`skipped_rows` for messages.

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
        DatasetError: the CSV is unreadable, lacks a column, or has no usable row.
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

        try:
            handle = self.csv_path.open(newline="", encoding="utf-8")
        except OSError as exc:
            raise DatasetError(f"cannot open the photo label table {str(self.csv_path)!r}: {exc}") from None
        with handle:
            reader = csv.DictReader(handle)
            fields = [f.strip() for f in (reader.fieldnames or [])]
            reader.fieldnames = fields
            missing = [c for c in PHOTO_COLUMNS if c not in fields]
            if missing:
                raise DatasetError(
                    f"{self.csv_path}: columns {missing} missing; a photo label table has the header "
                    f"{','.join(PHOTO_COLUMNS)}[,landmarks_xy] (found {fields})"
                )
            try:
                for line, row in enumerate(reader, start=2):
                    name = (row.get("image") or "").strip()
                    if not name or None in row.values():
                        drop("unparsable_row", line, "empty image cell or too few cells")
                        continue
                    code = _expression_index(row.get("expression") or "", index)
                    if isinstance(code, str):
                        drop(code, line, f"expression {row.get('expression')!r}")
                        continue
                    try:
                        v, a = (float(row[k]) if (row[k] or "").strip() else NO_VA for k in ("valence", "arousal"))
                    except ValueError:
                        drop("unparsable_row", line, f"valence {row['valence']!r} / arousal {row['arousal']!r}")
                        continue
                    has_va = -1.0 <= v <= 1.0 and -1.0 <= a <= 1.0
                    if not has_va and not (v == NO_VA or a == NO_VA):
                        drop("va_out_of_range_kept_as_nan", line, f"valence {v}, arousal {a}")
                    lm = np.full((68, 2), np.nan, dtype=np.float32)
                    if (row.get("landmarks_xy") or "").strip():
                        try:
                            lm = parse_landmarks_xy(row["landmarks_xy"])
                        except ValueError as exc:
                            drop("bad_landmarks_kept", line, str(exc))
                    path = self.images_root / name
                    if check_files and not path.is_file():
                        drop("missing_image", line, str(path))
                        continue
                    paths.append(str(path))
                    keys.append(name)
                    expressions.append(code)
                    va.append([v, a] if has_va else [np.nan, np.nan])
                    landmarks.append(lm)
                    if limit is not None and len(paths) >= limit:
                        break
            except (csv.Error, UnicodeDecodeError) as exc:
                raise DatasetError(
                    f"{self.csv_path}: not a readable CSV table near line {reader.line_num}: {exc}"
                ) from None
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


def _expression_index(text: str, index: Dict[str, int]) -> Union[int, str]:
    """Class index for an ``expression`` cell (name or AffectNet code), -1 for empty, or
    the reason to drop the row."""
    cell = text.strip()
    if not cell:
        return -1
    try:
        code = int(cell)
    except ValueError:
        try:
            name = canonical_name(cell, CLASSES_8 + AFFECTNET_CODES[8:])
        except DatasetError:
            return "unknown_expression"
    else:
        if not 0 <= code < len(AFFECTNET_CODES):
            return "unknown_expression"
        name = AFFECTNET_CODES[code]
    if name in index:
        return index[name]
    return "contempt" if name == "contempt" else "not_an_expression"
