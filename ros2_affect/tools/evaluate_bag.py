"""``ros2-affect evaluate``: score the affect predictions in a bag against ground truth.

Reads the ``affect_msgs/msg/FaceAffectArray`` messages of a bag (``ros2-affect replay``
output, or a live recording of ``/affect_node/faces``), pairs them with annotations
(:mod:`ros2_affect.bags.alignment`) and writes ``DIR/report.md``, ``DIR/metrics.json`` and
PNG plots: valence/arousal over time against the annotation, and the expression
confusion matrix when expression labels exist.

Labels, first found wins: ``--labels FILE`` (CSV, AFEW-VA JSON, Aff-Wild2 txt); the
annotation topic of the evaluated bag (``make-bag`` writes ``/affect_annotations``, and
``replay --copy-input`` copies it); the annotation topic of ``--input-bag``.

Metrics: expression accuracy and macro F1; CCC, PCC, RMSE, MAE of valence and arousal;
detection coverage (annotated frames whose image has a face / annotated frames); id
switches of the main face; latency (the messages' ``processing_latency_ms``, else bag
receive time minus header stamp).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from ros2_affect import metrics
from ros2_affect.bags.alignment import (
    ALIGN_MODES,
    DEFAULT_TOLERANCE_NS,
    AlignedPair,
    FramePrediction,
    align,
    count_id_switches,
    track_ids,
)
from ros2_affect.bags.labels import KNOWN_EXPRESSIONS, AnnotationSet, LabelError, canonical_expression, load_labels
from ros2_affect.bags.reader import BagReader, read_predictions
from ros2_affect.bags.writer import PARTIAL_KEY, STOPPED_BY_KEY, bag_custom_data
from ros2_affect.errors import BagError
from ros2_affect.outputs import OutputTarget, only_entries
from ros2_affect.tools.cli_args import add_command, bounded_float

LOG = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """Everything ``evaluate`` computed: the JSON-ready metrics and the aligned pairs."""

    metrics: Dict[str, Any]
    pairs: List[AlignedPair]
    predictions: List[FramePrediction]
    labels: AnnotationSet


def _finite_or_none(value: float) -> Optional[float]:
    return float(value) if math.isfinite(value) else None


def partial_bag_note(bag_path: Path) -> Optional[str]:
    """A warning when ``bag_path`` is a bag that a replay stopped by a signal closed early
    (``custom_data`` ``ros2_affect.partial``), else None."""
    custom = bag_custom_data(bag_path) if Path(bag_path).is_dir() else {}
    if custom.get(PARTIAL_KEY) != "true":
        return None
    how = custom.get(STOPPED_BY_KEY, "a signal")
    images = custom.get("ros2_affect.images")
    return (
        f"{str(bag_path)!r} is a partial bag (its replay was stopped by {how}"
        + (f" after {images} images" if images else "")
        + "): the scores cover only that part"
    )


def _summary(values: Sequence[float]) -> Dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    return {
        "n": int(arr.size),
        "mean": float(arr.mean()),
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "max": float(arr.max()),
    }


def _load_labels(
    out_bag: BagReader, labels: Optional[Path], label_topic: Optional[str], input_bag: Optional[Path]
) -> AnnotationSet:
    if labels is not None:
        return load_labels(labels)
    if label_topic or out_bag.annotation_topics():
        return out_bag.read_annotations(label_topic)
    if input_bag is not None:
        with BagReader(input_bag) as bag:
            return bag.read_annotations(label_topic)
    raise LabelError(
        f"no labels: bag {str(out_bag.path)!r} has no annotation topic (affect_msgs/msg/AffectAnnotation); pass "
        "--labels FILE (CSV, AFEW-VA .json, Aff-Wild2 .txt) or --input-bag with the bag make-bag wrote"
    )


def _expression_metrics(pairs: Sequence[AlignedPair]) -> Optional[Dict[str, Any]]:
    labelled = [p for p in pairs if p.annotation.expression is not None]
    if not labelled:
        return None
    scored = [p for p in labelled if p.face is not None and p.face.has_affect]
    names = list(KNOWN_EXPRESSIONS[:-1])
    result: Dict[str, Any] = {"annotated": len(labelled), "n": len(scored), "missing": len(labelled) - len(scored)}
    if not scored:
        result["note"] = "no prediction with an affect estimate at the annotated frames"
        return result
    truth: List[str] = []
    pred: List[Optional[str]] = []
    for p in scored:
        t = p.annotation.expression
        assert t is not None  # `labelled` holds only annotations with an expression
        q = canonical_expression(p.face.expression, "prediction") if p.face is not None else None
        for name in (t, q):
            if name is not None and name not in names:
                names.append(name)  # contempt, only when it occurs
        truth.append(t)
        pred.append(q)
    # a predicted class outside the label vocabulary (e.g. "other") can never be right
    y_true = [names.index(t) for t in truth]
    y_pred = [names.index(q) if q is not None else len(names) for q in pred]
    if any(v == len(names) for v in y_pred):
        names.append("(none)")
    k = len(names)
    per_class = metrics.per_class_scores(y_true, y_pred, k)
    result.update(
        accuracy=metrics.accuracy(y_true, y_pred),
        macro_f1=metrics.macro_f1(y_true, y_pred, k),
        class_names=names,
        confusion=metrics.confusion_matrix(y_true, y_pred, k).tolist(),
        per_class={
            names[i]: {
                "precision": float(per_class.precision[i]),
                "recall": float(per_class.recall[i]),
                "f1": float(per_class.f1[i]),
                "support": int(per_class.support[i]),
            }
            for i in range(k)
            if per_class.support[i] or per_class.predicted[i]
        },
    )
    return result


def _regression_metrics(pairs: Sequence[AlignedPair], dim: str) -> Optional[Dict[str, Any]]:
    labelled = [p for p in pairs if getattr(p.annotation, dim) is not None]
    if not labelled:
        return None
    scored = [p for p in labelled if p.face is not None and p.face.has_affect]
    result: Dict[str, Any] = {"annotated": len(labelled), "n": len(scored), "missing": len(labelled) - len(scored)}
    if not scored:
        result["note"] = "no prediction with an affect estimate at the annotated frames"
        return result
    truth = [float(getattr(p.annotation, dim)) for p in scored]
    pred = [float(getattr(p.face, dim)) for p in scored]
    result.update(
        ccc=metrics.ccc(pred, truth),
        pcc=_finite_or_none(metrics.pcc(pred, truth)),
        rmse=metrics.rmse(pred, truth),
        mae=metrics.mae(pred, truth),
        mean_prediction=float(np.mean(pred)),
        mean_annotation=float(np.mean(truth)),
    )
    return result


def evaluate(
    bag_path: Path,
    labels: Optional[Path] = None,
    label_topic: Optional[str] = None,
    input_bag: Optional[Path] = None,
    predictions_topic: Optional[str] = None,
    align_mode: str = "auto",
    tolerance_ns: int = DEFAULT_TOLERANCE_NS,
    image_topic: Optional[str] = None,
) -> Evaluation:
    """Compute the metrics (see the module docstring) without writing anything.

    Raises:
        BagError: unreadable bag, no prediction topic.
        LabelError: no or unreadable labels.
    """
    with BagReader(bag_path) as bag:
        topic, predictions = read_predictions(bag, predictions_topic)
        annotations = _load_labels(bag, labels, label_topic, input_bag)
        frame_stamps: Optional[List[int]] = None
        if input_bag is not None:
            with BagReader(input_bag) as source:
                info = source.select_image_topic(image_topic)
                frame_stamps = [image.stamp_ns for image in source.images(info.name)]
    if not annotations.annotations:
        raise LabelError(f"labels {annotations.source} hold no annotated frame; nothing to evaluate")
    pairs, mode = align(predictions, annotations, align_mode, tolerance_ns, frame_stamps)

    annotated = len(pairs)
    matched = sum(p.frame is not None for p in pairs)
    with_face = sum(p.face is not None for p in pairs)
    with_affect = sum(p.face is not None and p.face.has_affect for p in pairs)
    latencies = [f.processing_latency_ms for f in predictions if f.processing_latency_ms > 0]
    if latencies:
        latency: Dict[str, Any] = {"source": "processing_latency_ms field", **_summary(latencies)}
    elif predictions:
        delays = [(f.bag_time_ns - f.stamp_ns) / 1e6 for f in predictions]
        latency = {"source": "bag receive time - header stamp", **_summary(delays)}
    else:
        latency = {"source": "none", "n": 0}
    model_ids = sorted({f.model_id for fr in predictions for f in fr.faces if f.has_affect})
    partial = partial_bag_note(bag_path)
    if partial:
        LOG.warning("%s", partial)
    result: Dict[str, Any] = {
        "bag": str(bag_path),
        "partial_bag": partial,
        "predictions_topic": topic,
        "labels": annotations.source,
        "model_ids": model_ids,
        "alignment": {
            "mode": mode,
            "tolerance_ns": int(tolerance_ns),
            "input_bag": str(input_bag) if input_bag else None,
        },
        "frames": {
            "predicted": len(predictions),
            "predicted_with_face": sum(bool(f.faces) for f in predictions),
            "annotated": annotated,
            "matched": matched,
            "with_face": with_face,
            "with_affect": with_affect,
        },
        "coverage": with_face / annotated,
        "affect_coverage": with_affect / annotated,
        "id_switches": count_id_switches(pairs),
        "main_face_tracks": track_ids(pairs),
        "expression": _expression_metrics(pairs),
        "valence": _regression_metrics(pairs, "valence"),
        "arousal": _regression_metrics(pairs, "arousal"),
        "latency_ms": latency,
    }
    return Evaluation(result, pairs, predictions, annotations)


# -- report ------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _plot_valence_arousal(evaluation: Evaluation, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [p for p in evaluation.pairs if p.annotation.valence is not None or p.annotation.arousal is not None]
    if not pairs:
        return False
    use_time = all(p.annotation.stamp_ns is not None or p.frame is not None for p in pairs)

    def x_of(p: AlignedPair) -> float:
        if use_time:
            stamp = p.annotation.stamp_ns if p.annotation.stamp_ns is not None else p.frame.stamp_ns  # type: ignore[union-attr]
            return stamp / 1e9
        return float(p.annotation.frame_index or 0)

    xs = np.array([x_of(p) for p in pairs])
    x0 = xs.min() if use_time else 0.0
    fig, axes = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    for ax, dim in zip(axes, ("valence", "arousal"), strict=True):
        truth = [getattr(p.annotation, dim) for p in pairs]
        ax.plot(xs - x0, [np.nan if t is None else t for t in truth], "k-", lw=2, label="annotation")
        pred = [getattr(p.face, dim) if p.face is not None and p.face.has_affect else np.nan for p in pairs]
        ax.plot(xs - x0, pred, "o-", ms=3, color="tab:blue", label="prediction (main face)")
        stats = evaluation.metrics.get(dim) or {}
        ax.set_title(f"{dim}: CCC {_fmt(stats.get('ccc'))}, RMSE {_fmt(stats.get('rmse'))}", fontsize=10)
        ax.set_ylim(-1.05, 1.05)
        ax.set_ylabel(dim)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    axes[1].set_xlabel("time since first annotation [s]" if use_time else "frame index")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _plot_confusion(expression: Dict[str, Any], path: Path) -> bool:
    if not expression or "confusion" not in expression:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(expression["confusion"], dtype=np.float64)
    names = expression["class_names"]
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(names), 0.8 + 0.7 * len(names)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            if cm[i, j]:
                ax.text(
                    j, i, str(int(cm[i, j])), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black"
                )
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("annotated")
    ax.set_title(
        f"accuracy {_fmt(expression.get('accuracy'))}, macro F1 {_fmt(expression.get('macro_f1'))}", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


#: What ``evaluate`` writes into its ``--out`` folder (and all that ``--overwrite`` replaces).
REPORT_FILES = ("report.md", "metrics.json", "valence_arousal.png", "confusion_matrix.png")


def report_target(out_dir: Path, overwrite: bool = False, inputs: Sequence[Optional[Path]] = ()) -> OutputTarget:
    """The report folder, checked before any work: not an input, and an existing folder is
    replaced only with ``overwrite`` and only when it holds nothing but :data:`REPORT_FILES`.

    Raises:
        OutputError: the folder may not be written (the message says why and what to do).
    """
    owned = only_entries({name: None for name in REPORT_FILES}, "evaluate")
    return OutputTarget(out_dir, overwrite=overwrite, owned=owned, tool="evaluate", inputs=inputs)


def write_report(evaluation: Evaluation, out: Union[Path, OutputTarget], overwrite: bool = False) -> List[Path]:
    """Write ``report.md``, ``metrics.json`` and the plots into the folder ``out``; returns the files.

    The report is written beside ``out`` and moved there when complete (see
    :func:`report_target` for when an existing folder is replaced).

    Raises:
        OutputError: ``out`` exists (without ``overwrite``) or holds files evaluate does not write.
    """
    target = out if isinstance(out, OutputTarget) else report_target(out, overwrite)
    with target.stage() as staged:
        staged.path.mkdir()
        names = [p.name for p in _write_report_files(evaluation, staged.path)]
    return [target.path / name for name in names]


def _write_report_files(evaluation: Evaluation, out_dir: Path) -> List[Path]:
    m = evaluation.metrics
    files = []
    plots = []
    va_png = out_dir / "valence_arousal.png"
    if _plot_valence_arousal(evaluation, va_png):
        plots.append(va_png)
    cm_png = out_dir / "confusion_matrix.png"
    if _plot_confusion(m.get("expression") or {}, cm_png):
        plots.append(cm_png)
    m = dict(m, plots=[p.name for p in plots])
    metrics_path = out_dir / "metrics.json"
    metrics_path.write_text(json.dumps(_json_safe(m), indent=2, sort_keys=False) + "\n", encoding="utf-8")

    fr = m["frames"]
    lines = [
        "# Affect evaluation",
        "",
        f"- bag: `{m['bag']}` (predictions on `{m['predictions_topic']}`)"
        + (f"; **{m['partial_bag']}**" if m.get("partial_bag") else ""),
        f"- labels: {m['labels']}",
        f"- model: {', '.join(m['model_ids']) or 'none (no affect estimates)'}",
        f"- alignment: by {m['alignment']['mode']}"
        + (f", tolerance {m['alignment']['tolerance_ns'] / 1e6:g} ms" if m["alignment"]["mode"] == "stamp" else ""),
        "",
        "## Detection and tracking",
        "",
        "| | value |",
        "|---|---|",
        f"| prediction messages | {fr['predicted']} ({fr['predicted_with_face']} with a face) |",
        f"| annotated frames | {fr['annotated']} (matched to a prediction: {fr['matched']}) |",
        f"| coverage (annotated frames with a face) | {fr['with_face']}/{fr['annotated']} = {m['coverage']:.3f} |",
        f"| affect coverage (with an affect estimate) | {fr['with_affect']}/{fr['annotated']} "
        f"= {m['affect_coverage']:.3f} |",
        f"| id switches of the main face | {m['id_switches']} |",
        f"| main-face track ids | {', '.join(f'{k} ({v})' for k, v in m['main_face_tracks'].items()) or 'none'} |",
        "",
    ]
    expr = m.get("expression")
    lines += ["## Expression", ""]
    if expr is None:
        lines += ["No expression labels.", ""]
    elif "accuracy" not in expr:
        lines += [f"{expr['annotated']} labelled frames; {expr.get('note', '')}.", ""]
    else:
        lines += [
            f"{expr['n']} of {expr['annotated']} labelled frames scored ({expr['missing']} without an estimate).",
            "",
            f"- accuracy: {expr['accuracy']:.3f}",
            f"- macro F1: {expr['macro_f1']:.3f} (over classes present in labels or predictions)",
            "",
            "| class | precision | recall | F1 | support |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {name} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {s['support']} |"
            for name, s in expr["per_class"].items()
        ]
        lines += ["", "![confusion matrix](confusion_matrix.png)", ""]
    lines += ["## Valence and arousal", ""]
    if m.get("valence") is None and m.get("arousal") is None:
        lines += ["No valence/arousal labels.", ""]
    else:
        lines += ["| | n | CCC | PCC | RMSE | MAE | mean pred. | mean annot. |", "|---|---|---|---|---|---|---|---|"]
        for dim in ("valence", "arousal"):
            s = m.get(dim)
            if s is None:
                lines.append(f"| {dim} | 0 | n/a | n/a | n/a | n/a | n/a | n/a |")
            elif "ccc" not in s:
                lines.append(f"| {dim} | 0 of {s['annotated']} | n/a | n/a | n/a | n/a | n/a | n/a |")
            else:
                lines.append(
                    f"| {dim} | {s['n']} | {_fmt(s['ccc'])} | {_fmt(s['pcc'])} | {_fmt(s['rmse'])} | {_fmt(s['mae'])} "
                    f"| {_fmt(s['mean_prediction'])} | {_fmt(s['mean_annotation'])} |"
                )
        lines += [
            "",
            "CCC is 0 when the annotation is constant over the clip and the prediction is not exactly equal to it.",
            "",
        ]
        if va_png in plots:
            lines += ["![valence and arousal](valence_arousal.png)", ""]
    lat = m["latency_ms"]
    lines += ["## Latency", ""]
    if lat.get("n"):
        lines += [
            f"From the {lat['source']} ({lat['n']} messages): mean {lat['mean']:.1f} ms, p50 {lat['p50']:.1f} ms, "
            f"p95 {lat['p95']:.1f} ms, max {lat['max']:.1f} ms.",
            "",
        ]
    else:
        lines += ["No latency information.", ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    files += [report, metrics_path, *plots]
    return files


# -- command line ------------------------------------------------------------------------------


def add_parser(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "evaluate",
        "score the FaceAffectArray predictions in a bag against annotations",
        __doc__,
    )
    parser.add_argument("bag", type=Path, help="bag with affect_msgs/FaceAffectArray (replay output or a recording)")
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for report.md, metrics.json and plots (created)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing report folder (one holding only its files)"
    )
    parser.add_argument(
        "--labels", type=Path, help="CSV, AFEW-VA .json or Aff-Wild2 EXPR/VA .txt (default: label topic)"
    )
    parser.add_argument("--label-topic", help="AffectAnnotation topic (default: the only one)")
    parser.add_argument("--input-bag", type=Path, help="the replayed input bag (labels, frame index -> stamp)")
    parser.add_argument("--image-topic", help="image topic of --input-bag (default: the only one)")
    parser.add_argument("--predictions-topic", help="FaceAffectArray topic (default: /affect_node/faces)")
    parser.add_argument(
        "--align",
        choices=ALIGN_MODES,
        default="auto",
        help="pair by header stamp or by frame index (auto: stamp when labels have stamps)",
    )
    parser.add_argument(
        "--tolerance-ms",
        type=bounded_float(0, 3_600_000, " ms"),
        default=DEFAULT_TOLERANCE_NS / 1e6,
        help="largest stamp difference accepted when aligning by stamp (0: exact)",
    )
    parser.set_defaults(func=run)


def labelled_photos_hint(path: Path) -> Optional[str]:
    """Why ``path`` is not evaluated here when it looks like labelled photos (a ``.csv`` table, or
    a folder with ``labels.csv`` and no bag in it), and the command that scores them; else None."""
    path = Path(path)
    table = path if path.suffix.lower() == ".csv" else path / "labels.csv"
    if not table.is_file() or (path.is_dir() and (path / "metadata.yaml").exists()):
        return None
    return (
        f"{str(path)!r} looks like labelled photos ({table.name}), not a bag: `ros2-affect evaluate` scores the "
        f"predictions in a bag. Score photos with `python -m training.evaluate --model MODEL.onnx --labels {table} "
        "[--mode pipeline] --out DIR` (make setup-dev; see docs/training.md)"
    )


def run(args: argparse.Namespace) -> int:
    if args.tolerance_ms < 0:
        raise BagError(f"--tolerance-ms {args.tolerance_ms} is negative; pass 0 (exact) or a positive tolerance")
    hint = labelled_photos_hint(args.bag)
    if hint is not None:
        raise BagError(hint)
    # checked before any work: not an input, not an existing report without --overwrite
    target = report_target(args.out, args.overwrite, [args.bag, args.labels, args.input_bag])
    evaluation = evaluate(
        args.bag,
        labels=args.labels,
        label_topic=args.label_topic,
        input_bag=args.input_bag,
        predictions_topic=args.predictions_topic,
        align_mode=args.align,
        tolerance_ns=int(round(args.tolerance_ms * 1e6)),
        image_topic=args.image_topic,
    )
    files = write_report(evaluation, target)
    m = evaluation.metrics
    summary = [f"coverage {m['coverage']:.3f}", f"id switches {m['id_switches']}"]
    if m["expression"] and "accuracy" in m["expression"]:
        summary.append(f"accuracy {m['expression']['accuracy']:.3f}, macro F1 {m['expression']['macro_f1']:.3f}")
    for dim in ("valence", "arousal"):
        if m[dim] and "ccc" in m[dim]:
            summary.append(f"{dim} CCC {m[dim]['ccc']:.3f} RMSE {m[dim]['rmse']:.3f}")
    print("; ".join(summary))
    if m.get("partial_bag"):
        print(f"warning: {m['partial_bag']}")
    print("wrote " + ", ".join(str(f) for f in files))
    return 0
