"""``ros2-affect build-engine``: build TensorRT engines for the affect models ahead of time.

Without model arguments it builds what the node would load with ``--config`` (default:
the packaged ``affect.yaml``): the frame model, or the temporal encoder + sequence head,
from ``model.*_model`` or the bundled defaults, with ``model.precision`` and
``detector.max_faces``, into ``model.engine_cache_dir`` — exactly the cache entries the
``tensorrt`` backend looks up at start-up, so the robot never builds on first use.

Where TensorRT's Python bindings or a GPU are missing it exits with status 1 and prints
the equivalent ``trtexec`` command lines, plus the ``--metadata-only`` step that writes
the JSON sidecar a hand-built engine needs. See docs/tensorrt.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, TextIO

from ros2_affect.backends.base import read_onnx_metadata
from ros2_affect.backends.engine_cache import PRECISIONS, EngineCache, EngineKey, EngineSidecar, write_sidecar
from ros2_affect.backends.tensorrt_backend import (
    DEFAULT_WORKSPACE_MB,
    TensorRTBackend,
    build_engine,
    format_command,
    trtexec_command,
)
from ros2_affect.config import PipelineConfig, load_pipeline_config
from ros2_affect.errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "build-engine",
        help="build TensorRT engines for the affect models (Jetson / NVIDIA GPU)",
        description="Build TensorRT engines for the affect models ahead of time (see docs/tensorrt.md).",
    )
    parser.add_argument("models", nargs="*", type=Path, metavar="MODEL.onnx",
                        help="ONNX models to build (default: the models --config selects)")
    parser.add_argument("--config", type=Path, default=None, help="parameter file for the defaults (affect.yaml)")
    parser.add_argument("--precision", choices=PRECISIONS, default=None, help="default: model.precision (auto: fp16)")
    parser.add_argument("--calib", type=Path, default=None, metavar="DIR",
                        help="int8: folder of aligned face crops used for calibration")
    parser.add_argument("--calib-cache", type=Path, default=None, metavar="FILE",
                        help="int8: calibration cache to reuse/write (default: <engine>.calib)")
    parser.add_argument("--max-faces", type=int, default=None,
                        help="largest batch the engine accepts (default: detector.max_faces)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, default=None, metavar="PATH", help="engine file to write (one model)")
    where.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                       help="engine cache to build into (default: model.engine_cache_dir, "
                            "else ~/.cache/ros2_affect/engines)")
    parser.add_argument("--workspace-mb", type=int, default=DEFAULT_WORKSPACE_MB, help="TensorRT builder workspace")
    parser.add_argument("--metadata-only", action="store_true",
                        help="only write the JSON sidecar beside --out (for an engine built with trtexec)")
    parser.add_argument("--print-trtexec", action="store_true", help="only print the equivalent trtexec commands")
    parser.set_defaults(func=main)


def _default_models(config: PipelineConfig) -> List[Path]:
    from ros2_affect import assets

    model = config.model
    if model.kind == "none":
        raise ConfigError("model.kind is 'none' in the parameter file: no model to build; pass MODEL.onnx files")
    if model.kind == "frame":
        chosen = [(model.frame_model, assets.DEFAULT_FRAME_MODEL)]
    else:
        chosen = [
            (model.encoder_model, assets.DEFAULT_ENCODER_MODEL),
            (model.sequence_model, assets.DEFAULT_SEQUENCE_MODEL),
        ]
    return [Path(path) if path else assets.bundled_model_path(default) for path, default in chosen]


def _manual_engine_path(onnx_path: Path, precision: str, max_batch: int) -> Path:
    return onnx_path.with_name(f"{onnx_path.stem}.{precision}.b{max_batch}.engine")


def main(args: argparse.Namespace) -> int:
    config = load_pipeline_config(args.config)
    precision: str = args.precision or config.model.engine_precision
    max_batch: int = args.max_faces if args.max_faces is not None else config.detector.max_faces
    if not 1 <= max_batch <= 64:
        raise ConfigError(f"--max-faces {max_batch} is out of range; expected 1..64")
    models: List[Path] = list(args.models) or _default_models(config)
    if args.out is not None and len(models) != 1:
        raise ConfigError(f"--out names one engine but {len(models)} models were given; use --cache-dir instead")
    if args.metadata_only and args.out is None:
        raise ConfigError("--metadata-only writes the sidecar beside an engine: pass --out ENGINE")
    if precision == "int8" and args.calib is None and args.calib_cache is None and not args.metadata_only \
            and not args.print_trtexec:
        raise ConfigError("--precision int8 needs --calib DIR (aligned face crops) or --calib-cache FILE")
    cache = EngineCache(args.cache_dir or config.model.engine_cache_dir or None)
    metas = [(path, read_onnx_metadata(path)) for path in models]  # fails early on a bad model

    if args.metadata_only:
        meta_path, meta = metas[0]
        key = EngineKey(_sha256(meta_path), "", "", "", precision, max_batch)
        sidecar = write_sidecar(args.out, EngineSidecar(key, meta.to_props(), str(meta_path.resolve())))
        print(f"wrote {sidecar}; set model.{_config_key(meta.role)}: {args.out} with model.backend: tensorrt")
        return 0

    def commands(stream: TextIO) -> None:
        for path, meta in metas:
            engine = args.out or _manual_engine_path(path, precision, max_batch)
            calib = args.calib_cache if precision == "int8" else None
            print(format_command(trtexec_command(path, engine, meta, precision, max_batch, calib)), file=stream)
            print(format_command(["ros2-affect", "build-engine", str(path), "--out", str(engine), "--metadata-only",
                                  "--precision", precision, "--max-faces", str(max_batch)]), file=stream)

    if args.print_trtexec:
        commands(sys.stdout)
        return 0
    ok, reason = TensorRTBackend.is_available()
    if not ok:
        print(f"ros2-affect build-engine: error: cannot build TensorRT engines here: {reason}", file=sys.stderr)
        print("On the target machine (TensorRT's trtexec is in /usr/src/tensorrt/bin on a Jetson), the "
              "equivalent commands are:", file=sys.stderr)
        commands(sys.stderr)
        print("then set model.backend: tensorrt and point model.frame_model / encoder_model / sequence_model at "
              "the .engine files (see docs/tensorrt.md).", file=sys.stderr)
        return 1
    for path, meta in metas:
        engine = build_engine(path, args.out, precision, max_batch, calibration_images=args.calib,
                              calibration_cache=args.calib_cache, workspace_mb=args.workspace_mb,
                              cache=None if args.out else cache)
        print(f"{meta.role:8s} {path} -> {engine}")
    return 0


def _config_key(role: str) -> str:
    return {"frame": "frame_model", "encoder": "encoder_model", "sequence": "sequence_model"}[role]


def _sha256(path: Path) -> str:
    from ros2_affect.assets import sha256_of

    return sha256_of(path)


def run(argv: Optional[List[str]] = None) -> int:
    """Entry point for ``python -m ros2_affect.tools.build_engine``."""
    from ros2_affect.tools.cli import main as cli_main

    return cli_main(["build-engine", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(run())
