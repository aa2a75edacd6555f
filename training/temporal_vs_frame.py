"""Does the temporal model beat the frame model applied frame by frame, on the same sequences?

``python -m training.temporal_vs_frame --frame F.onnx --temporal T_encoder.onnx --data DIR [--seed 0] [--json]``

Sequences are built from the still images of ``DIR`` (one subfolder per class, e.g.
FER2013 ``PublicTest``) with the temporal augmentation the CNN-RNN was trained with
(:func:`training.sequences.make_sequences`, fixed seed; the same sequences as
``python -m training.evaluate --sequences --seed S``). Both models run through the
runtime's :class:`~ros2_affect.core.affect_model.FrameAffectModel` and
:class:`~ros2_affect.core.affect_model.TemporalAffectModel` (loaded like
``training.evaluate`` does), and the report gives accuracy of

* ``temporal``: the temporal model on each sequence;
* ``frame_mean``: the frame model on every frame, class probabilities averaged;
* ``frame_last``: the frame model on the last frame only;
* ``frame_still``: the frame model on the un-perturbed still (upper reference).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

from training.evaluate import _augmented_sequences, load_folder, load_model, predict_probabilities


def compare(frame_model: str, temporal_model: str, data: str, seed: int = 0, batch: int = 256) -> Dict[str, Any]:
    frame = load_model(frame_model)
    temporal = load_model(temporal_model)
    if frame.kind != "frame" or temporal.kind != "temporal":
        raise ValueError(f"need a frame and a temporal model, got {frame.kind} and {temporal.kind}")
    folder = load_folder(data, temporal.class_names, temporal.input_size, temporal.channels)
    crops, labels = folder.crops, folder.labels
    t = temporal.sequence_length
    p_temporal = predict_probabilities(temporal, crops, sequences=True, seed=seed, batch=batch)
    p_mean = np.zeros_like(p_temporal)
    p_last = np.zeros_like(p_temporal)
    for start in range(0, len(crops), batch):
        # Same seeds as predict_probabilities(sequences=True): identical sequences.
        frames = _augmented_sequences(crops[start : start + batch], t, seed + start)
        n = frames.shape[0]
        probs = np.stack(
            [e.probabilities for e in frame.predict_frames(frames.reshape(n * t, *frames.shape[2:]))]
        ).reshape(n, t, -1)
        p_mean[start : start + n] = probs.mean(axis=1)
        p_last[start : start + n] = probs[:, -1]
    p_still = predict_probabilities(frame, crops, batch=batch)

    def acc(p: np.ndarray) -> float:
        return float((p.argmax(1) == labels).mean())

    return {
        "n": int(len(labels)),
        "sequence_length": int(t),
        "seed": int(seed),
        "temporal": acc(p_temporal),
        "frame_mean": acc(p_mean),
        "frame_last": acc(p_last),
        "frame_still": acc(p_still),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frame", required=True, help="frame model (.onnx or .pt)")
    parser.add_argument("--temporal", required=True, help="temporal model (NAME_encoder.onnx, .json or .pt)")
    parser.add_argument("--data", required=True, type=Path, help="class-folder images, e.g. FER2013 PublicTest")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = compare(args.frame, args.temporal, str(args.data), args.seed)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for k, v in report.items():
            print(f"{k:16s} {v:.4f}" if isinstance(v, float) else f"{k:16s} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
