"""The node's ROS parameters: what is declared, with which ranges, and what a change needs.

Pure Python (no rclpy), so it is tested here; :mod:`ros2_affect.node.node` turns each
:class:`ParameterSpec` into an ``rcl_interfaces/ParameterDescriptor``.

Two groups of parameters, both in ``config/affect.yaml``, each declared once with
:func:`ros2_affect.settings.setting` (type, default, range or choices, description, live):

* node parameters: the fields of :class:`NodeSettings` (topics, publishing options,
  diagnostics);
* pipeline parameters: the fields of :class:`ros2_affect.config.PipelineConfig`, named
  with dots (``detector.min_score``).

The specs here (:func:`all_parameter_specs`) are read off those declarations, so adding a
field adds a declared, range-checked, documented parameter.

What a change at run time needs (:func:`classify_change`):

* ``read_only``: fixed after start (topics, model files, backend, model-dictated sizes);
  change them in the parameter file and restart the node. rclpy rejects the change itself.
* ``node``: a live node setting, applied in place (thresholds, the debug image publisher).
* ``pipeline``: a live pipeline setting (tuning of detection/tracking/alignment), applied
  to the running pipeline (:meth:`~ros2_affect.core.pipeline.AffectPipeline.retune`:
  models and tracks stay; a change it cannot take in place rebuilds the pipeline).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, Mapping, Optional, Tuple

from ros2_affect.config import PIPELINE_SECTIONS, PIPELINE_SETTINGS, PipelineConfig, flatten, pipeline_config_from_dict
from ros2_affect.errors import ConfigError
from ros2_affect.settings import Declared, check, declared, merge, setting

#: ROS parameter types by Python type of the default.
_TYPE_NAMES = {bool: "bool", int: "integer", float: "double", str: "string"}


@dataclass(frozen=True)
class NodeSettings:
    """The node-level parameters (the top of config/affect.yaml)."""

    image_topic: str = setting(
        "image",
        "Image topic to subscribe to, relative to the node namespace (remap it in the launch file). "
        "With compressed=true the node subscribes to <image_topic>/compressed.",
    )
    compressed: bool = setting(
        False,
        "Subscribe to sensor_msgs/CompressedImage (JPEG/PNG) on <image_topic>/compressed instead of "
        "sensor_msgs/Image.",
    )
    use_camera_info: bool = setting(
        False,
        "Subscribe to camera_info next to the image topic and give every face a unit viewing ray in the "
        "camera optical frame, from the camera_info with the image's stamp (within 20 ms); an image without "
        "one is still processed, without rays, and diagnostics say why.",
    )
    publish_debug_image: bool = setting(
        False,
        "Publish ~/debug_image (sensor_msgs/Image, rgb8) with boxes, ids, expressions and valence/arousal.",
        live=True,
    )
    hri_mode: str = setting(
        "expression",
        "REP-155 (ROS4HRI) output under /humans/faces, when hri_msgs is installed. expression: publish "
        "/humans/faces/<id>/expression for the faces a face detector (e.g. hri_face_detect) announces on "
        "/humans/faces/tracked, matched to ours by their roi; standalone: this node is the face detector "
        "and publishes tracked, roi, cropped and expression itself; off: none.",
        choices=("expression", "standalone", "off"),
    )
    diagnostics_period_s: float = setting(
        1.0, "Period of the /diagnostics status, seconds.", range=(0.1, 60.0)
    )
    latency_warn_ms: float = setting(
        50.0,
        "Diagnostics level WARN when the 95th percentile of the processing latency exceeds this, milliseconds.",
        range=(1.0, 10000.0),
        live=True,
    )
    latency_error_ms: float = setting(
        200.0,
        "Diagnostics level ERROR when the 95th percentile of the processing latency exceeds this, "
        "milliseconds (must be >= latency_warn_ms).",
        range=(1.0, 10000.0),
        live=True,
    )

    def cross_check(self) -> None:
        if self.latency_warn_ms > self.latency_error_ms:
            raise ConfigError(
                f"latency_warn_ms = {self.latency_warn_ms} is above latency_error_ms = {self.latency_error_ms}; "
                f"the WARN threshold must not exceed the ERROR threshold"
            )
        if not self.image_topic.strip():
            raise ConfigError(
                "image_topic = '' is empty; give a topic name such as 'image' (remap it in the launch file)"
            )


#: Every node setting with its declaration.
NODE_SETTINGS: Tuple[Declared, ...] = declared(NodeSettings)


@dataclass(frozen=True)
class ParameterSpec:
    """One declared parameter, as the node declares it (read off a :class:`~ros2_affect.settings.Declared`).

    Attributes:
        name: dotted ROS parameter name.
        default: the value declared when the parameter file does not set it.
        description: shown by ``ros2 param describe``.
        read_only: cannot change after the node started (not declared live).
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

    @classmethod
    def of(cls, d: Declared) -> ParameterSpec:
        description = d.doc or d.name.rsplit(".", 1)[-1].replace("_", " ")
        if d.section_doc:
            description = f"{description} [{d.section_doc}]"
        return cls(d.name, d.default, description, not d.live, d.low, d.high, d.choices)

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
NODE_PARAMETERS: Tuple[ParameterSpec, ...] = tuple(ParameterSpec.of(d) for d in NODE_SETTINGS)

#: Pipeline parameters declared live: they can change while the node runs (AffectPipeline.retune
#: applies them). Everything else in the pipeline is read-only: it selects or is dictated by the models.
TUNABLE_PIPELINE_PARAMETERS: FrozenSet[str] = frozenset(d.name for d in PIPELINE_SETTINGS if d.live)

#: Node parameters declared live: applied in place.
LIVE_NODE_PARAMETERS: FrozenSet[str] = frozenset(d.name for d in NODE_SETTINGS if d.live)

_NODE_NAMES = frozenset(d.name for d in NODE_SETTINGS)
_PIPELINE_NAMES = frozenset(d.name for d in PIPELINE_SETTINGS)


def pipeline_parameter_specs() -> Tuple[ParameterSpec, ...]:
    """One spec per field of :class:`PipelineConfig`, in declaration order (choices looked up now)."""
    return tuple(ParameterSpec.of(d) for d in PIPELINE_SETTINGS)


def all_parameter_specs() -> Tuple[ParameterSpec, ...]:
    """Node parameters first, then the pipeline's."""
    return NODE_PARAMETERS + pipeline_parameter_specs()


# -- values -------------------------------------------------------------------------------------


def node_settings_from_parameters(values: Mapping[str, Any]) -> NodeSettings:
    """Build :class:`NodeSettings` from parameter values (missing names keep their defaults,
    names that are not node settings are ignored).

    Raises:
        ConfigError: a value of the wrong type or out of range, or
            ``latency_warn_ms > latency_error_ms``.
    """
    ours = {name: value for name, value in values.items() if name in _NODE_NAMES}
    return check(merge(NodeSettings(), ours))


def pipeline_config_from_parameters(values: Mapping[str, Any]) -> PipelineConfig:
    """The :class:`PipelineConfig` of the dotted pipeline parameters in ``values`` (others ignored).

    Raises:
        ConfigError: as :func:`ros2_affect.config.pipeline_config_from_dict`.
    """
    pipeline = {k: v for k, v in values.items() if k.split(".", 1)[0] in PIPELINE_SECTIONS and "." in k}
    return pipeline_config_from_dict(pipeline)


def parameter_values(settings: NodeSettings, pipeline: PipelineConfig) -> Dict[str, Any]:
    """The flat name -> value view of both groups (what the node has declared)."""
    values = flatten(settings)
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
    if name in _NODE_NAMES or name in _PIPELINE_NAMES:
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
