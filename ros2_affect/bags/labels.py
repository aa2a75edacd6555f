"""Ground-truth affect annotations: loading them from datasets, CSV files and bags.

Every source becomes an :class:`AnnotationSet`, a list of :class:`Annotation` in one
convention:

- ``frame_index``: 0-based index of the annotated frame in its source clip (AFEW-VA: the
  JSON key / PNG number; Aff-Wild2: line ``k`` after the header describes video frame
  ``k - 1``, i.e. image ``0000k.jpg``; CSV: the ``frame`` column). ``None`` when unknown.
- ``stamp_ns``: the annotated image's header stamp, when the source knows it (bags, CSV
  with a ``stamp_ns`` column). ``None`` otherwise.
- ``expression``: a canonical name (:data:`ros2_affect.core.types.CANONICAL_EXPRESSIONS`
  or ``contempt``), ``None`` when the frame has no expression label.
- ``valence`` / ``arousal``: in -1..1 (AFEW-VA's -10..10 is divided by 10), ``None`` when
  not annotated.

CSV columns (header row required, order free, ``#`` lines are comments)::

    frame        0-based frame index          } at least one of the two
    stamp_ns     image header stamp, ns       }
    face         optional: a track id of the predictions to score (e.g. "f3k9a");
                 empty: the frame's main (largest) face. "track" is accepted as alias.
    expression   optional: a canonical name (aliases like "angry", "happiness" accepted)
    valence      optional: -1..1
    arousal      optional: -1..1

An empty cell means "not annotated"; a row with no expression, valence or arousal is no
annotation at all (it does not count as an annotated frame). Label topics in bags hold
``affect_msgs/msg/AffectAnnotation`` messages (see :mod:`ros2_affect.bags.writer`).

One rule for every dataset format read here and in :mod:`ros2_affect.bags.photos`
(AffectNet ``labels.csv``, FER2013), shared by ``make-bag``, ``evaluate`` and training:

- **missing**: only the format's own "not annotated" marker means a value is missing
  (``None`` here, ``NaN`` / ``-1`` in training's arrays): an empty CSV cell, Aff-Wild2's
  ``-5`` (valence/arousal) and ``-1`` (expression), AffectNet's ``-2`` (valence/arousal) and
  its categories None/Uncertain/No-Face (no expression). Each value is judged on its own.
- **anything else that is not a valid value raises** :class:`LabelError` naming the file,
  the line (or frame key) and the value: a number outside the format's range (valence and
  arousal -1..1, AFEW-VA -10..10; a rounding error of 1e-6 is clamped), a cell that is not
  a number, an unknown expression name or class code. Nothing is silently dropped or
  turned into ``NaN``.

Expression names are mapped to canonical ones by the one table here,
:data:`EXPRESSION_ALIASES` (:func:`expression_name`); Aff-Wild2's "Other" is
:data:`OTHER`, which frame annotations treat as "no expression label".
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ros2_affect.core.types import CANONICAL_EXPRESSIONS, CONTEMPT
from ros2_affect.errors import BagError, DatasetError, did_you_mean
from ros2_affect.msgs.messages import stamp_ns_of

LOG = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: Message type of annotation topics, and the topic make-bag writes them on.
ANNOTATION_MSGTYPE = "affect_msgs/msg/AffectAnnotation"
DEFAULT_ANNOTATION_TOPIC = "/affect_annotations"

#: Every expression name an annotation may carry.
KNOWN_EXPRESSIONS: Tuple[str, ...] = CANONICAL_EXPRESSIONS + (CONTEMPT,)

#: Aff-Wild2's "Other" class: an expression outside the canonical set.
OTHER = "other"

#: The one class-name table: every spelling met in dataset folders, headers and label
#: files (lower case) -> its canonical name (:data:`KNOWN_EXPRESSIONS` or :data:`OTHER`).
EXPRESSION_ALIASES: Dict[str, str] = {
    **{name: name for name in KNOWN_EXPRESSIONS + (OTHER,)},
    "angry": "anger",
    "happiness": "happy",
    "joy": "happy",
    "sadness": "sad",
    "surprised": "surprise",
    "fearful": "fear",
    "disgusted": "disgust",
    "contemptuous": "contempt",
}

#: Aff-Wild2 EXPR class order, used when an annotation file lacks its header line.
AFFWILD2_EXPRESSIONS = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other")


class LabelError(DatasetError):
    """An annotation file or topic cannot be parsed; the message names file, line and value."""


@dataclass(frozen=True)
class Annotation:
    """The ground truth of one frame (or of one face in it); see the module docstring."""

    frame_index: Optional[int] = None
    stamp_ns: Optional[int] = None
    face_id: str = ""
    expression: Optional[str] = None
    valence: Optional[float] = None
    arousal: Optional[float] = None


@dataclass(frozen=True)
class AnnotationSet:
    """Annotations from one source, sorted by frame index (or stamp).

    Attributes:
        annotations: one per annotated frame (frames without any label are left out).
        source: human-readable origin ("AFEW-VA /path/001.json", "topic /affect_annotations").
        dataset: "afew-va", "aff-wild2", "csv" or "bag".
    """

    annotations: Tuple[Annotation, ...]
    source: str
    dataset: str
    meta: Dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.annotations)

    @property
    def has_expression(self) -> bool:
        return any(a.expression is not None for a in self.annotations)

    @property
    def has_valence_arousal(self) -> bool:
        return any(a.valence is not None or a.arousal is not None for a in self.annotations)

    def by_frame_index(self) -> Dict[int, Annotation]:
        return {a.frame_index: a for a in self.annotations if a.frame_index is not None}


def expression_name(name: str, where: str = "", accepted: Sequence[str] = KNOWN_EXPRESSIONS + (OTHER,)) -> str:
    """The canonical name of a dataset's expression spelling (``" Angry "`` -> ``"anger"``).

    Args:
        name: the spelling (case and surrounding spaces do not matter).
        where: file and line for the error message.
        accepted: the canonical names the caller takes (e.g. a model's classes).

    Raises:
        LabelError: ``name`` is unknown or not in ``accepted``; the message lists the
            accepted names, their aliases and the closest one.
    """
    key = name.strip().lower()
    canonical = EXPRESSION_ALIASES.get(key, key)
    if canonical not in accepted:
        aliases = sorted(k for k, v in EXPRESSION_ALIASES.items() if v in accepted and k != v)
        hint = did_you_mean(key, sorted(set(accepted) | set(aliases)))
        prefix = f"{where}: " if where else ""
        raise LabelError(
            f"{prefix}unknown expression {name!r}; accepted: {', '.join(accepted)} "
            f"(aliases: {', '.join(aliases)}){hint}"
        )
    return canonical


def canonical_expression(name: str, where: str) -> Optional[str]:
    """A frame annotation's expression: the canonical name, ``None`` for "other" (no label).

    Raises:
        LabelError: an unknown name (see :func:`expression_name`).
    """
    canonical = expression_name(name, where)
    return None if canonical == OTHER else canonical


def unit_value(raw: float, where: str, name: str, scale: float = 1.0) -> float:
    """A valence or arousal value on ``-scale..scale``, rescaled to -1..1 (the module's rule).

    Raises:
        LabelError: not finite or outside the range; the message names ``where``, ``name``
            and the value.
    """
    value = float(raw) / scale
    if not math.isfinite(value) or not -1.0 - 1e-6 <= value <= 1.0 + 1e-6:
        raise LabelError(
            f"{where}: {name} = {raw!r} is outside the accepted range [{-scale:g}, {scale:g}]; check the file's scale"
        )
    return max(-1.0, min(1.0, value))


def unit_cell(text: str, where: str, name: str, missing: Optional[float] = None) -> Optional[float]:
    """A valence/arousal cell of a text file: ``None`` when empty or the format's ``missing``
    marker, else :func:`unit_value` of the number.

    Raises:
        LabelError: not a number, or out of range.
    """
    cell = text.strip()
    if not cell:
        return None
    try:
        raw = float(cell)
    except ValueError:
        raise LabelError(f"{where}: {name} = {cell!r} is not a number") from None
    if missing is not None and raw == missing:
        return None
    return unit_value(raw, where, name)


# -- AFEW-VA -----------------------------------------------------------------------------------


def _read_text(path: Path, what: str) -> str:
    """The UTF-8 text of annotation file ``path``; ``what`` names the file in errors.

    Raises:
        LabelError: the file is missing, a folder, or not UTF-8 text.
    """
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LabelError(f"{what} {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise LabelError(f"{what} {str(path)!r} is a folder; pass the annotation file itself") from None
    except UnicodeDecodeError:
        raise LabelError(f"{what} {str(path)!r} is not UTF-8 text") from None


def load_afew_va(path: PathLike) -> AnnotationSet:
    """Read an AFEW-VA clip annotation (``<clip>/<clip>.json``, or its folder).

    The file maps ``frames`` -> ``{"00000": {"valence": v, "arousal": a, "landmarks": ...}}``
    with valence/arousal on -10..10; they are divided by 10. Frame keys are the 0-based
    frame numbers (the PNG names).

    Raises:
        LabelError: the file is missing, not JSON, or a frame entry is malformed.
    """
    path = Path(path)
    if path.is_dir():
        candidates = sorted(path.glob("*.json"))
        if len(candidates) != 1:
            raise LabelError(
                f"{path}: expected exactly one AFEW-VA .json annotation in the folder, found "
                f"{[c.name for c in candidates]}; pass the file itself"
            )
        path = candidates[0]
    text = _read_text(path, "AFEW-VA annotation")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabelError(f"AFEW-VA annotation {str(path)!r} is not valid JSON: {exc}") from None
    frames = data.get("frames") if isinstance(data, dict) else None
    if not isinstance(frames, dict):
        raise LabelError(
            f"{path}: not an AFEW-VA annotation: expected a JSON object with a 'frames' mapping "
            f"(frame number -> valence, arousal, landmarks)"
        )
    annotations: List[Annotation] = []
    for key, entry in frames.items():
        where = f"{path} frame {key!r}"
        try:
            index = int(key)
        except ValueError:
            raise LabelError(f"{where}: frame keys must be frame numbers like '00012'") from None
        if not isinstance(entry, dict) or "valence" not in entry or "arousal" not in entry:
            raise LabelError(f"{where}: expected an object with 'valence' and 'arousal' (-10..10)")
        raw_v, raw_a = entry["valence"], entry["arousal"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (raw_v, raw_a)):
            raise LabelError(f"{where}: valence/arousal must be numbers (-10..10), got {raw_v!r}, {raw_a!r}")
        valence = unit_value(raw_v, where, "valence", 10.0)
        arousal = unit_value(raw_a, where, "arousal", 10.0)
        annotations.append(Annotation(frame_index=index, valence=valence, arousal=arousal))
    annotations.sort(key=lambda a: a.frame_index or 0)
    meta = {k: v for k, v in data.items() if k != "frames" and isinstance(v, (str, int, float))}
    return AnnotationSet(tuple(annotations), f"AFEW-VA {path}", "afew-va", meta)


# -- Aff-Wild2 ---------------------------------------------------------------------------------


def _read_lines(path: Path, kind: str) -> List[str]:
    lines = [line.strip() for line in _read_text(path, f"Aff-Wild2 {kind} file").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise LabelError(f"Aff-Wild2 {kind} file {str(path)!r} is empty")
    return lines


def _parse_affwild2_expr(path: Path) -> Dict[int, Optional[str]]:
    lines = _read_lines(path, "EXPR")
    first = lines[0]
    if first and not first.lstrip("-").isdigit():
        names = [n.strip() for n in first.split(",")]
        body, offset = lines[1:], 2
    else:
        names, body, offset = list(AFFWILD2_EXPRESSIONS), lines, 1
    classes = [canonical_expression(n, f"{path} header") for n in names]
    out: Dict[int, Optional[str]] = {}
    for i, line in enumerate(body):
        where = f"{path} line {i + offset}"
        try:
            value = int(line)
        except ValueError:
            raise LabelError(f"{where}: expected one class index per line (-1: unannotated), got {line!r}") from None
        if value == -1:
            continue
        if not 0 <= value < len(classes):
            raise LabelError(f"{where}: class index {value} is out of range 0..{len(classes) - 1} ({', '.join(names)})")
        out[i] = classes[value]
    return out


#: Aff-Wild2's "not annotated" marker in VA files.
AFFWILD2_NO_VA = -5.0


def _parse_affwild2_va(path: Path) -> Dict[int, Tuple[Optional[float], Optional[float]]]:
    lines = _read_lines(path, "VA")
    body, offset = (lines[1:], 2) if lines[0].lower().startswith("valence") else (lines, 1)
    out: Dict[int, Tuple[Optional[float], Optional[float]]] = {}
    for i, line in enumerate(body):
        where = f"{path} line {i + offset}"
        parts = line.split(",")
        if len(parts) != 2 or not all(part.strip() for part in parts):
            raise LabelError(f"{where}: expected 'valence,arousal' (-1..1; -5: unannotated), got {line!r}")
        v = unit_cell(parts[0], where, "valence", AFFWILD2_NO_VA)
        a = unit_cell(parts[1], where, "arousal", AFFWILD2_NO_VA)
        if v is not None or a is not None:
            out[i] = (v, a)
    return out


def load_affwild2(expr_path: Optional[PathLike] = None, va_path: Optional[PathLike] = None) -> AnnotationSet:
    """Read Aff-Wild2 annotation files of one video (EXPR_Set and/or VA_Set ``.txt``).

    EXPR: a header of class names, then one class index per video frame (-1: unannotated;
    "Other" is kept as no label). VA: header ``valence,arousal``, then ``v,a`` per frame in
    -1..1 (-5: unannotated). Line ``k`` after the header is video frame ``k - 1``.

    Raises:
        LabelError: neither file given, a file missing, or a malformed line.
    """
    if expr_path is None and va_path is None:
        raise LabelError("Aff-Wild2 labels need an EXPR and/or a VA annotation .txt file; none was given")
    expr = _parse_affwild2_expr(Path(expr_path)) if expr_path is not None else {}
    va = _parse_affwild2_va(Path(va_path)) if va_path is not None else {}
    annotations = []
    for index in sorted(set(expr) | set(va)):
        v, a = va.get(index, (None, None))
        if expr.get(index) is None and v is None and a is None:
            continue  # "Other" and no valence/arousal: nothing to score
        annotations.append(Annotation(frame_index=index, expression=expr.get(index), valence=v, arousal=a))
    source = " + ".join(str(p) for p in (expr_path, va_path) if p is not None)
    return AnnotationSet(tuple(annotations), f"Aff-Wild2 {source}", "aff-wild2")


def find_affwild2_labels(folder: PathLike, search: Iterable[PathLike]) -> Tuple[Optional[Path], Optional[Path]]:
    """Find ``<video>.txt`` annotation files for the frames folder ``folder`` (``.../<video>/``).

    Searches each path in ``search`` (a ``.txt`` file, or a directory searched recursively)
    for ``<video>.txt`` and returns the EXPR and VA files, told apart by their header lines.
    """
    name = Path(folder).name
    expr: Optional[Path] = None
    va: Optional[Path] = None
    for root in map(Path, search):
        files = [root] if root.is_file() else sorted(root.rglob(f"{name}.txt"))
        for f in files:
            try:
                head = f.read_text(encoding="utf-8").splitlines()[:1]
            except (OSError, UnicodeDecodeError):
                continue
            header = head[0].strip().lower() if head else ""
            if header.startswith("valence"):
                va = va or f
            elif "neutral" in header:
                expr = expr or f
    return expr, va


# -- CSV ---------------------------------------------------------------------------------------

CSV_COLUMNS = ("frame", "stamp_ns", "face", "expression", "valence", "arousal")
_CSV_ALIASES = {"track": "face", "track_id": "face", "face_id": "face", "frame_index": "frame", "stamp": "stamp_ns"}


def load_csv(path: PathLike) -> AnnotationSet:
    """Read annotations from a CSV file (columns in the module docstring).

    Raises:
        LabelError: missing file, no ``frame``/``stamp_ns`` column, unknown column, or a
            bad value (the message names the line and the column).
    """
    path = Path(path)
    text = _read_text(path, "annotation CSV")
    rows = [
        (n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip() and not line.lstrip().startswith("#")
    ]
    if not rows:
        raise LabelError(f"annotation CSV {str(path)!r} has no header row; expected columns {', '.join(CSV_COLUMNS)}")
    reader = csv.reader([line for _, line in rows])
    header = [_CSV_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in next(reader)]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if unknown:
        raise LabelError(
            f"{path}: unknown column(s) {unknown}; accepted: {', '.join(CSV_COLUMNS)} (see docs/replay.md)"
        )
    if "frame" not in header and "stamp_ns" not in header:
        raise LabelError(f"{path}: needs a 'frame' or a 'stamp_ns' column to align labels with images; got {header}")
    annotations = []
    unlabelled = 0
    for (line_no, _), cells in zip(rows[1:], reader, strict=False):  # quoted newlines end it early
        where = f"{path} line {line_no}"
        if len(cells) != len(header):
            raise LabelError(f"{where}: {len(cells)} cells for {len(header)} columns ({', '.join(header)})")
        row = {h: c.strip() for h, c in zip(header, cells, strict=True)}

        def number(col: str, kind: type, row: Dict[str, str] = row, where: str = where) -> Any:
            raw = row.get(col, "")
            if raw == "":
                return None
            try:
                return kind(raw)
            except ValueError:
                raise LabelError(f"{where}: column {col!r} = {raw!r} is not a valid {kind.__name__}") from None

        frame, stamp = number("frame", int), number("stamp_ns", int)
        if frame is None and stamp is None:
            raise LabelError(f"{where}: neither 'frame' nor 'stamp_ns' is set")
        if frame is not None and frame < 0:
            raise LabelError(f"{where}: frame = {frame} is negative; frames are 0-based indices")
        valence = unit_cell(row.get("valence", ""), where, "valence")
        arousal = unit_cell(row.get("arousal", ""), where, "arousal")
        expression = row.get("expression", "")
        if not expression and valence is None and arousal is None:
            unlabelled += 1  # a frame listed without any label: not an annotated frame
            continue
        annotations.append(
            Annotation(
                frame_index=frame,
                stamp_ns=stamp,
                face_id=row.get("face", ""),
                expression=canonical_expression(expression, where) if expression else None,
                valence=valence,
                arousal=arousal,
            )
        )
    if unlabelled:
        LOG.info("%s: %d row(s) without expression, valence or arousal are not annotations", path, unlabelled)
    annotations.sort(key=lambda a: (a.frame_index if a.frame_index is not None else -1, a.stamp_ns or 0))
    return AnnotationSet(tuple(annotations), f"CSV {path}", "csv")


def write_csv(annotations: Sequence[Annotation], path: PathLike) -> None:
    """Write annotations in the CSV format :func:`load_csv` reads."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for a in annotations:
            writer.writerow(
                [
                    "" if a.frame_index is None else a.frame_index,
                    "" if a.stamp_ns is None else a.stamp_ns,
                    a.face_id,
                    a.expression or "",
                    "" if a.valence is None else repr(a.valence),
                    "" if a.arousal is None else repr(a.arousal),
                ]
            )


# -- dispatch ----------------------------------------------------------------------------------


def load_labels(path: PathLike) -> AnnotationSet:
    """Load an annotation file or folder, recognised by its form.

    - a ``.csv`` file: :func:`load_csv`;
    - a ``.json`` file, or a folder with one ``.json`` (an AFEW-VA clip): :func:`load_afew_va`;
    - a ``.txt`` file: Aff-Wild2 EXPR or VA (told apart by the header line).

    Bags are read with :func:`ros2_affect.bags.reader.read_annotations` instead.

    Raises:
        LabelError: the path does not exist or has none of these forms.
    """
    path = Path(path)
    if not path.exists():
        raise LabelError(f"labels {str(path)!r} do not exist; pass a .csv, an AFEW-VA .json or an Aff-Wild2 .txt")
    if path.is_dir():
        if (path / "metadata.yaml").exists():
            raise LabelError(f"labels {str(path)!r} is a bag; label topics are read from bags with --label-topic")
        return load_afew_va(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return load_csv(path)
    if suffix == ".json":
        return load_afew_va(path)
    if suffix == ".txt":
        header = _read_lines(path, "annotation")[0].lower()
        return load_affwild2(va_path=path) if header.startswith("valence") else load_affwild2(expr_path=path)
    raise LabelError(
        f"labels {str(path)!r}: unrecognised file type {suffix!r}; accepted: .csv (see docs/replay.md), "
        f"AFEW-VA .json, Aff-Wild2 EXPR/VA .txt"
    )


# -- bag messages ------------------------------------------------------------------------------


def annotation_from_msg(msg: Any, where: str) -> Annotation:
    """An :class:`Annotation` from a decoded ``affect_msgs/msg/AffectAnnotation``."""
    try:
        stamp = stamp_ns_of(msg.header.stamp)
        expression = None
        if msg.has_expression:
            expression = canonical_expression(str(msg.expression), where)
        return Annotation(
            frame_index=int(msg.frame_index) if int(msg.frame_index) >= 0 else None,
            stamp_ns=stamp,
            face_id=str(msg.face_id),
            expression=expression,
            valence=float(msg.valence) if msg.has_valence else None,
            arousal=float(msg.arousal) if msg.has_arousal else None,
        )
    except AttributeError as exc:
        raise BagError(f"{where}: not an {ANNOTATION_MSGTYPE} message ({exc})") from None
