"""The ONNX Runtime backend on real contract graphs, and the backend registry."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from ros2_affect.backends import BACKENDS, create_backend, create_backend_with_fallback
from ros2_affect.backends.onnxruntime_backend import OnnxRuntimeBackend
from ros2_affect.errors import (
    AssetMissingError,
    BackendUnavailableError,
    ModelContractError,
    ModelLoadError,
    UnknownNameError,
)
from tests.backends.affect_graphs import write_graph


@pytest.fixture()
def backend() -> OnnxRuntimeBackend:
    created = create_backend("onnxruntime", "cpu", 1)
    assert isinstance(created, OnnxRuntimeBackend)
    return created


def test_registry_has_onnxruntime_and_is_frozen() -> None:
    assert "onnxruntime" in BACKENDS.names()
    with pytest.raises(RuntimeError, match="read-only after import"):
        BACKENDS.register("late")(OnnxRuntimeBackend)
    with pytest.raises(UnknownNameError, match=r"unknown inference backend 'onxruntime'.*did you mean 'onnxruntime'\?"):
        create_backend("onxruntime")


def test_frame_graph_runs_and_returns_outputs_by_name(tmp_path: Path, backend: OnnxRuntimeBackend) -> None:
    session = backend.load(write_graph(tmp_path / "f.onnx", "frame"), "frame", max_batch=8)
    assert session.metadata.role == "frame" and session.metadata.class_names[0] == "neutral"
    assert session.providers == ("CPUExecutionProvider",)
    x = np.random.default_rng(0).standard_normal((3, 1, 48, 48)).astype(np.float32)
    out = session.run(x)
    assert set(out) == {"logits", "valence_arousal"}
    assert out["logits"].shape == (3, 7) and out["valence_arousal"].shape == (3, 2)
    assert out["logits"].dtype == np.float32
    # deterministic, and each row depends on its own input only
    again = session.run(x[1:2])
    np.testing.assert_allclose(again["logits"][0], out["logits"][1], rtol=1e-5, atol=1e-6)
    wrong_shape = r"input batch has shape \(2, 3, 48, 48\); this graph takes \['N', 1, 48, 48\]"
    with pytest.raises(ValueError, match=wrong_shape):
        session.run(np.zeros((2, 3, 48, 48), np.float32))
    session.close()
    with pytest.raises(ModelLoadError, match="this session was closed"):
        session.run(x)


def test_encoder_and_sequence_graphs(tmp_path: Path, backend: OnnxRuntimeBackend) -> None:
    encoder = backend.load(write_graph(tmp_path / "e.onnx", "encoder", dim=16), "encoder", 8)
    sequence = backend.load(write_graph(tmp_path / "s.onnx", "sequence", length=4, dim=16), "sequence", 8)
    features = encoder.run(np.zeros((2, 1, 48, 48), np.float32))["features"]
    assert features.shape == (2, 16)
    out = sequence.run(np.stack([np.stack([features[0]] * 4)] * 2))
    assert out["logits"].shape == (2, 7)


def test_derived_va_graph_drops_the_regressed_output(tmp_path: Path, backend: OnnxRuntimeBackend) -> None:
    session = backend.load(write_graph(tmp_path / "d.onnx", "frame", va_mode="derived"), "frame", 4)
    assert set(session.run(np.zeros((1, 1, 48, 48), np.float32))) == {"logits"}


def test_missing_file(tmp_path: Path, backend: OnnxRuntimeBackend) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(AssetMissingError, match=rf"model file {missing} does not exist; set model.frame_model"):
        backend.load(missing, "frame", 4)


def test_corrupt_file(tmp_path: Path, backend: OnnxRuntimeBackend) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    message = rf"{corrupt}: onnxruntime cannot load this file .*check the file is an ONNX model"
    with pytest.raises(ModelLoadError, match=message):
        backend.load(corrupt, "frame", 4)


def test_wrong_input_name(tmp_path: Path, backend: OnnxRuntimeBackend) -> None:
    path = write_graph(tmp_path / "in.onnx", "frame", input_name="input")
    with pytest.raises(ModelContractError, match=r"inputs \['input'\]; a frame graph takes exactly \['image'\]"):
        backend.load(path, "frame", 4)


def test_input_shape_disagrees_with_metadata(tmp_path: Path, backend: OnnxRuntimeBackend) -> None:
    path = write_graph(tmp_path / "rgb.onnx", "frame", input_shape=["N", 3, 48, 48])
    with pytest.raises(
        ModelContractError,
        match=r"input 'image' has shape \['N', 3, 48, 48\] but the model's metadata says \['N', 1, 48, 48\] "
        r"\(axis 1: 3 != 1\)",
    ):
        backend.load(path, "frame", 4)
    path = write_graph(tmp_path / "seq.onnx", "sequence", input_shape=["N", 8, 16], length=4)
    with pytest.raises(ModelContractError, match=r"axis 1: 8 != 4"):
        backend.load(path, "sequence", 4)
    path = write_graph(tmp_path / "rank.onnx", "frame", input_shape=["N", 48, 48])
    with pytest.raises(ModelContractError, match=r"input 'image' has rank 3 .* expect shape \['N', 1, 48, 48\]"):
        backend.load(path, "frame", 4)


def test_fixed_batch_axis_is_refused(tmp_path: Path, backend: OnnxRuntimeBackend) -> None:
    path = write_graph(tmp_path / "b1.onnx", "frame", input_shape=[1, 1, 48, 48])
    with pytest.raises(ModelContractError, match="fixed batch axis of 1, but up to 8 faces are batched"):
        backend.load(path, "frame", 8)


def test_missing_metadata_key(tmp_path: Path, backend: OnnxRuntimeBackend) -> None:
    path = write_graph(tmp_path / "meta.onnx", "frame", drop_keys=["model_id"])
    with pytest.raises(ModelContractError, match=r"missing model metadata ros2_affect.model_id; export models with"):
        backend.load(path, "frame", 4)


def test_wrong_role(tmp_path: Path, backend: OnnxRuntimeBackend) -> None:
    path = write_graph(tmp_path / "enc.onnx", "encoder")
    with pytest.raises(ModelContractError, match=r"this is a 'encoder' graph but a 'frame' graph was configured"):
        backend.load(path, "frame", 4)


def test_regressed_va_needs_the_output(tmp_path: Path, backend: OnnxRuntimeBackend) -> None:
    path = write_graph(tmp_path / "nova.onnx", "frame", with_va_output=False)
    message = "va_mode is 'regressed' but the graph has no 'valence_arousal' output"
    with pytest.raises(ModelContractError, match=message):
        backend.load(path, "frame", 4)


def test_class_count_disagrees_with_metadata(tmp_path: Path, backend: OnnxRuntimeBackend) -> None:
    path = write_graph(tmp_path / "k.onnx", "frame", props={"class_names": '["neutral", "happy"]'})
    with pytest.raises(ModelContractError, match=r"output 'logits' has shape \['N', 7\] .* \['N', 2\]"):
        backend.load(path, "frame", 4)


class _Unavailable(OnnxRuntimeBackend):
    @classmethod
    def is_available(cls):  # type: ignore[no-untyped-def]
        return False, "no such accelerator on this machine"


def test_fallback_logs_the_reason_once(caplog: pytest.LogCaptureFixture) -> None:
    with BACKENDS.temporarily("unavailable", _Unavailable):  # a backend that cannot run here
        _check_fallback(caplog)
    assert "unavailable" not in BACKENDS


def _check_fallback(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.fallback")
    with caplog.at_level(logging.WARNING, logger="test.fallback"):
        backend = create_backend_with_fallback("unavailable", "onnxruntime", "cpu", 1, logger)
    assert type(backend) is OnnxRuntimeBackend
    warnings = [r for r in caplog.records if r.name == "test.fallback"]
    assert len(warnings) == 1
    assert "'unavailable' cannot run here: no such accelerator on this machine" in warnings[0].getMessage()
    assert "using the fallback backend 'onnxruntime'" in warnings[0].getMessage()
    with pytest.raises(BackendUnavailableError, match="no such accelerator.*no fallback backend is configured"):
        create_backend_with_fallback("unavailable", "none", "cpu", 1, logger)


def test_backend_specific_options_are_passed_only_where_accepted() -> None:
    backend = create_backend("onnxruntime", "cpu", 2, precision="fp16", engine_cache_dir="/tmp/x")
    assert isinstance(backend, OnnxRuntimeBackend) and backend.threads == 2


def test_cuda_request_without_cuda_provider_falls_back_to_cpu(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import onnxruntime as ort

    backend = create_backend("onnxruntime", "cuda", 1)
    with caplog.at_level(logging.WARNING):
        session = backend.load(write_graph(tmp_path / "f.onnx", "frame"), "frame", 4)
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert session.providers[0] == "CUDAExecutionProvider"
    else:
        assert session.providers == ("CPUExecutionProvider",)
        assert "has no CUDAExecutionProvider" in caplog.text
