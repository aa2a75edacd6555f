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

import csv
import logging
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ros2_affect.config import AlignmentConfig
from ros2_affect.errors import DatasetError
from training.data.faces import FaceDataset, PathLike, align_crop, eyes_from_landmarks68, read_rgb
from training.data.labels import DROP, affectnet_table, class_names

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
