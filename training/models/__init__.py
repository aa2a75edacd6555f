"""Trainable affect models and their registry.

:data:`MODELS` is the one lookup of model names (an unknown name lists the registered ones
and the closest match). Each entry says how to build the model and what training adds to
its constructor arguments from the training configuration (:func:`build_for_training`,
used by ``training.train``); ``create_model(name, **kwargs)`` builds a registered model
from stored arguments (checkpoints, ensembles). Contract used by ``training.export`` and
the runtime:

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

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
from torch import nn

from ros2_affect.core.types import CANONICAL_EXPRESSIONS
from ros2_affect.core.valence_arousal import check_mapping
from ros2_affect.errors import ConfigError
from ros2_affect.registry import Registry
from training.label_embeddings import build_adjacency, label_table
from training.models.backbones import BACKBONES
from training.models.cnn_rnn import CNNRNN, SequenceHead
from training.models.emotion_gcn import BackboneClassifier, EmotionGCN
from training.models.ensemble import FrameEnsemble

#: ``(cfg, kwargs, train_labels, graph_table) -> (build-only kwargs, va_mode)``: adds the
#: constructor arguments training sets from its configuration to ``kwargs`` (stored in the
#: checkpoint), returns those that are not stored (e.g. a graph restored from the weights)
#: and the checkpoint's ``va_mode``.
Prepare = Callable[[Any, Dict[str, Any], np.ndarray, Optional[np.ndarray]], Tuple[Dict[str, Any], str]]


def _prepare_plain(
    cfg: Any, kwargs: Dict[str, Any], train_labels: np.ndarray, graph_table: Optional[np.ndarray]
) -> Tuple[Dict[str, Any], str]:
    """Nothing to add; multi-task data (``graph_table``) means the valence/arousal regressor
    learns the real values."""
    return {}, "regressed" if graph_table is not None else "derived"


def _prepare_cnn_rnn(
    cfg: Any, kwargs: Dict[str, Any], train_labels: np.ndarray, graph_table: Optional[np.ndarray]
) -> Tuple[Dict[str, Any], str]:
    """The sequence length is ``sequence.length`` (the training sequences are built with it)."""
    t = kwargs.setdefault("sequence_length", cfg.sequence.length)
    if t != cfg.sequence.length:
        raise ConfigError(
            f"model.kwargs.sequence_length={t} differs from sequence.length={cfg.sequence.length}; "
            "set only sequence.length"
        )
    return _prepare_plain(cfg, kwargs, train_labels, graph_table)


def _prepare_emotion_gcn(
    cfg: Any, kwargs: Dict[str, Any], train_labels: np.ndarray, graph_table: Optional[np.ndarray]
) -> Tuple[Dict[str, Any], str]:
    """The label graph: from ``graph_table`` (multi-task: real valence/arousal columns,
    regressed with ``graph.va_nodes``), else from the training labels (valence/arousal
    derived from the class coordinates)."""
    k = len(CANONICAL_EXPRESSIONS)
    va_table = check_mapping(CANONICAL_EXPRESSIONS)
    kwargs["va_nodes"] = cfg.graph.va_nodes
    if not cfg.graph.va_nodes:
        kwargs["va_table"] = va_table.tolist()
    if graph_table is not None:
        table = graph_table if cfg.graph.va_nodes else graph_table[:, :k]
        adjacency = build_adjacency(table, cfg.graph.tau, cfg.graph.p)
        return {"adjacency": adjacency}, "regressed" if cfg.graph.va_nodes else "derived"
    labelled = train_labels[train_labels >= 0]
    va = va_table[labelled] if cfg.graph.va_nodes else None
    adjacency = build_adjacency(label_table(labelled, k, va), cfg.graph.tau, cfg.graph.p)
    return {"adjacency": adjacency}, "derived"


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its constructor and what training adds to its arguments."""

    create: Callable[..., nn.Module]
    prepare: Prepare = _prepare_plain


MODELS: Registry[ModelEntry] = Registry("model")
MODELS.register("emotion_gcn")(ModelEntry(EmotionGCN, _prepare_emotion_gcn))
MODELS.register("cnn_rnn")(ModelEntry(CNNRNN, _prepare_cnn_rnn))
MODELS.register("frame_ensemble")(ModelEntry(FrameEnsemble))


def _plain(backbone: str) -> Callable[..., nn.Module]:
    def make(**kwargs: Any) -> nn.Module:
        return BackboneClassifier(backbone=backbone, **kwargs)

    return make


for _name in BACKBONES:
    MODELS.register(_name)(ModelEntry(_plain(_name)))
MODELS.freeze()


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name`` with constructor ``kwargs``.

    Raises:
        UnknownNameError: ``name`` is not registered (lists names + closest match).
    """
    return MODELS.get(name).create(**kwargs)


def build_for_training(
    name: str, cfg: Any, kwargs: Dict[str, Any], train_labels: np.ndarray, graph_table: Optional[np.ndarray] = None
) -> Tuple[nn.Module, str]:
    """Build the model registered as ``name`` for a training run -> ``(model, va_mode)``.

    ``kwargs`` (the constructor arguments from the configuration) gains what the model's
    entry adds from ``cfg`` (a :class:`training.config.TrainConfig`); store it in the
    checkpoint. ``graph_table``: multi-task label table (see ``training.train.build_model``).

    Raises:
        UnknownNameError: ``name`` is not registered (lists names + closest match).
        ConfigError: the configuration does not fit the model.
    """
    entry = MODELS.get(name)
    build_only, va_mode = entry.prepare(cfg, kwargs, train_labels, graph_table)
    return entry.create(**build_only, **kwargs), va_mode


__all__ = [
    "MODELS",
    "ModelEntry",
    "create_model",
    "build_for_training",
    "EmotionGCN",
    "CNNRNN",
    "SequenceHead",
    "BackboneClassifier",
    "FrameEnsemble",
    "BACKBONES",
]
