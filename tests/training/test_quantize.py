"""training.quantize on the bundled float models, calibrated and checked on real FER2013 faces."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict

import numpy as np
import onnx
import pytest

from ros2_affect.assets import DEFAULT_ENCODER_MODEL, DEFAULT_FRAME_MODEL, DEFAULT_SEQUENCE_MODEL, bundled_model_path
from ros2_affect.backends import create_backend
from ros2_affect.backends.base import read_onnx_metadata
from ros2_affect.core.affect_model import FrameAffectModel, TemporalAffectModel
from ros2_affect.errors import ModelContractError
from training.quantize import calibration_faces, int8_path, main, quantize_model


@pytest.fixture(scope="module")
def faces(fer_tarball: Path) -> Dict[str, np.ndarray]:
    return calibration_faces(fer_tarball, "Training", images=200, check_images=300)


def test_calibration_and_check_faces_are_disjoint(faces: Dict[str, np.ndarray]) -> None:
    cal, check = faces["calibration"], faces["check"]
    assert cal.shape == (200, 48, 48) and check.shape == (300, 48, 48) and cal.dtype == np.uint8
    cal_rows = {c.tobytes() for c in cal}
    assert sum(c.tobytes() in cal_rows for c in check) <= 2  # FER2013 has a few duplicate images


def test_frame_model_int8_agrees_with_float_and_says_so(tmp_path: Path, faces: Dict[str, np.ndarray]) -> None:
    src = bundled_model_path(DEFAULT_FRAME_MODEL)
    out = tmp_path / "frame_int8.onnx"
    report = quantize_model(src, faces["calibration"], faces["check"], out, calibration_source="FER2013 Training")
    assert report["agreement_kind"] == "top-1 class" and report["agreement"] >= 0.97 and report["check_faces"] == 300

    graph = onnx.load(str(out))
    ops = {n.op_type for n in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.graph.initializer)  # weights stored as int8
    assert out.stat().st_size < 0.4 * src.stat().st_size

    meta, float_meta = read_onnx_metadata(out), read_onnx_metadata(src)
    assert meta.model_id == float_meta.model_id and meta.class_names == float_meta.class_names
    recorded = json.loads(meta.extra["quantization"])
    assert recorded["float_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert recorded["agreement"] == report["agreement"] and "200 faces of FER2013 Training" in recorded["calibration"]

    # Through the runtime on the held-out faces: same classes almost always, close probabilities.
    backend = create_backend("onnxruntime")
    q_model, f_model = (
        FrameAffectModel(backend.load(out, "frame", 64)),
        FrameAffectModel(backend.load(src, "frame", 64)),
    )
    assert q_model.model_id == f_model.model_id + "-int8" and q_model.quantized and not f_model.quantized
    assert q_model.quantization == recorded
    crops = faces["check"][:, :, :, None]
    q, f = q_model.predict_frames(crops), f_model.predict_frames(crops)
    q_probs = np.array([e.probabilities for e in q if e is not None])
    f_probs = np.array([e.probabilities for e in f if e is not None])
    assert q_probs.shape == f_probs.shape == (300, 7)
    assert np.mean(q_probs.argmax(1) == f_probs.argmax(1)) >= 0.97
    assert np.median(np.abs(q_probs - f_probs)) < 0.02


def test_encoder_int8_features_point_the_same_way(tmp_path: Path, faces: Dict[str, np.ndarray]) -> None:
    src = bundled_model_path(DEFAULT_ENCODER_MODEL)
    report = quantize_model(src, faces["calibration"], faces["check"], tmp_path / "enc_int8.onnx")
    assert report["agreement_kind"] == "mean cosine of features" and report["agreement"] >= 0.99
    # The float sequence head takes the int8 encoder's features.
    backend = create_backend("onnxruntime")
    model = TemporalAffectModel(
        backend.load(tmp_path / "enc_int8.onnx", "encoder", 8),
        backend.load(bundled_model_path(DEFAULT_SEQUENCE_MODEL), "sequence", 8),
    )
    assert model.kind == "temporal" and model.model_id.endswith("-int8")


def test_refusals_write_nothing(tmp_path: Path, faces: Dict[str, np.ndarray]) -> None:
    cal, check = faces["calibration"][:32], faces["check"][:32]
    with pytest.raises(ModelContractError, match="role 'sequence'; only frame and encoder"):
        quantize_model(bundled_model_path(DEFAULT_SEQUENCE_MODEL), cal, check, tmp_path / "s.onnx")
    out = tmp_path / "never.onnx"
    with pytest.raises(ModelContractError, match=r"agrees with the float one on .* below --min-agreement 1.01"):
        quantize_model(bundled_model_path(DEFAULT_FRAME_MODEL), cal, check, out, min_agreement=1.01)
    assert not out.exists()
    with pytest.raises(ModelContractError, match="already quantised"):
        quantize_model(int8_path(bundled_model_path(DEFAULT_FRAME_MODEL)), cal, check, tmp_path / "again.onnx")


def test_cli_prints_one_report_per_model(tmp_path: Path, fer_tarball: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "frame.onnx"
    src.write_bytes(bundled_model_path(DEFAULT_FRAME_MODEL).read_bytes())
    args = ["--model", str(src), "--data", str(fer_tarball), "--images", "64", "--check-images", "64"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["file"] == str(tmp_path / "frame_int8.onnx") and Path(report["file"]).is_file()
    assert main([*args, "--min-agreement", "1.5"]) == 1
    assert "below --min-agreement 1.5" in capsys.readouterr().out
    assert main(["--model", str(src), "--data", str(tmp_path / "no_fer.tar.gz")]) == 1
    assert "no_fer.tar.gz does not exist" in capsys.readouterr().out
    assert main(["--model", str(src), "--data", str(fer_tarball), "--images", "30000"]) == 1
    assert "--images + --check-images need 32000" in capsys.readouterr().out
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not an onnx file")
    assert main(["--model", str(corrupt), "--data", str(fer_tarball), "--images", "8", "--check-images", "8"]) == 1
    assert "corrupt.onnx is not a loadable ONNX model" in capsys.readouterr().out
