"""training.export: real (tiny) models from the registry -> ONNX -> ONNX Runtime and the runtime loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from ros2_affect.backends import create_backend
from ros2_affect.backends.base import ModelMetadata
from ros2_affect.core.types import CANONICAL_EXPRESSIONS
from training import export
from training.checkpoint import FORMAT
from training.models import create_model

TINY = {"backbone_kwargs": {"widths": (8, 16), "n_convs": 1}}


def ckpt_for(model_name: str, model_kwargs: Dict[str, Any], model: nn.Module, **over: Any) -> Dict[str, Any]:
    ckpt = {
        "format": FORMAT,
        "model_name": model_name,
        "model_kwargs": model_kwargs,
        "state_dict": model.state_dict(),
        "class_names": list(CANONICAL_EXPRESSIONS),
        "input_size": 48,
        "channels": 1,
        "mean": [0.5],
        "std": [0.25],
        "alignment": {"margin": 0.25, "eye_distance_ratio": 0.375, "eye_y": 0.388},
        "sequence_length": int(getattr(model, "sequence_length", 1)),
        "va_mode": "regressed",
        "training_data": "unit test (random weights)",
        "config": {},
        "epoch": 0,
        "metrics": {},
    }
    ckpt.update(over)
    return ckpt


def _randomise_bn(model: nn.Module) -> None:
    """Non-trivial BatchNorm statistics, so eval-mode export mistakes show up."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


@pytest.fixture(scope="module")
def frame_model() -> Tuple[nn.Module, Dict[str, Any]]:
    torch.manual_seed(0)
    kwargs = dict(TINY)
    model = create_model("emotion_gcn", **kwargs).eval()
    _randomise_bn(model)
    return model, ckpt_for("emotion_gcn", kwargs, model)


@pytest.fixture(scope="module")
def temporal_model() -> Tuple[nn.Module, Dict[str, Any]]:
    torch.manual_seed(0)
    kwargs = dict(TINY, sequence_length=4)
    model = create_model("cnn_rnn", **kwargs).eval()
    _randomise_bn(model)
    return model, ckpt_for("cnn_rnn", kwargs, model)


@pytest.fixture(scope="module")
def frame_export(
    frame_model: Tuple[nn.Module, Dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> export.ExportResult:
    model, ckpt = frame_model
    return export.export_model(model, ckpt, tmp_path_factory.mktemp("frame"), name="gcn_tiny", max_faces=8)


@pytest.fixture(scope="module")
def temporal_export(
    temporal_model: Tuple[nn.Module, Dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> export.ExportResult:
    model, ckpt = temporal_model
    return export.export_model(model, ckpt, tmp_path_factory.mktemp("temporal"), name="cnnrnn_tiny")


def test_frame_export_files_parity_and_metadata(frame_export: export.ExportResult) -> None:
    assert set(frame_export.graphs) == {"frame"}
    path = frame_export.graphs["frame"]
    assert path.name == "gcn_tiny.onnx" and frame_export.sidecar.name == "gcn_tiny.json"
    assert set(frame_export.parity) == {f"frame/N={n}/{o}" for n in (1, 5) for o in ("logits", "valence_arousal")}
    assert max(frame_export.parity.values()) < 1e-4
    # metadata round trip through the contract parser
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    meta = ModelMetadata.from_props(props, str(path))
    assert meta == frame_export.metadata["frame"]
    assert meta.role == "frame" and meta.model_id == "gcn_tiny-1.0"
    assert meta.class_names == CANONICAL_EXPRESSIONS and meta.input_size == 48 and meta.channels == 1
    assert meta.mean == (0.5,) and meta.std == (0.25,) and meta.va_mode == "regressed"
    assert meta.alignment == {"margin": 0.25, "eye_distance_ratio": 0.375, "eye_y": 0.388}
    assert meta.extra["training_data"] == "unit test (random weights)"
    assert meta.extra["opset"] == "17" and meta.extra["version"] == "1.0"
    assert len(meta.extra["git_sha"]) == 40 or meta.extra["git_sha"] == "unknown"
    sidecar = json.loads(frame_export.sidecar.read_text())
    assert sidecar["model_id"] == "gcn_tiny-1.0" and sidecar["kind"] == "frame"
    assert sidecar["graphs"]["frame"]["file"] == "gcn_tiny.onnx"
    assert sidecar["graphs"]["frame"]["metadata"]["class_names"] == list(CANONICAL_EXPRESSIONS)


def test_frame_export_dynamic_batch_matches_torch(
    frame_model: Tuple[nn.Module, Dict[str, Any]], frame_export: export.ExportResult
) -> None:
    model, _ = frame_model
    session = create_backend("onnxruntime").load(frame_export.graphs["frame"], "frame", 8)
    gen = torch.Generator().manual_seed(7)
    for n in range(1, 9):
        x = torch.randn((n, 1, 48, 48), generator=gen)
        with torch.no_grad():
            logits, va = model(x)
        out = session.run(x.numpy())
        assert out["logits"].shape == (n, 7) and out["valence_arousal"].shape == (n, 2)
        np.testing.assert_allclose(out["logits"], logits.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(out["valence_arousal"], va.numpy(), atol=1e-4, rtol=0)


def test_temporal_export_two_graphs_end_to_end(
    temporal_model: Tuple[nn.Module, Dict[str, Any]], temporal_export: export.ExportResult
) -> None:
    model, _ = temporal_model
    graphs = temporal_export.graphs
    assert {k: v.name for k, v in graphs.items()} == {
        "encoder": "cnnrnn_tiny_encoder.onnx",
        "sequence": "cnnrnn_tiny_sequence.onnx",
    }
    enc_meta, seq_meta = temporal_export.metadata["encoder"], temporal_export.metadata["sequence"]
    assert (enc_meta.role, enc_meta.sequence_length, enc_meta.feature_dim) == ("encoder", 1, 16)
    assert (seq_meta.role, seq_meta.sequence_length, seq_meta.feature_dim) == ("sequence", 4, 16)
    assert enc_meta.model_id == seq_meta.model_id == "cnnrnn_tiny-1.0"
    # the runtime loader accepts each graph in its role; then encoder per frame -> sequence head
    backend = create_backend("onnxruntime")
    encoder = backend.load(graphs["encoder"], "encoder", 8)
    head = backend.load(graphs["sequence"], "sequence", 8)
    gen = torch.Generator().manual_seed(3)
    for n in (1, 3, 8):
        x = torch.randn((n, 4, 1, 48, 48), generator=gen)
        with torch.no_grad():
            logits, va = model(x)
        feats = encoder.run(x.reshape(n * 4, 1, 48, 48).numpy())["features"]
        out = head.run(feats.reshape(n, 4, 16))
        np.testing.assert_allclose(out["logits"], logits.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(out["valence_arousal"], va.numpy(), atol=1e-4, rtol=0)
    assert temporal_export.parity["end_to_end/logits"] < 1e-4
    # the contract's tensor shapes: dynamic N, fixed T and D
    sess = ort.InferenceSession(str(graphs["sequence"]), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == ["N", 4, 16]


class _BatchDependent(nn.Module):
    """Python control flow on the batch size: tracing bakes in the example's branch, so the
    exported graph differs from torch for N > 3 (the parity check must catch it)."""

    role = "frame"
    feature_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(48 * 48, 7)

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        logits = self.fc(image.flatten(1))
        if image.shape[0] > 3:
            logits = logits * 2.0
        return logits, torch.zeros(image.shape[0], 2)


def test_parity_failure_is_reported_with_numbers(tmp_path: Path) -> None:
    model = _BatchDependent()
    with pytest.raises(export.ExportError, match=r"disagree beyond 0.0001 .*frame/N=5/logits = \d"):
        export.export_model(model, ckpt_for("x", {}, model), tmp_path, name="bad")


def test_bad_arguments_are_rejected(frame_model: Tuple[nn.Module, Dict[str, Any]], tmp_path: Path) -> None:
    model, ckpt = frame_model
    with pytest.raises(export.ExportError, match=r"name 'a b' may only hold"):
        export.export_model(model, ckpt, tmp_path, name="a b")
    with pytest.raises(export.ExportError, match=r"max_faces = 0; expected 1..64"):
        export.export_model(model, ckpt, tmp_path, max_faces=0)
    with pytest.raises(export.ExportError, match=r"std = \[0.0\]"):
        export.export_model(model, dict(ckpt, std=[0.0]), tmp_path)


def test_cli_exports_a_checkpoint_file(
    temporal_model: Tuple[nn.Module, Dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, ckpt = temporal_model
    torch.save(ckpt, tmp_path / "best.pt")
    args = ["--checkpoint", str(tmp_path / "best.pt"), "--out", str(tmp_path / "m.onnx"), "--max-faces", "4"]
    code = export.main(args)
    assert code == 0
    out = capsys.readouterr().out
    assert "m_encoder.onnx" in out and "m_sequence.onnx" in out and "runtime loader accepted 2 graph(s)" in out
    assert (tmp_path / "m_encoder.onnx").is_file() and (tmp_path / "m_sequence.onnx").is_file()
    sidecar = json.loads((tmp_path / "m.json").read_text())
    assert sidecar["kind"] == "temporal" and sidecar["model_id"] == "cnn_rnn-1.0"
    assert sidecar["graphs"]["sequence"]["metadata"]["sequence_length"] == "4"


def test_cli_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export.main(["--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path)]) == 1
    assert "nope.pt not found" in capsys.readouterr().err


def test_engine_without_tensorrt_prints_trtexec_and_fails(
    frame_model: Tuple[nn.Module, Dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ros2_affect.backends.tensorrt_backend import TensorRTBackend

    if TensorRTBackend.is_available()[0]:
        pytest.skip("TensorRT and a GPU are present here; the engine is built instead (tests/backends covers it)")
    _, ckpt = frame_model
    torch.save(ckpt, tmp_path / "best.pt")
    code = export.main(["--checkpoint", str(tmp_path / "best.pt"), "--out", str(tmp_path), "--engine", "--fp16"])
    assert code == export.EXIT_NO_TENSORRT
    err = capsys.readouterr().err
    assert "cannot build TensorRT engines here" in err
    onnx_path = tmp_path / "emotion_gcn.onnx"
    assert f"trtexec --onnx={onnx_path} --saveEngine={onnx_path.with_suffix('.engine')}" in err
    assert "--minShapes=image:1x1x48x48 --optShapes=image:4x1x48x48 --maxShapes=image:8x1x48x48 --fp16" in err
