"""Model registry: every registered model builds, runs forward/backward and is finite."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from ros2_affect.errors import ConfigError, UnknownNameError
from training.label_embeddings import NODE_NAMES, build_adjacency, label_table, load_label_embeddings, spearman_matrix
from training.models import MODELS, create_model

TINY = {"backbone_kwargs": {"widths": [4, 8], "n_convs": 1}}
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
TORCHVISION_NAMES = {"resnet18", "resnet50", "mobilenet_v3_small", "densenet121"}


def _kwargs(name: str) -> dict:
    if name in ("emotion_gcn", "cnn_rnn", "compact_cnn"):
        return dict(TINY, backbone="compact_cnn") if name != "compact_cnn" else dict(TINY)
    if name == "frame_ensemble":
        return {"members": [{"name": "emotion_gcn", "kwargs": dict(TINY)}, {"name": "compact_cnn", "kwargs": TINY}]}
    return {}


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_forward_backward(name: str) -> None:
    if name in TORCHVISION_NAMES and not HAS_TORCHVISION:
        with pytest.raises(ConfigError, match="needs torchvision"):
            create_model(name)
        return
    torch.manual_seed(0)
    model = create_model(name, **_kwargs(name))
    assert model.role in ("frame", "temporal")
    size = 32 if name in TORCHVISION_NAMES else 16
    if model.role == "frame":
        x = torch.randn(3, 1, size, size)
        logits, va = model(x)
    else:
        assert model.sequence_length == 8
        feats = model.encoder(torch.randn(6, 1, size, size))
        assert feats.shape == (6, model.feature_dim)
        logits, va = model.sequence_head(feats.reshape(3, 2, -1))
        logits2, _ = model(torch.randn(3, 2, 1, size, size))
        assert logits2.shape == (3, 7)
    assert logits.shape == (3, 7) and va.shape == (3, 2)
    assert logits.dtype == torch.float32 and va.dtype == torch.float32
    (logits.logsumexp(1).sum() + va.sum()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


def test_unknown_model_name_suggests_closest() -> None:
    with pytest.raises(UnknownNameError, match="emotion_gcn"):
        create_model("emotion_gnc")


def test_compact_cnn_handles_tiny_inputs() -> None:
    model = create_model("compact_cnn").eval()  # default 4 stages
    logits, _ = model(torch.randn(2, 1, 8, 8))  # ceil-mode pooling: 8 -> 4 -> 2 -> 1 -> 1
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()


def test_emotion_gcn_fold_equals_forward() -> None:
    torch.manual_seed(1)
    model = create_model("emotion_gcn", va_nodes=True, **_kwargs("emotion_gcn")).eval()
    x = torch.randn(4, 1, 16, 16)
    logits, va = model(x)
    w_cls, b, w_va = model.fold()
    f = model.backbone(x)
    torch.testing.assert_close(f @ w_cls.t() + b, logits)
    torch.testing.assert_close(f @ w_va.t(), va)


def test_emotion_gcn_derived_va_uses_table() -> None:
    table = [[0.0, 0.0], [0.81, 0.51], [-0.63, -0.27], [0.4, 0.67], [-0.64, 0.6], [-0.6, 0.35], [-0.51, 0.59]]
    model = create_model("emotion_gcn", va_nodes=False, va_table=table, **_kwargs("emotion_gcn")).eval()
    logits, va = model(torch.randn(2, 1, 16, 16))
    torch.testing.assert_close(va, torch.softmax(logits, 1) @ torch.tensor(table))


def test_emotion_gcn_rejects_wrong_graph_size() -> None:
    with pytest.raises(ConfigError, match="needs 9 nodes"):
        create_model("emotion_gcn", va_nodes=True, adjacency=np.eye(7), **_kwargs("emotion_gcn"))


def test_label_embeddings_committed() -> None:
    emb = load_label_embeddings()
    assert emb.shape == (len(NODE_NAMES), 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # Distinct words get distinct vectors.
    sims = emb @ emb.T
    assert sims[np.triu_indices(len(NODE_NAMES), 1)].max() < 0.9


def test_spearman_known_values() -> None:
    # Columns: a, b = a reversed, c = monotone transform of a, d constant.
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    table = np.column_stack([a, -a, a**3, np.ones(5)])
    c = spearman_matrix(table)
    np.testing.assert_allclose(c[0, 1], -1.0)
    np.testing.assert_allclose(c[0, 2], 1.0)
    np.testing.assert_allclose(c[:, 3], 0.0)
    # Ties: hand-computed Spearman of x=[0,0,1,1], y=[0,1,0,1] is 0.
    np.testing.assert_allclose(spearman_matrix(np.array([[0, 0], [0, 1], [1, 0], [1, 1]]))[0, 1], 0.0, atol=1e-12)


def test_adjacency_threshold_reweighting_and_row_sums() -> None:
    # 3 classes + valence: class 0 high valence, class 2 low valence.
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    va = np.array([[0.9, 0.0]] * 3 + [[0.0, 0.0]] * 3 + [[-0.9, 0.0]] * 3)
    table = label_table(labels, 3, va)
    adj = build_adjacency(table, tau=0.1, p=0.2)
    assert adj.shape == (5, 5) and adj.dtype == np.float32
    np.testing.assert_allclose(adj.sum(axis=1), 1.0, atol=1e-6)
    corr = spearman_matrix(table)
    # Edge class0 <-> valence (positive correlation), none class2 -> valence (negative).
    assert corr[0, 3] > 0.1 and adj[0, 3] > 0
    assert corr[2, 3] < 0 and adj[2, 3] == 0
    # One-hot columns are mutually negatively correlated: no class-class edges.
    assert adj[0, 1] == 0 and adj[0, 2] == 0
    # Row 0 has one neighbour (valence): p on it, 1 - p on itself.
    np.testing.assert_allclose(adj[0, [0, 3]], [0.8, 0.2], atol=1e-6)
    # The constant arousal column has no neighbours: identity row.
    np.testing.assert_allclose(adj[4], [0, 0, 0, 0, 1])
    # A higher threshold removes edges.
    assert (build_adjacency(table, tau=0.99, p=0.2) == np.eye(5, dtype=np.float32)).all()


def test_freeze_graph_keeps_outputs_and_training_mode_drops_it() -> None:
    torch.manual_seed(2)
    model = create_model("emotion_gcn", va_nodes=True, **_kwargs("emotion_gcn")).eval()
    x = torch.randn(3, 1, 16, 16)
    before = model(x)
    model.freeze_graph()
    after = model(x)
    torch.testing.assert_close(after[0], before[0])
    torch.testing.assert_close(after[1], before[1])
    assert "_frozen" not in model.state_dict()  # checkpoints keep the GCN parameters
    model.train()
    assert model._frozen is None


def test_unknown_backbone_names_the_available_ones_and_the_closest() -> None:
    for name in ("emotion_gcn", "cnn_rnn"):
        message = r"unknown backbone 'resnet19'; available: .*resnet18.*did you mean 'resnet18'"
        with pytest.raises(ConfigError, match=message):
            create_model(name, backbone="resnet19")
