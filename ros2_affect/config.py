"""Configuration of the perception pipeline.

One dataclass per stage, gathered in :class:`PipelineConfig`. The defaults here are the
documented defaults of ``config/affect.yaml``; that file is a ROS 2 parameter file
(``affect_node: ros__parameters: ...``) read both by the node and by the command-line
tools, so the robot and an offline replay run exactly the same settings.

Nested sections map to dotted ROS parameter names (``detector.min_score``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, TypeVar, Union

import yaml

from ros2_affect.errors import ConfigError
from ros2_affect.settings import Declared, check, declared, merge, registry_names, section, setting
from ros2_affect.settings import flatten as flatten  # re-exported: the dotted view of a config

S = TypeVar("S", bound="_Section")

#: The node name under which the parameter file keeps its parameters.
NODE_NAME = "affect_node"


class _Section:
    """A section of :class:`PipelineConfig`: ``validate()`` checks it under its dotted names."""

    def validate(self: S) -> S:
        """Check every declared range and choice (and rules between settings); returns self.

        Raises:
            ConfigError: the first value that is not accepted, named as in the parameter file.
        """
        return check(self, _SECTION_PREFIX[type(self)])


@dataclass(frozen=True)
class DetectorConfig(_Section):
    """Face detection (MediaPipe BlazeFace)."""

    model: str = setting(
        "short_range",
        '"short_range" (faces within ~2 m) or "full_range" (~5 m).',
        choices=registry_names("ros2_affect.core.detection", "DETECTORS"),
    )
    min_score: float = setting(0.5, "minimum detection confidence, 0..1.", range=(0.0, 1.0), live=True)
    min_face_px: int = setting(24, "faces whose box is narrower than this are ignored.", range=(1, 10000), live=True)
    max_faces: int = setting(
        8, "at most this many faces are processed per frame, largest first.", range=(1, 64), live=True
    )
    detect_scale: float = setting(
        1.0, "frames are scaled by this before detection (0.1..1).", range=(0.1, 1.0), live=True
    )


@dataclass(frozen=True)
class LandmarksConfig(_Section):
    """Eye refinement with the Face Mesh landmark model."""

    enabled: bool = setting(True, "refine the detector's eye keypoints (more precise alignment).")
    crop_scale: float = setting(
        1.5, "side of the square landmark crop, in face-box widths.", range=(1.0, 3.0), live=True
    )
    every_n_frames: int = setting(
        2,
        "refine each track's eyes on one frame in n, in between they follow its box (2: half the "
        "Face Mesh time; eye error on AFEW-VA 0.133 -> 0.135 inter-ocular distances).",
        range=(1, 30),
    )


@dataclass(frozen=True)
class AlignmentConfig(_Section):
    """Eye-levelled face crops."""

    margin: float = setting(
        0.25, "extra border around the face box, as a fraction of its size.", range=(0.0, 1.0), live=True
    )
    eye_distance_ratio: float = setting(
        0.37,
        ">0: scale so the eyes are this fraction of the crop apart (box ignored). 0.37 and "
        "eye_y 0.39 are FER2013's medians (see ros2_affect/core/alignment.py).",
        range=(0.0, 0.9),
        live=True,
    )
    eye_y: float = setting(
        0.39,
        "with eye_distance_ratio > 0: height of the eye midpoint, fraction of the crop from the top.",
        range=(0.1, 0.9),
        live=True,
    )
    output_size_px: int = setting(
        48, "crop side; overridden by the model's metadata when a model is loaded.", range=(8, 512)
    )
    grayscale: bool = setting(True, "overridden by the model's metadata when a model is loaded.")


@dataclass(frozen=True)
class TrackerConfig(_Section):
    """Association of detections across frames."""

    min_iou: float = setting(
        0.2, "a match needs at least this overlap, or a close centre (below).", range=(0.0, 1.0), live=True
    )
    max_center_distance: float = setting(
        0.6, "... or centres closer than this many box widths.", range=(0.0, 10.0), live=True
    )
    min_hits: int = setting(2, "a track is confirmed after this many matched frames.", range=(1, 100), live=True)
    max_misses: int = setting(
        10, "a track is deleted after this many frames without a match.", range=(0, 1000), live=True
    )
    max_tracks: int = setting(64, "hard cap on live tracks (bounded memory).", range=(1, 1024), live=True)


@dataclass(frozen=True)
class SequenceConfig(_Section):
    """Per-track frame history for the temporal model."""

    length: int = setting(8, "frames per sequence; overridden by the model's metadata.", range=(1, 256))
    stride: int = setting(1, "keep every n-th frame of a track.", range=(1, 100), live=True)


@dataclass(frozen=True)
class ModelConfig(_Section):
    """Which affect model runs, and on what."""

    kind: str = setting(
        "temporal",
        '"temporal" (CNN-RNN over a sequence), "frame" (Emotion-GCN per frame) or "none".',
        choices=("temporal", "frame", "none"),
    )
    frame_model: str = setting("", "path to the frame model ONNX; empty: the bundled default.")
    encoder_model: str = setting("", "path to the temporal model's frame encoder ONNX; empty: bundled default.")
    sequence_model: str = setting("", "path to the temporal model's sequence head ONNX; empty: bundled default.")
    backend: str = setting(
        "onnxruntime",
        "the inference backend (ros2_affect.backends.BACKENDS).",
        choices=registry_names("ros2_affect.backends", "BACKENDS"),
    )
    fallback_backend: str = setting(
        "onnxruntime",
        "used (and logged) when ``backend`` cannot run here; none: fail instead.",
        choices=registry_names("ros2_affect.backends", "BACKENDS", "none"),
    )
    device: str = setting(
        "cpu", '"cpu" or "cuda" (onnxruntime CUDA provider / TensorRT device).', choices=("cpu", "cuda")
    )
    threads: int = setting(1, "intra-op threads for CPU inference (0: library default).", range=(0, 64))
    precision: str = setting(
        "auto",
        '"auto": the bundled int8 graphs on the CPU (onnxruntime), fp16 engines on TensorRT; '
        '"fp32" | "fp16" | "int8" force one (fp16 only means something to TensorRT).',
        choices=("auto", "fp32", "fp16", "int8"),
    )
    engine_cache_dir: str = setting("", "where TensorRT engines are cached; empty: ~/.cache/ros2_affect.")
    flip_average: bool = setting(
        False, "average the prediction of the mirrored face too (slower, slightly better).", live=True
    )

    def cross_check(self) -> None:
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

    detector: DetectorConfig = section(DetectorConfig)
    landmarks: LandmarksConfig = section(LandmarksConfig)
    alignment: AlignmentConfig = section(AlignmentConfig)
    tracker: TrackerConfig = section(TrackerConfig)
    sequence: SequenceConfig = section(SequenceConfig)
    model: ModelConfig = section(ModelConfig)

    def validate(self) -> PipelineConfig:
        """Check every section (:meth:`_Section.validate`); returns self.

        Raises:
            ConfigError: the first value that is not accepted.
        """
        return check(self)


_SECTION_PREFIX = {f.default_factory: f"{f.name}." for f in fields(PipelineConfig)}  # type: ignore[misc]

#: Every pipeline setting, dotted, with its declaration (type, default, range, doc, live).
PIPELINE_SETTINGS: Tuple[Declared, ...] = declared(PipelineConfig)


# -- loading -----------------------------------------------------------------------------------


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
    return merge(PipelineConfig(), nested).validate()


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
    for key, part in data.items():
        if not (isinstance(part, Mapping) and isinstance(part.get("ros__parameters"), Mapping)):
            continue
        if node_name_matches(str(key), fully_qualified):
            merged.update(flatten_mapping(part["ros__parameters"]))
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
