"""Evaluate an affect model on labelled photos (a folder with a ``labels.csv``).

Run through ``python -m training.evaluate --model MODEL --labels labels.csv --out DIR``
(see :mod:`training.evaluate`). The table is read by
:class:`training.data.affectnet.AffectNetPhotos` (AffectNet's ``image, expression,
valence, arousal[, landmarks_xy]`` layout; ``.jpg``, ``.png``, ``.tif``/``.tiff``, ...).

Two modes:

- ``crops``: each photo is taken as the face crop and fed to the model (resized to its
  input, or with ``crop="landmarks"`` aligned from the table's landmarks as training does).
- ``pipeline``: each photo goes through the runtime's whole pipeline (detect, refine eyes,
  align, model: :class:`ros2_affect.core.pipeline.AffectPipeline`) on its own: the pipeline
  is reset before every photo, so no track, eye position or model sequence crosses photos.
  The scored face is the largest one with an estimate. A photo where no face is found is
  counted and scored as a miss: figures are given over all photos (``all``: the miss is a
  wrong class with confidence 0, valence/arousal 0, the neutral point) and over the photos
  with a face (``detected``).

Metrics (one implementation: :mod:`ros2_affect.metrics`, via :mod:`training.metrics`):

- ``expression_7``: the canonical seven classes; contempt photos are left out (as
  7-class training does, :func:`training.data.labels.class_names`) and a model with an
  8th class is scored on its seven canonical probabilities, renormalised. Accuracy, macro
  F1 (over the seven classes), mean class accuracy, per-class scores, confusion matrix,
  expected calibration error (15 equal-width bins of the top-1 confidence).
- ``expression_8``: the same with contempt, for a model that has 8 classes; otherwise
  ``{"n/a": reason}``.
- ``valence`` / ``arousal``: CCC, PCC, RMSE, MAE and sign agreement (a label of exactly 0
  agrees only with 0) on the photos that have the label; ``va_7class_photos``: the same
  without the contempt photos. ``va_derived`` says whether the model regressed them or
  derived them from its class probabilities.

Unreadable images are skipped and counted (``photos.unreadable``), as are table rows that
cannot be used (``photos.rows_left_out``, by reason: a missing image file). A bad value in
the table (out of range, not a number, an unknown class) is an error naming its line: the
table is read by :func:`ros2_affect.bags.photos.read_affectnet_photos`, whose rule
:mod:`ros2_affect.bags.labels` documents.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ros2_affect.config import AlignmentConfig
from ros2_affect.errors import ConfigError, DatasetError
from ros2_affect.outputs import OutputTarget, only_entries
from training.data.affectnet import AffectNetPhotos
from training.data.labels import CLASSES_7, CLASSES_8
from training.metrics import (
    classification_report,
    expected_calibration_error,
    mae,
    sign_agreement,
    to_jsonable,
    va_report,
)

LOG = logging.getLogger(__name__)

PHOTO_MODES = ("crops", "pipeline")
CROP_CHOICES = ("resize", "landmarks")
ECE_BINS = 15
#: What an evaluation writes into its ``--out`` folder (and all that ``--overwrite`` replaces).
REPORT_FILES = ("metrics.json", "predictions.csv", "confusion_matrix.png", "valence_arousal.png")
NO_FACE = "(no face)"


@dataclass
class PhotoPredictions:
    """Per-photo model outputs, ``N`` photos of the table.

    Attributes:
        probabilities: ``(N, K)`` float64 over ``class_names``; NaN rows: no prediction.
        va: ``(N, 2)`` float64 predicted valence, arousal; NaN rows: no prediction.
        readable: ``(N,)`` bool, the image could be read.
        class_names: the model's classes.
        va_derived: valence/arousal derived from the class probabilities (not regressed).
        model_id: the model's id.
        kind: ``frame`` or ``temporal``.
    """

    probabilities: np.ndarray
    va: np.ndarray
    readable: np.ndarray
    class_names: Tuple[str, ...]
    va_derived: bool
    model_id: str
    kind: str

    @property
    def found(self) -> np.ndarray:
        """``(N,)`` bool: a prediction exists (image read and, in pipeline mode, a face found)."""
        return np.isfinite(self.probabilities).all(axis=1)


# -- prediction -------------------------------------------------------------------------------


def _alignment_for(model: Any) -> AlignmentConfig:
    return AlignmentConfig(output_size_px=int(model.input_size), grayscale=int(model.channels) == 1)


def predict_crops(model: Any, data: AffectNetPhotos, batch: int = 256) -> PhotoPredictions:
    """Mode ``crops``: every readable photo through ``model`` (an ``AffectModel``) as its face crop."""
    from training.evaluate import predict_estimates

    n, k = len(data), len(model.class_names)
    probs = np.full((n, k), np.nan)
    va = np.full((n, 2), np.nan)
    readable = np.zeros(n, dtype=bool)
    crops: List[np.ndarray] = []
    rows: List[int] = []
    for i in range(n):
        try:
            crops.append(data.load_crop(i))
        except DatasetError as exc:
            LOG.debug("photo %s skipped: %s", data.keys[i], exc)
            continue
        readable[i] = True
        rows.append(i)
    derived = True
    if crops:
        estimates = predict_estimates(model, np.stack(crops), batch=batch)
        for i, est in zip(rows, estimates, strict=True):
            probs[i] = est.probabilities
            va[i] = (est.valence, est.arousal)
            derived = est.va_derived
    return PhotoPredictions(probs, va, readable, tuple(model.class_names), derived, model.model_id, model.kind)


def predict_pipeline(pipeline: Any, data: AffectNetPhotos) -> PhotoPredictions:
    """Mode ``pipeline``: every readable photo through ``pipeline`` (reset before each)."""
    from ros2_affect.core.types import Frame

    model = pipeline.model
    n, k = len(data), len(model.class_names)
    probs = np.full((n, k), np.nan)
    va = np.full((n, 2), np.nan)
    readable = np.zeros(n, dtype=bool)
    derived = True
    for i in range(n):
        try:
            image = data.read_image(i)
        except DatasetError as exc:
            LOG.debug("photo %s skipped: %s", data.keys[i], exc)
            continue
        readable[i] = True
        pipeline.reset()  # each photo on its own: no track, eye or sequence state from the last one
        result = pipeline.process(Frame(image, stamp_ns=0, frame_id=data.keys[i]))
        faces = [f for f in result.faces if f.affect is not None]
        if not faces:
            continue
        face = max(faces, key=lambda f: f.detection.area_px)
        probs[i] = face.affect.probabilities
        va[i] = (face.affect.valence, face.affect.arousal)
        derived = face.affect.va_derived
    return PhotoPredictions(probs, va, readable, tuple(model.class_names), derived, model.model_id, model.kind)


# -- metrics ----------------------------------------------------------------------------------


def _expression_scores(
    labels: np.ndarray, pred: PhotoPredictions, rows: np.ndarray, classes: Sequence[str]
) -> Dict[str, Any]:
    """Classification metrics over ``rows`` for the target ``classes`` (a prefix of CLASSES_8).

    ``labels`` index into CLASSES_8; a row without a prediction counts as a wrong answer
    (column ``(no face)``) with confidence 0.
    """
    columns = [pred.class_names.index(c) for c in classes]
    keep = rows & (labels >= 0) & (labels < len(classes))
    if not keep.any():
        return {"n/a": "no photo with one of these expression labels"}
    p = pred.probabilities[keep][:, columns]
    found = np.isfinite(p).all(axis=1)
    p = np.where(found[:, None], p, 0.0)
    total = p.sum(axis=1, keepdims=True)
    p = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
    y_true = labels[keep]
    y_pred = np.where(found, np.argmax(p, axis=1), len(classes))
    names = list(classes) + ([NO_FACE] if not found.all() else [])
    report = classification_report(y_true, y_pred, names)
    f1 = np.asarray([report["per_class_f1"][c] for c in classes])
    support = np.asarray([report["per_class_support"][c] for c in classes])
    predicted = np.bincount(y_pred, minlength=len(names))[: len(classes)]
    report["macro_f1"] = float(np.mean(f1[(support > 0) | (predicted > 0)]))  # over the model's classes only
    confidence = np.where(found, p.max(axis=1), 0.0)
    report["ece"] = expected_calibration_error(confidence, y_true == y_pred, ECE_BINS)
    report["mean_confidence"] = float(confidence.mean())
    report["misses"] = int((~found).sum())
    return report


def _va_scores(va_true: np.ndarray, pred: PhotoPredictions, rows: np.ndarray) -> Dict[str, Any]:
    """CCC, PCC, RMSE, MAE, sign agreement per dimension; a row without a prediction counts as 0."""
    labelled = rows & np.isfinite(va_true).all(axis=1)
    x = np.where(np.isfinite(pred.va), pred.va, 0.0)[labelled]
    y = va_true[labelled]
    base = va_report(x, y)
    out: Dict[str, Any] = {}
    for i, dim in enumerate(("valence", "arousal")):
        scores: Dict[str, Any] = {"n": base["n_va"]}
        if base["n_va"] >= 2:
            scores.update(
                ccc=base[f"ccc_{dim}"],
                pcc=base[f"pcc_{dim}"],
                rmse=base[f"rmse_{dim}"],
                mae=mae(x[:, i], y[:, i]),
                sign_agreement=sign_agreement(x[:, i], y[:, i]),
                mean_prediction=float(x[:, i].mean()),
                mean_label=float(y[:, i].mean()),
            )
        out[dim] = scores
    return out


def score(labels: np.ndarray, va_true: np.ndarray, pred: PhotoPredictions, rows: np.ndarray) -> Dict[str, Any]:
    """All metrics over the photos ``rows`` (``(N,)`` bool); see the module docstring."""
    out: Dict[str, Any] = {"photos": int(rows.sum())}
    out["expression_7"] = _expression_scores(labels, pred, rows, CLASSES_7)
    if "contempt" in pred.class_names:
        out["expression_8"] = _expression_scores(labels, pred, rows, CLASSES_8)
    else:
        out["expression_8"] = {"n/a": f"model {pred.model_id} has no contempt class ({len(pred.class_names)} classes)"}
    out.update(_va_scores(va_true, pred, rows))
    # the same over the photos of the seven canonical classes (contempt photos left out), as
    # FER2013-trained models and figures quoted on 7-class subsets are scored
    out["va_7class_photos"] = _va_scores(va_true, pred, rows & (labels >= 0) & (labels < len(CLASSES_7)))
    if not pred.va_derived:
        # the baseline a regressor must beat: the runtime's fallback, valence/arousal derived
        # from this same model's class probabilities (va_mode "derived")
        out["va_derived_baseline"] = _va_scores(va_true, derived_predictions(pred), rows)
    return out


def derived_predictions(pred: PhotoPredictions) -> PhotoPredictions:
    """``pred`` with valence/arousal derived from its class probabilities, as the runtime
    derives them for models without a trained regressor."""
    from ros2_affect.core.valence_arousal import derive_valence_arousal

    va = np.full_like(pred.va, np.nan)
    found = pred.found
    if found.any():
        va[found] = derive_valence_arousal(pred.probabilities[found], pred.class_names)
    return dataclasses.replace(pred, va=va, va_derived=True)


# -- the evaluation ---------------------------------------------------------------------------


def pipeline_config(model_path: Union[str, Path], config_path: Optional[Path] = None, tta: str = "none") -> Any:
    """The runtime settings (``config_path`` or the packaged parameter file) with the model
    at ``model_path`` (a frame ``.onnx``, either graph of a temporal export, or its ``.json``;
    a ``.pt`` checkpoint is refused: export it first) and ``tta="flip"`` as
    ``model.flip_average``.

    Raises:
        ConfigError: a checkpoint, or a bad parameter file.
    """
    from ros2_affect.tools.cli_args import config_with_overrides
    from training.evaluate import resolve_graphs

    graphs = resolve_graphs(model_path)
    if "checkpoint" in graphs:
        raise ConfigError(
            f"--mode pipeline runs exported models; {model_path} is a checkpoint: export it first "
            "(python -m training.export) or use --mode crops"
        )
    if "frame" in graphs:
        overrides = ["model.kind=frame", f"model.frame_model={graphs['frame']}"]
    else:
        overrides = [
            "model.kind=temporal",
            f"model.encoder_model={graphs['encoder']}",
            f"model.sequence_model={graphs['sequence']}",
        ]
    if tta == "flip":
        overrides.append("model.flip_average=true")
    return config_with_overrides(config_path, overrides)


def evaluate_photos(
    model_path: Union[str, Path],
    labels_csv: Union[str, Path],
    images_root: Optional[Union[str, Path]] = None,
    mode: str = "crops",
    crop: str = "resize",
    config_path: Optional[Path] = None,
    limit: Optional[int] = None,
    tta: str = "none",
    split_file: Optional[Union[str, Path]] = None,
    part: Optional[str] = None,
) -> Tuple[Dict[str, Any], PhotoPredictions, AffectNetPhotos]:
    """Predict and score every photo of ``labels_csv``; returns (report, predictions, table).

    ``split_file`` and ``part``: only the photos of that part of a split file
    (:mod:`training.data.splits`, ids are the image file names without suffix), e.g. the
    held-out ``test`` part of ``training/splits/affectnet_val_dev.json``.

    Raises:
        DatasetError: the table is unreadable or has no usable row.
        ModelLoadError, ConfigError: the model cannot be loaded.
    """
    if mode not in PHOTO_MODES:
        raise ValueError(f"mode = {mode!r}; choose one of {PHOTO_MODES}")
    if crop not in CROP_CHOICES:
        raise ValueError(f"crop = {crop!r}; choose one of {CROP_CHOICES}")
    started = time.perf_counter()
    if mode == "crops":
        from training.evaluate import load_model

        model = load_model(model_path, tta)
        try:
            data = AffectNetPhotos(
                labels_csv, images_root, _alignment_for(model), include_contempt=True, crop=crop, limit=limit
            )
            data = _split_part(data, split_file, part, limit)
            pred = predict_crops(model, data)
        finally:
            model.close()
    else:
        from ros2_affect.core.pipeline import create_pipeline

        config = pipeline_config(model_path, config_path, tta)
        with create_pipeline(config, tracker_seed=0) as pipeline:
            data = AffectNetPhotos(labels_csv, images_root, include_contempt=True, limit=limit)
            data = _split_part(data, split_file, part, limit)
            pred = predict_pipeline(pipeline, data)
    labels = data.expressions
    va_true = data.va.astype(np.float64)
    readable = pred.readable
    found = pred.found
    report: Dict[str, Any] = {
        "model": str(model_path),
        "model_id": pred.model_id,
        "kind": pred.kind,
        "class_names": list(pred.class_names),
        "va_derived": pred.va_derived,
        "mode": mode,
        "crop": crop if mode == "crops" else "pipeline (detect, refine eyes, align)",
        "tta": tta,
        "labels": str(labels_csv),
        "split": {"file": str(split_file), "part": part} if split_file is not None else None,
        "images_root": str(data.images_root),
        "photos": {
            "rows_used": len(data),
            "rows_left_out": dict(data.dropped),
            "rows_left_out_examples": [f"line {line}: {why}" for line, why in data.skipped_rows],
            "unreadable": int((~readable).sum()),
            "unreadable_examples": [data.keys[i] for i in np.flatnonzero(~readable)[:5]],
            "read": int(readable.sum()),
            "no_face": int((readable & ~found).sum()),
            "with_prediction": int(found.sum()),
        },
    }
    if not readable.any():
        raise DatasetError(f"{labels_csv}: none of the {len(data)} images could be read; check the images folder")
    report["all"] = score(labels, va_true, pred, readable)
    if mode == "pipeline":
        report["detected"] = score(labels, va_true, pred, found)
    report["seconds"] = round(time.perf_counter() - started, 3)
    return report, pred, data


def _split_part(
    data: AffectNetPhotos, split_file: Optional[Union[str, Path]], part: Optional[str], limit: Optional[int]
) -> AffectNetPhotos:
    """The rows of ``part`` of ``split_file`` (both or neither must be given)."""
    if split_file is None and part is None:
        return data
    if split_file is None or part is None:
        raise ConfigError("--split and --part go together: pass the split file and the part (train, val or test)")
    if limit is not None:
        raise ConfigError("--limit and --split do not go together: a split part needs the whole table")
    from training.data.splits import PARTS, load_split_file
    from training.multitask import part_indices

    if part not in PARTS:
        raise ConfigError(f"--part {part!r} is not a part of a split file; choose one of {list(PARTS)}")
    ids = load_split_file(split_file)[part]
    return data.select(part_indices(data, ids, part, split_file))


# -- output -----------------------------------------------------------------------------------


def report_target(out: Union[str, Path], overwrite: bool, inputs: Sequence[Optional[Union[str, Path]]]) -> OutputTarget:
    """The output folder, checked before any work (see :mod:`ros2_affect.outputs`)."""
    owned = only_entries({name: None for name in REPORT_FILES}, "training.evaluate")
    return OutputTarget(out, overwrite=overwrite, owned=owned, tool="training.evaluate", inputs=inputs)


def save_va_scatter(report: Dict[str, Any], pred: PhotoPredictions, data: AffectNetPhotos, path: Path) -> bool:
    """Predicted against labelled valence and arousal (photos with a prediction), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = pred.found & np.isfinite(data.va).all(axis=1)
    if not rows.any():
        return False
    scores = report.get("detected", report["all"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 5), dpi=100)
    for i, (ax, dim) in enumerate(zip(axes, ("valence", "arousal"), strict=True)):
        ax.scatter(data.va[rows, i], pred.va[rows, i], s=4, alpha=0.35, color="tab:blue")
        ax.plot([-1, 1], [-1, 1], "k--", lw=1)
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_xlim(-1.05, 1.05)
        ax.set_ylim(-1.05, 1.05)
        ax.set_aspect("equal")
        ax.set_xlabel(f"labelled {dim}")
        ax.set_ylabel(f"predicted {dim}" + (" (derived)" if pred.va_derived else ""))
        s = scores[dim]
        ax.set_title(
            f"{dim}: CCC {s.get('ccc', float('nan')):.3f}, RMSE {s.get('rmse', float('nan')):.3f}, n {s['n']}",
            fontsize=9,
        )
    fig.suptitle(f"{report['model_id']} ({report['mode']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write_outputs(
    report: Dict[str, Any], pred: PhotoPredictions, data: AffectNetPhotos, target: OutputTarget
) -> List[Path]:
    """``metrics.json``, ``predictions.csv`` and the two PNGs, staged beside the folder and
    moved into place when complete; returns the files written."""
    from training.evaluate import save_confusion_png

    with target.stage() as staged:
        out = staged.path
        out.mkdir()
        names = ["metrics.json", "predictions.csv"]
        expr = report["all"]["expression_7"]
        if "confusion_matrix" in expr:
            save_confusion_png(
                dict(expr, model_id=f"{report['model_id']} ({report['mode']}, 7 classes)"), out / "confusion_matrix.png"
            )
            names.append("confusion_matrix.png")
        if save_va_scatter(report, pred, data, out / "valence_arousal.png"):
            names.append("valence_arousal.png")
        report = dict(report, files=names)
        (out / "metrics.json").write_text(json.dumps(to_jsonable(report), indent=2, allow_nan=False) + "\n")
        with open(out / "predictions.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                [
                    "image",
                    "expression",
                    "valence",
                    "arousal",
                    "read",
                    "face",
                    "predicted",
                    "confidence",
                    "valence_pred",
                    "arousal_pred",
                ]
            )
            for i, key in enumerate(data.keys):
                label = CLASSES_8[data.expressions[i]] if data.expressions[i] >= 0 else ""
                has = bool(pred.found[i])
                p = pred.probabilities[i]
                writer.writerow(
                    [
                        key,
                        label,
                        _cell(data.va[i, 0]),
                        _cell(data.va[i, 1]),
                        int(pred.readable[i]),
                        int(has),
                        pred.class_names[int(np.argmax(p))] if has else "",
                        f"{np.max(p):.6f}" if has else "",
                        _cell(pred.va[i, 0]),
                        _cell(pred.va[i, 1]),
                    ]
                )
    return [target.path / name for name in names]


def _cell(value: float) -> str:
    return f"{value:.6f}" if np.isfinite(value) else ""


def summary_lines(report: Dict[str, Any]) -> List[str]:
    """A readable summary of :func:`evaluate_photos`'s report."""
    ph = report["photos"]
    lines = [
        f"{report['model_id']} ({report['kind']}) on {report['labels']}, mode {report['mode']}: "
        f"{ph['read']} photos read ({ph['unreadable']} unreadable, {sum(ph['rows_left_out'].values())} rows left out), "
        f"{ph['no_face']} without a face"
    ]
    for part in ("all", "detected"):
        if part not in report:
            continue
        s = report[part]
        line = f"  {part} ({s['photos']} photos):"
        for key in ("expression_7", "expression_8"):
            e = s[key]
            if "accuracy" in e:
                line += f" {key[-1]}-class acc {e['accuracy']:.3f} macro F1 {e['macro_f1']:.3f} ECE {e['ece']:.3f};"
            else:
                line += f" {key[-1]}-class n/a;"
        for dim in ("valence", "arousal"):
            d = s[dim]
            if "ccc" in d:
                line += (
                    f" {dim} CCC {d['ccc']:.3f} PCC {d['pcc']:.3f} RMSE {d['rmse']:.3f} sign {d['sign_agreement']:.3f};"
                )
        lines.append(line.rstrip(";"))
    lines.append(f"  valence/arousal {'derived from the class probabilities' if report['va_derived'] else 'regressed'}")
    baseline = report.get("all", {}).get("va_derived_baseline")
    if baseline and "ccc" in baseline["valence"]:
        lines.append(
            f"  derived from the same probabilities instead: valence CCC {baseline['valence']['ccc']:.3f}, "
            f"arousal CCC {baseline['arousal']['ccc']:.3f}"
        )
    return lines
