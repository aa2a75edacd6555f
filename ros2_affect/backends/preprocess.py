"""Model-input preprocessing shared by the runtime and training (numpy only).

Training imports :func:`to_model_input` too, so a crop is normalised identically when a
model learns from it and when it runs on a robot.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np

from ros2_affect.errors import InvalidImageError


def to_model_input(
    crops: Union[np.ndarray, Sequence[np.ndarray]],
    mean: Sequence[float],
    std: Sequence[float],
) -> np.ndarray:
    """Turn uint8 face crops into a normalised NCHW float32 batch.

    Args:
        crops: ``(N, S, S, C)`` uint8, or a sequence of ``(S, S, C)`` uint8 crops
            (stacked; all the same shape).
        mean, std: one value per channel (``C`` of them), for pixels scaled to 0..1.

    Returns:
        ``(N, C, S, S)`` float32, C-contiguous: ``(x / 255 - mean[c]) / std[c]``.

    Raises:
        InvalidImageError: not uint8, not 4-D, crops of different shapes, or ``C``
            different from ``len(mean)``/``len(std)``, or a ``std`` of 0.
    """
    if isinstance(crops, np.ndarray):
        batch = crops
    else:
        crops = list(crops)
        if not crops:
            raise InvalidImageError("to_model_input got no crops; pass at least one (S, S, C) uint8 crop")
        shapes = {np.shape(c) for c in crops}
        if len(shapes) != 1:
            raise InvalidImageError(
                f"crops must all have the same shape to form a batch, got shapes {sorted(shapes)}; "
                f"align them with the same output_size_px and grayscale setting"
            )
        batch = np.stack(crops)
    if batch.ndim != 4:
        raise InvalidImageError(
            f"crops must be (N, S, S, C) or a list of (S, S, C), got shape {batch.shape}; "
            f"grayscale crops need a trailing channel axis of 1"
        )
    if batch.dtype != np.uint8:
        raise InvalidImageError(f"crops must be uint8 (0..255), got dtype {batch.dtype}")
    channels = batch.shape[3]
    if len(mean) != channels or len(std) != channels:
        raise InvalidImageError(
            f"crops have {channels} channel(s) but mean has {len(mean)} and std {len(std)} value(s); "
            f"the model expects {len(mean)}-channel input: set alignment.grayscale accordingly"
        )
    std_arr = np.asarray(std, dtype=np.float32)
    if not np.all(std_arr > 0):
        raise InvalidImageError(f"std values must be > 0, got {list(std)}")
    # Fold /255, -mean and /std into one multiply-add per element.
    scale = (1.0 / (255.0 * std_arr)).reshape(1, channels, 1, 1)
    offset = (-np.asarray(mean, dtype=np.float32) / std_arr).reshape(1, channels, 1, 1)
    out = np.empty((batch.shape[0], channels, batch.shape[1], batch.shape[2]), dtype=np.float32)
    np.multiply(batch.transpose(0, 3, 1, 2), scale, out=out)
    out += offset
    return out


def flip_horizontal(batch: np.ndarray) -> np.ndarray:
    """Mirror a batch left-right, for flip-averaged predictions.

    Args:
        batch: ``(N, C, S, S)`` model input (the output of :func:`to_model_input`).

    Returns:
        ``(N, C, S, S)``, a C-contiguous copy with the width (last) axis reversed.
    """
    if batch.ndim != 4:
        raise InvalidImageError(f"flip_horizontal needs an (N, C, S, S) batch, got shape {batch.shape}")
    return np.ascontiguousarray(batch[..., ::-1])
