"""training.evaluate on real FER2013 PublicTest images with exported tiny models.

Expected numbers are computed independently in the tests: images read with OpenCV,
normalised by hand, run through a bare onnxruntime session.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Tuple

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch

from ros2_affect.core.types import CANONICAL_EXPRESSIONS
from training import evaluate, export
from training.checkpoint import FORMAT
from training.data.labels import FER2013_FOLDERS
from training.models import create_model

PER_CLASS = 10
MEAN, STD = 0.5, 0.25


@pytest.fixture(scope="module")
def fer_subset(fer_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 real PublicTest images per class (FER2013 folder names: angry, disgust, ...)."""
    out = tmp_path_factory.mktemp("fer_subset")
    for folder in sorted((fer_root / "PublicTest").iterdir()):
        (out / folder.name).mkdir()
        for path in sorted(folder.glob("*.jpg"))[:PER_CLASS]:
            shutil.copy(path, out / folder.name / path.name)
    return out


def _ckpt(name: str, kwargs: Dict[str, Any], model: torch.nn.Module) -> Dict[str, Any]:
    return {
        "format": FORMAT,
        "model_name": name,
        "model_kwargs": kwargs,
        "state_dict": model.state_dict(),
        "class_names": list(CANONICAL_EXPRESSIONS),
        "input_size": 48,
        "channels": 1,
        "mean": [MEAN],
        "std": [STD],
        "alignment": {},
        "sequence_length": int(getattr(model, "sequence_length", 1)),
        "va_mode": "regressed",
        "training_data": "none (random weights)",
        "config": {},
        "epoch": 0,
        "metrics": {},
    }


def _fit_linear(layer: torch.nn.Linear, features: torch.Tensor, y: np.ndarray) -> None:
    """Least-squares fit of a final linear layer to one-hot targets: random weights predict
    one class for every face, which would make the accuracy comparisons below vacuous.
    (Closed form: a few gradient steps cost minutes on a shared 2-core machine.)"""
    f = torch.cat([features.double(), torch.ones(len(features), 1, dtype=torch.float64)], dim=1)
    target = torch.nn.functional.one_hot(torch.from_numpy(y), 7).double() * 4.0 - 2.0
    solution = torch.linalg.lstsq(f.T @ f + 1e-3 * torch.eye(f.shape[1], dtype=torch.float64), f.T @ target).solution
    with torch.no_grad():
        layer.weight.copy_(solution[:-1].T.float())
        layer.bias.copy_(solution[-1].float())


@pytest.fixture(scope="module")
def models(fer_subset: Path, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """A tiny frame model (checkpoint + ONNX) and a tiny temporal model (ONNX pair + sidecar),
    briefly fitted to the subset so that they predict several classes."""
    out = tmp_path_factory.mktemp("models")
    x, y = _direct_inputs(fer_subset)
    torch.manual_seed(0)
    kwargs: Dict[str, Any] = {"backbone_kwargs": {"widths": (8, 16), "n_convs": 1}}
    frame = create_model("compact_cnn", **kwargs).eval()
    with torch.no_grad():
        _fit_linear(frame.classifier, frame.backbone(torch.from_numpy(x)), y)
    ckpt = _ckpt("compact_cnn", kwargs, frame)
    torch.save(ckpt, out / "frame.pt")
    export.export_model(frame, ckpt, out / "frame.onnx")
    t_kwargs: Dict[str, Any] = dict(kwargs, sequence_length=3)
    temporal = create_model("cnn_rnn", **t_kwargs).eval()
    with torch.no_grad():
        feats = temporal.encoder(torch.from_numpy(x))
        hidden = temporal.sequence_head.rnn(feats[:, None].expand(-1, 3, -1))[0][:, -1]
        _fit_linear(temporal.sequence_head.classifier, hidden, y)
    export.export_model(temporal, _ckpt("cnn_rnn", t_kwargs, temporal), out, name="seq")
    return {
        "pt": out / "frame.pt",
        "onnx": out / "frame.onnx",
        "encoder": out / "seq_encoder.onnx",
        "sequence": out / "seq_sequence.onnx",
        "sidecar": out / "seq.json",
    }


def _direct_inputs(root: Path) -> Tuple[np.ndarray, np.ndarray]:
    """(N, 1, 48, 48) normalised float32 and (N,) canonical labels, read without the tool."""
    xs: List[np.ndarray] = []
    ys: List[int] = []
    for folder in sorted(root.iterdir()):
        label = CANONICAL_EXPRESSIONS.index(FER2013_FOLDERS[folder.name])
        for path in sorted(folder.glob("*.jpg")):
            grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            assert grey.shape == (48, 48)
            xs.append(((grey.astype(np.float32) / 255.0 - MEAN) / STD)[None])
            ys.append(label)
    return np.stack(xs), np.asarray(ys)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _run_json(args: List[str], capsys: pytest.CaptureFixture[str]) -> Dict[str, Any]:
    assert evaluate.main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_onnx_frame_model_report_matches_direct_computation(
    fer_subset: Path, models: Dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    png = tmp_path / "cm.png"
    report = _run_json(["--model", str(models["onnx"]), "--data", str(fer_subset), "--confusion", str(png)], capsys)
    for key in ("accuracy", "macro_f1", "mean_class_accuracy", "per_class_recall", "per_class_precision", "n",
                "model_id"):
        assert key in report
    assert report["n"] == 7 * PER_CLASS and report["model_id"] == "compact_cnn-1.0"
    assert set(report["per_class_recall"]) == set(CANONICAL_EXPRESSIONS)
    x, y = _direct_inputs(fer_subset)
    (logits, _) = ort.InferenceSession(str(models["onnx"]), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    pred = logits.argmax(axis=1)
    assert len(set(pred.tolist())) >= 3  # the comparison is not vacuous
    assert report["accuracy"] == pytest.approx(float(np.mean(pred == y)))
    for i, name in enumerate(CANONICAL_EXPRESSIONS):
        assert report["per_class_recall"][name] == pytest.approx(float(np.mean(pred[y == i] == i)))
        assert report["per_class_support"][name] == PER_CLASS
    cm = np.zeros((7, 7), int)
    np.add.at(cm, (y, pred), 1)
    assert report["confusion_matrix"] == cm.tolist()
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 200 and image.shape[1] > 200


def test_checkpoint_and_its_export_score_the_same(
    fer_subset: Path, models: Dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from_pt = _run_json(["--model", str(models["pt"]), "--data", str(fer_subset)], capsys)
    from_onnx = _run_json(["--model", str(models["onnx"]), "--data", str(fer_subset)], capsys)
    assert from_pt["confusion_matrix"] == from_onnx["confusion_matrix"]
    assert from_pt["accuracy"] == from_onnx["accuracy"]


def test_flip_tta_averages_mirrored_probabilities(
    fer_subset: Path, models: Dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    report = _run_json(["--model", str(models["onnx"]), "--data", str(fer_subset), "--tta", "flip"], capsys)
    assert report["tta"] == "flip"
    x, y = _direct_inputs(fer_subset)
    sess = ort.InferenceSession(str(models["onnx"]), providers=["CPUExecutionProvider"])
    mirrored = np.ascontiguousarray(x[..., ::-1])
    probs = (_softmax(sess.run(None, {"image": x})[0]) + _softmax(sess.run(None, {"image": mirrored})[0])) / 2
    plain = sess.run(None, {"image": x})[0].argmax(axis=1)
    assert (probs.argmax(axis=1) != plain).any()  # flipping changes some predictions here
    assert report["accuracy"] == pytest.approx(float(np.mean(probs.argmax(axis=1) == y)))


def test_temporal_model_replicates_each_still(
    fer_subset: Path, models: Dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # any of the two graphs or the sidecar names the same model
    reports = [
        _run_json(["--model", str(models[k]), "--data", str(fer_subset)], capsys)
        for k in ("encoder", "sequence", "sidecar")
    ]
    assert reports[0]["confusion_matrix"] == reports[1]["confusion_matrix"] == reports[2]["confusion_matrix"]
    report = reports[0]
    assert report["kind"] == "temporal" and report["temporal_input"] == "replicated"
    x, y = _direct_inputs(fer_subset)
    enc = ort.InferenceSession(str(models["encoder"]), providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(models["sequence"]), providers=["CPUExecutionProvider"])
    (feats,) = enc.run(None, {"image": x})
    logits, _ = head.run(None, {"features": np.repeat(feats[:, None], 3, axis=1)})
    assert len(set(logits.argmax(axis=1).tolist())) >= 3
    assert report["accuracy"] == pytest.approx(float(np.mean(logits.argmax(axis=1) == y)))


def test_temporal_model_on_augmented_sequences_is_seeded(
    fer_subset: Path, models: Dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--model", str(models["sidecar"]), "--data", str(fer_subset), "--sequences", "--limit-per-class", "4"]
    first = _run_json(args, capsys)
    second = _run_json(args, capsys)
    assert first["n"] == 28 and first["temporal_input"] == "sequences"
    assert first["confusion_matrix"] == second["confusion_matrix"]


def test_bad_data_folders_are_reported(
    fer_root: Path, fer_subset: Path, models: Dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the dataset root instead of a split folder
    assert evaluate.main(["--model", str(models["onnx"]), "--data", str(fer_root)]) == 1
    err = capsys.readouterr().err
    assert "class folder 'PublicTest'" in err and "pass the split folder" in err
    # a class this model does not have
    data = tmp_path / "data"
    shutil.copytree(fer_subset / "happy", data / "happy")
    shutil.copytree(fer_subset / "sad", data / "contempt")
    assert evaluate.main(["--model", str(models["onnx"]), "--data", str(data)]) == 1
    assert "class folder 'contempt'" in capsys.readouterr().err
    # an unreadable image is skipped and counted, not fatal
    shutil.rmtree(data / "contempt")
    (data / "happy" / "broken.jpg").write_bytes(b"not a jpeg")
    report = _run_json(["--model", str(models["onnx"]), "--data", str(data)], capsys)
    assert report["n"] == PER_CLASS and report["skipped_files"] == 1


def test_missing_model_file(fer_subset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate.main(["--model", str(tmp_path / "x.onnx"), "--data", str(fer_subset)]) == 1
    assert "x.onnx does not exist" in capsys.readouterr().err
