"""Evaluate an affect model on a folder of face images, one subfolder per class.

Usage::

    python -m training.evaluate --model MODEL --data DIR [--json] [--confusion PNG]
        [--tta flip] [--sequences] [--limit-per-class N]

``MODEL`` is any of:

- a training checkpoint (``.pt``), run with the ``torch`` backend (:mod:`training.torch_backend`);
- an exported frame graph (``.onnx``), run with the runtime's ``onnxruntime`` backend;
- one graph of an exported temporal model (``NAME_encoder.onnx`` or ``NAME_sequence.onnx``;
  the other is found beside it) or the export's ``NAME.json`` sidecar.

Either way the predictions go through the runtime's model classes
(:class:`~ros2_affect.core.affect_model.FrameAffectModel`,
:class:`~ros2_affect.core.affect_model.TemporalAffectModel`), the code the robot runs
(preprocessing, softmax, flip averaging, derived valence/arousal), so the numbers describe
the deployed model, not a re-implementation of it.

``DIR`` holds one subfolder per class, named by canonical class name in any case or a
known alias (FER2013's ``angry`` -> ``anger``, ``happiness`` -> ``happy``, see
:data:`ros2_affect.bags.labels.EXPRESSION_ALIASES`), e.g. FER2013's ``PublicTest`` folder. Images are
treated as already-aligned face crops and only resized to the model's input size and
channels (:func:`training.data.faces.resize_crop`). A class folder the model has no
class for is an error; an unreadable image is skipped and counted.

Temporal models on still images: each image is encoded once and its feature vector
repeated ``T`` times, i.e. the model sees a face that stood still for ``T`` frames (the
runtime's buffer pads a new track the same way). With ``--sequences`` each image is
instead turned into ``T`` perturbed frames by :func:`training.sequences.make_sequences`
(seeded), the augmentation the temporal model was trained with on stills.

Output (``--json``): one JSON object with ``accuracy``, ``macro_f1``,
``mean_class_accuracy``, ``per_class_recall``, ``per_class_precision`` (``{name: value}``),
``n``, ``model_id``, plus ``per_class_f1``, ``per_class_support``, ``confusion_matrix``
(rows: true class), ``class_names``, ``kind``, ``tta``, ``temporal_input``,
``skipped_files`` and ``seconds``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from ros2_affect.backends.base import read_onnx_metadata
from ros2_affect.errors import AffectError, DatasetError, ModelLoadError
from training.data.faces import resize_crop
from training.data.labels import canonical_name
from training.metrics import classification_report, to_jsonable
from training.photo_eval import CROP_CHOICES, PHOTO_MODES

LOG = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".webp")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
TTA_CHOICES = ("none", "flip")


@dataclass
class FolderData:
    """Images of a class-folder dataset, mapped to a model's classes.

    Attributes:
        crops: ``(N, S, S, C)`` uint8.
        labels: ``(N,)`` int64 indices into the model's class names.
        files: ``N`` image paths.
        skipped: unreadable files (path, reason).
    """

    crops: np.ndarray
    labels: np.ndarray
    files: List[str]
    skipped: List[Tuple[str, str]]


# -- model loading ----------------------------------------------------------------------------


def resolve_graphs(model: Union[str, Path]) -> Dict[str, Path]:
    """Role -> file for ``--model``: ``{"frame": p}`` or ``{"encoder": p, "sequence": q}``
    (ONNX), or ``{"checkpoint": p}`` (a ``.pt``).

    Raises:
        ModelLoadError: a file or the sibling graph is missing, or an unknown file type.
    """
    path = Path(model)
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist; pass a .pt checkpoint, an exported .onnx or its .json")
    suffix = path.suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        return {"checkpoint": path}
    if suffix == ".json":
        try:
            graphs = json.loads(path.read_text())["graphs"]
            return {role: path.parent / entry["file"] for role, entry in graphs.items()}
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(
                f"{path}: not an export sidecar (needs 'graphs': {{role: {{'file': ...}}}}): {exc}"
            ) from None
    if suffix != ".onnx":
        raise ModelLoadError(f"{path}: unknown model type {suffix!r}; pass a .pt checkpoint, a .onnx graph or a .json")
    role = read_onnx_metadata(path).role
    if role == "frame":
        return {"frame": path}
    stem = path.stem
    for tag in ("_int8", "_encoder", "_sequence"):  # x_encoder_int8.onnx pairs with x_sequence.onnx
        if stem.endswith(tag):
            stem = stem[: -len(tag)]
    graphs = {"encoder": path.with_name(f"{stem}_encoder.onnx"), "sequence": path.with_name(f"{stem}_sequence.onnx")}
    graphs[role] = path
    other = "sequence" if role == "encoder" else "encoder"
    if not graphs[other].is_file():
        raise ModelLoadError(
            f"{path} is the {role} graph of a temporal model; its {other} graph {graphs[other].name} is not beside it"
        )
    return graphs


def load_model(model: Union[str, Path], tta: str = "none", max_batch: int = 64) -> Any:
    """A :class:`~ros2_affect.core.affect_model.FrameAffectModel` or
    :class:`~ros2_affect.core.affect_model.TemporalAffectModel` for ``--model`` (see module doc)."""
    from ros2_affect.backends import create_backend
    from ros2_affect.core.affect_model import FrameAffectModel, TemporalAffectModel
    from ros2_affect.errors import ModelContractError

    graphs = resolve_graphs(model)
    flip = tta == "flip"
    if "checkpoint" in graphs:
        from training.torch_backend import TorchBackend

        backend = TorchBackend(device="cpu")
        path = graphs["checkpoint"]
        try:
            frame = backend.load(path, "frame", max_batch)
        except ModelContractError as exc:
            if "temporal checkpoint" not in str(exc):
                raise
            return TemporalAffectModel(
                backend.load(path, "encoder", max_batch),
                backend.load(path, "sequence", max_batch),
                flip_average=flip,
                max_batch=max_batch,
            )
        return FrameAffectModel(frame, flip_average=flip, max_batch=max_batch)
    backend = create_backend("onnxruntime", device="cpu", threads=0)
    sessions = {role: backend.load(path, role, max_batch) for role, path in graphs.items()}
    if "frame" in sessions:
        return FrameAffectModel(sessions["frame"], flip_average=flip, max_batch=max_batch)
    return TemporalAffectModel(sessions["encoder"], sessions["sequence"], flip_average=flip, max_batch=max_batch)


# -- data -------------------------------------------------------------------------------------


def _read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError("cannot be decoded as an image")
    if image.dtype != np.uint8:
        raise DatasetError(f"has dtype {image.dtype}; 8-bit images are expected")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    elif image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return image


def load_folder(
    root: Union[str, Path],
    class_names: Sequence[str],
    size_px: int,
    channels: int,
    limit_per_class: Optional[int] = None,
) -> FolderData:
    """Read ``root/<class>/*`` as face crops for a model with ``class_names``.

    Raises:
        DatasetError: ``root`` is missing, has no class folder, or a folder names a class
            the model does not have.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data folder {root} does not exist; pass a folder with one subfolder per class")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise DatasetError(f"{root} has no subfolders; expected one per class (e.g. fer2013/PublicTest/angry/...)")
    index = {name: i for i, name in enumerate(class_names)}
    mapping: List[Tuple[Path, int]] = []
    for folder in folders:
        try:
            name = canonical_name(folder.name, tuple(class_names))
        except DatasetError as exc:
            hint = ""
            if folder.name in ("Training", "PublicTest", "PrivateTest", "train", "test", "val"):
                hint = f"; {root} looks like a dataset root: pass the split folder ({folder}) instead"
            raise DatasetError(f"{root}: class folder {folder.name!r}: {exc}{hint}") from None
        mapping.append((folder, index[name]))
    crops: List[np.ndarray] = []
    labels: List[int] = []
    files: List[str] = []
    skipped: List[Tuple[str, str]] = []
    grey = channels == 1
    for folder, label in mapping:
        paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if limit_per_class is not None:
            paths = paths[:limit_per_class]
        for path in paths:
            try:
                crop = resize_crop(_read_image(path), size_px, grey)
            except DatasetError as exc:
                skipped.append((str(path), str(exc)))
                continue
            crops.append(crop)
            labels.append(label)
            files.append(str(path))
    if skipped:
        LOG.warning("skipped %d unreadable image(s), e.g. %s: %s", len(skipped), skipped[0][0], skipped[0][1])
    if not crops:
        raise DatasetError(f"{root}: no readable image ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    return FolderData(np.stack(crops), np.asarray(labels, dtype=np.int64), files, skipped)


# -- prediction -------------------------------------------------------------------------------


def predict_estimates(
    model: Any, crops: np.ndarray, sequences: bool = False, seed: int = 0, batch: int = 256
) -> List[Any]:
    """One :class:`~ros2_affect.core.types.AffectEstimate` per ``(N, S, S, C)`` uint8 crop.

    Frame models: one prediction per crop. Temporal models: see the module docstring
    (replicated features, or ``sequences`` for augmented sequences).

    Raises:
        ModelLoadError: the model returned non-finite values for some crop.
    """
    out: List[Any] = []
    for start in range(0, len(crops), batch):
        chunk = crops[start : start + batch]
        if sequences and model.kind == "temporal":
            estimates = model.estimate_clips(_augmented_sequences(chunk, model.sequence_length, seed + start))
        else:
            estimates = model.estimate_stills(chunk)
        for i, est in enumerate(estimates):
            if est is None:
                raise ModelLoadError(
                    f"model {model.model_id} returned non-finite outputs for image #{start + i}; it is broken"
                )
            out.append(est)
    return out


def predict_probabilities(
    model: Any, crops: np.ndarray, sequences: bool = False, seed: int = 0, batch: int = 256
) -> np.ndarray:
    """``(N, K)`` class probabilities for ``(N, S, S, C)`` uint8 crops (see :func:`predict_estimates`)."""
    k = len(model.class_names)
    out = np.zeros((len(crops), k), dtype=np.float64)
    for i, est in enumerate(predict_estimates(model, crops, sequences, seed, batch)):
        out[i] = est.probabilities
    return out


def _augmented_sequences(crops: np.ndarray, length: int, seed: int) -> np.ndarray:
    """``(N, S, S, C)`` uint8 stills -> ``(N, T, S, S, C)`` uint8 perturbed frames."""
    import torch

    from training.sequences import SequenceAugmentConfig, make_sequences

    g = torch.Generator().manual_seed(seed)
    stills = torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2)))  # (N, C, S, S)
    seqs = make_sequences(stills, SequenceAugmentConfig(length=length), g)  # (N, T, C, S, S) float 0..255
    frames = seqs.round().clamp(0, 255).to(torch.uint8).numpy()
    return np.ascontiguousarray(frames.transpose(0, 1, 3, 4, 2))


# -- report -----------------------------------------------------------------------------------


def evaluate(
    model_path: Union[str, Path],
    data: Union[str, Path],
    tta: str = "none",
    sequences: bool = False,
    limit_per_class: Optional[int] = None,
    seed: int = 0,
) -> Dict[str, Any]:
    """Evaluate ``model_path`` on the class folders under ``data``; returns the report dict."""
    if tta not in TTA_CHOICES:
        raise ValueError(f"tta = {tta!r}; choose one of {TTA_CHOICES}")
    started = time.perf_counter()
    model = load_model(model_path, tta)
    try:
        folder = load_folder(data, model.class_names, model.input_size, model.channels, limit_per_class)
        probs = predict_probabilities(model, folder.crops, sequences and model.kind == "temporal", seed)
    finally:
        model.close()
    pred = np.argmax(probs, axis=1)
    report = classification_report(folder.labels, pred, model.class_names)
    ordered = {
        "model_id": model.model_id,
        "n": report.pop("n"),
        "accuracy": report.pop("accuracy"),
        "macro_f1": report.pop("macro_f1"),
        "mean_class_accuracy": report.pop("mean_class_accuracy"),
        "per_class_recall": report.pop("per_class_recall"),
        "per_class_precision": report.pop("per_class_precision"),
    }
    ordered.update(report)
    ordered.update(
        {
            "kind": model.kind,
            "tta": tta,
            "temporal_input": None if model.kind == "frame" else ("sequences" if sequences else "replicated"),
            "model": str(model_path),
            "data": str(data),
            "skipped_files": len(folder.skipped),
            "seconds": round(time.perf_counter() - started, 3),
        }
    )
    return ordered


def save_confusion_png(report: Dict[str, Any], path: Union[str, Path]) -> Path:
    """Row-normalised confusion matrix with counts, as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(report["confusion_matrix"], dtype=np.float64)
    names = report["class_names"]
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(names), 1.0 + 0.8 * len(names)), dpi=100)
    ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{report['model_id']}  acc {report['accuracy']:.3f}  macro-F1 {report['macro_f1']:.3f}", fontsize=9)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(
                j,
                i,
                f"{norm[i, j]:.2f}\n{int(cm[i, j])}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="Accuracy, macro F1 and per-class scores of an affect model on class-named image folders "
        "(--data), or all expression and valence/arousal metrics on labelled photos (--labels).",
    )
    parser.add_argument("--model", required=True, help=".pt checkpoint, exported .onnx graph, or export .json")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="folder with one subfolder of face crops per class")
    source.add_argument(
        "--labels",
        type=Path,
        help="labelled photos: a labels.csv (image, expression, valence, arousal[, landmarks_xy]) "
        "whose image paths are relative to its folder or to --images",
    )
    photos = parser.add_argument_group("labelled photos (--labels)")
    photos.add_argument("--images", type=Path, help="folder the table's image paths are relative to (default: its own)")
    photos.add_argument(
        "--mode",
        choices=PHOTO_MODES,
        default="crops",
        help="crops: each photo is the face crop; pipeline: detect, align, model, each photo on its own",
    )
    photos.add_argument(
        "--crop",
        choices=CROP_CHOICES,
        default="resize",
        help="--mode crops: resize the photo, or align it from the table's landmarks",
    )
    photos.add_argument(
        "--config", type=Path, help="--mode pipeline: runtime parameter file (default: the packaged one)"
    )
    photos.add_argument("--limit", type=int, help="at most this many photos (quick checks)")
    photos.add_argument("--split", type=Path, help="a split file (training/splits/*.json): score only --part of it")
    photos.add_argument("--part", help="the part of --split to score: train, val or test (the held-out part)")
    photos.add_argument(
        "--out", type=Path, help="write metrics.json, predictions.csv, confusion_matrix.png, valence_arousal.png here"
    )
    photos.add_argument("--overwrite", action="store_true", help="replace an existing --out written by this tool")
    parser.add_argument("--json", action="store_true", help="print one JSON object (default: a readable summary)")
    parser.add_argument("--confusion", help="write the confusion matrix as a PNG here")
    parser.add_argument("--tta", choices=TTA_CHOICES, default="none", help="flip: average with the mirrored face")
    parser.add_argument(
        "--sequences",
        action="store_true",
        help="temporal models: augmented sequences instead of a still repeated T times",
    )
    parser.add_argument("--limit-per-class", type=int, help="at most this many images per class (quick checks)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --sequences augmentation")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.labels is not None:
        return _main_photos(args)
    try:
        report = evaluate(args.model, args.data, args.tta, args.sequences, args.limit_per_class, args.seed)
    except (AffectError, ValueError) as exc:
        print(f"training.evaluate: error: {exc}", file=sys.stderr)
        return 1
    if args.confusion:
        report["confusion_png"] = str(save_confusion_png(report, args.confusion))
    if args.json:
        print(json.dumps(to_jsonable(report), allow_nan=False))
        return 0
    print(f"{report['model_id']} ({report['kind']}, tta {report['tta']}) on {report['data']}: n = {report['n']}")
    print(
        f"  accuracy {report['accuracy']:.4f}   macro F1 {report['macro_f1']:.4f}   "
        f"mean class accuracy {report['mean_class_accuracy']:.4f}"
    )
    for name in report["class_names"]:
        print(
            f"  {name:10s} recall {report['per_class_recall'][name]:.3f}  "
            f"precision {report['per_class_precision'][name]:.3f}  n {report['per_class_support'][name]}"
        )
    if report["skipped_files"]:
        print(f"  skipped {report['skipped_files']} unreadable file(s)")
    return 0


def _main_photos(args: argparse.Namespace) -> int:
    """``--labels``: :func:`training.photo_eval.evaluate_photos`, then the report files."""
    from training.photo_eval import evaluate_photos, report_target, summary_lines, write_outputs

    try:
        if args.limit is not None and args.limit < 1:
            raise ValueError(f"--limit = {args.limit}; pass a number of photos >= 1")
        # checked before any work: not an input, an existing folder only with --overwrite
        target = (
            report_target(args.out, args.overwrite, [args.labels, args.images, args.model, args.config, args.split])
            if args.out is not None
            else None
        )
        report, pred, data = evaluate_photos(
            args.model, args.labels, args.images, args.mode, args.crop, args.config, args.limit, args.tta,
            args.split, args.part,
        )
        if target is not None:
            report["files"] = [str(p) for p in write_outputs(report, pred, data, target)]
    except (AffectError, ValueError, OSError) as exc:
        print(f"training.evaluate: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(to_jsonable(report), allow_nan=False))
    else:
        print("\n".join(summary_lines(report)))
        if target is not None:
            print(f"wrote {target.path}/: {', '.join(Path(f).name for f in report['files'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
