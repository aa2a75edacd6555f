"""Export a trained checkpoint to contract-following ONNX graphs (and optionally TensorRT).

Usage::

    python -m training.export --checkpoint runs/gcn/best.pt --out models/ [--name NAME]
        [--opset 17] [--max-faces 8] [--engine [--fp32|--fp16|--int8 --calib DIR]]

What is written (the contract is in :mod:`ros2_affect.backends.base`):

- a frame model (``model.role == "frame"``): one graph ``<name>.onnx``, role ``frame``,
  ``image [N, C, S, S] -> logits [N, K], valence_arousal [N, 2]``;
- a temporal model (``role == "temporal"``, CNN-RNN): two graphs so the runtime encodes
  each frame once and keeps per-track feature buffers:
  ``<name>_encoder.onnx`` (role ``encoder``, ``image [N, C, S, S] -> features [N, D]``) and
  ``<name>_sequence.onnx`` (role ``sequence``, ``features [N, T, D] -> logits, valence_arousal``);
- ``<name>.json``: the same metadata for humans, plus the parity numbers.

``N`` (faces) is a dynamic axis, ``T`` is fixed. Every graph carries its
``ros2_affect.*`` metadata (written with :meth:`ModelMetadata.to_props`), including
provenance: ``training_data``, ``version``, ``git_sha`` and ``opset``.

Checks before anything is reported as done (failure exits non-zero with the numbers):

1. parity: ONNX Runtime vs torch on seeded random inputs, batch sizes 1 and 5, every
   output, max abs difference < ``1e-4``; for a temporal model also encoder -> sequence
   graphs end to end vs the torch model on a random sequence;
2. the runtime's own loader (:func:`ros2_affect.backends.create_backend` ``"onnxruntime"``)
   loads each graph for ``--max-faces`` faces and runs a full batch.

``--engine`` then builds TensorRT engines with
:func:`ros2_affect.backends.tensorrt_backend.build_engine` (optimisation profile 1..max-faces).
Without TensorRT or a GPU it prints the equivalent ``trtexec`` commands and exits with 3.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ros2_affect.backends.base import INPUT_NAMES, METADATA_PREFIX, OUTPUT_NAMES, ModelMetadata
from ros2_affect.errors import AffectError, BackendUnavailableError

LOG = logging.getLogger(__name__)

DEFAULT_OPSET = 17
#: Largest accepted |onnx - torch| difference in the parity check.
PARITY_TOLERANCE = 1e-4
PARITY_BATCHES = (1, 5)
#: Exit status when --engine was asked for but TensorRT cannot run here.
EXIT_NO_TENSORRT = 3
EXPORTERS = ("torchscript", "dynamo")


class ExportError(AffectError):
    """The export failed or its result does not match the torch model."""


@dataclass
class ExportResult:
    """What :func:`export_model` wrote.

    Attributes:
        graphs: role -> ONNX path (``{"frame": ...}`` or ``{"encoder": ..., "sequence": ...}``).
        metadata: role -> the graph's :class:`ModelMetadata`.
        sidecar: the ``<name>.json`` path.
        parity: check name -> max abs difference, e.g. ``{"frame/N=1/logits": 3e-8, ...}``.
        engines: role -> TensorRT engine path (when built).
    """

    graphs: Dict[str, Path]
    metadata: Dict[str, ModelMetadata]
    sidecar: Path
    parity: Dict[str, float] = field(default_factory=dict)
    engines: Dict[str, Path] = field(default_factory=dict)


# -- graph wrappers (fixed output names and dtypes) ------------------------------------------


class _FloatOutputs(nn.Module):
    """The graph of one part (frame model, encoder or sequence head) with float32 outputs,
    whatever precision the part computes in, so every exported graph has the contract's dtypes."""

    def __init__(self, part: nn.Module) -> None:
        super().__init__()
        self.part = part

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, ...]]:
        out = self.part(x)
        if isinstance(out, tuple):
            return tuple(o.float() for o in out)
        return out.float()


# -- helpers --------------------------------------------------------------------------------


def git_sha() -> str:
    """``git rev-parse HEAD`` of the repository holding this file, ``"unknown"`` outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        sha = out.stdout.strip()
        return sha if re.fullmatch(r"[0-9a-f]{40}", sha) else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def output_paths(out: Union[str, Path], name: str, temporal: bool) -> Dict[str, Path]:
    """Where the graphs go: ``out`` is a ``.onnx`` file (its stem replaces ``name``'s use
    in file names) or a folder (created)."""
    out = Path(out)
    if out.suffix.lower() == ".onnx":
        folder, stem = out.parent, out.stem
    else:
        folder, stem = out, name
    if temporal:
        return {"encoder": folder / f"{stem}_encoder.onnx", "sequence": folder / f"{stem}_sequence.onnx"}
    return {"frame": folder / f"{stem}.onnx"}


def sidecar_path(out: Union[str, Path], name: str) -> Path:
    """``<name>.json`` in the output folder (``<stem>.json`` when ``out`` is a ``.onnx`` file)."""
    out = Path(out)
    if out.suffix.lower() == ".onnx":
        return out.with_suffix(".json")
    return out / f"{name}.json"


def _export_graph(
    module: nn.Module, example: torch.Tensor, path: Path, role: str, opset: int, exporter: str
) -> None:
    input_name = INPUT_NAMES[role]
    outputs = list(OUTPUT_NAMES[role])
    module.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer/deprecation chatter; correctness is checked below
        if exporter == "dynamo":
            torch.onnx.export(
                module,
                (example,),
                str(path),
                input_names=[input_name],
                output_names=outputs,
                opset_version=opset,
                dynamo=True,
                external_data=False,
                dynamic_shapes=({0: torch.export.Dim("N", min=1, max=1024)},),
            )
        else:
            torch.onnx.export(
                module,
                (example,),
                str(path),
                input_names=[input_name],
                output_names=outputs,
                opset_version=opset,
                dynamo=False,
                dynamic_axes={n: {0: "N"} for n in [input_name, *outputs]},
                do_constant_folding=True,
            )
    # the legacy exporter restores the wrapper's previous (training) mode on every submodule
    module.eval()


def write_metadata(path: Path, meta: ModelMetadata) -> None:
    """Replace the ``ros2_affect.*`` metadata_props of the ONNX file at ``path``."""
    import onnx

    model = onnx.load(str(path))
    keep = [p for p in model.metadata_props if not p.key.startswith(METADATA_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in meta.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = f"ros2_affect {meta.role} graph {meta.model_id}"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _ort_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _max_diff(a: np.ndarray, b: np.ndarray, what: str) -> float:
    if a.shape != b.shape:
        raise ExportError(f"parity check {what}: ONNX output shape {a.shape} != torch {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ExportError(f"parity check {what}: non-finite values (onnx finite: {np.isfinite(a).all()}, "
                          f"torch finite: {np.isfinite(b).all()})")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def _check_parity(
    module: nn.Module, path: Path, role: str, input_shape: Sequence[int], tolerance: float, seed: int
) -> Dict[str, float]:
    session = _ort_session(path)
    gen = torch.Generator().manual_seed(seed)
    results: Dict[str, float] = {}
    for n in PARITY_BATCHES:
        x = torch.randn((n, *input_shape), generator=gen)
        with torch.no_grad():
            ref = module(x)
        ref_list = [ref] if isinstance(ref, torch.Tensor) else list(ref)
        got = session.run(list(OUTPUT_NAMES[role]), {INPUT_NAMES[role]: x.numpy()})
        for name, g, r in zip(OUTPUT_NAMES[role], got, ref_list, strict=True):
            key = f"{role}/N={n}/{name}"
            results[key] = _max_diff(np.asarray(g), r.numpy(), key)
    bad = {k: v for k, v in results.items() if not v < tolerance}
    if bad:
        raise ExportError(
            f"{path}: ONNX Runtime and torch disagree beyond {tolerance:g} (max abs difference): "
            + ", ".join(f"{k} = {v:.3g}" for k, v in bad.items())
            + "; the graph is not a faithful export (an op exported differently, or the model is not in eval mode)"
        )
    return results


def _check_runtime_loads(paths: Mapping[str, Path], metas: Mapping[str, ModelMetadata], max_faces: int) -> None:
    """Load every graph with the runtime's onnxruntime backend and run a full batch."""
    from ros2_affect.backends import create_backend

    backend = create_backend("onnxruntime", device="cpu", threads=1)
    for role, path in paths.items():
        meta = metas[role]
        session = backend.load(path, role, max_faces)
        try:
            if role == "sequence":
                batch = np.zeros((max_faces, meta.sequence_length, meta.feature_dim), np.float32)
            else:
                batch = np.zeros((max_faces, meta.channels, meta.input_size, meta.input_size), np.float32)
            out = session.run(batch)
            for name, value in out.items():
                if value.shape[0] != max_faces or not np.isfinite(value).all():
                    raise ExportError(f"{path}: the runtime loader ran it but output {name!r} has shape "
                                      f"{value.shape} / non-finite values for a batch of {max_faces}")
        finally:
            session.close()


def _check_temporal_end_to_end(
    model: nn.Module, paths: Mapping[str, Path], meta: ModelMetadata, tolerance: float, seed: int
) -> Dict[str, float]:
    """encoder.onnx per frame -> sequence.onnx vs the torch model on whole sequences."""
    enc, seq = _ort_session(paths["encoder"]), _ort_session(paths["sequence"])
    gen = torch.Generator().manual_seed(seed + 1)
    t, c, s = meta.sequence_length, meta.channels, meta.input_size
    n = 2
    x = torch.randn((n, t, c, s, s), generator=gen)
    with torch.no_grad():
        ref_logits, ref_va = model(x)
    (feats,) = enc.run(["features"], {"image": x.reshape(n * t, c, s, s).numpy()})
    logits, va = seq.run(["logits", "valence_arousal"], {"features": feats.reshape(n, t, -1)})
    results = {
        "end_to_end/logits": _max_diff(logits, ref_logits.float().numpy(), "end_to_end/logits"),
        "end_to_end/valence_arousal": _max_diff(va, ref_va.float().numpy(), "end_to_end/valence_arousal"),
    }
    bad = {k: v for k, v in results.items() if not v < tolerance}
    if bad:
        raise ExportError(
            f"encoder + sequence graphs disagree with the torch temporal model beyond {tolerance:g}: "
            + ", ".join(f"{k} = {v:.3g}" for k, v in bad.items())
        )
    return results


# -- export ---------------------------------------------------------------------------------


def metadata_for(
    ckpt: Mapping[str, Any], role: str, model_id: str, feature_dim: int, opset: int, version: str
) -> ModelMetadata:
    """The contract metadata of one graph from the checkpoint's fields."""
    channels = int(ckpt["channels"])
    extra = {
        "training_data": _as_text(ckpt.get("training_data", "unknown")),
        "version": str(version),
        "git_sha": git_sha(),
        "opset": str(opset),
        "model_name": str(ckpt.get("model_name", "")),
    }
    meta = ModelMetadata(
        role=role,
        model_id=model_id,
        class_names=tuple(str(c) for c in ckpt["class_names"]),
        input_size=int(ckpt["input_size"]),
        channels=channels,
        mean=tuple(float(m) for m in ckpt["mean"]),
        std=tuple(float(s) for s in ckpt["std"]),
        sequence_length=int(ckpt.get("sequence_length", 1)) if role == "sequence" else 1,
        feature_dim=int(feature_dim),
        va_mode=str(ckpt.get("va_mode", "regressed")),
        alignment=dict(ckpt.get("alignment") or {}),
        extra=extra,
    )
    meta.check(f"checkpoint {ckpt.get('model_name', '')!r}")
    return meta


def export_model(
    model: nn.Module,
    ckpt: Mapping[str, Any],
    out: Union[str, Path],
    name: Optional[str] = None,
    opset: int = DEFAULT_OPSET,
    max_faces: int = 8,
    version: str = "1.0",
    exporter: str = "torchscript",
    tolerance: float = PARITY_TOLERANCE,
    seed: int = 0,
) -> ExportResult:
    """Export ``model`` (with the checkpoint's metadata fields) and check the result.

    Args:
        model: a model from :func:`training.models.create_model` (``.role`` "frame" or
            "temporal"); put in eval mode here.
        ckpt: checkpoint dict (see :mod:`training.checkpoint`); uses ``class_names``,
            ``input_size``, ``channels``, ``mean``, ``std``, ``alignment``,
            ``sequence_length``, ``va_mode``, ``training_data``, ``model_name``.
        out: a folder, or a ``.onnx`` file name.
        name: model name (file names, ``model_id = f"{name}-{version}"``); default the
            checkpoint's ``model_name``.
        max_faces: the batch the runtime check uses (the TensorRT profile's max).

    Raises:
        ExportError: export failed, parity beyond ``tolerance``, or the runtime rejects it.
    """
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter {exporter!r} is not accepted; choose one of {', '.join(EXPORTERS)}")
    if not 1 <= int(max_faces) <= 64:
        raise ExportError(f"max_faces = {max_faces}; expected 1..64 (the runtime's detector.max_faces range)")
    role = getattr(model, "role", None)
    if role not in ("frame", "temporal"):
        raise ExportError(f"model {type(model).__name__} has role {role!r}; expected 'frame' or 'temporal'")
    name = name or str(ckpt.get("model_name") or type(model).__name__.lower())
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ExportError(f"name {name!r} may only hold letters, digits, '_', '.' and '-' (it names files)")
    model_id = f"{name}-{version}"
    model.eval()
    c, s = int(ckpt["channels"]), int(ckpt["input_size"])
    temporal = role == "temporal"
    paths = output_paths(out, name, temporal)
    metas: Dict[str, ModelMetadata] = {}
    parity: Dict[str, float] = {}
    try:
        if temporal:
            parts: Any = model  # a temporal model: .encoder, .sequence_head, .feature_dim, .sequence_length
            d = int(parts.feature_dim)
            t = int(ckpt.get("sequence_length") or parts.sequence_length)
            if t != int(parts.sequence_length):
                raise ExportError(f"checkpoint sequence_length {t} != the model's {parts.sequence_length}")
            encoder, head = _FloatOutputs(parts.encoder), _FloatOutputs(parts.sequence_head)
            _export_graph(encoder, torch.zeros(2, c, s, s), paths["encoder"], "encoder", opset, exporter)
            _export_graph(head, torch.zeros(2, t, d), paths["sequence"], "sequence", opset, exporter)
            metas["encoder"] = metadata_for(ckpt, "encoder", model_id, d, opset, version)
            metas["sequence"] = metadata_for(ckpt, "sequence", model_id, d, opset, version)
            for role_name in ("encoder", "sequence"):
                write_metadata(paths[role_name], metas[role_name])
            parity.update(_check_parity(encoder, paths["encoder"], "encoder", (c, s, s), tolerance, seed))
            parity.update(_check_parity(head, paths["sequence"], "sequence", (t, d), tolerance, seed))
            parity.update(_check_temporal_end_to_end(model, paths, metas["sequence"], tolerance, seed))
        else:
            graph = _FloatOutputs(model)
            _export_graph(graph, torch.zeros(2, c, s, s), paths["frame"], "frame", opset, exporter)
            metas["frame"] = metadata_for(ckpt, "frame", model_id, int(getattr(model, "feature_dim", 0)), opset,
                                          version)
            write_metadata(paths["frame"], metas["frame"])
            parity.update(_check_parity(graph, paths["frame"], "frame", (c, s, s), tolerance, seed))
        _check_runtime_loads(paths, metas, int(max_faces))
    except ExportError:
        raise
    except AffectError as exc:  # the runtime loader's contract errors
        raise ExportError(f"the runtime rejects the exported graph: {exc}") from exc
    except Exception as exc:  # torch.onnx raises many types
        raise ExportError(f"ONNX export of {name!r} failed: {type(exc).__name__}: {exc}") from exc
    sidecar = sidecar_path(out, name)
    sidecar.write_text(json.dumps(sidecar_dict(paths, metas, parity), indent=2, sort_keys=False) + "\n")
    return ExportResult(graphs=dict(paths), metadata=metas, sidecar=sidecar, parity=parity)


def sidecar_dict(
    paths: Mapping[str, Path], metas: Mapping[str, ModelMetadata], parity: Mapping[str, float]
) -> Dict[str, Any]:
    """The ``<name>.json`` content: per graph its file and metadata (decoded), and parity."""
    graphs = {}
    for role, path in paths.items():
        props = {k[len(METADATA_PREFIX):]: v for k, v in metas[role].to_props().items()}
        decoded: Dict[str, Any] = {}
        for key, value in props.items():
            try:
                decoded[key] = json.loads(value) if key in ("class_names", "mean", "std", "alignment") else value
            except ValueError:
                decoded[key] = value
        graphs[role] = {"file": path.name, "metadata": decoded}
    first = metas[next(iter(metas))]
    return {
        "model_id": first.model_id,
        "kind": "temporal" if "sequence" in metas else "frame",
        "graphs": graphs,
        "parity_max_abs_diff": dict(parity),
        "parity_tolerance": PARITY_TOLERANCE,
    }


def export_checkpoint(checkpoint: Union[str, Path], out: Union[str, Path], **kwargs: Any) -> ExportResult:
    """:func:`export_model` for a checkpoint file (loaded with :func:`training.checkpoint.load_checkpoint`)."""
    from training.checkpoint import load_checkpoint

    model, ckpt = load_checkpoint(checkpoint)
    return export_model(model, ckpt, out, **kwargs)


# -- TensorRT ---------------------------------------------------------------------------------


def build_engines(
    result: ExportResult, precision: str, max_faces: int, calib: Optional[Path] = None
) -> Dict[str, Path]:
    """Build one TensorRT engine per graph, next to it (``<graph>.engine``), with an
    optimisation profile over 1..``max_faces`` faces.

    Raises:
        BackendUnavailableError: TensorRT or a GPU is missing.
        ConfigError: int8 without calibration images or cache.
    """
    from ros2_affect.backends.tensorrt_backend import build_engine

    engines: Dict[str, Path] = {}
    for role, path in result.graphs.items():
        engines[role] = build_engine(path, path.with_suffix(".engine"), precision, max_faces,
                                     calibration_images=calib if precision == "int8" else None)
    result.engines = engines
    return engines


def trtexec_commands(result: ExportResult, precision: str, max_faces: int) -> List[str]:
    """The ``trtexec`` command lines equivalent to :func:`build_engines` (for machines where
    this script cannot build engines itself)."""
    from ros2_affect.backends.tensorrt_backend import format_command, trtexec_command

    commands = []
    for role, path in result.graphs.items():
        engine = path.with_suffix(".engine")
        cache = engine.with_name(engine.name + ".calib") if precision == "int8" else None
        commands.append(format_command(trtexec_command(path, engine, result.metadata[role], precision, max_faces,
                                                       cache)))
    return commands


# -- command line -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.export",
        description="Export a ros2_affect checkpoint to ONNX graphs following the runtime's model contract.",
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by training.train (.pt)")
    parser.add_argument("--out", required=True, help="output folder, or a .onnx file name")
    parser.add_argument("--name", help="model name for files and model_id (default: the checkpoint's model_name)")
    parser.add_argument("--version", default="1.0", help="model version; model_id = NAME-VERSION (default 1.0)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--max-faces", type=int, default=8, help="faces per batch to check / TensorRT max (default 8)")
    parser.add_argument("--exporter", choices=EXPORTERS, default="torchscript",
                        help="torch.onnx exporter (default torchscript: fast, mature RNN support)")
    parser.add_argument("--engine", action="store_true", help="also build TensorRT engines (needs tensorrt + GPU)")
    prec = parser.add_mutually_exclusive_group()
    prec.add_argument("--fp32", dest="precision", action="store_const", const="fp32")
    prec.add_argument("--fp16", dest="precision", action="store_const", const="fp16", help="engine precision (default)")
    prec.add_argument("--int8", dest="precision", action="store_const", const="int8",
                      help="INT8 engine calibrated on --calib DIR (face crops)")
    parser.add_argument("--calib", type=Path, help="folder of aligned face crops for INT8 calibration")
    parser.set_defaults(precision="fp16")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.precision == "int8" and args.engine and args.calib is None:
        parser.error("--int8 needs --calib DIR (a folder of aligned face crops for calibration)")
    try:
        result = export_checkpoint(args.checkpoint, args.out, name=args.name, opset=args.opset,
                                   max_faces=args.max_faces, version=args.version, exporter=args.exporter)
    except AffectError as exc:
        print(f"training.export: error: {exc}", file=sys.stderr)
        return 1
    worst = max(result.parity.values()) if result.parity else float("nan")
    for role, path in result.graphs.items():
        print(f"wrote {role:8s} {path}")
    print(f"wrote metadata {result.sidecar}")
    print(f"parity vs torch: max abs diff {worst:.2e} over {len(result.parity)} checks "
          f"(tolerance {PARITY_TOLERANCE:g}); "
          f"runtime loader accepted {len(result.graphs)} graph(s) at batch {args.max_faces}")
    if not args.engine:
        return 0
    try:
        engines = build_engines(result, args.precision, args.max_faces, args.calib)
    except (BackendUnavailableError, ImportError) as exc:
        print(f"training.export: cannot build TensorRT engines here: {exc}", file=sys.stderr)
        print("build them on the target (Jetson / GPU machine) with:", file=sys.stderr)
        for command in trtexec_commands(result, args.precision, args.max_faces):
            print("  " + command, file=sys.stderr)
        if args.precision == "int8":
            print("  (INT8: write the calibration cache first with `ros2-affect build-engine --precision int8 "
                  "--calib DIR` on a machine with TensorRT; trtexec cannot calibrate from images)", file=sys.stderr)
        return EXIT_NO_TENSORRT
    except AffectError as exc:
        print(f"training.export: error: TensorRT engine build failed: {exc}", file=sys.stderr)
        return 1
    for role, path in engines.items():
        print(f"wrote {role:8s} engine {path} ({args.precision})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
