"""Multi-task training data: FER2013 (expression only) mixed with AffectNet (expression +
real valence/arousal), as in Emotion-GCN (Antoniadis et al. 2021).

What :mod:`training.train` uses when ``data.dataset`` is ``"fer2013+affectnet"``:

- :func:`open_affectnet`: the AffectNet photos with ``labels.csv`` (the validation sample,
  ``affectnet-val-dev.tar.gz``, or its extracted folder) through the one loader of that
  format, :class:`training.data.affectnet.AffectNetPhotos`, with ``crop="landmarks"``: each
  face is cut by the runtime's own aligner (:func:`ros2_affect.core.alignment.align_face`)
  from the eye centres of its 68 landmarks, at the model's input size and channel count.
- :func:`load_affectnet_part`: one part (``train``, ``val`` or ``test``) of the fixed split
  (:mod:`training.data.splits`) in memory: ``(N, C, S, S)`` uint8 images, expression
  labels in the model's 7 classes (contempt is ``-1``: no expression label, its
  valence/arousal still train the regressor) and ``(N, 2)`` valence/arousal.
- :func:`fer_to_model`: FER2013's 48x48 grey crops at the model's size and channel count
  (grey repeated to 3 channels for a colour model; FER2013 has no colour).
- :class:`MixedBatches`: per epoch, batches with a fixed share ``affectnet_ratio`` of
  AffectNet samples; one epoch is one pass over the FER2013 part, the (much smaller)
  AffectNet part is cycled through in reshuffled passes.
- :func:`graph_label_table`: the Emotion-GCN label table from the AffectNet training
  part: one-hot of the 7 expressions plus the real valence and arousal columns (rows
  with both), so the 9-node graph's valence/arousal nodes get edges from measured
  correlations (:func:`training.label_embeddings.build_adjacency`).
- :func:`va_metrics`: CCC, RMSE and PCC of valence and arousal.

FER2013 rows have valence/arousal NaN: the CCC loss is masked to the rows that have them
(:func:`training.losses.ccc_loss`), and a batch without any contributes 0.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ros2_affect.config import AlignmentConfig
from ros2_affect.errors import DatasetError
from training.data.affectnet import AffectNetPhotos
from training.data.fer2013 import _extract_tarball, default_cache_dir
from training.data.labels import CLASSES_7
from training.data.splits import AFFECTNET_SPLIT_FILE, image_id, load_split_file

PathLike = Union[str, Path]


def _labels_csv(path: PathLike) -> Path:
    p = Path(path)
    if p.is_file() and p.name.endswith((".tar.gz", ".tgz")):
        p = _extract_tarball(p, default_cache_dir())
    if p.is_file() and p.suffix.lower() == ".csv":
        return p
    for cand in (p / "labels.csv", p / "affectnet-val" / "labels.csv"):
        if cand.is_file():
            return cand
    raise DatasetError(
        f"no AffectNet labels.csv at {str(path)!r} (looked for labels.csv and affectnet-val/labels.csv); pass "
        "affectnet-val-dev.tar.gz, the folder holding labels.csv and images/, or labels.csv itself"
    )


def model_alignment(input_size: int, channels: int) -> AlignmentConfig:
    """The runtime's alignment defaults at the model's crop size and channel count (what
    training writes into the checkpoint and the export into the model metadata)."""
    return dataclasses.replace(AlignmentConfig(), output_size_px=int(input_size), grayscale=int(channels) == 1)


def open_affectnet(
    path: PathLike, include_contempt: bool = True, alignment: Optional[AlignmentConfig] = None
) -> AffectNetPhotos:
    """The AffectNet photos of ``path`` (tarball, folder or labels.csv), aligned from landmarks."""
    return AffectNetPhotos(_labels_csv(path), alignment=alignment, include_contempt=include_contempt,
                           crop="landmarks")


def part_indices(photos: AffectNetPhotos, ids: Sequence[str], part: str, split_file: PathLike) -> np.ndarray:
    index = {image_id(k): i for i, k in enumerate(photos.keys)}
    missing = [i for i in ids if i not in index]
    if missing:
        raise DatasetError(
            f"split file {split_file}: {len(missing)} ids of part {part!r} are not in {photos.csv_path} "
            f"(e.g. {missing[:3]}); the split belongs to another copy of the data"
        )
    return np.asarray([index[i] for i in ids], dtype=np.int64)


def load_affectnet_part(
    path: PathLike,
    part: str,
    input_size: int,
    channels: int,
    split_file: PathLike = AFFECTNET_SPLIT_FILE,
    limit: int = 0,
    cache: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One part of the AffectNet split in memory.

    Args:
        path: ``affectnet-val-dev.tar.gz`` or its folder.
        part: ``"train"``, ``"val"`` or ``"test"``.
        input_size, channels: the model's crop.
        split_file: the id lists (:mod:`training.data.splits`).
        limit: > 0: the first ``limit`` ids of the part only (smoke tests).
        cache: keep the aligned crops as ``.npz`` in the extraction cache (outside the repo).

    Returns:
        ``(images (N, C, S, S) uint8, expressions (N,) int64 in the 7 canonical classes or
        -1 for contempt, va (N, 2) float32, NaN where not annotated)``.
    """
    ids = load_split_file(split_file)[part]
    if limit > 0:
        ids = ids[:limit]
    photos = open_affectnet(path, include_contempt=True, alignment=model_alignment(input_size, channels))
    sel = part_indices(photos, ids, part, split_file)
    key = hashlib.sha1(json.dumps([str(photos.csv_path), input_size, channels, ids]).encode()).hexdigest()[:12]
    cache_file = photos.csv_path.parent / f".aligned-{part}-{input_size}-{channels}-{key}.npz"
    if cache and cache_file.exists():
        with np.load(cache_file) as z:
            images = z["images"]
    else:
        images, _, _ = photos.materialize(sel)
        if cache:
            try:
                tmp = cache_file.with_suffix(".tmp.npz")
                np.savez(tmp, images=images)
                tmp.replace(cache_file)
            except OSError:
                pass  # read-only data folder: align again next time
    expressions = photos.expressions[sel].copy()
    contempt = photos.class_names.index("contempt")
    expressions[expressions == contempt] = -1  # the 7-class models have no contempt: VA only
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    return x, torch.from_numpy(expressions.astype(np.int64)), torch.from_numpy(photos.va[sel].astype(np.float32))


def fer_to_model(images: torch.Tensor, input_size: int, channels: int) -> torch.Tensor:
    """``(N, 1, s, s)`` uint8 grey crops -> ``(N, C, S, S)`` uint8 (area/bilinear resize,
    grey repeated for a colour model)."""
    x = images
    if x.shape[-1] != input_size:
        mode = "area" if x.shape[-1] > input_size else "bilinear"
        kwargs = {"align_corners": False} if mode == "bilinear" else {}
        x = F.interpolate(x.float(), size=(input_size, input_size), mode=mode, **kwargs)
        x = x.round().clamp(0, 255).to(torch.uint8)
    if channels == 3 and x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return x.contiguous()


class MixedBatches:
    """Batch indices into ``concat(FER2013 part, AffectNet part)`` with a fixed AffectNet share.

    Args:
        n_fer, n_affectnet: sizes of the two parts (FER2013 rows first).
        batch_size: samples per batch.
        affectnet_ratio: share of AffectNet samples in each batch, ``round(batch_size * r)``
            (at least 1 when r > 0 and the part is not empty); 1.0: AffectNet only.

    One epoch is one pass over the FER2013 part (``n_fer // fer_per_batch`` batches), or
    over the AffectNet part when the ratio is 1 or there is no FER2013 part. The other
    part is drawn from reshuffled passes, cycled as needed.
    """

    def __init__(self, n_fer: int, n_affectnet: int, batch_size: int, affectnet_ratio: float) -> None:
        if not 0.0 <= affectnet_ratio <= 1.0:
            raise ValueError(f"affectnet_ratio = {affectnet_ratio}; expected 0..1")
        self.n_fer, self.n_aff, self.bs = int(n_fer), int(n_affectnet), int(batch_size)
        n_a = int(round(self.bs * affectnet_ratio)) if self.n_aff else 0
        if affectnet_ratio > 0 and self.n_aff:
            n_a = max(1, n_a)
        if not self.n_fer:
            n_a = self.bs
        self.per_batch_affectnet = min(n_a, self.bs)
        self.per_batch_fer = self.bs - self.per_batch_affectnet
        if self.per_batch_fer and not self.n_fer:
            raise ValueError("MixedBatches: no FER2013 samples for a ratio below 1")
        if self.per_batch_fer:
            self.steps = max(1, self.n_fer // self.per_batch_fer)
        else:
            self.steps = max(1, self.n_aff // self.per_batch_affectnet)

    def __len__(self) -> int:
        return self.steps

    @staticmethod
    def _stream(n: int, count: int, g: torch.Generator) -> torch.Tensor:
        passes = max(1, math.ceil(count / max(n, 1)))
        return torch.cat([torch.randperm(n, generator=g) for _ in range(passes)])[:count]

    def epoch(self, g: torch.Generator) -> List[torch.Tensor]:
        """The epoch's batches (each ``(batch_size,)`` int64; FER2013 rows first)."""
        fer = self._stream(self.n_fer, self.steps * self.per_batch_fer, g) if self.per_batch_fer else None
        aff = self._stream(self.n_aff, self.steps * self.per_batch_affectnet, g) if self.per_batch_affectnet else None
        out = []
        for i in range(self.steps):
            parts = []
            if fer is not None:
                parts.append(fer[i * self.per_batch_fer : (i + 1) * self.per_batch_fer])
            if aff is not None:
                parts.append(self.n_fer + aff[i * self.per_batch_affectnet : (i + 1) * self.per_batch_affectnet])
            out.append(torch.cat(parts))
        return out

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.epoch(torch.Generator().manual_seed(0)))


def graph_label_table(expressions: np.ndarray, va: np.ndarray, num_classes: int = len(CLASSES_7)) -> np.ndarray:
    """``(M, K + 2)`` one-hot expression + valence + arousal over the rows that have an
    expression label and both valence and arousal (the Emotion-GCN correlation table).

    Raises:
        DatasetError: fewer than 2 such rows.
    """
    from training.label_embeddings import label_table

    e = np.asarray(expressions, dtype=np.int64)
    v = np.asarray(va, dtype=np.float64).reshape(-1, 2)
    rows = (e >= 0) & (e < num_classes) & np.isfinite(v).all(axis=1)
    if int(rows.sum()) < 2:
        raise DatasetError(f"only {int(rows.sum())} rows with an expression and valence/arousal; the graph needs more")
    return label_table(e[rows], num_classes, v[rows])


def va_metrics(pred: np.ndarray, target: np.ndarray) -> Dict[str, float]:
    """``{ccc_valence, ccc_arousal, ccc_mean, rmse_valence, ..., pcc_valence, ...}`` over
    the rows with a finite target (NaN metrics when fewer than 2)."""
    p = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
    t = np.asarray(target, dtype=np.float64).reshape(-1, 2)
    rows = np.isfinite(t).all(axis=1) & np.isfinite(p).all(axis=1)
    out: Dict[str, float] = {}
    for j, name in enumerate(("valence", "arousal")):
        x, y = p[rows, j], t[rows, j]
        if len(x) < 2:
            out.update({f"ccc_{name}": float("nan"), f"rmse_{name}": float("nan"), f"pcc_{name}": float("nan")})
            continue
        mx, my = x.mean(), y.mean()
        vx, vy = x.var(), y.var()
        cov = ((x - mx) * (y - my)).mean()
        out[f"ccc_{name}"] = float(2 * cov / (vx + vy + (mx - my) ** 2)) if vx + vy > 0 else 0.0
        out[f"rmse_{name}"] = float(np.sqrt(((x - y) ** 2).mean()))
        out[f"pcc_{name}"] = float(cov / np.sqrt(vx * vy)) if vx > 0 and vy > 0 else 0.0
    out["ccc_mean"] = (out["ccc_valence"] + out["ccc_arousal"]) / 2
    return out


__all__ = [
    "open_affectnet",
    "load_affectnet_part",
    "fer_to_model",
    "MixedBatches",
    "graph_label_table",
    "va_metrics",
    "model_alignment",
]
