"""The torch debugging backend on small real checkpoints in training.train's format."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (the torch backend needs it)")

from ros2_affect.backends import BACKENDS, create_backend  # noqa: E402
from ros2_affect.config import ModelConfig  # noqa: E402
from ros2_affect.core.affect_model import create_affect_model  # noqa: E402
from ros2_affect.core.types import CANONICAL_EXPRESSIONS  # noqa: E402
from ros2_affect.errors import AssetMissingError, ModelContractError, ModelLoadError  # noqa: E402
from training import checkpoint, models  # noqa: E402
from training.torch_backend import TorchBackend, metadata_from_checkpoint  # noqa: E402

SMALL = {"backbone": "compact_cnn", "backbone_kwargs": {"widths": [8, 16], "n_convs": 1}}


def _save(path: Path, name: str, kwargs: Dict[str, Any], length: int = 1, seed: int = 0) -> Path:
    """A checkpoint exactly as training.train writes it (format ros2_affect-checkpoint-1)."""
    torch.manual_seed(seed)
    model = models.create_model(name, **kwargs)
    torch.save({
        "format": checkpoint.FORMAT, "model_name": name, "model_kwargs": kwargs, "state_dict": model.state_dict(),
        "class_names": list(CANONICAL_EXPRESSIONS), "input_size": 48, "channels": 1, "mean": [0.5], "std": [0.25],
        "alignment": {"margin": 0.25}, "sequence_length": length, "va_mode": "derived",
        "training_data": "test", "config": {}, "epoch": 3, "metrics": {}, "optimizer": {}, "scheduler": {}, "rng": {},
    }, path)
    return path


@pytest.fixture(scope="module")
def frame_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    kwargs = {"backbone_kwargs": SMALL["backbone_kwargs"]}
    return _save(tmp_path_factory.mktemp("ckpt") / "frame.pt", "compact_cnn", kwargs)


@pytest.fixture(scope="module")
def temporal_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    kwargs = dict(SMALL, sequence_length=4, hidden=16, layers=1)
    return _save(tmp_path_factory.mktemp("ckpt") / "temporal.pt", "cnn_rnn", kwargs, length=4)


def test_registered_and_available() -> None:
    assert BACKENDS.get("torch") is TorchBackend
    assert TorchBackend.is_available() == (True, "")


def test_frame_checkpoint_matches_the_model(frame_ckpt: Path) -> None:
    backend = create_backend("torch", device="cpu", threads=1, precision="fp16")  # unknown options are dropped
    session = backend.load(frame_ckpt, "frame", 8)
    meta = session.metadata
    assert (meta.role, meta.input_size, meta.channels, meta.mean, meta.std) == ("frame", 48, 1, (0.5,), (0.25,))
    assert meta.class_names == CANONICAL_EXPRESSIONS and meta.model_id == "compact_cnn-frame"
    assert meta.alignment == {"margin": 0.25} and meta.extra["epoch"] == "3"
    x = np.random.default_rng(0).standard_normal((3, 1, 48, 48)).astype(np.float32)
    out = session.run(x)
    model, _ = checkpoint.load_checkpoint(frame_ckpt)
    with torch.no_grad():
        logits, va = model(torch.from_numpy(x))
    np.testing.assert_allclose(out["logits"], logits.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["valence_arousal"], va.numpy(), rtol=1e-5, atol=1e-6)
    assert out["logits"].dtype == np.float32
    with pytest.raises(ValueError, match=r"input shape \[3, 3, 48, 48\]; expected \[N, 1, 48, 48\]"):
        session.run(np.zeros((3, 3, 48, 48), np.float32))


def test_temporal_checkpoint_serves_encoder_and_sequence(temporal_ckpt: Path) -> None:
    backend = TorchBackend()
    encoder = backend.load(temporal_ckpt, "encoder", 8)
    sequence = backend.load(temporal_ckpt, "sequence", 8)
    assert encoder.metadata.feature_dim == sequence.metadata.feature_dim == 16
    assert (encoder.metadata.sequence_length, sequence.metadata.sequence_length) == (1, 4)
    images = np.random.default_rng(1).standard_normal((2, 4, 1, 48, 48)).astype(np.float32)
    features = encoder.run(images.reshape(8, 1, 48, 48))["features"]
    out = sequence.run(features.reshape(2, 4, 16))
    model, _ = checkpoint.load_checkpoint(temporal_ckpt)
    with torch.no_grad():
        logits, va = model(torch.from_numpy(images))
    np.testing.assert_allclose(out["logits"], logits.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["valence_arousal"], va.numpy(), rtol=1e-4, atol=1e-5)


def test_affect_model_runs_on_the_torch_backend(temporal_ckpt: Path, frame_ckpt: Path, fer_root: Path) -> None:
    import cv2

    files = sorted((fer_root / "PublicTest" / "surprise").glob("*.jpg"))[:4]
    crops = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)[:, :, None] for p in files])
    temporal = create_affect_model(ModelConfig(kind="temporal", backend="torch", encoder_model=str(temporal_ckpt),
                                               sequence_model=str(temporal_ckpt)), max_batch=8)
    assert temporal is not None and temporal.backend_name == "torch"
    features = temporal.encode(crops)
    estimates = temporal.predict_sequences(np.repeat(features[:, None], 4, axis=1), [1, 2, 3, 4])
    frame = create_affect_model(ModelConfig(kind="frame", backend="torch", frame_model=str(frame_ckpt)), max_batch=8)
    assert frame is not None
    estimates += frame.predict_frames(crops)
    for estimate in estimates:
        assert estimate is not None
        assert estimate.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
        assert -1 <= estimate.valence <= 1 and -1 <= estimate.arousal <= 1


def test_load_errors_are_clear(temporal_ckpt: Path, frame_ckpt: Path, tmp_path: Path) -> None:
    backend = TorchBackend()
    with pytest.raises(ModelContractError, match=r"this is a temporal checkpoint, it has no 'frame' graph; configure "
                                                 r"it as model\.encoder_model and model\.sequence_model"):
        backend.load(temporal_ckpt, "frame", 8)
    with pytest.raises(ModelContractError, match=r"this is a frame checkpoint, it has no 'encoder' graph"):
        backend.load(frame_ckpt, "encoder", 8)
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"the torch backend runs training checkpoints \(\.pt, \.pth, \.ckpt\), "
                                             r"not \.onnx files; for ONNX models use model\.backend onnxruntime"):
        backend.load(onnx_file, "frame", 8)
    with pytest.raises(AssetMissingError, match=r"checkpoint .*absent\.pt does not exist"):
        backend.load(tmp_path / "absent.pt", "frame", 8)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match=r"cannot read checkpoint .*junk\.pt"):
        backend.load(junk, "frame", 8)


def test_metadata_from_incomplete_checkpoint() -> None:
    model = models.create_model("compact_cnn", backbone_kwargs=SMALL["backbone_kwargs"])
    with pytest.raises(ModelContractError, match=r"x\.pt: checkpoint lacks \['mean', 'std'\]; it was not written by "
                                                 r"training\.train"):
        metadata_from_checkpoint({"class_names": ["a"], "input_size": 48, "channels": 1, "model_name": "m"},
                                 model, "frame", "x.pt")
    bad = {"class_names": ["a"], "input_size": 48, "channels": 1, "model_name": "m", "mean": [0.5, 0.5], "std": [1]}
    with pytest.raises(ModelContractError, match=r"mean/std have 2/1 values for 1 channels"):
        metadata_from_checkpoint(bad, model, "frame", "x.pt")


def test_runtime_commands_run_checkpoints_through_training_torch_backend(frame_ckpt: Path, tmp_path: Path) -> None:
    """``python -m training.torch_backend ARGS`` is ``ros2-affect ARGS`` with the backend provided."""
    import json

    from training import torch_backend

    params = tmp_path / "params.yaml"
    params.write_text(
        "affect_node:\n  ros__parameters:\n    model:\n"
        f"      kind: frame\n      backend: torch\n      fallback_backend: none\n      frame_model: {frame_ckpt}\n"
    )
    photo = Path(__file__).resolve().parents[2] / "ros2_affect" / "data" / "astronaut.jpg"
    out = tmp_path / "out"
    assert torch_backend.main(["run", str(photo), "--out", str(out), "--no-video", "--config", str(params)]) == 0
    (line,) = (out / "results.jsonl").read_text().splitlines()
    assert "compact_cnn-frame" in json.dumps(json.loads(line))  # the checkpoint's model id, from the torch backend
