"""Aff-Wild2 (Kollias et al., ABAW challenges): per-frame expressions and valence/arousal.

Layout (ABAW release)::

    <root>/cropped_aligned/<video>/00001.jpg ...       face crops, one per frame with a face
    <root>/[annotations/]EXPR_Set/<split>/<video>.txt  expression per frame
    <root>/[annotations/]VA_Set/<split>/<video>.txt    valence,arousal per frame

``<split>`` is ``Train_Set`` or ``Validation_Set`` (some releases: ``Training_Set``); the
challenge folder names ``EXPR_Classification_Challenge`` / ``VA_Estimation_Challenge``
are accepted too.

- EXPR files: header ``Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other``,
  then one integer per frame: Aff-Wild2's own codes 0 Neutral, 1 Anger, 2 Disgust,
  3 Fear, 4 Happiness, 5 Sadness, 6 Surprise, 7 Other, and -1 for an unannotated frame.
  They are mapped to the canonical order by :func:`training.data.labels.affwild2_table`;
  "Other" is dropped, or kept as an 8th class ``"other"`` with ``keep_other``.
- VA files: header ``valence,arousal``, then ``v,a`` per frame in -1..1; -5 marks an
  unannotated frame. Values outside -1..1 are dropped.
- Frame numbering: line ``i`` after the header (1-based) belongs to frame ``i``, whose
  crop is ``cropped_aligned/<video>/%05d.jpg % i`` (so the first annotated line is
  ``00001.jpg``). Frames without a crop (no face found by the providers) are dropped.

Modes (``task``): ``"expr"`` keeps frames with an expression, ``"va"`` frames with
valence/arousal, ``"joint"`` frames with both, ``"any"`` frames with either (the missing
label is -1 / NaN, which :mod:`training.losses` ignores).

Crops: ``cropped_aligned`` images are already aligned by the dataset providers, with
their own geometry and no landmarks published. Two options:

- default: resize them to the model's input (size, channels);
- ``eye_finder``: a callable ``(rgb image) -> FaceDetection | None`` (e.g. the runtime's
  detector with landmark refinement); each crop is then re-cut with the runtime's
  :func:`~ros2_affect.core.alignment.align_face`, matching the robot's crops exactly.
  Frames where it finds no face raise :class:`DatasetError` at load time; filter them
  once with :meth:`AffWild2Frames.keep` if that happens.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from ros2_affect.config import AlignmentConfig
from ros2_affect.core.types import FaceDetection
from ros2_affect.errors import DatasetError
from training.data.faces import FaceDataset, PathLike, SequenceDataset, align_crop, read_rgb, resize_crop
from training.data.labels import AFFWILD2_EXPR_HEADER, affwild2_table, class_names

LOG = logging.getLogger(__name__)

VA_HEADER = "valence,arousal"
#: VA value meaning "not annotated".
NO_VA = -5.0
TASKS = ("expr", "va", "joint", "any")
_EXPR_DIRS = ("EXPR_Set", "EXPR_Classification_Challenge")
_VA_DIRS = ("VA_Set", "VA_Estimation_Challenge")
_SPLIT_ALIASES = {"train": ("Train_Set", "Training_Set"), "validation": ("Validation_Set",)}

EyeFinder = Callable[[np.ndarray], Optional[FaceDetection]]


def _header(line: str) -> str:
    return line.strip().replace(" ", "").lower()


def read_expr_file(path: Path) -> np.ndarray:
    """``(F,)`` int64 Aff-Wild2 codes of one EXPR file (-1 unannotated), frame ``i`` at ``[i-1]``.

    Raises:
        DatasetError: wrong header or a non-integer line.
    """
    lines = path.read_text().splitlines()
    if not lines or _header(lines[0]) != _header(AFFWILD2_EXPR_HEADER):
        first = lines[0] if lines else ""
        raise DatasetError(f"{path}: first line {first!r} is not the EXPR header {AFFWILD2_EXPR_HEADER!r}")
    codes = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            codes.append(int(float(line.strip())))
        except ValueError:
            raise DatasetError(f"{path}:{n}: {line!r} is not an expression code (-1 or 0..7)") from None
    return np.asarray(codes, dtype=np.int64)


def read_va_file(path: Path) -> np.ndarray:
    """``(F, 2)`` float32 valence, arousal of one VA file; unannotated/out-of-range rows are NaN.

    Raises:
        DatasetError: wrong header or a malformed line.
    """
    lines = path.read_text().splitlines()
    if not lines or _header(lines[0]) != VA_HEADER:
        first = lines[0] if lines else ""
        raise DatasetError(f"{path}: first line {first!r} is not the VA header {VA_HEADER!r}")
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split(",")
        try:
            v, a = float(parts[0]), float(parts[1])
        except (ValueError, IndexError):
            raise DatasetError(f"{path}:{n}: {line!r} is not 'valence,arousal'") from None
        rows.append([v, a])
    va = np.asarray(rows, dtype=np.float32).reshape(-1, 2)
    bad = ~(np.abs(va) <= 1.0).all(axis=1)  # -5 (unannotated), out of range, NaN
    va[bad] = np.nan
    return va


def _find_dir(root: Path, names: Sequence[str], split: str) -> Optional[Path]:
    splits = _SPLIT_ALIASES.get(split.lower(), (split,))
    for base in (root, root / "annotations"):
        for name in names:
            for s in splits:
                candidate = base / name / s
                if candidate.is_dir():
                    return candidate
    return None


def _find_crops(root: Path) -> Path:
    for candidate in (root / "cropped_aligned" / "cropped_aligned", root / "cropped_aligned"):
        if candidate.is_dir():
            return candidate
    raise DatasetError(
        f"no cropped_aligned/ folder under {str(root)!r}; expected <root>/cropped_aligned/<video>/00001.jpg"
    )


class AffWild2Frames(FaceDataset):
    """The usable frames of one Aff-Wild2 split.

    Args:
        root: dataset root (holding ``cropped_aligned/`` and the annotation folders).
        split: ``"train"``/``"validation"`` or a folder name (``Train_Set``).
        alignment: crop geometry (output size and channels; margin etc. with ``eye_finder``).
        task: ``"expr"``, ``"va"``, ``"joint"`` or ``"any"`` (module docstring).
        keep_other: keep "Other" as an 8th class instead of dropping it.
        videos: only these videos.
        eye_finder: re-cut crops with the runtime aligner (module docstring).

    Attributes:
        video_of: ``(N,)`` video name per frame; ``frame_numbers``: ``(N,)`` 1-based.
        dropped: frames left out, by reason.
    """

    def __init__(
        self,
        root: PathLike,
        split: str,
        alignment: AlignmentConfig,
        task: str = "expr",
        keep_other: bool = False,
        videos: Optional[Sequence[str]] = None,
        eye_finder: Optional[EyeFinder] = None,
    ) -> None:
        if task not in TASKS:
            raise DatasetError(f"task = {task!r}; choose one of {', '.join(TASKS)}")
        self.root = Path(root)
        self.alignment = alignment
        self.eye_finder = eye_finder
        self.class_names = class_names(include_other=keep_other)
        self.crops_dir = _find_crops(self.root)
        # both label kinds are read when present: the other one rides along (masked losses)
        expr_dir = _find_dir(self.root, _EXPR_DIRS, split)
        va_dir = _find_dir(self.root, _VA_DIRS, split)
        if task in ("expr", "joint") and expr_dir is None:
            raise DatasetError(f"no EXPR_Set/{split} folder under {str(self.root)!r} (or its annotations/)")
        if task in ("va", "joint") and va_dir is None:
            raise DatasetError(f"no VA_Set/{split} folder under {str(self.root)!r} (or its annotations/)")
        if task == "any" and expr_dir is None and va_dir is None:
            raise DatasetError(f"neither EXPR_Set/{split} nor VA_Set/{split} found under {str(self.root)!r}")
        expr_files = {p.stem: p for p in expr_dir.glob("*.txt")} if expr_dir else {}
        va_files = {p.stem: p for p in va_dir.glob("*.txt")} if va_dir else {}
        names = sorted(
            {"expr": set(expr_files), "va": set(va_files), "joint": set(expr_files) & set(va_files)}.get(
                task, set(expr_files) | set(va_files)
            )
        )
        if videos is not None:
            wanted = set(videos)
            missing = wanted - set(names)
            if missing:
                raise DatasetError(f"Aff-Wild2 {split}: no annotation for videos {sorted(missing)}")
            names = [n for n in names if n in wanted]
        table = affwild2_table(keep_other)
        self.dropped: Dict[str, int] = {}

        def drop(reason: str, count: int) -> None:
            if count:
                self.dropped[reason] = self.dropped.get(reason, 0) + int(count)

        paths: List[str] = []
        keys: List[str] = []
        video_of: List[str] = []
        numbers: List[np.ndarray] = []
        expressions: List[np.ndarray] = []
        vas: List[np.ndarray] = []
        for name in names:
            codes = read_expr_file(expr_files[name]) if name in expr_files else np.zeros(0, np.int64)
            va = read_va_file(va_files[name]) if name in va_files else np.zeros((0, 2), np.float32)
            n_frames = max(len(codes), len(va))
            expr = np.full(n_frames, -1, dtype=np.int64)
            valid_code = (codes >= 0) & (codes < len(table))
            is_bad = np.zeros(n_frames, dtype=bool)
            is_bad[: len(codes)] = (codes >= 0) & ~valid_code
            mapped = np.full(len(codes), -1, dtype=np.int64)
            mapped[valid_code] = table[codes[valid_code]]
            is_other = np.zeros(n_frames, dtype=bool)
            is_other[: len(codes)] = valid_code & (mapped < 0)
            expr[: len(codes)] = mapped
            va_full = np.full((n_frames, 2), np.nan, dtype=np.float32)
            va_full[: len(va)] = va
            has_expr = expr >= 0
            has_va = np.isfinite(va_full).all(axis=1)
            keep = {"expr": has_expr, "va": has_va, "joint": has_expr & has_va, "any": has_expr | has_va}[task]
            drop("other", int((~keep & is_other).sum()))
            drop("bad_expression_code", int((~keep & is_bad).sum()))
            drop("unlabelled", int((~keep & ~is_other & ~is_bad).sum()))
            frame_dir = self.crops_dir / name
            present = {p.name for p in frame_dir.glob("*.jpg")} if frame_dir.is_dir() else set()
            frame_no = np.arange(1, n_frames + 1, dtype=np.int64)
            has_crop = np.asarray([f"{i:05d}.jpg" in present for i in frame_no], dtype=bool)
            drop("no_face_crop", int((keep & ~has_crop).sum()))
            keep &= has_crop
            idx = np.flatnonzero(keep)
            if idx.size == 0:
                continue
            paths.extend(str(frame_dir / f"{frame_no[i]:05d}.jpg") for i in idx)
            keys.extend(f"{name}/{frame_no[i]:05d}" for i in idx)
            video_of.extend([name] * idx.size)
            numbers.append(frame_no[idx])
            expressions.append(expr[idx])
            vas.append(va_full[idx])
        if not paths:
            raise DatasetError(
                f"Aff-Wild2 {split} ({task}) under {str(self.root)!r}: no usable frame (dropped: {self.dropped})"
            )
        if self.dropped:
            LOG.info("Aff-Wild2 %s/%s: %d frames kept, dropped %s", split, task, len(paths), self.dropped)
        self.paths = paths
        self.keys = keys
        self.video_of = np.asarray(video_of, dtype=object)
        self.frame_numbers = np.concatenate(numbers)
        self.expressions = np.concatenate(expressions)
        self.va = np.concatenate(vas).astype(np.float32)

    def keep(self, mask: np.ndarray) -> None:
        """Keep only the frames where ``mask`` (``(N,)`` bool) is True (in place)."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(self),):
            raise ValueError(f"mask has shape {mask.shape}; expected ({len(self)},)")
        idx = np.flatnonzero(mask)
        self.dropped["filtered"] = self.dropped.get("filtered", 0) + int(len(self) - idx.size)
        self.paths = [self.paths[i] for i in idx]
        self.keys = [self.keys[i] for i in idx]
        self.video_of = self.video_of[idx]
        self.frame_numbers = self.frame_numbers[idx]
        self.expressions = self.expressions[idx]
        self.va = self.va[idx]

    def load_crop(self, index: int) -> np.ndarray:
        image = read_rgb(self.paths[index])
        if self.eye_finder is None:
            return resize_crop(image, self.alignment.output_size_px, self.alignment.grayscale)
        face = self.eye_finder(image)
        if face is None:
            raise DatasetError(
                f"{self.paths[index]}: the eye finder found no face to re-align; drop such frames with "
                "AffWild2Frames.keep() or load without eye_finder (resize the provided crop)"
            )
        return align_crop(image, face.eyes_px, face.bbox_xyxy_px, self.alignment)


def runtime_eye_finder(detector: Optional[object] = None, eye_locator: Optional[object] = None) -> EyeFinder:
    """The robot's own face finder as an ``eye_finder``: BlazeFace, then Face Mesh eye
    refinement; the largest face of the image, or None.

    Args:
        detector: a :class:`~ros2_affect.core.detection.MediaPipeFaceDetector` (default:
            the default configuration).
        eye_locator: a :class:`~ros2_affect.core.landmarks.FaceMeshEyeLocator` (default:
            the default configuration); pass one built with ``enabled=False`` to skip refinement.
    """
    from ros2_affect.config import LandmarksConfig
    from ros2_affect.core.detection import create_detector
    from ros2_affect.core.landmarks import create_eye_locator

    det = detector if detector is not None else create_detector()
    loc = eye_locator if eye_locator is not None else create_eye_locator(LandmarksConfig())

    def find(image: np.ndarray) -> Optional[FaceDetection]:
        faces = det.detect(image)  # type: ignore[attr-defined]
        if not faces:
            return None
        if loc is not None:
            faces = loc.refine(image, faces[:1])  # type: ignore[attr-defined]
        face: FaceDetection = faces[0]
        return face

    return find


def affwild2_sequences(
    root: PathLike,
    split: str,
    alignment: AlignmentConfig,
    length: int,
    stride: int = 1,
    hop: Optional[int] = None,
    max_gap: int = 1,
    **kwargs: object,
) -> SequenceDataset:
    """Windows of ``length`` frames per video (see :func:`training.data.faces.sequence_windows`);
    ``kwargs`` go to :class:`AffWild2Frames` (task, keep_other, videos, eye_finder)."""
    frames = AffWild2Frames(root, split, alignment, **kwargs)  # type: ignore[arg-type]
    return SequenceDataset(frames, length, stride, hop, max_gap)


def split_names(root: PathLike) -> Tuple[str, ...]:
    """The split folders found under the EXPR/VA annotation folders of ``root``."""
    root = Path(root)
    found: Set[str] = set()
    for base in (root, root / "annotations"):
        for name in _EXPR_DIRS + _VA_DIRS:
            d = base / name
            if d.is_dir():
                found.update(p.name for p in d.iterdir() if p.is_dir())
    return tuple(sorted(found))
