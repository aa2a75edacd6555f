"""Configuration of the perception pipeline.

One dataclass per stage, gathered in :class:`PipelineConfig`. The defaults here are the
documented defaults of ``config/affect.yaml``; that file is a ROS 2 parameter file
(``affect_node: ros__parameters: ...``) read both by the node and by the command-line
tools, so the robot and an offline replay run exactly the same settings.

Nested sections map to dotted ROS parameter names (``detector.min_score``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Type, TypeVar, Union

import yaml

from ros2_affect.errors import ConfigError, did_you_mean

C = TypeVar("C")

#: The node name under which the parameter file keeps its parameters.
NODE_NAME = "affect_node"


@dataclass(frozen=True)
class DetectorConfig:
    """Face detection (MediaPipe BlazeFace)."""

    model: str = "short_range"  #: "short_range" (faces within ~2 m) or "full_range" (~5 m).
    min_score: float = 0.5  #: minimum detection confidence, 0..1.
    min_face_px: int = 24  #: faces whose box is narrower than this are ignored.
    max_faces: int = 8  #: at most this many faces are processed per frame, largest first.
    detect_scale: float = 1.0  #: frames are scaled by this before detection (0.1..1).

    def validate(self) -> None:
        _check_choice("detector.model", self.model, ("short_range", "full_range"))
        _check_range("detector.min_score", self.min_score, 0.0, 1.0)
        _check_range("detector.min_face_px", self.min_face_px, 1, 10000)
        _check_range("detector.max_faces", self.max_faces, 1, 64)
        _check_range("detector.detect_scale", self.detect_scale, 0.1, 1.0)


@dataclass(frozen=True)
class LandmarksConfig:
    """Eye refinement with the Face Mesh landmark model."""

    enabled: bool = True  #: refine the detector's eye keypoints (more precise alignment).
    crop_scale: float = 1.5  #: side of the square landmark crop, in face-box widths.
    #: refine each track's eyes on one frame in n, in between they follow its box (2: half the
    #: Face Mesh time; eye error on AFEW-VA 0.133 -> 0.135 inter-ocular distances).
    every_n_frames: int = 2

    def validate(self) -> None:
        _check_range("landmarks.crop_scale", self.crop_scale, 1.0, 3.0)
        _check_range("landmarks.every_n_frames", self.every_n_frames, 1, 30)


@dataclass(frozen=True)
class AlignmentConfig:
    """Eye-levelled face crops."""

    margin: float = 0.25  #: extra border around the face box, as a fraction of its size.
    #: >0: scale so the eyes are this fraction of the crop apart (box ignored). 0.37 and
    #: eye_y 0.39 are FER2013's medians (see ros2_affect/core/alignment.py).
    eye_distance_ratio: float = 0.37
    eye_y: float = 0.39  #: with eye_distance_ratio > 0: height of the eye midpoint, fraction of the crop from the top.
    output_size_px: int = 48  #: crop side; overridden by the model's metadata when a model is loaded.
    grayscale: bool = True  #: overridden by the model's metadata when a model is loaded.

    def validate(self) -> None:
        _check_range("alignment.margin", self.margin, 0.0, 1.0)
        _check_range("alignment.eye_distance_ratio", self.eye_distance_ratio, 0.0, 0.9)
        _check_range("alignment.eye_y", self.eye_y, 0.1, 0.9)
        _check_range("alignment.output_size_px", self.output_size_px, 8, 512)


@dataclass(frozen=True)
class TrackerConfig:
    """Association of detections across frames."""

    min_iou: float = 0.2  #: a match needs at least this overlap, or a close centre (below).
    max_center_distance: float = 0.6  #: ... or centres closer than this many box widths.
    min_hits: int = 2  #: a track is confirmed after this many matched frames.
    max_misses: int = 10  #: a track is deleted after this many frames without a match.
    max_tracks: int = 64  #: hard cap on live tracks (bounded memory).

    def validate(self) -> None:
        _check_range("tracker.min_iou", self.min_iou, 0.0, 1.0)
        _check_range("tracker.max_center_distance", self.max_center_distance, 0.0, 10.0)
        _check_range("tracker.min_hits", self.min_hits, 1, 100)
        _check_range("tracker.max_misses", self.max_misses, 0, 1000)
        _check_range("tracker.max_tracks", self.max_tracks, 1, 1024)


@dataclass(frozen=True)
class SequenceConfig:
    """Per-track frame history for the temporal model."""

    length: int = 8  #: frames per sequence; overridden by the model's metadata.
    stride: int = 1  #: keep every n-th frame of a track.

    def validate(self) -> None:
        _check_range("sequence.length", self.length, 1, 256)
        _check_range("sequence.stride", self.stride, 1, 100)


@dataclass(frozen=True)
class ModelConfig:
    """Which affect model runs, and on what."""

    kind: str = "temporal"  #: "temporal" (CNN-RNN over a sequence), "frame" (Emotion-GCN per frame) or "none".
    frame_model: str = ""  #: path to the frame model ONNX; empty: the bundled default.
    encoder_model: str = ""  #: path to the temporal model's frame encoder ONNX; empty: bundled default.
    sequence_model: str = ""  #: path to the temporal model's sequence head ONNX; empty: bundled default.
    backend: str = "onnxruntime"  #: "onnxruntime", "tensorrt" or "torch".
    fallback_backend: str = "onnxruntime"  #: used (and logged) when ``backend`` cannot run here.
    device: str = "cpu"  #: "cpu" or "cuda" (onnxruntime CUDA provider / TensorRT device).
    threads: int = 1  #: intra-op threads for CPU inference (0: library default).
    #: "auto": the bundled int8 graphs on the CPU (onnxruntime), fp16 engines on TensorRT;
    #: "fp32" | "fp16" | "int8" force one (fp16 only means something to TensorRT).
    precision: str = "auto"
    engine_cache_dir: str = ""  #: where TensorRT engines are cached; empty: ~/.cache/ros2_affect.
    flip_average: bool = False  #: average the prediction of the mirrored face too (slower, slightly better).

    def validate(self) -> None:
        _check_choice("model.kind", self.kind, ("temporal", "frame", "none"))
        _check_choice("model.backend", self.backend, ("onnxruntime", "tensorrt", "torch"))
        _check_choice("model.fallback_backend", self.fallback_backend, ("onnxruntime", "torch", "none"))
        _check_choice("model.device", self.device, ("cpu", "cuda"))
        _check_range("model.threads", self.threads, 0, 64)
        _check_choice("model.precision", self.precision, ("auto", "fp32", "fp16", "int8"))
        if self.precision == "fp16" and self.backend == "onnxruntime":
            raise ConfigError(
                "model.precision = 'fp16' is a TensorRT setting: onnxruntime would run the fp32 graphs; set "
                "model.precision to fp32 (float graphs) or auto/int8 (the bundled int8 graphs on the CPU), or "
                "model.backend to tensorrt"
            )

    @property
    def engine_precision(self) -> str:
        """Precision of TensorRT engines built from the float graphs."""
        return "fp16" if self.precision == "auto" else self.precision

    def bundled_int8(self, backend_name: str) -> bool:
        """Whether the bundled defaults are taken in their int8-quantised form
        (``<name>_int8.onnx``, made by ``python -m training.quantize``): on the CPU with
        onnxruntime, unless a float precision is asked for. TensorRT builds its own engines
        from the float graphs instead."""
        return backend_name == "onnxruntime" and self.device == "cpu" and self.precision in ("auto", "int8")


@dataclass(frozen=True)
class PipelineConfig:
    """All settings of :class:`ros2_affect.core.pipeline.AffectPipeline`."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    landmarks: LandmarksConfig = field(default_factory=LandmarksConfig)
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)

    def validate(self) -> PipelineConfig:
        for f in fields(self):
            getattr(self, f.name).validate()
        return self


# -- loading -----------------------------------------------------------------------------------


def _check_range(name: str, value: Union[int, float], low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low <= value <= high):
        raise ConfigError(f"{name} = {value!r} is out of range; expected a number in [{low}, {high}]")


def _check_choice(name: str, value: str, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(
            f"{name} = {value!r} is not accepted; choose one of {', '.join(choices)}{did_you_mean(value, choices)}"
        )


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Convert a YAML/parameter value to the type of the field's default."""
    expected = type(default)
    if expected is bool:
        if isinstance(value, bool):
            return value
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif expected is str:
        if isinstance(value, str):
            return value
    raise ConfigError(
        f"{name} = {value!r} has type {type(value).__name__}; expected {expected.__name__} "
        f"(for example {name}: {default!r})"
    )


def _build(cls: Type[C], values: Mapping[str, Any], prefix: str) -> C:
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    kwargs: Dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in known:
            hint = did_you_mean(key, known, prefix)
            raise ConfigError(f"unknown key {name!r}; accepted: {', '.join(sorted(known))}{hint}")
        default = getattr(cls(), key)
        if dataclasses.is_dataclass(default):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{name} must be a mapping of settings, got {value!r}")
            kwargs[key] = _build(type(default), value, f"{name}.")
        else:
            kwargs[key] = _coerce(name, value, default)
    return cls(**kwargs)


def unflatten(params: Mapping[str, Any]) -> Dict[str, Any]:
    """Turn dotted ROS parameter names (``detector.min_score``) into nested mappings."""
    nested: Dict[str, Any] = {}
    for dotted, value in params.items():
        node = nested
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def flatten(config: Any, prefix: str = "") -> Dict[str, Any]:
    """Dotted-name view of a config dataclass (the node declares one parameter each)."""
    out: Dict[str, Any] = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def pipeline_config_from_dict(values: Mapping[str, Any]) -> PipelineConfig:
    """Build and validate a :class:`PipelineConfig` from nested or dotted mappings.

    Raises:
        ConfigError: an unknown key, a value of the wrong type or out of range.
    """
    nested = unflatten({k: v for k, v in values.items() if "." in k})
    for key, value in values.items():
        if "." not in key:
            if isinstance(value, Mapping) and isinstance(nested.get(key), dict):
                nested[key].update(value)
            else:
                nested[key] = value
    return _build(PipelineConfig, nested, "").validate()


def node_name_matches(pattern: str, fully_qualified_name: str) -> bool:
    """Whether a parameter file's top-level key applies to a node, by rcl's rules.

    A key without a leading slash is rooted (``affect_node`` is ``/affect_node``: only a
    node in the root namespace); ``*`` stands for one name token and ``**`` for any
    number of them (``/**`` matches every node, ``/**/affect_node`` this node in any
    namespace).
    """

    def match(keys: Tuple[str, ...], names: Tuple[str, ...]) -> bool:
        if not keys:
            return not names
        if keys[0] == "**":
            return any(match(keys[1:], names[i:]) for i in range(len(names) + 1))
        return bool(names) and keys[0] in ("*", names[0]) and match(keys[1:], names[1:])

    def tokens(name: str) -> Tuple[str, ...]:
        return tuple(t for t in name.strip().split("/") if t)

    return match(tokens(pattern), tokens(fully_qualified_name))


def flatten_mapping(values: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Nested mappings as dotted names (``{"detector": {"min_score": 0.5}}`` -> ``detector.min_score``)."""
    out: Dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(flatten_mapping(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def load_parameter_file(
    path: Union[str, Path], node_name: str = NODE_NAME, namespace: str = "/"
) -> Dict[str, Any]:
    """The ``ros__parameters`` a node gets from a ROS 2 parameter file, merged as rcl merges them.

    Every top-level section whose key matches the node's fully qualified name
    (:func:`node_name_matches`: ``/**``, ``/**/affect_node``, ``/ns/affect_node``, the
    rooted ``affect_node``...) applies, in file order, a later section overriding single
    parameters of an earlier one: the same values the node itself reads from
    ``--params-file``. Keys other than the pipeline's (topics, publish options) are
    returned too, as nested mappings; callers pick what they need.

    Raises:
        ConfigError: the file is missing, not YAML, or has no section for the node.
    """
    path = Path(path)
    fix = "pass a ROS 2 parameter file (YAML) such as the packaged config/affect.yaml"
    if path.is_dir():
        raise ConfigError(f"parameter file {str(path)!r} is a folder, not a file; {fix}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"parameter file {str(path)!r} does not exist; {fix}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"parameter file {str(path)!r} is not text (a binary file?); {fix}") from None
    except OSError as exc:
        raise ConfigError(f"parameter file {str(path)!r} cannot be read ({exc.strerror}); {fix}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"parameter file {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"parameter file {str(path)!r} must hold a mapping, got {type(data).__name__}")
    fully_qualified = f"{namespace.rstrip('/')}/{node_name}"
    merged: Dict[str, Any] = {}
    matched = False
    for key, section in data.items():
        if not (isinstance(section, Mapping) and isinstance(section.get("ros__parameters"), Mapping)):
            continue
        if node_name_matches(str(key), fully_qualified):
            merged.update(flatten_mapping(section["ros__parameters"]))
            matched = True
    if not matched:
        raise ConfigError(
            f"parameter file {str(path)!r} has no 'ros__parameters:' section for node {fully_qualified} "
            f"(keys such as '/**/{node_name}', '{fully_qualified}' or '/**' match it); "
            f"found top-level keys {sorted(map(str, data))}"
        )
    return unflatten(merged)


PIPELINE_SECTIONS = tuple(f.name for f in fields(PipelineConfig))


def load_pipeline_config(path: Optional[Union[str, Path]] = None) -> PipelineConfig:
    """Load the pipeline settings from a parameter file (default: the packaged ``affect.yaml``)."""
    if path is None:
        from ros2_affect.assets import default_config_path

        path = default_config_path()
    params = load_parameter_file(path)
    nested = unflatten({k: v for k, v in params.items() if "." in k})
    nested.update({k: v for k, v in params.items() if "." not in k})
    return pipeline_config_from_dict({k: v for k, v in nested.items() if k in PIPELINE_SECTIONS})
