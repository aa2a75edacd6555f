"""Trainable affect models and their registry.

``create_model(name, **kwargs)`` builds a registered model. Contract used by
``training.export`` and the runtime:

* every model has ``.role``: ``"frame"`` or ``"temporal"``;
* a frame model: ``forward(image (N, C, S, S) float32) -> (logits (N, K), valence_arousal (N, 2))``;
* a temporal model has ``.encoder`` (image (N, C, S, S) -> features (N, D)),
  ``.sequence_head`` (features (N, T, D) -> (logits, valence_arousal)), ``.feature_dim``
  (D) and ``.sequence_length`` (T).

Names: ``emotion_gcn``, ``cnn_rnn``, ``frame_ensemble`` (mean of trained frame models), and
the plain frame classifiers ``compact_cnn``,
``resnet18``, ``resnet50``, ``mobilenet_v3_small``, ``densenet121`` (backbone + linear
heads). Backbones alone are in :data:`training.models.backbones.BACKBONES`.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ros2_affect.registry import Registry
from training.models.backbones import BACKBONES
from training.models.cnn_rnn import CNNRNN, SequenceHead
from training.models.emotion_gcn import BackboneClassifier, EmotionGCN
from training.models.ensemble import FrameEnsemble

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
MODELS.register("emotion_gcn")(EmotionGCN)
MODELS.register("cnn_rnn")(CNNRNN)
MODELS.register("frame_ensemble")(FrameEnsemble)


def _plain(backbone: str) -> Callable[..., nn.Module]:
    def make(**kwargs: Any) -> nn.Module:
        return BackboneClassifier(backbone=backbone, **kwargs)

    return make


for _name in BACKBONES:
    MODELS.register(_name)(_plain(_name))
MODELS.freeze()


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name`` with constructor ``kwargs``.

    Raises:
        UnknownNameError: ``name`` is not registered (lists names + closest match).
    """
    return MODELS.get(name)(**kwargs)


__all__ = [
    "MODELS",
    "create_model",
    "EmotionGCN",
    "CNNRNN",
    "SequenceHead",
    "BackboneClassifier",
    "FrameEnsemble",
    "BACKBONES",
]
