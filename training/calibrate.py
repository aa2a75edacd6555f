"""Fit a calibration temperature for a frame model and write a calibrated copy.

Usage::

    python -m training.calibrate --model ros2_affect/models/X.onnx \
        --data ../shared/data/affectnet-val/affectnet-val-dev.tar.gz \
        [--split-file training/splits/affectnet_val_dev.json --fit-part val --report-part test] \
        [--out X_calibrated.onnx] [--overwrite] [--json]

``--model`` is a frame graph or a temporal model's ``X_sequence.onnx`` (its
``X_encoder.onnx`` beside it; each face's feature is repeated ``T`` times, as the runtime
does for a face seen once; the temperature goes into the sequence head, whose logits it
scales). Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017):
one scalar ``T > 0`` that minimises the negative log-likelihood of ``softmax(logits / T)``
on validation faces; the argmax (the predicted class) never changes. ``T`` is stored in the
model metadata as ``ros2_affect.temperature`` (contract: :mod:`ros2_affect.backends.base`),
which the runtime applies to every estimate; the graph itself is not changed.

Data: photos with a ``labels.csv`` in the AffectNet layout (the AffectNet sample: tarball,
folder or ``labels.csv``), cut by the runtime's own aligner from the landmark eyes with the
model's alignment metadata (:class:`training.data.affectnet.AffectNetPhotos`). With a split
file, ``T`` is fitted on ``--fit-part`` (default ``val``) and the expected calibration error
(ECE, 15 bins, top-1) is reported before and after on ``--report-part`` (default ``test``,
held out: never used for the fit). Without one (``--split-file none``), a seeded half of
each class fits and the other half reports. Rows without an expression in the model's
classes (contempt for a 7-class model) are left out.

Output: a NEW file (default ``<model stem>_calibrated.onnx`` beside the input): never the
input itself (:func:`ros2_affect.outputs.check_not_an_input`), an existing file only with
``--overwrite``, written beside the target and renamed into place when complete. Calibrate
the float graph before :mod:`training.quantize` (the int8 copy inherits the metadata and
records the float graph's SHA-256).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from ros2_affect.backends.base import METADATA_PREFIX, TEMPERATURE_KEY, read_onnx_metadata
from ros2_affect.config import AlignmentConfig
from ros2_affect.errors import AffectError, ConfigError, OutputError
from ros2_affect.metrics import expected_calibration_error

#: Search range of T (log-uniform bounds of the 1-D minimisation).
T_RANGE = (0.05, 20.0)
ECE_BINS = 15


@dataclass(frozen=True)
class CalibrationReport:
    """What :func:`calibrate` measured. ECE and NLL before (T = 1, or the model's stored T
    when ``relative``) and after, on the fit and the report part; accuracy does not change."""

    temperature: float
    n_fit: int
    n_report: int
    accuracy_report: float
    nll_fit_before: float
    nll_fit_after: float
    ece_fit_before: float
    ece_fit_after: float
    nll_report_before: float
    nll_report_after: float
    ece_report_before: float
    ece_report_after: float

    def as_dict(self) -> Dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def _log_softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    out: np.ndarray = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return out


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / T)``."""
    lp = _log_softmax(logits, temperature)
    return float(-lp[np.arange(len(labels)), labels].mean())


def ece(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error (top-1, ``n_bins`` equal bins) of ``softmax(logits / T)``."""
    p = np.exp(_log_softmax(logits, temperature))
    return expected_calibration_error(p.max(axis=1), p.argmax(axis=1) == labels, n_bins)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The ``T`` in :data:`T_RANGE` minimising :func:`nll` (bounded Brent search over log T;
    the NLL is convex in 1/T, so the minimum is unique).

    Raises:
        ConfigError: fewer than 2 samples.
    """
    from scipy.optimize import minimize_scalar

    if len(labels) < 2:
        raise ConfigError(f"temperature fitting needs at least 2 labelled faces, got {len(labels)}")
    res = minimize_scalar(
        lambda log_t: nll(logits, labels, math.exp(log_t)),
        bounds=(math.log(T_RANGE[0]), math.log(T_RANGE[1])),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(math.exp(res.x))


def calibrate(
    fit_logits: np.ndarray, fit_labels: np.ndarray, report_logits: np.ndarray, report_labels: np.ndarray
) -> CalibrationReport:
    """Fit ``T`` on the fit part; NLL and ECE before/after on both parts."""
    t = fit_temperature(fit_logits, fit_labels)
    return CalibrationReport(
        temperature=t,
        n_fit=int(len(fit_labels)),
        n_report=int(len(report_labels)),
        accuracy_report=float((report_logits.argmax(axis=1) == report_labels).mean()),
        nll_fit_before=nll(fit_logits, fit_labels),
        nll_fit_after=nll(fit_logits, fit_labels, t),
        ece_fit_before=ece(fit_logits, fit_labels),
        ece_fit_after=ece(fit_logits, fit_labels, t),
        nll_report_before=nll(report_logits, report_labels),
        nll_report_after=nll(report_logits, report_labels, t),
        ece_report_before=ece(report_logits, report_labels),
        ece_report_after=ece(report_logits, report_labels, t),
    )


# -- data -------------------------------------------------------------------------------------


def encoder_path(sequence_path: Union[str, Path]) -> Path:
    """The encoder graph exported beside a sequence head: ``X_sequence.onnx`` -> ``X_encoder.onnx``."""
    p = Path(sequence_path)
    if not p.name.endswith("_sequence.onnx"):
        raise ConfigError(f"{p} is a sequence head but not named *_sequence.onnx; its *_encoder.onnx is not known")
    return p.with_name(p.name[: -len("_sequence.onnx")] + "_encoder.onnx")


def model_logits(model_path: Union[str, Path], crops: np.ndarray, batch: int = 64) -> np.ndarray:
    """Raw ``(N, K)`` logits (no temperature) for ``(N, S, S, C)`` uint8 crops, one face each.

    A frame graph runs the crops. A sequence head (``X_sequence.onnx``, with
    ``X_encoder.onnx`` beside it) gets each face's encoder feature repeated ``T`` times:
    what the runtime feeds it for a face seen once (its buffer repeats the oldest item to
    fill the sequence), e.g. every photo of a folder.
    """
    from ros2_affect.backends import create_backend
    from ros2_affect.backends.preprocess import to_model_input

    backend = create_backend("onnxruntime", device="cpu", threads=2)
    role = read_onnx_metadata(model_path).role
    if role == "frame":
        sessions = [backend.load(Path(model_path), "frame", batch)]
    else:
        sessions = [backend.load(encoder_path(model_path), "encoder", batch),
                    backend.load(Path(model_path), "sequence", batch)]
    try:
        first = sessions[0].metadata
        out = []
        for i in range(0, len(crops), batch):
            x = to_model_input(crops[i : i + batch], first.mean, first.std)
            if role == "frame":
                out.append(sessions[0].run(x)["logits"])
            else:
                feats = sessions[0].run(x)["features"]
                t = sessions[1].metadata.sequence_length
                seq = np.ascontiguousarray(np.repeat(feats[:, None, :], t, axis=1), dtype=np.float32)
                out.append(sessions[1].run(seq)["logits"])
    finally:
        for session in sessions:
            session.close()
    return np.concatenate(out).astype(np.float64)


def _halves(labels: np.ndarray, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Seeded stratified halves (positions) of ``labels``."""
    rng = np.random.default_rng(seed)
    fit, report = [], []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        fit += rows[: len(rows) // 2].tolist()
        report += rows[len(rows) // 2 :].tolist()
    return np.asarray(sorted(fit), dtype=np.int64), np.asarray(sorted(report), dtype=np.int64)


def load_parts(
    model_path: Union[str, Path],
    data: Union[str, Path],
    split_file: Optional[Union[str, Path]],
    fit_part: str = "val",
    report_part: str = "test",
    limit: int = 0,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(fit_logits, fit_labels, report_logits, report_labels)`` for the model on ``data``."""
    from training.data.splits import load_split_file
    from training.multitask import open_affectnet, part_indices

    meta = read_onnx_metadata(model_path)
    if meta.role == "encoder":
        raise ConfigError(
            f"{model_path} is an encoder graph (no logits); calibrate the temporal model's *_sequence.onnx, "
            "the graph with the logits"
        )
    if meta.role == "sequence":
        meta = replace(read_onnx_metadata(encoder_path(model_path)), class_names=meta.class_names)
    fields = {k: v for k, v in meta.alignment.items() if k in AlignmentConfig.__dataclass_fields__}
    alignment = replace(AlignmentConfig(**fields), output_size_px=meta.input_size, grayscale=meta.channels == 1)
    photos = open_affectnet(data, include_contempt=True, alignment=alignment)
    index = {name: i for i, name in enumerate(meta.class_names)}
    # the data's labels in the model's class order; -1 where the model has no such class
    to_model = np.asarray([index.get(name, -1) for name in photos.class_names], dtype=np.int64)
    labels_all = np.where(photos.expressions >= 0, to_model[np.maximum(photos.expressions, 0)], -1)
    labelled = np.flatnonzero(labels_all >= 0)
    if split_file is not None:
        parts = load_split_file(split_file)
        keep = set(labelled.tolist())
        fit = [i for i in part_indices(photos, parts[fit_part], fit_part, split_file).tolist() if i in keep]
        report = [i for i in part_indices(photos, parts[report_part], report_part, split_file).tolist() if i in keep]
        fit_rows, report_rows = np.asarray(fit, np.int64), np.asarray(report, np.int64)
    else:
        a, b = _halves(labels_all[labelled])
        fit_rows, report_rows = labelled[a], labelled[b]
    if limit > 0:
        fit_rows, report_rows = fit_rows[:limit], report_rows[:limit]
    out = []
    for rows in (fit_rows, report_rows):
        crops, _, _ = photos.materialize(rows)
        out += [model_logits(model_path, crops), labels_all[rows]]
    return out[0], out[1], out[2], out[3]


# -- output -----------------------------------------------------------------------------------


def default_output(model: Union[str, Path]) -> Path:
    p = Path(model)
    return p.with_name(f"{p.stem}_calibrated.onnx")


def write_calibrated(model: Union[str, Path], out: Union[str, Path], temperature: float, report: Dict[str, Any],
                     overwrite: bool = False) -> Path:
    """Copy ``model`` to ``out`` with ``ros2_affect.temperature`` (and the calibration report)
    in its metadata.

    Raises:
        OutputError: ``out`` is the input, or exists without ``overwrite``.
    """
    import onnx

    from ros2_affect.outputs import check_not_an_input

    src, dst = Path(model), Path(out)
    check_not_an_input(dst, [src], "--out")
    if dst.suffix.lower() != ".onnx":
        raise OutputError(f"--out {str(dst)!r} must be a .onnx file name")
    if dst.exists() and not overwrite:
        raise OutputError(f"--out {str(dst)!r} exists; pass --overwrite to replace it, or choose another name")
    if not math.isfinite(temperature) or temperature <= 0:
        raise ConfigError(f"temperature {temperature} must be finite and > 0")
    graph = onnx.load(str(src))
    keep = [p for p in graph.metadata_props if p.key not in (METADATA_PREFIX + TEMPERATURE_KEY,
                                                             METADATA_PREFIX + "calibration")]
    del graph.metadata_props[:]
    graph.metadata_props.extend(keep)
    for key, value in ((TEMPERATURE_KEY, repr(float(temperature))), ("calibration", json.dumps(report))):
        entry = graph.metadata_props.add()
        entry.key, entry.value = METADATA_PREFIX + key, value
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".incomplete", dir=dst.parent)
    os.close(fd)
    try:
        onnx.save(graph, tmp)
        read_onnx_metadata(tmp)  # the runtime's own check of the new file
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide a shipped model from other users
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dst


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True,
                        help="float frame graph, or a temporal model's X_sequence.onnx (X_encoder.onnx beside it)")
    parser.add_argument("--data", required=True, help="affectnet-val-dev.tar.gz, its folder, or a labels.csv")
    parser.add_argument("--split-file", default="training/splits/affectnet_val_dev.json",
                        help="train/val/test ids; 'none': stratified seeded halves of --data")
    parser.add_argument("--fit-part", default="val", help="part of the split the temperature is fitted on")
    parser.add_argument("--report-part", default="test", help="held-out part ECE is reported on")
    parser.add_argument("--out", help="calibrated copy (default <model stem>_calibrated.onnx)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out (never the input)")
    parser.add_argument("--limit", type=int, default=0, help="> 0: at most this many faces per part (smoke tests)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    split = None if args.split_file.lower() == "none" else args.split_file
    out = Path(args.out) if args.out else default_output(args.model)
    try:
        from ros2_affect.outputs import check_not_an_input

        check_not_an_input(out, [args.model, args.data], "--out")
        if out.exists() and not args.overwrite:
            raise OutputError(f"--out {str(out)!r} exists; pass --overwrite to replace it, or choose another name")
        parts = load_parts(args.model, args.data, split, args.fit_part, args.report_part, args.limit)
        report = calibrate(*parts)
        info = {**report.as_dict(), "fit_part": args.fit_part if split else "half A",
                "report_part": args.report_part if split else "half B", "ece_bins": ECE_BINS}
        write_calibrated(args.model, out, report.temperature, info, overwrite=args.overwrite)
    except (AffectError, KeyError) as exc:
        print(f"training.calibrate: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**info, "out": str(out)}, indent=2))
    else:
        print(f"temperature T = {report.temperature:.4f} fitted on {report.n_fit} faces ({info['fit_part']})")
        print(f"held out ({info['report_part']}, {report.n_report} faces, accuracy {report.accuracy_report:.4f}): "
              f"ECE {report.ece_report_before:.4f} -> {report.ece_report_after:.4f}, "
              f"NLL {report.nll_report_before:.4f} -> {report.nll_report_after:.4f}")
        print(f"fit part: ECE {report.ece_fit_before:.4f} -> {report.ece_fit_after:.4f}, "
              f"NLL {report.nll_fit_before:.4f} -> {report.nll_fit_after:.4f}")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
