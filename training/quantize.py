"""Post-training int8 quantisation of exported frame and encoder graphs, for CPU inference.

Usage::

    python -m training.quantize --model ros2_affect/models/emotion_gcn_fer2013.onnx \\
        --data ../shared/data/fer2013/fer2013-images.tar.gz [--split Training] \\
        [--images 1000] [--check-images 2000] [--min-agreement 0.97] [--out FILE]

writes ``<stem>_int8.onnx`` beside the model (or ``--out``). The CNN is the largest stage
of the pipeline on a CPU; int8 convolutions (VNNI) run it about three times faster at the
same accuracy (model cards and BENCHMARKS.md have the numbers).

How: ONNX Runtime static quantisation in QDQ form: int8 weights per output channel,
uint8 activations whose ranges are calibrated (MinMax) on ``--images`` training faces
prepared exactly as the runtime prepares a face
(:func:`ros2_affect.backends.preprocess.to_model_input`). The sequence head of a temporal
model stays float (a small GRU; the encoder is what costs).

Checked before the file is kept, on ``--check-images`` other faces of the split (never the
calibration ones): the runtime's own loader loads it, and the int8 graph agrees with the
float one (frame: same top-1 class; encoder: cosine similarity of the feature vectors),
at least ``--min-agreement`` on average; otherwise nothing is written and the exit code
is 1. The result (with the float file's SHA-256, so a stale int8 file is caught) is
recorded in the graph's ``ros2_affect.quantization`` metadata. The ``model_id`` stays that
of the export (so an int8 encoder still pairs with its float sequence head); the runtime
appends ``-int8`` to the id it publishes when that key is present.

TensorRT does not use these files: it builds its own engines from the float graph
(``model.precision`` fp16, or int8 with its own calibration).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from ros2_affect.backends import create_backend
from ros2_affect.backends.base import INPUT_NAMES, ModelMetadata, read_onnx_metadata
from ros2_affect.backends.preprocess import to_model_input
from ros2_affect.errors import DatasetError, ModelContractError, ModelLoadError
from training.data.faces import resize_crop
from training.data.fer2013 import load_fer2013
from training.export import write_metadata

QUANTIZABLE_ROLES = ("frame", "encoder")
INT8_SUFFIX = "_int8"


def int8_path(model: Union[str, Path]) -> Path:
    """``x.onnx`` -> ``x_int8.onnx`` (the name the runtime looks for with precision int8)."""
    p = Path(model)
    return p.with_name(f"{p.stem}{INT8_SUFFIX}{p.suffix}")


def model_inputs(images: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """Grey ``(N, H, W)`` uint8 faces -> the ``(N, C, S, S)`` float32 batch the graph takes."""
    crops = np.stack([resize_crop(img, meta.input_size, meta.channels == 1) for img in images])
    return to_model_input(crops, meta.mean, meta.std)


class _Batches:
    """``onnxruntime.quantization.CalibrationDataReader`` over a fixed float batch."""

    def __init__(self, input_name: str, x: np.ndarray, batch: int = 32) -> None:
        self._it = iter([{input_name: x[i : i + batch]} for i in range(0, len(x), batch)])

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        return next(self._it, None)


def _agreement(role: str, ref: np.ndarray, got: np.ndarray) -> float:
    if role == "frame":
        return float(np.mean(ref.argmax(1) == got.argmax(1)))
    num = (ref * got).sum(1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1) + 1e-12
    return float(np.mean(num / den))


def quantize_model(
    model: Union[str, Path],
    calibration: np.ndarray,
    check: np.ndarray,
    out: Optional[Union[str, Path]] = None,
    min_agreement: float = 0.97,
    calibration_source: str = "",
) -> Dict[str, Any]:
    """Quantise one float frame/encoder graph; -> report (also stored in the graph's metadata).

    Args:
        model: exported float ONNX graph (role frame or encoder).
        calibration, check: grey ``(N, H, W)`` uint8 faces; disjoint sets.
        out: output file (default :func:`int8_path`).
        min_agreement: required top-1 agreement (frame) or mean feature cosine (encoder).

    Raises:
        ModelContractError: not a frame/encoder graph, already quantised, or agreement too low.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = Path(model)
    meta = read_onnx_metadata(src)
    if meta.role not in QUANTIZABLE_ROLES:
        raise ModelContractError(
            f"{src}: role {meta.role!r}; only {' and '.join(QUANTIZABLE_ROLES)} graphs are quantised "
            "(the sequence head is small and stays float)"
        )
    if "quantization" in meta.extra:
        raise ModelContractError(f"{src} is already quantised ({meta.extra['quantization']}); give the float graph")
    dst = Path(out) if out else int8_path(src)
    if dst.resolve() == src.resolve():
        raise ModelContractError(f"--out {dst} would overwrite the float graph it is made from")
    input_name = INPUT_NAMES[meta.role]
    x_cal, x_check = model_inputs(calibration, meta), model_inputs(check, meta)

    with tempfile.TemporaryDirectory() as tmp:
        pre, tmp_out = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(src), str(pre))
        quantize_static(
            str(pre),
            str(tmp_out),
            _Batches(input_name, x_cal),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        backend = create_backend("onnxruntime", device="cpu", threads=1)
        output = "logits" if meta.role == "frame" else "features"
        ref_session, q_session = backend.load(src, meta.role, 64), backend.load(tmp_out, meta.role, 64)
        try:
            ref = np.concatenate([ref_session.run(x_check[i : i + 64])[output] for i in range(0, len(x_check), 64)])
            got = np.concatenate([q_session.run(x_check[i : i + 64])[output] for i in range(0, len(x_check), 64)])
        finally:
            ref_session.close()
            q_session.close()
        agreement = _agreement(meta.role, ref, got)
        report = {
            "method": "onnxruntime static QDQ: int8 weights per channel, uint8 activations (MinMax)",
            "calibration": f"{len(calibration)} faces of {calibration_source or 'the calibration set'}",
            "check_faces": len(check),
            "agreement": round(agreement, 4),
            "agreement_kind": "top-1 class" if meta.role == "frame" else "mean cosine of features",
            "float_model": src.name,
            "float_sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
        }
        if not np.isfinite(got).all() or agreement < min_agreement:
            raise ModelContractError(
                f"{src}: the int8 graph agrees with the float one on {agreement:.4f} of {len(check)} faces "
                f"({report['agreement_kind']}), below --min-agreement {min_agreement}; nothing written. "
                "Try more --images, or keep the float graph"
            )
        q_meta = dataclasses.replace(meta, extra={**meta.extra, "quantization": json.dumps(report)})
        write_metadata(tmp_out, q_meta)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(tmp_out), str(dst))
    report["file"] = str(dst)
    return report


def calibration_faces(
    data: Union[str, Path], split: str, images: int, check_images: int, seed: int = 0
) -> Dict[str, np.ndarray]:
    """Two disjoint random sets of grey faces from a FER2013 split (``.tar.gz``, folder or csv)."""
    faces = load_fer2013(data, split)
    need = images + check_images
    if len(faces) < need:
        raise ModelLoadError(f"{data} {split} has {len(faces)} faces; --images + --check-images need {need}")
    order = np.random.default_rng(seed).permutation(len(faces))[:need]
    return {"calibration": faces.images[order[:images]], "check": faces.images[order[images:]]}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, nargs="+", help="float frame/encoder ONNX graph(s)")
    parser.add_argument("--data", required=True, help="FER2013 .tar.gz, image folder or fer2013.csv")
    parser.add_argument("--split", default="Training", help="split to calibrate on (default Training)")
    parser.add_argument("--images", type=int, default=1000, help="calibration faces (default 1000)")
    parser.add_argument("--check-images", type=int, default=2000, help="other faces for the agreement check")
    parser.add_argument("--min-agreement", type=float, default=0.97, help="required agreement (default 0.97)")
    parser.add_argument("--out", help="output file (one --model only; default <stem>_int8.onnx beside it)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out and len(args.model) > 1:
        build_parser().error("--out takes one --model")
    try:
        sets = calibration_faces(args.data, args.split, args.images, args.check_images, args.seed)
    except (DatasetError, ModelLoadError) as exc:
        print(f"error: {exc}")
        return 1
    reports: List[Dict[str, Any]] = []
    for model in args.model:
        try:
            reports.append(
                quantize_model(
                    model,
                    sets["calibration"],
                    sets["check"],
                    args.out,
                    args.min_agreement,
                    f"FER2013 {args.split} (seed {args.seed})",
                )
            )
        except (ModelLoadError, ModelContractError) as exc:
            print(f"error: {exc}")
            return 1
    for report in reports:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
