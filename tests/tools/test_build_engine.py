"""``ros2-affect build-engine``: failure without TensorRT (status, message, trtexec lines),
``--print-trtexec``, ``--metadata-only`` sidecars that the runtime reads back."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ros2_affect.backends.base import ModelMetadata
from ros2_affect.backends.engine_cache import read_sidecar
from ros2_affect.tools.cli import main
from tests.backends.affect_graphs import graph_metadata, write_graph

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture()
def models(tmp_path: Path) -> dict:
    return {
        "encoder": write_graph(tmp_path / "enc.onnx", "encoder", dim=16),
        "sequence": write_graph(tmp_path / "seq.onnx", "sequence", length=8, dim=16),
    }


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here: the failure path cannot be exercised")
def test_without_tensorrt_exits_1_and_prints_trtexec(models: dict, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["build-engine", str(models["encoder"]), str(models["sequence"]), "--max-faces", "6",
                 "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 1
    assert "cannot build TensorRT engines here: tensorrt is not installed" in err
    enc_engine = tmp_path / "enc.fp16.b6.engine"
    assert (f"trtexec --onnx={models['encoder']} --saveEngine={enc_engine} --minShapes=image:1x1x48x48 "
            "--optShapes=image:4x1x48x48 --maxShapes=image:6x1x48x48 --fp16") in err
    assert "--minShapes=features:1x8x16 --optShapes=features:4x8x16 --maxShapes=features:6x8x16 --fp16" in err
    assert (f"ros2-affect build-engine {models['encoder']} --out {enc_engine} --metadata-only --precision fp16 "
            "--max-faces 6") in err
    assert "model.backend: tensorrt" in err
    assert not (tmp_path / "cache").exists() and not enc_engine.exists()


def test_print_trtexec_works_anywhere(models: dict, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["build-engine", str(models["encoder"]), "--precision", "fp32", "--out", "/e/enc.engine",
                 "--print-trtexec"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0] == (f"trtexec --onnx={models['encoder']} --saveEngine=/e/enc.engine --minShapes=image:1x1x48x48 "
                      "--optShapes=image:4x1x48x48 --maxShapes=image:8x1x48x48")
    assert out[1].endswith("--out /e/enc.engine --metadata-only --precision fp32 --max-faces 8")


def test_metadata_only_writes_a_sidecar_the_runtime_reads(models: dict, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    engine = tmp_path / "seq.engine"
    code = main(["build-engine", str(models["sequence"]), "--out", str(engine), "--metadata-only",
                 "--precision", "fp16", "--max-faces", "4"])
    assert code == 0
    assert "set model.sequence_model:" in capsys.readouterr().out
    sidecar = read_sidecar(engine)
    assert ModelMetadata.from_props(sidecar.metadata_props, str(engine)) == graph_metadata("sequence", length=8)
    assert (sidecar.key.precision, sidecar.key.max_batch) == ("fp16", 4)
    assert not sidecar.key.platform_known  # trtexec engine: platform unknown, trusted as is
    assert sidecar.onnx_path == str(models["sequence"].resolve())


def test_argument_errors_are_clear(models: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        ([str(models["encoder"]), str(models["sequence"]), "--out", "x.engine"],
         "--out names one engine but 2 models were given; use --cache-dir instead"),
        ([str(models["encoder"]), "--metadata-only"],
         "--metadata-only writes the sidecar beside an engine: pass --out"),
        ([str(models["encoder"]), "--precision", "int8"], "--precision int8 needs --calib DIR"),
        ([str(models["encoder"]), "--max-faces", "0"], "--max-faces 0 is out of range; expected 1..64"),
        ([str(tmp_path / "missing.onnx")], "missing.onnx does not exist"),
    ]
    for argv, message in cases:
        assert main(["build-engine", *argv]) == 1, argv
        assert message in capsys.readouterr().err


def test_model_without_metadata_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bare = write_graph(tmp_path / "bare.onnx", "frame", with_metadata=False)
    assert main(["build-engine", str(bare), "--print-trtexec"]) == 1
    assert "missing model metadata ros2_affect.contract_version" in capsys.readouterr().err


def test_default_models_come_from_the_parameter_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = write_graph(tmp_path / "frame.onnx", "frame", channels=3, size=64)
    config = tmp_path / "affect.yaml"
    config.write_text(
        "affect_node:\n  ros__parameters:\n"
        f"    detector: {{max_faces: 3}}\n"
        f"    model: {{kind: frame, frame_model: '{frame}', precision: fp32, backend: tensorrt}}\n"
    )
    assert main(["build-engine", "--config", str(config), "--print-trtexec"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"trtexec --onnx={frame} --saveEngine={tmp_path / 'frame.fp32.b3.engine'} "
                      "--minShapes=image:1x3x64x64 --optShapes=image:3x3x64x64 --maxShapes=image:3x3x64x64")
    config.write_text("affect_node:\n  ros__parameters:\n    model: {kind: none}\n")
    assert main(["build-engine", "--config", str(config)]) == 1
    assert "model.kind is 'none' in the parameter file: no model to build" in capsys.readouterr().err
