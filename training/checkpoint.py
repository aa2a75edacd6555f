"""Checkpoint format ``ros2_affect-checkpoint-1`` written by :mod:`training.train`.

``torch.save`` of a dict with:

* ``format``: ``"ros2_affect-checkpoint-1"``
* ``model_name``, ``model_kwargs``: ``training.models.create_model(model_name, **model_kwargs)``
  rebuilds the architecture (buffers such as the GCN adjacency come from ``state_dict``)
* ``state_dict``: model weights (float32)
* ``class_names`` (canonical order), ``input_size`` (S), ``channels`` (C), ``mean``, ``std``
  (per channel, pixels in 0..1; see ``ros2_affect.backends.preprocess.to_model_input``)
* ``alignment``: ``ros2_affect.config.AlignmentConfig`` fields the model was trained for
* ``sequence_length``: T for temporal models, 1 for frame models
* ``va_mode``: ``"derived"`` (VA from class probabilities, Russell & Mehrabian 1977) or
  ``"regressed"``
* ``training_data``: a short description of the training set
* ``config``: the effective training config (nested dict)
* ``epoch``, ``metrics`` (validation metrics of this epoch), ``optimizer``, ``scheduler``,
  ``rng`` (for ``--resume``)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple, Union

import torch
from torch import nn

from ros2_affect.errors import ModelLoadError

FORMAT = "ros2_affect-checkpoint-1"


def load_checkpoint(path: Union[str, Path], map_location: str = "cpu") -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuild the model of a checkpoint (eval mode, float32) -> ``(model, checkpoint dict)``.

    Raises:
        ModelLoadError: missing file, not a ros2_affect checkpoint, or weights that do not fit.
    """
    from training.models import create_model

    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"checkpoint {p} not found; training writes runs/<name>/best.pt and last.pt")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many types for corrupt files
        raise ModelLoadError(f"cannot read checkpoint {p}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ModelLoadError(f"{p} is not a {FORMAT!r} checkpoint (format {got!r}); write it with training.train")
    model = create_model(ckpt["model_name"], **ckpt["model_kwargs"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise ModelLoadError(f"weights in {p} do not fit model {ckpt['model_name']!r}: {exc}") from exc
    model.eval()
    if hasattr(model, "freeze_graph"):
        model.freeze_graph()  # Emotion-GCN: the graph part is a constant at inference
    return model, ckpt
