"""AFEW-VA (Kossaifi et al. 2017): valence/arousal per frame of 600 film clips.

Layout (the dataset's own)::

    <root>/<clip>/<clip>.json      {"actor": str, "video_id": "<clip>",
                                    "frames": {"00000": {"valence": v, "arousal": a,
                                                         "landmarks": [[x, y] x 68]}, ...}}
    <root>/<clip>/<frame>.png      e.g. 00000.png, one per key of "frames"

``<root>`` may also be a single clip folder. Valence and arousal are integers on -10..10;
they are rescaled to -1..1 (divided by 10). AFEW-VA has no expression labels
(``expression`` is -1 for every frame).

Crops are cut by the runtime's :func:`~ros2_affect.core.alignment.align_face` with the eyes
from the annotated landmarks (mean of points 36-41 and 42-47) and the landmarks' extent as
the face box (see :func:`training.data.faces.bbox_from_landmarks`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ros2_affect.config import AlignmentConfig
from ros2_affect.errors import DatasetError
from training.data.faces import (
    FaceDataset,
    PathLike,
    SequenceDataset,
    align_crop,
    bbox_from_landmarks,
    eyes_from_landmarks68,
    read_rgb,
)
from training.data.labels import class_names

LOG = logging.getLogger(__name__)

#: AFEW-VA's valence/arousal scale: -10..10.
VA_SCALE = 10.0


def _clip_dirs(root: Path) -> List[Path]:
    if (root / f"{root.name}.json").is_file():
        return [root]
    clips = sorted(p for p in root.iterdir() if p.is_dir() and (p / f"{p.name}.json").is_file())
    if not clips:
        raise DatasetError(
            f"no AFEW-VA clip under {str(root)!r}: expected <root>/<clip>/<clip>.json (e.g. 001/001.json) "
            "or a clip folder itself"
        )
    return clips


class AfewVaFrames(FaceDataset):
    """Every annotated frame of the selected AFEW-VA clips.

    Args:
        root: the dataset root or one clip folder.
        alignment: crop geometry (use the model's: input size, channels, margin).
        clips: only these clip names (default: all found).

    Attributes:
        video_of: ``(N,)`` clip name of each frame.
        frame_numbers: ``(N,)`` int64 frame number (the JSON key as an int).
        landmarks: ``(N, 68, 2)`` float32.
    """

    def __init__(self, root: PathLike, alignment: AlignmentConfig, clips: Optional[Sequence[str]] = None) -> None:
        self.root = Path(root)
        self.alignment = alignment
        self.class_names = class_names()
        self.dropped: Dict[str, int] = {}
        dirs = _clip_dirs(self.root)
        if clips is not None:
            wanted = set(clips)
            dirs = [d for d in dirs if d.name in wanted]
            missing = wanted - {d.name for d in dirs}
            if missing:
                raise DatasetError(f"AFEW-VA clips {sorted(missing)} not found under {str(self.root)!r}")
        paths: List[str] = []
        videos: List[str] = []
        numbers: List[int] = []
        va: List[List[float]] = []
        landmarks: List[np.ndarray] = []
        keys: List[str] = []
        for clip in dirs:
            ann_path = clip / f"{clip.name}.json"
            try:
                ann = json.loads(ann_path.read_text())
                frames = ann["frames"]
            except (ValueError, KeyError, TypeError) as exc:
                raise DatasetError(f"{ann_path}: not an AFEW-VA annotation (need a 'frames' mapping): {exc}") from None
            for key in sorted(frames):
                rec = frames[key]
                try:
                    v, a = float(rec["valence"]), float(rec["arousal"])
                    lm = np.asarray(rec["landmarks"], dtype=np.float32)
                    number = int(key)
                except (KeyError, TypeError, ValueError) as exc:
                    raise DatasetError(
                        f"{ann_path}: frame {key!r} lacks valence/arousal/landmarks or has a bad value ({exc})"
                    ) from None
                if lm.shape != (68, 2) or not np.isfinite(lm).all():
                    self.dropped["bad_landmarks"] = self.dropped.get("bad_landmarks", 0) + 1
                    continue
                if not (abs(v) <= VA_SCALE and abs(a) <= VA_SCALE):
                    self.dropped["va_out_of_range"] = self.dropped.get("va_out_of_range", 0) + 1
                    continue
                image = clip / f"{key}.png"
                if not image.is_file():
                    self.dropped["missing_image"] = self.dropped.get("missing_image", 0) + 1
                    continue
                paths.append(str(image))
                videos.append(clip.name)
                numbers.append(number)
                va.append([v / VA_SCALE, a / VA_SCALE])
                landmarks.append(lm)
                keys.append(f"{clip.name}/{key}")
        if self.dropped:
            LOG.info("AFEW-VA %s: dropped %s", self.root, self.dropped)
        self.paths = paths
        self.keys = keys
        self.video_of = np.asarray(videos, dtype=object)
        self.frame_numbers = np.asarray(numbers, dtype=np.int64)
        self.va = np.asarray(va, dtype=np.float32).reshape(-1, 2)
        self.expressions = np.full(len(paths), -1, dtype=np.int64)
        self.landmarks = np.asarray(landmarks, dtype=np.float32).reshape(-1, 68, 2)

    def load_crop(self, index: int) -> np.ndarray:
        lm = self.landmarks[index]
        image = read_rgb(self.paths[index])
        return align_crop(image, eyes_from_landmarks68(lm), bbox_from_landmarks(lm), self.alignment)


def afew_va_sequences(
    root: PathLike,
    alignment: AlignmentConfig,
    length: int,
    stride: int = 1,
    hop: Optional[int] = None,
    clips: Optional[Sequence[str]] = None,
) -> SequenceDataset:
    """Windows of ``length`` frames per clip (see :func:`training.data.faces.sequence_windows`)."""
    return SequenceDataset(AfewVaFrames(root, alignment, clips), length, stride, hop)
