"""Combine trained frame-model checkpoints into one ensemble checkpoint.

Usage::

    python -m training.ensemble --checkpoints runs/a/best.pt runs/b/best.pt [...] --out runs/ens/best.pt

The result is an ordinary checkpoint (model ``frame_ensemble``, :mod:`training.models.ensemble`)
that ``training.evaluate`` scores and ``training.export`` turns into one ONNX frame graph
(mean class probabilities; valence/arousal averaged). Members must agree on everything the
runtime prepares a face for (input size, channels, mean/std, alignment), on the class order
and on ``va_mode``; a mismatch is an error naming the field and both values.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from ros2_affect.errors import ModelLoadError
from training.checkpoint import FORMAT, load_checkpoint

#: Checkpoint fields every member must share (the runtime's preprocessing and outputs).
SHARED_FIELDS = ("class_names", "input_size", "channels", "mean", "std", "alignment", "va_mode")


def build_ensemble(checkpoints: Sequence[Union[str, Path]]) -> Dict[str, Any]:
    """-> the ensemble's checkpoint dict (loadable with :func:`training.checkpoint.load_checkpoint`).

    Raises:
        ModelLoadError: fewer than 2 members, a member that is not a frame model, or members
            that disagree on a field of :data:`SHARED_FIELDS`.
    """
    if len(checkpoints) < 2:
        raise ModelLoadError(f"an ensemble needs at least 2 checkpoints, got {len(checkpoints)}")
    members: List[Dict[str, Any]] = []
    state: Dict[str, torch.Tensor] = {}
    first: Optional[Dict[str, Any]] = None
    for i, path in enumerate(checkpoints):
        model, ck = load_checkpoint(path)
        if getattr(model, "role", None) != "frame":
            raise ModelLoadError(f"{path}: a {getattr(model, 'role', '?')} model; ensembles are of frame models")
        if first is None:
            first = ck
        for key in SHARED_FIELDS:
            if ck.get(key) != first.get(key):
                raise ModelLoadError(
                    f"{path} does not fit {checkpoints[0]}: {key} is {ck.get(key)!r} there but {first.get(key)!r}"
                )
        members.append({"name": ck["model_name"], "kwargs": ck["model_kwargs"]})
        state.update({f"members.{i}.{k}": v for k, v in ck["state_dict"].items()})
    assert first is not None
    sources = [str(p) for p in checkpoints]
    return {
        "format": FORMAT,
        "model_name": "frame_ensemble",
        "model_kwargs": {"members": members},
        "state_dict": state,
        **{key: first[key] for key in SHARED_FIELDS},
        "sequence_length": 1,
        "training_data": first.get("training_data", ""),
        "config": {"ensemble_of": sources},
        "epoch": 0,
        "metrics": {},
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", nargs="+", required=True, help="frame-model checkpoints (.pt), 2 or more")
    parser.add_argument("--out", required=True, type=Path, help="ensemble checkpoint to write (.pt)")
    args = parser.parse_args(argv)
    try:
        ckpt = build_ensemble(args.checkpoints)
    except ModelLoadError as exc:
        print(f"error: {exc}")
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, args.out)
    load_checkpoint(args.out)  # the file rebuilds (weights fit the architecture)
    print(f"wrote {args.out}: frame_ensemble of {len(args.checkpoints)} models")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
