"""Every way a model can fail to load ends in a clear error naming the file and the fix
(or, for a backend that cannot run here, in a logged fallback).

Exercised end to end through the factories the node and the CLI use
(:func:`create_affect_model`, :func:`create_pipeline`, :func:`create_detector`,
:func:`create_eye_locator`) with real files: real contract ONNX graphs, truncated copies
of them, the real MediaPipe models in the wrong place, corrupt ``.tflite`` files. The
TensorRT engine-deserialization path needs TensorRT; what runs here is the engine cache's
version check (an engine of another TensorRT version is never looked up) and the
fallback to ONNX Runtime.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from ros2_affect import assets
from ros2_affect.assets import asset_path
from ros2_affect.backends.engine_cache import EngineCache, make_key, read_sidecar
from ros2_affect.config import DetectorConfig, LandmarksConfig, ModelConfig, PipelineConfig
from ros2_affect.core.affect_model import create_affect_model
from ros2_affect.core.detection import create_detector
from ros2_affect.core.landmarks import create_eye_locator
from ros2_affect.core.pipeline import create_pipeline
from ros2_affect.errors import (
    AssetMissingError,
    BackendUnavailableError,
    ConfigError,
    ModelContractError,
    ModelLoadError,
)
from tests.backends.affect_graphs import graph_metadata, write_graph


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    write_graph(root / "frame.onnx", "frame")
    write_graph(root / "encoder.onnx", "encoder", dim=16, model_id="pair-a")
    write_graph(root / "sequence.onnx", "sequence", dim=16, model_id="pair-a")
    return root


def frame_config(path: Path, **options: str) -> ModelConfig:
    return ModelConfig(kind="frame", frame_model=str(path), **options)


def _esc(path: Path) -> str:
    return re.escape(str(path))


# -- ONNX files --------------------------------------------------------------------------------


def test_missing_model_file_names_it_and_the_settings(tmp_path: Path) -> None:
    missing = tmp_path / "emotion.onnx"
    with pytest.raises(AssetMissingError, match=rf"model file {_esc(missing)} does not exist; set model.frame_model"):
        create_affect_model(frame_config(missing))


def test_directory_instead_of_a_model_file(tmp_path: Path) -> None:
    with pytest.raises(AssetMissingError, match=rf"model file {_esc(tmp_path)} is a directory, not a file; set model"):
        create_affect_model(frame_config(tmp_path))


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda good: b"", id="empty"),
        pytest.param(lambda good: good[: len(good) // 2], id="truncated"),
        pytest.param(lambda good: good[:100] + bytes(200) + good[300:], id="zeroed-bytes"),
        pytest.param(lambda good: asset_path("face_landmark").read_bytes(), id="tflite-named-onnx"),
        pytest.param(lambda good: b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n",
                     id="lfs-pointer"),
    ],
)
def test_corrupt_model_file_is_a_load_error_naming_the_file(models: Path, tmp_path: Path, corrupt: object) -> None:
    bad = tmp_path / "frame.onnx"
    bad.write_bytes(corrupt((models / "frame.onnx").read_bytes()))  # type: ignore[operator]
    with pytest.raises(
        ModelLoadError, match=rf"{_esc(bad)}: onnxruntime cannot load this file \(.+\); .*re-export it"
    ) as info:
        create_affect_model(frame_config(bad))
    assert not isinstance(info.value, ModelContractError)


def test_wrong_input_name(tmp_path: Path) -> None:
    path = write_graph(tmp_path / "frame.onnx", "frame", input_name="input.1")
    with pytest.raises(ModelContractError, match=r"inputs \['input.1'\]; a frame graph takes exactly \['image'\]"):
        create_affect_model(frame_config(path))


def test_wrong_input_shape(tmp_path: Path) -> None:
    # An RGB graph whose metadata says grayscale: the crops would not fit.
    path = write_graph(tmp_path / "frame.onnx", "frame", input_shape=["N", 3, 48, 48])
    with pytest.raises(ModelContractError, match=rf"{_esc(path)}: input 'image'"):
        create_affect_model(frame_config(path))


def test_wrong_outputs(tmp_path: Path) -> None:
    """A graph that outputs ``scores`` instead of ``logits`` (e.g. exported with default names)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((48 * 48, 7), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["flat"], axis=1),
         helper.make_node("MatMul", ["flat", "w"], ["scores"])],
        "wrong_outputs",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 48, 48])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 7])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for key, value in graph_metadata("frame", va_mode="derived").to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    path = tmp_path / "scores.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelContractError, match=r"outputs \['scores'\] lack \['logits'\]; a frame graph outputs"):
        create_affect_model(frame_config(path))


def test_model_without_metadata(tmp_path: Path) -> None:
    path = write_graph(tmp_path / "frame.onnx", "frame", drop_keys=["role", "input_size"])
    with pytest.raises(ModelContractError, match=r"missing model metadata ros2_affect.role, ros2_affect.input_size; "
                                                 r"export models with `python -m training.export`"):
        create_affect_model(frame_config(path))


def test_graph_of_the_wrong_role(models: Path) -> None:
    with pytest.raises(ModelContractError, match=r"this is a 'encoder' graph but a 'frame' graph was configured"):
        create_affect_model(frame_config(models / "encoder.onnx"))


def test_encoder_and_sequence_head_of_different_exports(models: Path, tmp_path: Path) -> None:
    other = write_graph(tmp_path / "sequence.onnx", "sequence", dim=32, model_id="pair-a")
    config = ModelConfig(kind="temporal", encoder_model=str(models / "encoder.onnx"), sequence_model=str(other))
    with pytest.raises(ModelContractError, match=r"do not belong together: feature_dim is 16 in the encoder but 32"):
        create_affect_model(config)


def test_pipeline_reports_a_bad_sequence_head_after_loading_the_encoder(models: Path, tmp_path: Path) -> None:
    bad = tmp_path / "sequence.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    config = PipelineConfig(model=ModelConfig(kind="temporal", encoder_model=str(models / "encoder.onnx"),
                                              sequence_model=str(bad)))
    with pytest.raises(ModelLoadError, match=rf"{_esc(bad)}: onnxruntime cannot load this file"):
        create_pipeline(config)
    # The same settings with a good head build a working pipeline (nothing was left half-open).
    good = PipelineConfig(model=ModelConfig(kind="temporal", encoder_model=str(models / "encoder.onnx"),
                                            sequence_model=str(models / "sequence.onnx")))
    with create_pipeline(good) as pipeline:
        assert pipeline.model is not None and pipeline.model.kind == "temporal"


# -- backends ------------------------------------------------------------------------------------


def test_unknown_backend_name_suggests_the_closest(models: Path) -> None:
    with pytest.raises(ConfigError, match=r"model.backend = 'onnxruntim' is not accepted; .*did you mean 'onnxrunt"):
        create_affect_model(frame_config(models / "frame.onnx", backend="onnxruntim"))


def test_tensorrt_without_fallback_says_why_it_cannot_run(models: Path) -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here; this checks the message where it is not")
    with pytest.raises(BackendUnavailableError, match=r"'tensorrt' cannot run here: tensorrt is not installed.*"
                                                      r"no fallback backend is configured \(model.fallback_backend\)"):
        create_affect_model(frame_config(models / "frame.onnx", backend="tensorrt", fallback_backend="none"))


def test_tensorrt_falls_back_to_onnxruntime_with_one_warning(models: Path, caplog: pytest.LogCaptureFixture) -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here; the fallback is not taken")
    with caplog.at_level(logging.WARNING):
        model = create_affect_model(frame_config(models / "frame.onnx", backend="tensorrt"))
    assert model is not None and model.backend_name == "onnxruntime"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "using the fallback backend 'onnxruntime'" in warnings[0]
    crops = np.full((2, 48, 48, 1), 128, np.uint8)
    assert all(e is not None for e in model.predict_frames(crops))
    model.close()


def test_engine_of_another_tensorrt_version_is_never_loaded(models: Path, tmp_path: Path) -> None:
    onnx_path = models / "frame.onnx"
    cache = EngineCache(tmp_path / "engines")
    built = make_key(onnx_path, "8.6.2", "Orin", "8.7", "fp16", 8)
    props = graph_metadata("frame").to_props()
    engine = cache.store(b"serialized engine of TensorRT 8.6", built, onnx_path.stem, props, str(onnx_path))
    assert cache.lookup(built, onnx_path.stem) == engine
    upgraded = make_key(onnx_path, "10.3.0", "Orin", "8.7", "fp16", 8)
    # After a JetPack upgrade the key differs: a miss, so the engine is rebuilt instead of
    # handing TensorRT 10 a TensorRT 8 plan (which it cannot deserialize).
    assert cache.lookup(upgraded, onnx_path.stem) is None
    sidecar = read_sidecar(engine)
    assert sidecar.key.mismatches(upgraded) == ["trt_version: '8.6.2' != '10.3.0'"]


def test_engine_sidecar_of_another_model_is_rejected(models: Path, tmp_path: Path) -> None:
    engine = tmp_path / "frame.engine"
    engine.write_bytes(b"plan")
    (tmp_path / "frame.engine.json").write_text('{"format": "ros2_affect-engine-1", "metadata_props": {"x": 1}}')
    with pytest.raises(ModelLoadError, match=rf"{_esc(tmp_path / 'frame.engine.json')}: sidecar metadata_props must be "
                                             r"a mapping of strings; .*build-engine"):
        read_sidecar(engine)


# -- MediaPipe assets -------------------------------------------------------------------------------


@pytest.fixture()
def asset_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An asset directory searched before the package's (ROS2_AFFECT_ASSET_DIR)."""
    directory = tmp_path / "assets"
    directory.mkdir()
    monkeypatch.setenv(assets.ASSET_ENV, str(directory))
    return directory


@pytest.mark.parametrize("content", [b"", b"not a flatbuffer" * 64], ids=["empty", "garbage"])
def test_corrupt_detector_model(asset_dir: Path, content: bytes) -> None:
    path = asset_dir / asset_path("face_detection_short_range").name
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=rf"could not load the short_range face detector {_esc(path)}: .*"
                                             r"re-provision it with `ros2-affect fetch-assets`"):
        create_detector(DetectorConfig())


def test_truncated_landmark_model(asset_dir: Path) -> None:
    real = asset_path("face_landmark")
    path = asset_dir / real.name
    path.write_bytes(real.read_bytes()[:4096])
    with pytest.raises(ModelLoadError, match=rf"LiteRT cannot load {_esc(path)}: .*fetch-assets"):
        create_eye_locator(LandmarksConfig())


def test_landmark_file_with_the_wrong_model(asset_dir: Path) -> None:
    # The detector's model where the landmark model belongs: loads, but has other tensors.
    path = asset_dir / asset_path("face_landmark").name
    shutil.copy(asset_path("face_detection_short_range"), path)
    with pytest.raises(ModelContractError, match=rf"{_esc(path)} has inputs \[\(1, 128, 128, 3\)\]; expected one "
                                                 r"\(1, 192, 192, 3\)"):
        create_eye_locator(LandmarksConfig())


def test_missing_assets_name_the_directories_and_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "nowhere"
    empty.mkdir()
    monkeypatch.setenv(assets.ASSET_ENV, str(empty))
    monkeypatch.setattr(assets, "PACKAGE_DIR", tmp_path / "no_package")  # as in an install without the assets
    monkeypatch.setattr(assets, "_ament_share_dir", lambda: None)
    with pytest.raises(AssetMissingError, match=rf"not found in: {_esc(empty)}, .*ros2-affect fetch-assets"):
        create_detector(DetectorConfig())
    with pytest.raises(AssetMissingError, match=r"face_landmark.tflite\) not found in: .*fetch-assets"):
        create_eye_locator(LandmarksConfig())
