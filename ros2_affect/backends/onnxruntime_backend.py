"""ONNX Runtime backend: the reference way to run affect models (CPU, or CUDA when present).

``load`` checks a graph against the model contract (:mod:`ros2_affect.backends.base`)
before the first frame: file present, loadable, ``ros2_affect.*`` metadata valid, the
configured role, tensor names, and tensor ranks/sizes agreeing with the metadata, so a
wrong or stale model fails at configure time with a message naming the file and values.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ros2_affect.backends import BACKENDS
from ros2_affect.backends.base import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    InferenceBackend,
    InferenceSession,
    ModelMetadata,
    check_io_names,
    check_role,
)
from ros2_affect.errors import AssetMissingError, InferenceError, ModelContractError, ModelLoadError

LOG = logging.getLogger(__name__)

Dim = Union[int, str, None]


def _static(dim: Dim) -> Optional[int]:
    """The size of a static axis, None for a dynamic (named or unknown) one."""
    return dim if isinstance(dim, int) and dim > 0 else None


def expected_input_shape(meta: ModelMetadata) -> Tuple[Optional[int], ...]:
    """The contract's input shape for ``meta`` (None: the dynamic face axis N)."""
    if meta.role == "sequence":
        return (None, meta.sequence_length, meta.feature_dim)
    return (None, meta.channels, meta.input_size, meta.input_size)


def expected_output_shapes(meta: ModelMetadata) -> Dict[str, Tuple[Optional[int], ...]]:
    if meta.role == "encoder":
        return {"features": (None, meta.feature_dim)}
    return {"logits": (None, len(meta.class_names)), "valence_arousal": (None, 2)}


def check_shape(
    what: str, actual: Sequence[Dim], expected: Tuple[Optional[int], ...], source: str, max_batch: int
) -> None:
    """Compare a graph's declared tensor shape with the contract's.

    Static axes must equal the metadata's values; dynamic axes are accepted. A static
    batch axis must hold ``max_batch`` faces.

    Raises:
        ModelContractError: naming the tensor, both shapes and the metadata that set them.
    """
    want = ["N" if e is None else e for e in expected]
    if len(actual) != len(expected):
        raise ModelContractError(
            f"{source}: {what} has rank {len(actual)} (shape {list(actual)}); the contract and the model's "
            f"metadata expect shape {want}; re-export the model"
        )
    batch = _static(actual[0])
    if batch is not None and batch < max_batch:
        raise ModelContractError(
            f"{source}: {what} has a fixed batch axis of {batch}, but up to {max_batch} faces are batched "
            "(detector.max_faces); export the model with a dynamic first axis"
        )
    for axis, (got, exp) in enumerate(zip(actual, expected, strict=True)):
        size = _static(got)
        if axis and exp is not None and size is not None and size != exp:
            raise ModelContractError(
                f"{source}: {what} has shape {list(actual)} but the model's metadata says {want} "
                f"(axis {axis}: {size} != {exp}); the graph and its ros2_affect.* metadata disagree, re-export it"
            )


def _ort_message(exc: BaseException) -> str:
    """ONNX Runtime's error text in one readable line: the failing node and the reason, without
    its C++ source locations and function signatures."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = re.sub(r"/\S+\.(?:h|cc|cpp):\d+\s+", "", text)
    text = re.sub(r"\S+::\S+\([^)]*\)\s*", "", text)
    return text if len(text) <= 400 else text[:400] + "..."


class OnnxRuntimeSession(InferenceSession):
    """One ONNX Runtime ``InferenceSession`` running a contract graph."""

    backend_name = "onnxruntime"

    def __init__(self, path: Path, metadata: ModelMetadata, session: Any, output_names: List[str]) -> None:
        super().__init__(path, metadata)
        self._session = session
        self._input_name = INPUT_NAMES[metadata.role]
        self.output_names = output_names
        self.input_shape = expected_input_shape(metadata)
        self.providers: Tuple[str, ...] = tuple(session.get_providers())

    def run(self, inputs: np.ndarray) -> Dict[str, np.ndarray]:
        if self._session is None:
            raise ModelLoadError(f"{self.path}: this session was closed; load the model again")
        batch = np.ascontiguousarray(inputs, dtype=np.float32)
        if batch.ndim != len(self.input_shape) or batch.shape[0] < 1 or any(
            e is not None and s != e for s, e in zip(batch.shape, self.input_shape, strict=True)
        ):
            want = ["N" if e is None else e for e in self.input_shape]
            raise ValueError(
                f"{self.path.name}: input batch has shape {batch.shape}; this graph takes {want} with N >= 1"
            )
        try:
            values = self._session.run(self.output_names, {self._input_name: batch})
        except Exception as exc:  # onnxruntime's Fail/RuntimeException/InvalidArgument: a broken graph
            first_line = _ort_message(exc)
            raise InferenceError(
                f"{self.path}: onnxruntime failed running this {self.metadata.role} graph on an input of shape "
                f"{list(batch.shape)} ({first_line}); the graph loads but does not run: re-export it "
                "(python -m training.export) or point the model setting at another file"
            ) from None
        return {name: np.asarray(v, dtype=np.float32) for name, v in zip(self.output_names, values, strict=True)}

    def close(self) -> None:
        self._session = None


@BACKENDS.register("onnxruntime")
class OnnxRuntimeBackend(InferenceBackend):
    """ONNX Runtime on the CPU, or with the CUDA execution provider.

    Args:
        device: ``"cpu"``, or ``"cuda"`` to use ``CUDAExecutionProvider`` (the CPU is used,
            with a warning, when the installed onnxruntime has no CUDA provider).
        threads: intra-op threads (0: ONNX Runtime's default, one per core). Inter-op
            parallelism is off: the graphs are small chains and a robot shares its cores.
    """

    name = "onnxruntime"

    def __init__(self, device: str = "cpu", threads: int = 1) -> None:
        self.device = device
        self.threads = int(threads)

    @classmethod
    def is_available(cls) -> Tuple[bool, str]:
        try:
            import onnxruntime  # noqa: F401
        except Exception as exc:  # ImportError, or a broken native library
            return False, f"onnxruntime is not importable ({type(exc).__name__}: {exc}); pip install onnxruntime"
        return True, ""

    def providers(self) -> List[str]:
        import onnxruntime as ort

        if self.device == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                return ["CUDAExecutionProvider", "CPUExecutionProvider"]
            LOG.warning(
                "model.device is 'cuda' but this onnxruntime has no CUDAExecutionProvider (available: %s); "
                "running on the CPU. Install onnxruntime-gpu, or use the tensorrt backend, for the GPU",
                ", ".join(ort.get_available_providers()),
            )
        return ["CPUExecutionProvider"]

    def session_options(self) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(self.threads, 0)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ONNX Runtime's own log lines (to stderr, before ours) only with debug logging (--verbose):
        # every failure it reports reaches the caller as an exception, which is reported once.
        options.log_severity_level = 2 if LOG.isEnabledFor(logging.DEBUG) else 4
        return options

    def load(self, path: Path, expected_role: str, max_batch: int) -> OnnxRuntimeSession:
        import onnxruntime as ort

        path = Path(path)
        source = str(path)
        if not path.is_file():
            problem = "is a directory, not a file" if path.is_dir() else "does not exist"
            raise AssetMissingError(
                f"model file {source} {problem}; set model.frame_model / model.encoder_model / "
                "model.sequence_model to an exported ONNX file (python -m training.export), or model.kind: none"
            )
        try:
            session = ort.InferenceSession(source, sess_options=self.session_options(), providers=self.providers())
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/InvalidGraph types
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(
                f"{source}: onnxruntime cannot load this file ({first_line}); check the file is an ONNX model "
                "and re-export it (python -m training.export)"
            ) from None
        meta = ModelMetadata.from_props(session.get_modelmeta().custom_metadata_map, source)
        check_role(meta, expected_role, source)
        inputs, outputs = session.get_inputs(), session.get_outputs()
        check_io_names([i.name for i in inputs], [o.name for o in outputs], meta.role, source)
        if inputs[0].type != "tensor(float)":
            raise ModelContractError(
                f"{source}: input {inputs[0].name!r} has type {inputs[0].type}; the contract takes tensor(float) "
                "(float32); re-export the model in float32"
            )
        check_shape(f"input {inputs[0].name!r}", inputs[0].shape, expected_input_shape(meta), source, max_batch)
        wanted = expected_output_shapes(meta)
        output_names = [o.name for o in outputs if o.name in OUTPUT_NAMES[meta.role]]
        for output in outputs:
            if output.name in wanted:
                check_shape(f"output {output.name!r}", output.shape, wanted[output.name], source, max_batch)
        if meta.role != "encoder" and not meta.va_derived and "valence_arousal" not in output_names:
            raise ModelContractError(
                f"{source}: metadata va_mode is 'regressed' but the graph has no 'valence_arousal' output "
                f"(outputs: {[o.name for o in outputs]}); export it with that output or with va_mode 'derived'"
            )
        if meta.va_derived and "valence_arousal" in output_names:
            output_names.remove("valence_arousal")  # derived mode ignores a regressed output (contract)
        loaded = OnnxRuntimeSession(path, meta, session, output_names)
        LOG.info(
            "loaded %s graph %s (model %s) with onnxruntime %s on %s",
            meta.role, path.name, meta.model_id, ort.__version__, ", ".join(loaded.providers),
        )
        return loaded
