"""A frame model that averages several trained frame models (one ONNX graph at export).

Class probabilities are averaged and returned as their log (``logits``), so the runtime's
softmax gives back exactly the mean probability; valence/arousal outputs are averaged.
Members must take the same input (size, channels, normalisation) and predict the same
classes; :mod:`training.ensemble` checks that when it builds an ensemble checkpoint.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch import nn


class FrameEnsemble(nn.Module):
    role = "frame"

    def __init__(self, members: Sequence[Dict[str, Any]]) -> None:
        """``members``: ``[{"name": model_name, "kwargs": model_kwargs}, ...]`` (checkpoint fields)."""
        from training.models import create_model

        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList([create_model(m["name"], **m["kwargs"]) for m in members])
        roles = {getattr(m, "role", None) for m in self.members}
        if roles != {"frame"}:
            raise ValueError(f"ensemble members must be frame models, got roles {sorted(map(str, roles))}")
        self.feature_dim = sum(int(getattr(m, "feature_dim", 0)) for m in self.members)

    def freeze_graph(self) -> FrameEnsemble:
        for m in self.members:
            if hasattr(m, "freeze_graph"):
                m.freeze_graph()
        return self

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        probs: List[torch.Tensor] = []
        vas: List[torch.Tensor] = []
        for m in self.members:
            logits, va = m(image)
            probs.append(torch.softmax(logits.float(), dim=1))
            vas.append(va.float())
        mean_prob = torch.stack(probs).mean(0)
        return torch.log(mean_prob.clamp_min(1e-12)), torch.stack(vas).mean(0)
