"""TensorRT backend: what runs everywhere (availability, engine I/O checks, trtexec lines,
calibration data, metadata), and a GPU round trip that runs where TensorRT is installed."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from ros2_affect.backends import tensorrt_backend as trtb
from ros2_affect.backends.base import ModelMetadata, read_onnx_metadata
from ros2_affect.backends.tensorrt_backend import (
    TensorInfo,
    TensorRTBackend,
    check_engine_io,
    input_shape,
    load_calibration_images,
    trtexec_command,
)
from ros2_affect.errors import (
    AssetMissingError,
    BackendUnavailableError,
    ConfigError,
    ModelContractError,
    ModelLoadError,
)
from tests.backends.affect_graphs import graph_metadata, write_graph

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def _io(meta: ModelMetadata, max_batch: int = 8, **changes: object) -> list:
    """The I/O an engine built correctly from ``meta`` reports."""
    infos = [TensorInfo("image" if meta.role != "sequence" else "features", True, input_shape(meta, -1), "float32",
                        input_shape(meta, max_batch))]
    for name, shape in trtb.output_shapes(meta).items():
        infos.append(TensorInfo(name, False, shape, "float32"))
    return infos


# -- availability and failure paths here ---------------------------------------------------------


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here: the not-installed path cannot be exercised")
def test_is_available_says_tensorrt_is_missing_without_raising() -> None:
    ok, reason = TensorRTBackend.is_available()
    assert not ok
    assert reason.startswith("tensorrt is not installed: No module named 'tensorrt'")
    assert "JetPack" in reason


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here")
def test_load_and_build_fail_clearly_without_tensorrt(tmp_path: Path) -> None:
    model = write_graph(tmp_path / "frame.onnx", "frame")
    backend = TensorRTBackend(precision="fp16", engine_cache_dir=str(tmp_path / "cache"))
    with pytest.raises(BackendUnavailableError, match=r"tensorrt is not installed"):
        backend.load(model, "frame", 8)
    with pytest.raises(BackendUnavailableError, match=r"tensorrt is not installed"):
        trtb.build_engine(model, tmp_path / "frame.engine")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "frame.engine").exists()


def test_load_missing_file_and_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(AssetMissingError, match=r"model file .*absent\.onnx does not exist; check model\.frame_model"):
        TensorRTBackend().load(tmp_path / "absent.onnx", "frame", 8)
    with pytest.raises(ConfigError, match=r"model\.precision = 'bf16' is not accepted; choose one of fp32, fp16, int8"):
        TensorRTBackend(precision="bf16")
    model = write_graph(tmp_path / "frame.onnx", "frame")
    with pytest.raises(ConfigError, match=r"precision 'half' is not accepted"):
        trtb.build_engine(model, precision="half")
    with pytest.raises(ConfigError, match=r"max_batch = 0; expected an integer in \[1, 64\]"):
        trtb.build_engine(model, max_batch=0)


# -- ONNX metadata ------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["frame", "encoder", "sequence"])
def test_read_onnx_metadata_of_real_graphs(tmp_path: Path, role: str) -> None:
    path = write_graph(tmp_path / f"{role}.onnx", role)
    assert read_onnx_metadata(path) == graph_metadata(role)


def test_read_onnx_metadata_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelLoadError, match=r"junk\.onnx is not a loadable ONNX model .*; re-export it"):
        read_onnx_metadata(junk)
    bare = write_graph(tmp_path / "bare.onnx", "frame", with_metadata=False)
    with pytest.raises(ModelContractError, match=r"bare\.onnx: missing model metadata ros2_affect\.contract_version"):
        read_onnx_metadata(bare)
    with pytest.raises(AssetMissingError, match="does not exist"):
        read_onnx_metadata(tmp_path / "nope.onnx")


# -- engine I/O checks --------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["frame", "encoder", "sequence"])
def test_check_engine_io_accepts_a_matching_engine(role: str) -> None:
    meta = graph_metadata(role)
    check_engine_io(_io(meta), meta, 8, "m.engine")
    check_engine_io(_io(meta, max_batch=16), meta, 8, "m.engine")  # a larger profile is fine


def test_check_engine_io_rejects_mismatches() -> None:
    meta = graph_metadata("frame")
    io = _io(meta)
    wrong_channels = [TensorInfo("image", True, (-1, 3, 48, 48), "float32", (8, 3, 48, 48))] + io[1:]
    with pytest.raises(ModelContractError, match=r"input 'image' has shape \[-1, 3, 48, 48\], the metadata says "
                                                 r"\[-1, 1, 48, 48\]"):
        check_engine_io(wrong_channels, meta, 8, "m.engine")
    fixed_batch = [TensorInfo("image", True, (1, 1, 48, 48), "float32", (1, 1, 48, 48))] + io[1:]
    with pytest.raises(ModelContractError, match=r"has a fixed batch of 1; engines need a dynamic face axis"):
        check_engine_io(fixed_batch, meta, 8, "m.engine")
    with pytest.raises(ModelContractError, match=r"accepts at most 4 faces per batch, 8 were configured .*"
                                                 r"--max-faces 8"):
        check_engine_io(_io(meta, max_batch=4), meta, 8, "m.engine")
    wrong_classes = io[:1] + [TensorInfo("logits", False, (-1, 8), "float32"), io[2]]
    with pytest.raises(ModelContractError, match=r"output 'logits' has shape \[-1, 8\], expected \[-1, 7\]"):
        check_engine_io(wrong_classes, meta, 8, "m.engine")
    half_io = io[:1] + [TensorInfo("logits", False, (-1, 7), "float16"), io[2]]
    with pytest.raises(ModelContractError, match=r"tensor 'logits' is float16; engine inputs and outputs must stay "
                                                 r"float32"):
        check_engine_io(half_io, meta, 8, "m.engine")
    renamed = [TensorInfo("input", True, (-1, 1, 48, 48), "float32", (8, 1, 48, 48))] + io[1:]
    with pytest.raises(ModelContractError, match=r"inputs \['input'\]; a frame graph takes exactly \['image'\]"):
        check_engine_io(renamed, meta, 8, "m.engine")
    seq = graph_metadata("sequence", length=8)
    short = [TensorInfo("features", True, (-1, 4, 16), "float32", (8, 4, 16))] + _io(seq)[1:]
    with pytest.raises(ModelContractError, match=r"input 'features' has shape \[-1, 4, 16\], the metadata says "
                                                 r"\[-1, 8, 16\]"):
        check_engine_io(short, seq, 8, "m.engine")


# -- trtexec ------------------------------------------------------------------------------------------


def test_trtexec_command_from_real_model_metadata(tmp_path: Path) -> None:
    frame = read_onnx_metadata(write_graph(tmp_path / "frame.onnx", "frame", channels=1, size=48))
    assert trtexec_command("m.onnx", "m.engine", frame, "fp16", 8) == [
        "trtexec", "--onnx=m.onnx", "--saveEngine=m.engine", "--minShapes=image:1x1x48x48",
        "--optShapes=image:4x1x48x48", "--maxShapes=image:8x1x48x48", "--fp16",
    ]
    rgb = read_onnx_metadata(write_graph(tmp_path / "enc.onnx", "encoder", channels=3, size=112))
    assert trtexec_command("e.onnx", "e.engine", rgb, "fp32", 2)[3:] == [
        "--minShapes=image:1x3x112x112", "--optShapes=image:2x3x112x112", "--maxShapes=image:2x3x112x112",
    ]
    seq = read_onnx_metadata(write_graph(tmp_path / "seq.onnx", "sequence", length=8, dim=16))
    assert trtexec_command("s.onnx", "s.engine", seq, "fp16", 8)[3:] == [
        "--minShapes=features:1x8x16", "--optShapes=features:4x8x16", "--maxShapes=features:8x8x16", "--fp16",
    ]
    # int8: image graphs get --int8 and the calibration cache, the sequence head stays fp16
    assert trtexec_command("m.onnx", "m.engine", frame, "int8", 8, "m.calib", workspace_mb=512)[6:] == [
        "--fp16", "--int8", "--calib=m.calib", "--memPoolSize=workspace:512",
    ]
    assert trtexec_command("s.onnx", "s.engine", seq, "int8", 8)[6:] == ["--fp16"]
    with pytest.raises(ConfigError, match="precision 'tf32' is not accepted"):
        trtexec_command("m.onnx", "m.engine", frame, "tf32")


def test_format_command_quotes_paths() -> None:
    assert trtb.format_command(["trtexec", "--onnx=my model.onnx"]) == "trtexec '--onnx=my model.onnx'"


# -- INT8 calibration data ----------------------------------------------------------------------------


def test_calibration_images_are_preprocessed_like_the_runtime(fer_root: Path, tmp_path: Path) -> None:
    import cv2

    from ros2_affect.backends.preprocess import to_model_input

    calib = tmp_path / "calib"
    (calib / "sub").mkdir(parents=True)
    files = sorted((fer_root / "PublicTest" / "happy").glob("*.jpg"))[:6]
    for i, path in enumerate(files):
        shutil.copy(path, calib / ("sub" if i % 2 else ".") / f"{i:02d}.jpg")
    (calib / "notes.txt").write_text("not an image")
    meta = graph_metadata("frame", channels=1, size=48)
    batch = load_calibration_images(calib, meta)
    ordered = sorted(p for p in calib.rglob("*.jpg"))
    crops = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)[:, :, None] for p in ordered])
    assert batch.shape == (6, 1, 48, 48) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch, to_model_input(crops, meta.mean, meta.std))
    assert len(load_calibration_images(calib, meta, max_images=4)) == 4

    # a 3-channel model at another size: gray crops become RGB and are resized
    rgb = graph_metadata("frame", channels=3, size=64)
    batch3 = load_calibration_images(calib, rgb, max_images=2)
    assert batch3.shape == (2, 3, 64, 64)
    np.testing.assert_allclose(batch3[:, 0], batch3[:, 2])  # gray in, equal channels out


def test_calibration_folder_errors(tmp_path: Path) -> None:
    meta = graph_metadata("frame")
    with pytest.raises(ConfigError, match=r"calibration folder .*missing does not exist; pass --calib DIR"):
        load_calibration_images(tmp_path / "missing", meta)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ConfigError, match=r"holds no readable image .*a few hundred face crops"):
        load_calibration_images(tmp_path / "empty", meta)


# -- on a GPU with TensorRT ---------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("role", ["frame", "sequence"])
def test_engine_round_trip_matches_onnxruntime(tmp_path: Path, role: str) -> None:
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (GPU machines only)")
    ok, reason = TensorRTBackend.is_available()
    if not ok:
        pytest.skip(reason)
    import onnxruntime as ort

    model = write_graph(tmp_path / f"{role}.onnx", role)
    backend = TensorRTBackend(precision="fp16", engine_cache_dir=str(tmp_path / "cache"))
    session = backend.load(model, role, 8)
    entries = backend.cache.entries()
    assert len(entries) == 1
    reference = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for n in (1, 3, 8, 11):  # 11 > max_batch: run in chunks
        x = rng.standard_normal((n,) + input_shape(session.metadata, 1)[1:]).astype(np.float32)
        got = session.run(x)
        want = dict(zip(["logits", "valence_arousal"], reference.run(["logits", "valence_arousal"],
                                                                     {reference.get_inputs()[0].name: x}),
                        strict=True))
        for name in want:
            assert got[name].shape == want[name].shape and got[name].dtype == np.float32
            np.testing.assert_allclose(got[name], want[name], rtol=2e-2, atol=2e-2)  # fp16 tolerance
    session.close()
    session.close()  # idempotent
    # the second load comes from the cache
    again = backend.load(model, role, 8)
    assert backend.cache.entries() == entries
    again.close()
    # a prebuilt engine loads by path with its sidecar, and not without it
    prebuilt = backend.load(entries[0], role, 8)
    prebuilt.close()
    copy = tmp_path / "copy.engine"
    shutil.copy(entries[0], copy)
    with pytest.raises(ModelLoadError, match=r"no metadata sidecar copy\.engine\.json"):
        backend.load(copy, role, 8)
    with pytest.raises(ModelContractError, match=r"this is a 'frame' graph but a 'encoder' graph|"
                                                 r"this is a 'sequence' graph but a 'encoder' graph"):
        backend.load(model, "encoder", 8)


# -- fallback through the registry --------------------------------------------------------------------


def test_registered_under_its_name() -> None:
    from ros2_affect.backends import BACKENDS

    assert BACKENDS.get("tensorrt") is TensorRTBackend


def test_fallback_to_onnxruntime_when_tensorrt_cannot_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """model.backend: tensorrt on a machine without TensorRT/GPU: one warning with the real
    reason from is_available(), and the onnxruntime fallback serves the model."""
    import logging

    from ros2_affect.backends import create_backend_with_fallback

    ok, reason = TensorRTBackend.is_available()
    if ok:
        pytest.skip("TensorRT can run here: no fallback happens")
    logger = logging.getLogger("test.fallback")
    with caplog.at_level(logging.WARNING, logger="test.fallback"):
        backend = create_backend_with_fallback("tensorrt", "onnxruntime", device="cuda", threads=1, logger=logger,
                                               precision="fp16", engine_cache_dir=str(tmp_path / "cache"))
    assert backend.name == "onnxruntime"
    warnings = [r.getMessage() for r in caplog.records if r.name == "test.fallback"]
    assert len(warnings) == 1
    assert f"inference backend 'tensorrt' cannot run here: {reason}" in warnings[0]
    assert "using the fallback backend 'onnxruntime'" in warnings[0]
    session = backend.load(write_graph(tmp_path / "frame.onnx", "frame"), "frame", 8)
    out = session.run(np.zeros((2, 1, 48, 48), np.float32))
    assert out["logits"].shape == (2, 7) and np.isfinite(out["logits"]).all()
    assert not (tmp_path / "cache").exists()
