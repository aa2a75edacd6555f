"""Eager-torch backend for debugging trained checkpoints (``model.backend: torch``).

It runs a ``.pt`` checkpoint written by ``python -m training.train`` directly, without
exporting it, so a training run can be checked in the real pipeline (or an export bug
told apart from a training bug). It is **not** a deployment backend: use onnxruntime or
tensorrt on a robot.

It lives with the training code because it reads checkpoints with
``training.checkpoint.load_checkpoint(path) -> (model, ckpt)``; the runtime
(``ros2_affect``) never imports training (tests/test_layering.py checks it). The runtime
declares the name ``torch`` in its backend registry, and importing this module provides
it (``BACKENDS.provide``), so training code that imports it (``training.evaluate`` on a
``.pt``) can pass ``backend="torch"`` to any runtime call. To run a runtime command on a
checkpoint::

    python -m training.torch_backend replay BAG --out OUT --set model.backend=torch \
        --set model.kind=frame --set model.frame_model=runs/x/best.pt
    python -m training.torch_backend run VIDEO --out OUT --config PARAMS.yaml  # model.backend: torch there

(the arguments are those of ``ros2-affect``; this module provides the backend first).

Roles: a frame checkpoint serves the ``frame`` role (``model(image) -> (logits,
valence_arousal)``); a temporal checkpoint serves ``encoder`` (``model.encoder``) and
``sequence`` (``model.sequence_head``), so set both ``model.encoder_model`` and
``model.sequence_model`` to the same ``.pt`` file (it is loaded once). The metadata the
ONNX contract carries is rebuilt from the checkpoint's fields (class_names, input_size,
channels, mean, std, alignment, sequence_length, va_mode, model_name).

``threads`` is not applied: torch's intra-op pool is process-wide, and a debugging
backend should not change it under the rest of the process.

Optional: with ``use_torch_tensorrt=True`` (Python API only) on a CUDA device, each
module is compiled with Torch-TensorRT (``torch_tensorrt.compile(module, ir="dynamo",
inputs=[torch_tensorrt.Input(min_shape, opt_shape, max_shape)])``, see
https://docs.pytorch.org/TensorRT/user_guide/compilation/dynamic_shapes.html) for the same
face-axis range as the TensorRT engines. Where torch_tensorrt is not installed, that
option raises :class:`BackendUnavailableError` saying so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ros2_affect.backends import BACKENDS
from ros2_affect.backends.base import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    InferenceBackend,
    InferenceSession,
    ModelMetadata,
)
from ros2_affect.errors import (
    AffectError,
    AssetMissingError,
    BackendUnavailableError,
    ModelContractError,
    ModelLoadError,
)
from training.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
#: checkpoint role -> roles it can serve
SERVES = {"frame": ("frame",), "temporal": ("encoder", "sequence")}


def torch_tensorrt_available() -> Tuple[bool, str]:
    """Whether the Torch-TensorRT compile path can run here; never raises."""
    try:
        import torch
        import torch_tensorrt  # noqa: F401
    except ImportError as exc:
        return False, f"torch_tensorrt is not installed ({exc}); it is optional (pip install torch-tensorrt on a GPU)"
    if not torch.cuda.is_available():
        return False, "torch_tensorrt needs a CUDA GPU: torch.cuda.is_available() is False"
    return True, ""


def metadata_from_checkpoint(ckpt: Mapping[str, Any], model: Any, role: str, source: str) -> ModelMetadata:
    """The contract metadata of one role of a checkpoint.

    Raises:
        ModelContractError: a field the runtime needs is missing or invalid.
    """
    needed = ("class_names", "input_size", "channels", "mean", "std", "model_name")
    missing = [k for k in needed if k not in ckpt]
    if missing:
        raise ModelContractError(
            f"{source}: checkpoint lacks {missing}; it was not written by training.train "
            "(format ros2_affect-checkpoint-1)"
        )
    try:
        feature_dim = int(getattr(model, "feature_dim", 0) or 0)
        length = int(ckpt.get("sequence_length") or getattr(model, "sequence_length", 1) or 1)
        meta = ModelMetadata(
            role=role,
            model_id=str(ckpt.get("model_id") or f"{ckpt['model_name']}-{Path(source).stem}"),
            class_names=tuple(str(c) for c in ckpt["class_names"]),
            input_size=int(ckpt["input_size"]),
            channels=int(ckpt["channels"]),
            mean=tuple(float(m) for m in ckpt["mean"]),
            std=tuple(float(s) for s in ckpt["std"]),
            sequence_length=length if role == "sequence" else 1,
            feature_dim=feature_dim,
            va_mode=str(ckpt.get("va_mode", "derived")),
            alignment=dict(ckpt.get("alignment") or {}),
            extra={"source": "torch-checkpoint", "epoch": str(ckpt.get("epoch", ""))},
        )
    except (TypeError, ValueError) as exc:
        raise ModelContractError(f"{source}: checkpoint field has an invalid value: {exc}") from None
    meta.check(source)
    return meta


def _module_for_role(model: Any, role: str, source: str) -> Any:
    kind = getattr(model, "role", None)
    if kind not in SERVES:
        raise ModelContractError(f"{source}: checkpoint model has role {kind!r}; expected 'frame' or 'temporal'")
    if role not in SERVES[kind]:
        hint = ("configure it as model.encoder_model and model.sequence_model (model.kind: temporal)"
                if kind == "temporal" else "configure it as model.frame_model (model.kind: frame)")
        raise ModelContractError(f"{source}: this is a {kind} checkpoint, it has no {role!r} graph; {hint}")
    if kind == "frame":
        return model
    return model.encoder if role == "encoder" else model.sequence_head


class TorchSession(InferenceSession):
    """One module of a checkpoint in eval mode, run under ``torch.inference_mode``."""

    backend_name = "torch"

    def __init__(self, path: Path, metadata: ModelMetadata, module: Any, device: Any) -> None:
        super().__init__(path, metadata)
        self._module = module
        self._device = device
        self._tail = ((metadata.sequence_length, metadata.feature_dim) if metadata.role == "sequence"
                      else (metadata.channels, metadata.input_size, metadata.input_size))

    def run(self, inputs: np.ndarray) -> Dict[str, np.ndarray]:
        import torch

        if self._module is None:
            raise RuntimeError(f"{self.path}: session is closed")
        inputs = np.asarray(inputs)
        if inputs.ndim != len(self._tail) + 1 or tuple(inputs.shape[1:]) != self._tail or inputs.shape[0] < 1:
            raise ValueError(f"{self.path.name}: input shape {list(inputs.shape)}; expected "
                             f"[N, {', '.join(map(str, self._tail))}] with N >= 1")
        x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)).to(self._device)
        with torch.inference_mode():
            out = self._module(x)
        names = OUTPUT_NAMES[self.metadata.role]
        if isinstance(out, torch.Tensor):
            out = (out,)
        if isinstance(out, Mapping):
            pairs = [(n, out[n]) for n in names if n in out]
        else:
            pairs = list(zip(names, out, strict=False))  # derived-VA models may return logits only
        return {name: t.detach().float().cpu().numpy() for name, t in pairs}

    def close(self) -> None:
        self._module = None


class TorchBackend(InferenceBackend):
    """Runs training checkpoints with eager torch (debugging; see the module docstring)."""

    name = "torch"

    def __init__(self, device: str = "cpu", threads: int = 1, use_torch_tensorrt: bool = False) -> None:
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            log.warning("model.device is 'cuda' but torch sees no CUDA GPU; the torch backend runs on the CPU")
            device = "cpu"
        self.device = torch.device(device)
        self.use_torch_tensorrt = use_torch_tensorrt
        if use_torch_tensorrt:
            ok, reason = torch_tensorrt_available()
            if not ok:
                raise BackendUnavailableError(reason)
        self._loaded: Dict[Tuple[str, float], Tuple[Any, Dict[str, Any]]] = {}

    @classmethod
    def is_available(cls) -> Tuple[bool, str]:
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            return False, f"torch is not installed ({exc}); the torch backend is for debugging training checkpoints"
        return True, ""

    def _checkpoint(self, path: Path) -> Tuple[Any, Dict[str, Any]]:
        cache_key = (str(path.resolve()), path.stat().st_mtime)
        if cache_key not in self._loaded:
            try:
                model, ckpt = load_checkpoint(path)
            except AffectError:
                raise
            except Exception as exc:  # torch.load / state_dict errors come in many types
                raise ModelLoadError(
                    f"{path} is not a loadable training checkpoint ({type(exc).__name__}: {exc}); "
                    "pass a .pt file written by `python -m training.train`"
                ) from None
            model.to(self.device).eval()
            self._loaded = {cache_key: (model, dict(ckpt))}  # keep one: encoder+sequence share it
        return self._loaded[cache_key]

    def load(self, path: Path, expected_role: str, max_batch: int) -> InferenceSession:
        path = Path(path)
        if not path.is_file():
            raise AssetMissingError(f"checkpoint {path} does not exist; check model.frame_model / encoder_model / "
                                    "sequence_model")
        if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
            raise ModelLoadError(
                f"{path}: the torch backend runs training checkpoints ({', '.join(CHECKPOINT_SUFFIXES)}), not "
                f"{path.suffix or 'extension-less'} files; for ONNX models use model.backend onnxruntime or tensorrt"
            )
        model, ckpt = self._checkpoint(path)
        module = _module_for_role(model, expected_role, str(path))
        meta = metadata_from_checkpoint(ckpt, model, expected_role, str(path))
        if self.use_torch_tensorrt:
            module = self._compile(module, meta, max_batch)
        log.info("loaded %s role %r from checkpoint %s on %s", meta.model_id, expected_role, path.name, self.device)
        return TorchSession(path, meta, module, self.device)

    def _compile(self, module: Any, meta: ModelMetadata, max_batch: int) -> Any:
        import torch
        import torch_tensorrt

        tail = ((meta.sequence_length, meta.feature_dim) if meta.role == "sequence"
                else (meta.channels, meta.input_size, meta.input_size))
        spec = torch_tensorrt.Input(min_shape=(1,) + tail, opt_shape=(min(4, max_batch),) + tail,
                                    max_shape=(max_batch,) + tail, dtype=torch.float32)
        log.info("compiling the %s module with Torch-TensorRT (%s input)", meta.role, INPUT_NAMES[meta.role])
        return torch_tensorrt.compile(module, ir="dynamo", inputs=[spec],
                                      enabled_precisions={torch.float16, torch.float32})


BACKENDS.provide("torch", TorchBackend)


def main(argv: Optional[List[str]] = None) -> int:
    """``ros2-affect`` with the torch backend provided (see the module docstring)."""
    from ros2_affect.tools.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
