"""CNN-RNN temporal model (the Aff-Wild recipe of Kollias et al., IJCV 2019, "Deep Affect
Prediction in-the-wild: Aff-Wild Database and Challenge, Deep Architectures, and Beyond").

Two parts, exported as two ONNX files so the runtime encodes each frame once and keeps a
per-track buffer of features:

* ``encoder``: image ``(N, C, S, S)`` -> features ``(N, D)`` (a backbone from
  :mod:`training.models.backbones`);
* ``sequence_head``: features ``(N, T, D)`` -> ``(logits (N, K), valence_arousal (N, 2))``
  from the last time step of a 2-layer GRU (or LSTM) with 128 units.

``forward(images (N, T, C, S, S))`` runs both, for training end to end.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from ros2_affect.errors import ConfigError
from training.models.backbones import create_backbone


class SequenceHead(nn.Module):
    """features (N, T, D) float32 -> (logits (N, K), valence_arousal (N, 2) in -1..1)."""

    def __init__(
        self,
        feature_dim: int,
        num_classes: int = 7,
        rnn: str = "gru",
        hidden: int = 128,
        layers: int = 2,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if rnn not in ("gru", "lstm"):
            raise ConfigError(f"rnn must be 'gru' or 'lstm', got {rnn!r}")
        cls = nn.GRU if rnn == "gru" else nn.LSTM
        self.rnn = cls(feature_dim, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_classes)
        self.regressor = nn.Linear(hidden, 2)

    def forward(self, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out, _ = self.rnn(features)
        last = self.dropout(out[:, -1])
        return self.classifier(last), torch.tanh(self.regressor(last))


class CNNRNN(nn.Module):
    role = "temporal"

    def __init__(
        self,
        num_classes: int = 7,
        in_channels: int = 1,
        backbone: str = "compact_cnn",
        backbone_kwargs: Optional[dict] = None,
        sequence_length: int = 8,
        rnn: str = "gru",
        hidden: int = 128,
        layers: int = 2,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.encoder = create_backbone(backbone, in_channels, backbone_kwargs)
        self.feature_dim = int(self.encoder.feature_dim)
        self.sequence_length = int(sequence_length)
        self.num_classes = int(num_classes)
        self.sequence_head = SequenceHead(self.feature_dim, num_classes, rnn, hidden, layers, dropout)

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``images`` (N, T, C, S, S) float32 -> ``(logits (N, K), valence_arousal (N, 2))``."""
        n, t = images.shape[:2]
        feats = self.encoder(images.reshape(n * t, *images.shape[2:])).float()
        return self.sequence_head(feats.reshape(n, t, -1))
