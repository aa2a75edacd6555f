"""Emotion-GCN frame model (Antoniadis, Filntisis & Maragos, FG 2021, "Exploiting
Emotional Dependencies with Graph Convolutional Networks for Facial Expression
Recognition").

A graph has one node per expression class (and optionally two more, ``valence`` and
``arousal``). Node features are fixed word embeddings of the node names
(:mod:`training.label_embeddings`); the adjacency comes from label co-occurrence in the
training set (:func:`training.label_embeddings.build_adjacency`). A 2-layer GCN with
LeakyReLU(0.2) maps the node embeddings to one weight vector per node, of the image
feature's size D; class logits (and regressed valence/arousal) are dot products of the
pooled image feature with those vectors::

    H1 = LeakyReLU(A_hat @ E @ W1)         E: (P, E_dim) node embeddings, A_hat: (P, P)
    W  = A_hat @ H1 @ W2                   (P, D): classifier (K rows) + regressor rows
    logits = f @ W[:K].T + b               f: (N, D) backbone feature
    va     = f @ W[K:].T                   (P = K + 2 nodes), or derived (below)

E and A_hat are constant, so W is a constant of the trained model: :meth:`fold` returns it,
and :meth:`freeze_graph` (called by :func:`training.checkpoint.load_checkpoint`) caches it
so that ``forward`` is backbone + one matmul -- what an ONNX export then contains. Switching
the model back to training mode drops the cache.

Valence/arousal output: with the 9-node graph (``va_nodes=True``) it is regressed; with
the 7-node graph it is the expectation of per-class coordinates ``va_table`` (K, 2) under
the softmax (the runtime's "derived" valence/arousal; Russell & Mehrabian 1977, see
:mod:`ros2_affect.core.valence_arousal`), or zeros when no table is given.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ros2_affect.errors import ConfigError
from training.models.backbones import create_backbone


class EmotionGCN(nn.Module):
    role = "frame"

    def __init__(
        self,
        num_classes: int = 7,
        in_channels: int = 1,
        backbone: str = "compact_cnn",
        backbone_kwargs: Optional[dict] = None,
        node_embeddings: Optional[Sequence[Sequence[float]]] = None,
        adjacency: Optional[Sequence[Sequence[float]]] = None,
        va_nodes: bool = False,
        va_table: Optional[Sequence[Sequence[float]]] = None,
        gcn_hidden: int = 512,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.backbone = create_backbone(backbone, in_channels, backbone_kwargs)
        self.num_classes = int(num_classes)
        self.va_nodes = bool(va_nodes)
        n_nodes = self.num_classes + (2 if self.va_nodes else 0)
        if node_embeddings is None:
            from training.label_embeddings import load_label_embeddings

            node_embeddings = load_label_embeddings(n_nodes)
        emb = torch.as_tensor(np.asarray(node_embeddings, dtype=np.float32))
        if adjacency is None:
            adjacency = np.eye(n_nodes, dtype=np.float32)
        adj = torch.as_tensor(np.asarray(adjacency, dtype=np.float32))
        if emb.shape[0] != n_nodes or adj.shape != (n_nodes, n_nodes):
            raise ConfigError(
                f"Emotion-GCN with {self.num_classes} classes and va_nodes={self.va_nodes} needs {n_nodes} nodes: "
                f"got embeddings {tuple(emb.shape)} and adjacency {tuple(adj.shape)}"
            )
        self.register_buffer("node_embeddings", emb)
        self.register_buffer("adjacency", adj)
        if va_table is not None:
            vt = torch.as_tensor(np.asarray(va_table, dtype=np.float32))
            if vt.shape != (self.num_classes, 2):
                raise ConfigError(f"va_table must be ({self.num_classes}, 2), got {tuple(vt.shape)}")
            self.register_buffer("va_table", vt)
        else:
            self.va_table = None
        self.feature_dim = int(self.backbone.feature_dim)
        self.gc1 = nn.Linear(emb.shape[1], gcn_hidden, bias=False)
        self.gc2 = nn.Linear(gcn_hidden, self.feature_dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(self.num_classes))
        self.dropout = nn.Dropout(dropout)
        # Not buffers: the state_dict stays the GCN's. (W_cls^T (D, K), W_va^T (D, 2) or None)
        self._frozen: Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]] = None

    def freeze_graph(self) -> EmotionGCN:
        """Evaluate the GCN once and use the constant (P, D) weights in ``forward`` (eval mode)."""
        self.eval()
        with torch.no_grad():
            w = self.node_weights().detach()
        k = self.num_classes
        self._frozen = (w[:k].t().contiguous(), w[k:].t().contiguous() if self.va_nodes else None)
        return self

    def train(self, mode: bool = True) -> EmotionGCN:
        if mode:
            self._frozen = None
        return super().train(mode)

    def node_weights(self) -> torch.Tensor:
        """(P, D) per-node weight vectors produced by the GCN (a constant after training)."""
        h = F.leaky_relu(self.adjacency @ self.gc1(self.node_embeddings), 0.2)
        return self.adjacency @ self.gc2(h)

    def fold(self) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """``(W_cls (K, D), b_cls (K,), W_va (2, D) or None)``, the GCN evaluated once."""
        with torch.no_grad():
            w = self.node_weights().float()
        k = self.num_classes
        return w[:k].clone(), self.bias.detach().clone(), (w[k:].clone() if self.va_nodes else None)

    def head(
        self, features: torch.Tensor, w_cls_t: torch.Tensor, w_va_t: Optional[torch.Tensor]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """features (N, D) -> (logits (N, K), va (N, 2)) with W_cls^T (D, K) and W_va^T (D, 2)."""
        f = self.dropout(features)
        if w_cls_t.dtype != f.dtype:  # bf16 autocast in training; no Cast nodes in an fp32 export
            w_cls_t = w_cls_t.to(f.dtype)
            w_va_t = w_va_t.to(f.dtype) if w_va_t is not None else None
        logits = f @ w_cls_t + self.bias.to(f.dtype)
        if w_va_t is not None:
            va = f @ w_va_t
        elif self.va_table is not None:
            va = torch.softmax(logits.float(), dim=1) @ self.va_table
        else:
            va = torch.zeros(features.shape[0], 2, dtype=logits.dtype, device=logits.device)
        return logits, va

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``image`` (N, C, S, S) float32 -> ``(logits (N, K), valence_arousal (N, 2))``."""
        if self._frozen is not None:
            return self.head(self.backbone(image), *self._frozen)
        w = self.node_weights()
        k = self.num_classes
        return self.head(self.backbone(image), w[:k].t(), w[k:].t() if self.va_nodes else None)


class BackboneClassifier(nn.Module):
    """Plain baseline: backbone + linear expression head + linear valence/arousal head."""

    role = "frame"

    def __init__(
        self,
        num_classes: int = 7,
        in_channels: int = 1,
        backbone: str = "compact_cnn",
        backbone_kwargs: Optional[dict] = None,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.backbone = create_backbone(backbone, in_channels, backbone_kwargs)
        self.num_classes = int(num_classes)
        self.feature_dim = int(self.backbone.feature_dim)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        self.regressor = nn.Linear(self.feature_dim, 2)

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        f = self.dropout(self.backbone(image))
        return self.classifier(f), torch.tanh(self.regressor(f))
