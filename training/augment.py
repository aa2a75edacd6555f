"""Batched image augmentation in torch (no per-sample Python work).

Images stay uint8 in memory; a batch is converted to float32 **in the 0..255 range**,
augmented with one ``affine_grid``/``grid_sample`` call (rotation, scale, shift, mirror),
photometric jitter and random erasing, then normalised with :func:`normalize` -- the same
arithmetic as the runtime's :func:`ros2_affect.backends.preprocess.to_model_input`
(``x * 1/(255*std) - mean/std``), so an un-augmented crop gives the same tensor in
training and on the robot.

All randomness comes from an explicit ``torch.Generator`` (same seed -> same batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Per-image random augmentation ranges (0 disables a step)."""

    rotate_deg: float = 10.0  #: uniform rotation in [-r, r] degrees.
    scale: float = 0.1  #: zoom factor uniform in [1 - s, 1 + s].
    shift: float = 0.1  #: translation uniform in [-t, t] of the image size, per axis.
    flip: float = 0.5  #: probability of a horizontal mirror.
    brightness: float = 0.2  #: additive brightness in [-b, b] * 255.
    contrast: float = 0.2  #: contrast factor in [1 - c, 1 + c] around the image mean.
    erase: float = 0.25  #: probability of erasing one random rectangle.
    erase_area: Sequence[float] = (0.02, 0.2)  #: erased area fraction range.


def to_float_batch(images_uint8: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` or ``(N, C, H, W)`` uint8 -> ``(N, C, H, W)`` float32 in 0..255."""
    x = images_uint8
    if x.ndim == 3:
        x = x.unsqueeze(1)
    return x.to(torch.float32)


def normalize(x_0_255: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Same arithmetic as ``to_model_input``: ``x * (1 / (255 * std)) + (-mean / std)`` per channel.

    The constants are computed in float32 numpy exactly as the runtime does, so the result
    is bit-identical for an un-augmented uint8 crop.
    """
    std_arr = np.asarray(std, dtype=np.float32)
    c = x_0_255.shape[1]
    scale = torch.from_numpy((1.0 / (255.0 * std_arr)).astype(np.float32)).reshape(1, c, 1, 1)
    offset = torch.from_numpy((-np.asarray(mean, dtype=np.float32) / std_arr).astype(np.float32)).reshape(1, c, 1, 1)
    return x_0_255 * scale.to(x_0_255.device) + offset.to(x_0_255.device)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


def random_affine(
    x: torch.Tensor,
    g: torch.Generator,
    rotate_deg: float,
    scale: float,
    shift: float,
    flip: float,
    out_size: Optional[int] = None,
) -> torch.Tensor:
    """Random rotation/zoom/shift/mirror of a float batch ``(N, C, H, W)`` in one resample.

    Outside the source image is filled with 0 (like pad-and-crop). ``out_size`` (default H)
    is the output side; the field of view stays the whole image.
    """
    n, c, h, w = x.shape
    s = out_size or h
    ang = _uniform(n, -rotate_deg, rotate_deg, g) * (math.pi / 180.0)
    zoom = _uniform(n, 1.0 - scale, 1.0 + scale, g)
    tx = _uniform(n, -shift, shift, g) * 2.0
    ty = _uniform(n, -shift, shift, g) * 2.0
    mirror = torch.where(torch.rand(n, generator=g) < flip, -1.0, 1.0)
    cos, sin = torch.cos(ang) / zoom, torch.sin(ang) / zoom
    theta = torch.stack(
        [torch.stack([cos * mirror, -sin, tx], 1), torch.stack([sin * mirror, cos, ty], 1)], 1
    ).to(x.device)
    grid = F.affine_grid(theta, [n, c, s, s], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def photometric(x: torch.Tensor, g: torch.Generator, brightness: float, contrast: float) -> torch.Tensor:
    """Contrast around each image's mean and additive brightness, clamped to 0..255."""
    n = x.shape[0]
    if contrast > 0:
        cf = _uniform(n, 1.0 - contrast, 1.0 + contrast, g).reshape(n, 1, 1, 1).to(x.device)
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - m) * cf + m
    if brightness > 0:
        x = x + (_uniform(n, -brightness, brightness, g) * 255.0).reshape(n, 1, 1, 1).to(x.device)
    return x.clamp(0.0, 255.0)


def random_erase(x: torch.Tensor, g: torch.Generator, p: float, area: Sequence[float] = (0.02, 0.2)) -> torch.Tensor:
    """With probability ``p`` per image, fill one random rectangle with uniform noise."""
    n, c, h, w = x.shape
    if p <= 0:
        return x
    apply = torch.rand(n, generator=g) < p
    frac = _uniform(n, area[0], area[1], g)
    aspect = torch.exp(_uniform(n, math.log(0.3), math.log(3.3), g))
    eh = (torch.sqrt(frac * aspect) * h).clamp(1, h)
    ew = (torch.sqrt(frac / aspect) * w).clamp(1, w)
    y0 = torch.rand(n, generator=g) * (h - eh)
    x0 = torch.rand(n, generator=g) * (w - ew)
    ys = torch.arange(h, dtype=torch.float32).reshape(1, h, 1)
    xs = torch.arange(w, dtype=torch.float32).reshape(1, 1, w)
    mask = (
        (ys >= y0.reshape(n, 1, 1))
        & (ys < (y0 + eh).reshape(n, 1, 1))
        & (xs >= x0.reshape(n, 1, 1))
        & (xs < (x0 + ew).reshape(n, 1, 1))
        & apply.reshape(n, 1, 1)
    ).unsqueeze(1)
    noise = torch.rand(x.shape, generator=g) * 255.0
    return torch.where(mask.to(x.device), noise.to(x.device), x)


def augment_batch(images_uint8: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """uint8 ``(N, [C,] H, W)`` -> augmented float32 ``(N, C, H, W)`` in 0..255 (not normalised)."""
    x = to_float_batch(images_uint8)
    if cfg.rotate_deg or cfg.scale or cfg.shift or cfg.flip:
        x = random_affine(x, g, cfg.rotate_deg, cfg.scale, cfg.shift, cfg.flip)
    if cfg.brightness or cfg.contrast:
        x = photometric(x, g, cfg.brightness, cfg.contrast)
    return random_erase(x, g, cfg.erase, cfg.erase_area)
