"""The node's ROS parameters: what is declared, with which ranges, and what a change needs.

Pure Python (no rclpy), so it is tested here; :mod:`ros2_affect.node.node` turns each
:class:`ParameterSpec` into an ``rcl_interfaces/ParameterDescriptor``.

Two groups of parameters, both in ``config/affect.yaml``:

* node parameters (:data:`NODE_PARAMETERS`): topics, publishing options, diagnostics;
* pipeline parameters: one per field of :class:`ros2_affect.config.PipelineConfig`, named
  with dots (``detector.min_score``). Their defaults, descriptions (the ``#:`` comments of
  ``config.py``) and ranges (the checks in each section's ``validate()``) are read from
  the config module, so adding a config field adds a declared, range-checked parameter.

What a change at run time needs (:func:`classify_change`):

* ``read_only``: fixed after start (topics, model files, backend, model-dictated sizes);
  change them in the parameter file and restart the node. rclpy rejects the change itself.
* ``node``: applied in place (thresholds, the debug image publisher).
* ``pipeline``: tuning of detection/tracking/alignment, applied to the running pipeline
  (:meth:`~ros2_affect.core.pipeline.AffectPipeline.retune`: models and tracks stay; a
  change it cannot take in place rebuilds the pipeline).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import threading
from dataclasses import dataclass, fields
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Tuple

from ros2_affect import config as config_module
from ros2_affect.config import PIPELINE_SECTIONS, PipelineConfig, flatten, pipeline_config_from_dict
from ros2_affect.errors import ConfigError

#: ROS parameter types by Python type of the default.
_TYPE_NAMES = {bool: "bool", int: "integer", float: "double", str: "string"}


@dataclass(frozen=True)
class ParameterSpec:
    """One declared parameter.

    Attributes:
        name: dotted ROS parameter name.
        default: the value declared when the parameter file does not set it.
        description: shown by ``ros2 param describe``.
        read_only: cannot change after the node started.
        min_value, max_value: inclusive range for numbers (None: unbounded).
        choices: accepted values of a string parameter (empty: any string).
    """

    name: str
    default: Any
    description: str
    read_only: bool = False
    min_value: Optional[float] = None
    max_value: Optional[float] = None
    choices: Tuple[str, ...] = ()

    @property
    def type_name(self) -> str:
        """``bool``, ``integer``, ``double`` or ``string`` (the ROS parameter type)."""
        return _TYPE_NAMES[type(self.default)]

    @property
    def additional_constraints(self) -> str:
        """Human-readable constraint text for the descriptor."""
        if self.choices:
            return "one of: " + ", ".join(self.choices)
        return ""


#: Node-level parameters (the top of config/affect.yaml).
NODE_PARAMETERS: Tuple[ParameterSpec, ...] = (
    ParameterSpec(
        "image_topic",
        "image",
        "Image topic to subscribe to, relative to the node namespace (remap it in the launch file). "
        "With compressed=true the node subscribes to <image_topic>/compressed.",
        read_only=True,
    ),
    ParameterSpec(
        "compressed",
        False,
        "Subscribe to sensor_msgs/CompressedImage (JPEG/PNG) on <image_topic>/compressed instead of "
        "sensor_msgs/Image.",
        read_only=True,
    ),
    ParameterSpec(
        "use_camera_info",
        False,
        "Subscribe to camera_info next to the image topic and give every face a unit viewing ray in the "
        "camera optical frame, from the camera_info with the image's stamp (within 20 ms); an image without "
        "one is still processed, without rays, and diagnostics say why.",
        read_only=True,
    ),
    ParameterSpec(
        "publish_debug_image",
        False,
        "Publish ~/debug_image (sensor_msgs/Image, rgb8) with boxes, ids, expressions and valence/arousal.",
    ),
    ParameterSpec(
        "hri_mode",
        "expression",
        "REP-155 (ROS4HRI) output under /humans/faces, when hri_msgs is installed. expression: publish "
        "/humans/faces/<id>/expression for the faces a face detector (e.g. hri_face_detect) announces on "
        "/humans/faces/tracked, matched to ours by their roi; standalone: this node is the face detector "
        "and publishes tracked, roi, cropped and expression itself; off: none.",
        read_only=True,
        choices=("expression", "standalone", "off"),
    ),
    ParameterSpec(
        "diagnostics_period_s",
        1.0,
        "Period of the /diagnostics status, seconds.",
        read_only=True,
        min_value=0.1,
        max_value=60.0,
    ),
    ParameterSpec(
        "latency_warn_ms",
        50.0,
        "Diagnostics level WARN when the 95th percentile of the processing latency exceeds this, milliseconds.",
        min_value=1.0,
        max_value=10000.0,
    ),
    ParameterSpec(
        "latency_error_ms",
        200.0,
        "Diagnostics level ERROR when the 95th percentile of the processing latency exceeds this, "
        "milliseconds (must be >= latency_warn_ms).",
        min_value=1.0,
        max_value=10000.0,
    ),
)

#: Pipeline parameters that can change while the node runs (AffectPipeline.retune applies them).
#: Everything else in the pipeline is read-only: it selects or is dictated by the models.
TUNABLE_PIPELINE_PARAMETERS = frozenset(
    {
        "detector.min_score",
        "detector.min_face_px",
        "detector.max_faces",
        "detector.detect_scale",
        "landmarks.crop_scale",
        "alignment.margin",
        "alignment.eye_distance_ratio",
        "alignment.eye_y",
        "tracker.min_iou",
        "tracker.max_center_distance",
        "tracker.min_hits",
        "tracker.max_misses",
        "tracker.max_tracks",
        "sequence.stride",
        "model.flip_average",
    }
)

#: Node parameters applied in place.
LIVE_NODE_PARAMETERS = frozenset({"publish_debug_image", "latency_warn_ms", "latency_error_ms"})


# -- reading the config module -----------------------------------------------------------------

_FIELD_LINE = re.compile(r"^\s+(\w+)\s*:\s*[^=]+=[^#]*(?:#:\s*(.*))?$")
_DOC_LINE = re.compile(r"^\s+#:\s?(.*)$")


def _field_docs(cls: type) -> Dict[str, str]:
    """Field name -> its ``#:`` comment (trailing, or the ``#:`` lines just above it)."""
    docs: Dict[str, str] = {}
    pending: List[str] = []
    for line in inspect.getsource(cls).splitlines():
        doc = _DOC_LINE.match(line)
        if doc:
            pending.append(doc.group(1).strip())
            continue
        match = _FIELD_LINE.match(line)
        if match:
            parts = pending + ([match.group(2).strip()] if match.group(2) else [])
            docs[match.group(1)] = " ".join(p for p in parts if p)
        pending = []
    return docs


_constraint_lock = threading.Lock()


def _collect_constraints() -> Tuple[Dict[str, Tuple[float, float]], Dict[str, Tuple[str, ...]]]:
    """Ranges and choices, as enforced by the config's ``validate()`` methods.

    The checks are recorded by running ``validate()`` on the defaults with the config
    module's two check helpers replaced by recorders, so the declared ranges cannot drift
    from the enforced ones. (A check that only runs for non-default values is not
    recorded; :func:`validate_changes` still enforces it through the full validation.)
    """
    ranges: Dict[str, Tuple[float, float]] = {}
    choices: Dict[str, Tuple[str, ...]] = {}

    def record_range(name: str, value: Any, low: float, high: float) -> None:
        ranges[name] = (low, high)

    def record_choice(name: str, value: str, options: Tuple[str, ...]) -> None:
        choices[name] = tuple(options)

    with _constraint_lock:
        saved = config_module._check_range, config_module._check_choice
        config_module._check_range, config_module._check_choice = record_range, record_choice  # type: ignore[assignment]
        try:
            PipelineConfig().validate()
        finally:
            config_module._check_range, config_module._check_choice = saved  # type: ignore[assignment]
    return ranges, choices


def pipeline_parameter_specs() -> Tuple[ParameterSpec, ...]:
    """One spec per field of :class:`PipelineConfig`, in declaration order."""
    ranges, choices = _collect_constraints()
    defaults = PipelineConfig()
    specs: List[ParameterSpec] = []
    for section in fields(PipelineConfig):
        section_value = getattr(defaults, section.name)
        section_cls = type(section_value)
        docs = _field_docs(section_cls)
        summary = (inspect.getdoc(section_cls) or section.name).splitlines()[0].rstrip(".")
        for f in fields(section_cls):
            name = f"{section.name}.{f.name}"
            default = getattr(section_value, f.name)
            low, high = ranges.get(name, (None, None))
            specs.append(
                ParameterSpec(
                    name=name,
                    default=default,
                    description=f"{docs.get(f.name) or f.name.replace('_', ' ')} [{summary}]",
                    read_only=name not in TUNABLE_PIPELINE_PARAMETERS,
                    min_value=low,
                    max_value=high,
                    choices=choices.get(name, ()),
                )
            )
    return tuple(specs)


def all_parameter_specs() -> Tuple[ParameterSpec, ...]:
    """Node parameters first, then the pipeline's."""
    return NODE_PARAMETERS + pipeline_parameter_specs()


# -- values -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeSettings:
    """The node-level parameter values (see :data:`NODE_PARAMETERS` for their meaning)."""

    image_topic: str = "image"
    compressed: bool = False
    use_camera_info: bool = False
    publish_debug_image: bool = False
    hri_mode: str = "expression"
    diagnostics_period_s: float = 1.0
    latency_warn_ms: float = 50.0
    latency_error_ms: float = 200.0


def _check_spec(spec: ParameterSpec, value: Any) -> Any:
    """Type- and range-check one value against its spec; returns it (ints accepted for doubles)."""
    expected = type(spec.default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not expected:
        raise ConfigError(
            f"{spec.name} = {value!r} has type {type(value).__name__}; expected {spec.type_name} "
            f"(for example {spec.name}: {spec.default!r})"
        )
    if spec.min_value is not None and spec.max_value is not None and not (spec.min_value <= value <= spec.max_value):
        raise ConfigError(
            f"{spec.name} = {value!r} is out of range; expected a number in [{spec.min_value}, {spec.max_value}]"
        )
    if spec.choices and value not in spec.choices:
        raise ConfigError(f"{spec.name} = {value!r} is not accepted; choose one of {', '.join(spec.choices)}")
    return value


def node_settings_from_parameters(values: Mapping[str, Any]) -> NodeSettings:
    """Build :class:`NodeSettings` from parameter values (missing names keep their defaults).

    Raises:
        ConfigError: a value of the wrong type or out of range, or
            ``latency_warn_ms > latency_error_ms``.
    """
    kwargs = {}
    for spec in NODE_PARAMETERS:
        if spec.name in values:
            kwargs[spec.name] = _check_spec(spec, values[spec.name])
    settings = NodeSettings(**kwargs)
    if settings.latency_warn_ms > settings.latency_error_ms:
        raise ConfigError(
            f"latency_warn_ms = {settings.latency_warn_ms} is above latency_error_ms = {settings.latency_error_ms}; "
            f"the WARN threshold must not exceed the ERROR threshold"
        )
    if not settings.image_topic.strip():
        raise ConfigError("image_topic = '' is empty; give a topic name such as 'image' (remap it in the launch file)")
    return settings


def pipeline_config_from_parameters(values: Mapping[str, Any]) -> PipelineConfig:
    """The :class:`PipelineConfig` of the dotted pipeline parameters in ``values`` (others ignored).

    Raises:
        ConfigError: as :func:`ros2_affect.config.pipeline_config_from_dict`.
    """
    pipeline = {k: v for k, v in values.items() if k.split(".", 1)[0] in PIPELINE_SECTIONS and "." in k}
    return pipeline_config_from_dict(pipeline)


def parameter_values(settings: NodeSettings, pipeline: PipelineConfig) -> Dict[str, Any]:
    """The flat name -> value view of both groups (what the node has declared)."""
    values = dataclasses.asdict(settings)
    values.update(flatten(pipeline))
    return values


# -- run-time changes ------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangeCheck:
    """The verdict on a parameter set request.

    Attributes:
        successful: whether to accept it.
        reason: why not (empty when accepted), for ``SetParametersResult.reason``.
        needs: what must be redone: a subset of ``{"node", "pipeline"}``.
        settings, pipeline: the values after the change (None when rejected).
    """

    successful: bool
    reason: str = ""
    needs: FrozenSet[str] = frozenset()
    settings: Optional[NodeSettings] = None
    pipeline: Optional[PipelineConfig] = None


def classify_change(name: str) -> str:
    """``"node"``, ``"pipeline"`` or ``"read_only"`` for a declared parameter name; ``"unknown"`` else."""
    if name in LIVE_NODE_PARAMETERS:
        return "node"
    if name in TUNABLE_PIPELINE_PARAMETERS:
        return "pipeline"
    if name in {s.name for s in NODE_PARAMETERS} or name in flatten(PipelineConfig()):
        return "read_only"
    return "unknown"


def validate_changes(current: Mapping[str, Any], changes: Mapping[str, Any]) -> ChangeCheck:
    """Check a parameter set request against the current values; never raises.

    Args:
        current: every declared parameter's current value.
        changes: name -> requested value.

    Returns:
        A :class:`ChangeCheck`; when rejected, ``reason`` names the parameter, the value,
        what is accepted and how to fix it.
    """
    for name in changes:
        kind = classify_change(name)
        if kind == "unknown":
            return ChangeCheck(False, f"{name} is not a parameter of affect_node")
        if kind == "read_only":
            return ChangeCheck(
                False,
                f"{name} is read-only while the node runs (it selects models, topics or sizes); "
                f"set it in the parameter file and restart the node",
            )
    merged = dict(current)
    merged.update(changes)
    try:
        settings = node_settings_from_parameters(merged)
        pipeline = pipeline_config_from_parameters(merged)
    except ConfigError as exc:
        return ChangeCheck(False, str(exc))
    needs = frozenset(classify_change(name) for name, value in changes.items() if current.get(name) != value)
    return ChangeCheck(True, "", needs, settings, pipeline)


def markdown_table() -> str:
    """The parameter reference as a Markdown table (``python -m ros2_affect.node.parameters``)."""
    rows = ["| parameter | type | default | accepted | at run time | description |", "|---|---|---|---|---|---|"]
    for spec in all_parameter_specs():
        if spec.choices:
            accepted = ", ".join(spec.choices)
        elif spec.min_value is not None:
            accepted = f"{spec.min_value:g} .. {spec.max_value:g}"
        else:
            accepted = ""
        when = {"node": "live", "pipeline": "live", "read_only": "restart"}[classify_change(spec.name)]
        if isinstance(spec.default, bool):
            default = f"`{str(spec.default).lower()}`"  # as written in the YAML file
        else:
            default = f"`{spec.default!r}`"
        description = spec.description.replace("|", "\\|")
        rows.append(f"| `{spec.name}` | {spec.type_name} | {default} | {accepted} | {when} | {description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
