"""Face sequences from still images by temporal augmentation (for the CNN-RNN model).

FER2013 has no video. A training sequence of length T is made from ONE still: every
frame is the still under a small random perturbation -- the kind of frame-to-frame change
a tracked face shows (jitter of the detector box: shift and scale; head roll: rotation;
lighting changes: brightness/contrast; brief partial occlusion: random erasing) -- and
the perturbation parameters follow a random walk over the T frames so consecutive frames
are correlated, as in video. The label of the sequence is the still's label.

This teaches the recurrent head to integrate noisy per-frame evidence; it cannot teach
real expression dynamics (onset/apex/offset), which needs video (Aff-Wild2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.augment import photometric, random_erase, to_float_batch


@dataclass(frozen=True)
class SequenceAugmentConfig:
    """Per-frame perturbations of the temporal augmentation (random-walk steps per frame)."""

    length: int = 8  #: frames per sequence (T).
    shift_step: float = 0.02  #: per-frame random-walk step of the translation (fraction of size).
    scale_step: float = 0.02  #: per-frame step of the zoom factor.
    rotate_step_deg: float = 2.0  #: per-frame step of the roll angle.
    start_shift: float = 0.06  #: initial offset range (fraction of size) of the whole sequence.
    start_rotate_deg: float = 8.0  #: initial roll range.
    start_scale: float = 0.06  #: initial zoom range.
    flip: float = 0.5  #: probability that the whole sequence is mirrored.
    brightness: float = 0.08  #: per-frame brightness jitter, fraction of 255.
    contrast: float = 0.1  #: per-frame contrast jitter.
    occlusion: float = 0.15  #: probability per frame of a random erased rectangle.


def _walk(n: int, t: int, start: float, step: float, g: torch.Generator) -> torch.Tensor:
    """(n, t) random walks starting uniform in [-start, start] with steps in [-step, step]."""
    s0 = (torch.rand(n, 1, generator=g) * 2 - 1) * start
    steps = (torch.rand(n, t, generator=g) * 2 - 1) * step
    steps[:, 0] = 0.0
    return s0 + steps.cumsum(dim=1)


def make_sequences(images_uint8: torch.Tensor, cfg: SequenceAugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Stills ``(N, [C,] H, W)`` uint8 -> sequences ``(N, T, C, H, W)`` float32 in 0..255."""
    x = to_float_batch(images_uint8)
    n, c, h, w = x.shape
    t = cfg.length
    tx = _walk(n, t, cfg.start_shift, cfg.shift_step, g) * 2.0
    ty = _walk(n, t, cfg.start_shift, cfg.shift_step, g) * 2.0
    zoom = 1.0 + _walk(n, t, cfg.start_scale, cfg.scale_step, g)
    ang = _walk(n, t, cfg.start_rotate_deg, cfg.rotate_step_deg, g) * (math.pi / 180.0)
    mirror = torch.where(torch.rand(n, 1, generator=g) < cfg.flip, -1.0, 1.0).expand(n, t)
    cos, sin = torch.cos(ang) / zoom, torch.sin(ang) / zoom
    theta = torch.stack([torch.stack([cos * mirror, -sin, tx], -1), torch.stack([sin * mirror, cos, ty], -1)], -2)
    frames = x.unsqueeze(1).expand(n, t, c, h, w).reshape(n * t, c, h, w)
    grid = F.affine_grid(theta.reshape(n * t, 2, 3).to(x.device), [n * t, c, h, w], align_corners=False)
    out = F.grid_sample(frames, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = photometric(out, g, cfg.brightness, cfg.contrast)
    out = random_erase(out, g, cfg.occlusion, (0.03, 0.15))
    return out.reshape(n, t, c, h, w)
