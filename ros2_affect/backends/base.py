"""The inference backend interface and the model contract every backend enforces.

Model contract (version 1)
--------------------------
An affect model is one ONNX graph (a *frame* model) or two (a temporal model: an
*encoder* run once per new frame and a *sequence* head over the last ``T`` features).
Each graph carries its metadata in ONNX ``metadata_props``, keys prefixed ``ros2_affect.``:

=====================  =====================================================================
key                    value (string; JSON for lists/objects)
=====================  =====================================================================
contract_version       ``"1"``
role                   ``"frame"``, ``"encoder"`` or ``"sequence"``
model_id               e.g. ``"emotion_gcn_fer2013-1.0"`` (published in every message)
class_names            JSON list, canonical names (see ``core.types.CANONICAL_EXPRESSIONS``)
input_size             crop side S in pixels
channels               1 (grayscale) or 3 (RGB)
mean, std              JSON lists, one per channel, applied to pixels scaled to 0..1
alignment              JSON object of :class:`ros2_affect.config.AlignmentConfig` fields the
                       model was trained with (margin, eye_distance_ratio, ...)
sequence_length        T (``"1"`` for frame and encoder graphs)
feature_dim            D, the encoder's output / the sequence head's input width
va_mode                ``"regressed"`` (the graph outputs valence/arousal, published with
                       ``va_derived: false``) or ``"derived"`` (computed from class
                       probabilities, see ``core.valence_arousal``; the fallback for models
                       without a trained valence/arousal regressor)
temperature            optional, on graphs with ``logits`` (frame, sequence): the calibration
                       temperature T > 0 (temperature scaling, Guo et al. ICML 2017). The
                       runtime's probabilities are ``softmax(logits / T)``; the graph's logits
                       stay unscaled (so the argmax never changes). Absent: ``1.0``. Written
                       by ``python -m training.calibrate``; 0, negative or non-finite values
                       are rejected at load.
training_data, version, git_sha, opset   provenance, shown in model cards and diagnostics
=====================  =====================================================================

Tensors (N is the number of faces, a dynamic axis):

- frame:    ``image [N, C, S, S] float32`` -> ``logits [N, K]``, ``valence_arousal [N, 2]``
- encoder:  ``image [N, C, S, S] float32`` -> ``features [N, D]``
- sequence: ``features [N, T, D] float32`` -> ``logits [N, K]``, ``valence_arousal [N, 2]``

``valence_arousal`` is in -1..1. With ``va_mode == "derived"`` it may be absent, and the
runtime ignores it if present.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Sequence, Tuple, Union

import numpy as np

from ros2_affect.errors import AssetMissingError, ModelContractError, ModelLoadError

METADATA_PREFIX = "ros2_affect."
CONTRACT_VERSION = "1"
ROLES = ("frame", "encoder", "sequence")
REQUIRED_KEYS = (
    "contract_version",
    "role",
    "model_id",
    "class_names",
    "input_size",
    "channels",
    "mean",
    "std",
    "sequence_length",
    "feature_dim",
    "va_mode",
)
#: Optional metadata key (without the prefix) of the calibration temperature.
TEMPERATURE_KEY = "temperature"
INPUT_NAMES = {"frame": "image", "encoder": "image", "sequence": "features"}
OUTPUT_NAMES = {
    "frame": ("logits", "valence_arousal"),
    "encoder": ("features",),
    "sequence": ("logits", "valence_arousal"),
}


@dataclass(frozen=True)
class ModelMetadata:
    """Parsed, validated ``ros2_affect.*`` metadata of one graph."""

    role: str
    model_id: str
    class_names: Tuple[str, ...]
    input_size: int
    channels: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    sequence_length: int
    feature_dim: int
    va_mode: str
    alignment: Dict[str, Any] = field(default_factory=dict)
    extra: Dict[str, str] = field(default_factory=dict)

    @property
    def va_derived(self) -> bool:
        return self.va_mode == "derived"

    @property
    def temperature(self) -> float:
        """The calibration temperature T (``softmax(logits / T)``); 1.0 when the key is absent.

        Raises:
            ModelContractError: the stored value is not a finite number > 0.
        """
        return parse_temperature(self.extra.get(TEMPERATURE_KEY), f"model {self.model_id!r}")

    def to_props(self) -> Dict[str, str]:
        """The ``metadata_props`` strings that encode this metadata (used by export)."""
        props = {
            "contract_version": CONTRACT_VERSION,
            "role": self.role,
            "model_id": self.model_id,
            "class_names": json.dumps(list(self.class_names)),
            "input_size": str(self.input_size),
            "channels": str(self.channels),
            "mean": json.dumps(list(self.mean)),
            "std": json.dumps(list(self.std)),
            "sequence_length": str(self.sequence_length),
            "feature_dim": str(self.feature_dim),
            "va_mode": self.va_mode,
            "alignment": json.dumps(self.alignment),
        }
        props.update(self.extra)
        return {METADATA_PREFIX + k: v for k, v in props.items()}

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str) -> ModelMetadata:
        """Parse ``metadata_props``.

        Raises:
            ModelContractError: a key is missing or a value is malformed; the message
                names ``source`` (the model file), the key and the bad value.
        """
        values = {k[len(METADATA_PREFIX) :]: v for k, v in props.items() if k.startswith(METADATA_PREFIX)}
        missing = [k for k in REQUIRED_KEYS if k not in values]
        if missing:
            raise ModelContractError(
                f"{source}: missing model metadata {', '.join(METADATA_PREFIX + k for k in missing)}; "
                "export models with `python -m training.export`, which writes the ros2_affect.* metadata"
            )
        if values["contract_version"] != CONTRACT_VERSION:
            raise ModelContractError(
                f"{source}: model contract version {values['contract_version']!r}, this runtime reads "
                f"{CONTRACT_VERSION!r}; re-export the model with this version of training.export"
            )

        def parse(key: str, kind: type) -> Any:
            raw = values[key]
            try:
                value = json.loads(raw) if kind in (list, dict) else kind(raw)
            except (ValueError, TypeError):
                raise ModelContractError(
                    f"{source}: metadata {METADATA_PREFIX}{key} = {raw!r} is not a valid {kind.__name__}"
                ) from None
            if kind in (list, dict) and not isinstance(value, kind):
                raise ModelContractError(
                    f"{source}: metadata {METADATA_PREFIX}{key} = {raw!r} is not a JSON {kind.__name__}"
                )
            return value

        role = values["role"]
        if role not in ROLES:
            raise ModelContractError(f"{source}: metadata {METADATA_PREFIX}role = {role!r}; expected one of {ROLES}")
        meta = cls(
            role=role,
            model_id=values["model_id"],
            class_names=tuple(str(c) for c in parse("class_names", list)),
            input_size=parse("input_size", int),
            channels=parse("channels", int),
            mean=tuple(float(m) for m in parse("mean", list)),
            std=tuple(float(s) for s in parse("std", list)),
            sequence_length=parse("sequence_length", int),
            feature_dim=parse("feature_dim", int),
            va_mode=values["va_mode"],
            alignment=parse("alignment", dict) if "alignment" in values else {},
            extra={k: v for k, v in values.items() if k not in REQUIRED_KEYS and k != "alignment"},
        )
        meta.check(source)
        return meta

    def check(self, source: str) -> None:
        """Raise :class:`ModelContractError` if the values are inconsistent."""
        problems = []
        if self.channels not in (1, 3):
            problems.append(f"channels = {self.channels} (expected 1 or 3)")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            problems.append(f"mean/std have {len(self.mean)}/{len(self.std)} values for {self.channels} channels")
        if any(not math.isfinite(s) or s <= 0 for s in self.std):
            problems.append(f"std = {list(self.std)} (must be finite and > 0)")
        if not 8 <= self.input_size <= 1024:
            problems.append(f"input_size = {self.input_size} (expected 8..1024)")
        if self.role != "encoder" and not self.class_names:
            problems.append("class_names is empty")
        if self.sequence_length < 1 or (self.role != "sequence" and self.sequence_length != 1):
            problems.append(f"sequence_length = {self.sequence_length} for a {self.role} graph")
        if self.va_mode not in ("regressed", "derived"):
            problems.append(f"va_mode = {self.va_mode!r} (expected 'regressed' or 'derived')")
        if TEMPERATURE_KEY in self.extra and _temperature_value(self.extra[TEMPERATURE_KEY]) is None:
            problems.append(
                f"{TEMPERATURE_KEY} = {self.extra[TEMPERATURE_KEY]!r} (expected a finite number > 0, 1.0 = "
                "uncalibrated; refit it with `python -m training.calibrate` or remove the key)"
            )
        if problems:
            raise ModelContractError(f"{source}: invalid model metadata: " + "; ".join(problems))


def parse_temperature(raw: Union[str, None], source: str) -> float:
    """The ``ros2_affect.temperature`` value as a float (1.0 for ``None``: no key).

    Raises:
        ModelContractError: not a number, not finite or not > 0.
    """
    if raw is None:
        return 1.0
    value = _temperature_value(raw)
    if value is None:
        raise ModelContractError(
            f"{source}: metadata {METADATA_PREFIX}{TEMPERATURE_KEY} = {raw!r}; expected a finite number > 0 "
            "(1.0 = uncalibrated); refit it with `python -m training.calibrate` or remove the key"
        )
    return value


def _temperature_value(raw: str) -> Union[float, None]:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


class InferenceSession(ABC):
    """One loaded graph on one backend. Allocated at configure time, reused per frame."""

    #: name of the backend that runs this session (shown in diagnostics)
    backend_name: str = ""

    def __init__(self, path: Path, metadata: ModelMetadata) -> None:
        self.path = path
        self.metadata = metadata

    @abstractmethod
    def run(self, inputs: np.ndarray) -> Dict[str, np.ndarray]:
        """Run the graph on a batch.

        Args:
            inputs: ``[N, C, S, S]`` (frame/encoder) or ``[N, T, D]`` (sequence) float32,
                C-contiguous, ``N >= 1``.

        Returns:
            The graph's outputs by name (see :data:`OUTPUT_NAMES`), float32, first axis N.
        """

    def close(self) -> None:  # noqa: B027 - optional hook; most sessions hold nothing to release
        """Release the backend's resources (idempotent)."""


class InferenceBackend(ABC):
    """A way to run contract-following models (ONNX Runtime, TensorRT, torch)."""

    name: str = ""

    @classmethod
    def is_available(cls) -> Tuple[bool, str]:
        """``(True, "")`` when it can run here, else ``(False, reason)``; never raises."""
        return True, ""

    @abstractmethod
    def load(self, path: Path, expected_role: str, max_batch: int) -> InferenceSession:
        """Load the graph at ``path``, check its metadata and I/O against the contract.

        Raises:
            AssetMissingError: no file at ``path``.
            ModelLoadError: the file is not a loadable model for this backend.
            ModelContractError: metadata, role, inputs or outputs do not match the contract.
        """


def check_role(meta: ModelMetadata, expected_role: str, source: str) -> None:
    if meta.role != expected_role:
        raise ModelContractError(
            f"{source}: this is a {meta.role!r} graph but a {expected_role!r} graph was configured here; "
            "check which file is set as frame_model / encoder_model / sequence_model"
        )


def check_io_names(input_names: Sequence[str], output_names: Sequence[str], role: str, source: str) -> None:
    """Check the graph's tensor names against the contract for ``role``."""
    want_in = INPUT_NAMES[role]
    required_out = ("features",) if role == "encoder" else ("logits",)
    if list(input_names) != [want_in]:
        raise ModelContractError(f"{source}: inputs {list(input_names)}; a {role} graph takes exactly [{want_in!r}]")
    missing = [o for o in required_out if o not in output_names]
    if missing:
        raise ModelContractError(
            f"{source}: outputs {list(output_names)} lack {missing}; a {role} graph outputs {list(OUTPUT_NAMES[role])}"
        )


def read_onnx_metadata(path: Union[str, Path]) -> ModelMetadata:
    """Parse the ``ros2_affect.*`` metadata of an ONNX file (with ``onnx`` if installed,
    else ``onnxruntime``).

    Raises:
        AssetMissingError: no file at ``path``.
        ModelLoadError: not a readable ONNX file.
        ModelContractError: metadata missing or invalid.
    """
    path = Path(path)
    if not path.is_file():
        raise AssetMissingError(
            f"model file {path} does not exist; check model.frame_model / model.encoder_model / model.sequence_model"
        )
    props: Dict[str, str]
    try:
        import onnx  # dev dependency; the runtime has onnxruntime

        model = onnx.load(str(path), load_external_data=False)
        props = {p.key: p.value for p in model.metadata_props}
    except ImportError:
        try:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            props = dict(session.get_modelmeta().custom_metadata_map)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"{path} is not a loadable ONNX model ({exc}); re-export it") from None
    except Exception as exc:  # onnx.load raises DecodeError, OSError, ...
        raise ModelLoadError(
            f"{path} is not a loadable ONNX model ({type(exc).__name__}: {exc}); re-export it"
        ) from None
    return ModelMetadata.from_props(props, str(path))
