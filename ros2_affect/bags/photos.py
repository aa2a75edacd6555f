"""Labelled photo datasets: AffectNet's ``labels.csv`` table and FER2013 (class folders or
``fer2013.csv``). The one reader of each format; training builds its arrays on top of them
(:mod:`training.data.affectnet`, :mod:`training.data.fer2013`).

Values follow the rule of :mod:`ros2_affect.bags.labels`: only a format's own "not
annotated" marker makes a value missing (``None``); anything else that is not a valid value
raises :class:`~ros2_affect.bags.labels.LabelError` naming the file, the line and the value.
Expression names go through the one class-name table,
:data:`~ros2_affect.bags.labels.EXPRESSION_ALIASES`.

AffectNet ``labels.csv`` (header required, column order free)::

    image,expression,valence,arousal[,landmarks_xy]
    images/0.jpg,neutral,-0.176846,-0.077640,-0.01 81.50 2.81 107.94 ...

- ``image``: path relative to the table's folder (or another images root).
- ``expression``: a class name (aliases accepted) or an AffectNet code 0..10
  (:data:`AFFECTNET_CATEGORIES`); empty, or the categories None/Uncertain/No-Face (8-10):
  no expression label.
- ``valence``, ``arousal``: -1..1; empty or AffectNet's ``-2``: not annotated.
- ``landmarks_xy`` (optional): 68 points as ``x y`` pairs in pixels; empty: none.

FER2013 image folders: ``<Split>/<class>/*.jpg`` with the class folder names of
:data:`FER2013_FOLDERS`; ``fer2013.csv``: header ``emotion,pixels,Usage``, emotion codes of
:data:`FER2013_CSV_CODES`, ``pixels`` 2304 grey levels (row-major 48x48).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from ros2_affect.bags.labels import (
    EXPRESSION_ALIASES,
    KNOWN_EXPRESSIONS,
    LabelError,
    expression_name,
    unit_cell,
)
from ros2_affect.errors import did_you_mean

PathLike = Union[str, Path]

# -- AffectNet labels.csv -----------------------------------------------------------------------

#: AffectNet's categories, index = its expression code (official manual). 8-10 are not expressions.
AFFECTNET_CATEGORIES: Tuple[str, ...] = (
    "neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt",
    "none", "uncertain", "no-face",
)
#: The categories that mean "no expression label".
AFFECTNET_NO_EXPRESSION: Tuple[str, ...] = AFFECTNET_CATEGORIES[8:]
#: AffectNet's "not annotated" valence/arousal marker.
AFFECTNET_NO_VA = -2.0
#: Required columns of a ``labels.csv`` photo table (``landmarks_xy`` is optional).
PHOTO_COLUMNS = ("image", "expression", "valence", "arousal")


@dataclass(frozen=True)
class PhotoLabel:
    """One row of a photo table.

    Attributes:
        line: the row's line in the file (for messages).
        image: the ``image`` cell, a path relative to the images root.
        expression: canonical name (contempt included), ``None`` when not labelled.
        valence, arousal: -1..1, ``None`` when not annotated.
        landmarks: ``(68, 2)`` float32 pixels, ``None`` when absent.
    """

    line: int
    image: str
    expression: Optional[str]
    valence: Optional[float]
    arousal: Optional[float]
    landmarks: Optional[np.ndarray] = None


def affectnet_expression(cell: str, where: str) -> Optional[str]:
    """An ``expression`` cell (name or AffectNet code) -> canonical name, or ``None``.

    Raises:
        LabelError: an unknown name or a code outside 0..10.
    """
    text = cell.strip()
    if not text:
        return None
    try:
        code = int(text)
    except ValueError:
        name = expression_name(text, where, KNOWN_EXPRESSIONS + AFFECTNET_NO_EXPRESSION)
    else:
        if not 0 <= code < len(AFFECTNET_CATEGORIES):
            raise LabelError(
                f"{where}: expression code {code} is outside AffectNet's 0..{len(AFFECTNET_CATEGORIES) - 1} "
                f"({', '.join(AFFECTNET_CATEGORIES)})"
            )
        name = AFFECTNET_CATEGORIES[code]
    return None if name in AFFECTNET_NO_EXPRESSION else name


def parse_landmarks_xy(text: str, where: str) -> Optional[np.ndarray]:
    """``(68, 2)`` float32 from ``"x0 y0 x1 y1 ... x67 y67"``; ``None`` for an empty cell.

    Raises:
        LabelError: not 136 numbers.
    """
    if not text.strip():
        return None
    try:
        values = [float(v) for v in text.split()]
    except ValueError:
        raise LabelError(f"{where}: landmarks_xy holds a value that is not a number") from None
    if len(values) != 136:
        raise LabelError(f"{where}: landmarks_xy has {len(values)} numbers; expected 136 (68 'x y' pairs)")
    return np.asarray(values, dtype=np.float32).reshape(68, 2)


def read_affectnet_photos(csv_path: PathLike) -> List[PhotoLabel]:
    """Every row of an AffectNet-style ``labels.csv`` (format in the module docstring).

    Raises:
        LabelError: the file is unreadable, lacks a column, or a row has a bad value (the
            message names the line and the value).
    """
    path = Path(csv_path)
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise LabelError(f"cannot open the photo label table {str(path)!r}: {exc}") from None
    rows: List[PhotoLabel] = []
    with handle:
        reader = csv.DictReader(handle)
        try:
            fields = [f.strip() for f in (reader.fieldnames or [])]
            reader.fieldnames = fields
            missing = [c for c in PHOTO_COLUMNS if c not in fields]
            if missing:
                raise LabelError(
                    f"{path}: columns {missing} missing; a photo label table has the header "
                    f"{','.join(PHOTO_COLUMNS)}[,landmarks_xy] (found {fields})"
                )
            for line, row in enumerate(reader, start=2):
                where = f"{path} line {line}"
                if None in row.values() or None in row:  # too few cells / too many cells
                    cells = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None) or ())
                    raise LabelError(f"{where}: {cells} cells for {len(fields)} columns")
                image = row["image"].strip()
                if not image:
                    raise LabelError(f"{where}: the image cell is empty")
                rows.append(
                    PhotoLabel(
                        line=line,
                        image=image,
                        expression=affectnet_expression(row["expression"], where),
                        valence=unit_cell(row["valence"], where, "valence", AFFECTNET_NO_VA),
                        arousal=unit_cell(row["arousal"], where, "arousal", AFFECTNET_NO_VA),
                        landmarks=parse_landmarks_xy(row.get("landmarks_xy") or "", where),
                    )
                )
        except (csv.Error, UnicodeDecodeError) as exc:
            raise LabelError(f"{path}: not a readable CSV table near line {reader.line_num}: {exc}") from None
    return rows


# -- FER2013 -----------------------------------------------------------------------------------

#: The splits of the release (folder names and ``Usage`` values).
FER2013_SPLITS: Tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")
#: Class folder names -> canonical names (through the one class-name table).
FER2013_FOLDERS: Dict[str, str] = {
    name: EXPRESSION_ALIASES[name] for name in ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
}
#: ``fer2013.csv`` ``emotion`` codes 0..6 (Kaggle / ICML 2013 release) -> canonical names.
FER2013_CSV_CODES: Tuple[str, ...] = tuple(
    EXPRESSION_ALIASES[name] for name in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
)
FER2013_IMAGE_SIZE_PX = 48
#: Image files read from a class folder.
FER2013_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def check_fer2013_split(split: str) -> None:
    """Raises LabelError naming the closest split when ``split`` is not one of FER2013's."""
    if split not in FER2013_SPLITS:
        raise LabelError(
            f"Unknown FER2013 split {split!r}; accepted: {', '.join(FER2013_SPLITS)}"
            f"{did_you_mean(split, FER2013_SPLITS)}"
        )


def fer2013_folder_images(split_dir: PathLike) -> List[Tuple[Path, str]]:
    """``(image file, canonical class)`` of one split folder ``<Split>/<class>/*.jpg``, sorted
    by class folder, then file name.

    Raises:
        LabelError: a class folder whose name is not one of :data:`FER2013_FOLDERS`.
    """
    out: List[Tuple[Path, str]] = []
    for class_dir in sorted(p for p in Path(split_dir).iterdir() if p.is_dir()):
        name = FER2013_FOLDERS.get(class_dir.name.lower())
        if name is None:
            raise LabelError(
                f"Unknown FER2013 class folder {class_dir}; accepted: {', '.join(sorted(FER2013_FOLDERS))}."
            )
        out.extend(
            (f, name) for f in sorted(class_dir.iterdir()) if f.suffix.lower() in FER2013_IMAGE_SUFFIXES
        )
    return out


def read_fer2013_csv(csv_path: PathLike, split: str) -> Tuple[np.ndarray, List[str]]:
    """The ``Usage == split`` rows of ``fer2013.csv``: ``(N, 48, 48)`` uint8 images and their
    canonical class names.

    Raises:
        LabelError: missing file or column, a bad emotion code or pixel row (file:line), an
            unknown split, or no row of that split.
    """
    check_fer2013_split(split)
    path = Path(csv_path)
    if not path.is_file():
        raise LabelError(f"fer2013.csv {str(path)!r} does not exist; pass the path of the Kaggle/ICML csv file.")
    size = FER2013_IMAGE_SIZE_PX
    images: List[np.ndarray] = []
    names: List[str] = []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"emotion", "pixels", "Usage"}
        if reader.fieldnames is None or not need.issubset(reader.fieldnames):
            raise LabelError(f"{path} has columns {reader.fieldnames}; a fer2013.csv needs emotion,pixels,Usage.")
        for line_no, row in enumerate(reader, start=2):
            if row["Usage"] != split:
                continue
            try:
                code = int(row["emotion"])
                pix = np.array(row["pixels"].split(), dtype=np.int64)
            except ValueError as exc:
                raise LabelError(f"{path}:{line_no}: cannot parse emotion/pixels ({exc}).") from None
            if not 0 <= code < len(FER2013_CSV_CODES):
                raise LabelError(f"{path}:{line_no}: emotion code {code} not in 0..{len(FER2013_CSV_CODES) - 1}.")
            if pix.size != size * size or pix.min() < 0 or pix.max() > 255:
                raise LabelError(f"{path}:{line_no}: pixels must be 2304 grey levels 0..255, got {pix.size} values.")
            images.append(pix.astype(np.uint8).reshape(size, size))
            names.append(FER2013_CSV_CODES[code])
    if not images:
        raise LabelError(f"{path} has no rows with Usage={split!r}.")
    return np.stack(images), names
