"""The node's declared parameters match config/affect.yaml, the settings' declarations, the
registries, the docs table and what the pipeline can apply live."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest

from ros2_affect.assets import default_config_path
from ros2_affect.config import PIPELINE_SETTINGS, PipelineConfig, flatten, flatten_mapping, load_parameter_file
from ros2_affect.errors import ConfigError
from ros2_affect.node.parameters import (
    LIVE_NODE_PARAMETERS,
    NODE_PARAMETERS,
    TUNABLE_PIPELINE_PARAMETERS,
    NodeSettings,
    all_parameter_specs,
    classify_change,
    markdown_table,
    node_settings_from_parameters,
    parameter_values,
    pipeline_config_from_parameters,
    pipeline_parameter_specs,
    validate_changes,
)

SPECS = {spec.name: spec for spec in all_parameter_specs()}


_flat = flatten_mapping


@pytest.fixture(scope="module")
def yaml_values() -> Dict[str, Any]:
    """config/affect.yaml flattened the way ROS 2 flattens a parameter file (dotted names)."""
    return _flat(load_parameter_file(default_config_path()))


def _current(yaml_values: Dict[str, Any]) -> Dict[str, Any]:
    return parameter_values(node_settings_from_parameters(yaml_values), pipeline_config_from_parameters(yaml_values))


def test_every_parameter_file_key_is_declared_and_vice_versa(yaml_values: Dict[str, Any]) -> None:
    assert set(yaml_values) - set(SPECS) == set(), "keys in affect.yaml the node does not declare"
    assert set(SPECS) - set(yaml_values) == set(), "declared parameters missing from affect.yaml"


def test_parameter_file_values_have_the_declared_ros_types(yaml_values: Dict[str, Any]) -> None:
    # rclpy refuses an integer for a double parameter at startup (e.g. `min_score: 1`), so the
    # shipped file must write every double with a decimal point.
    for name, value in yaml_values.items():
        spec = SPECS[name]
        assert type(value) is type(spec.default), f"{name}: {value!r} is not a {spec.type_name}"


def test_parameter_file_values_are_within_the_declared_ranges(yaml_values: Dict[str, Any]) -> None:
    for name, value in yaml_values.items():
        spec = SPECS[name]
        if spec.min_value is not None:
            assert spec.min_value <= value <= spec.max_value, name
        if spec.choices:
            assert value in spec.choices, name


def test_pipeline_specs_follow_the_config_dataclasses() -> None:
    specs = pipeline_parameter_specs()
    assert [s.name for s in specs] == list(flatten(PipelineConfig()))
    assert [s.default for s in specs] == list(flatten(PipelineConfig()).values())


def test_ranges_come_from_the_declarations_and_choices_from_the_registries() -> None:
    from ros2_affect.backends import BACKENDS
    from ros2_affect.core.detection import DETECTORS

    assert (SPECS["detector.min_score"].min_value, SPECS["detector.min_score"].max_value) == (0.0, 1.0)
    assert (SPECS["tracker.max_tracks"].min_value, SPECS["tracker.max_tracks"].max_value) == (1, 1024)
    assert isinstance(SPECS["tracker.max_tracks"].min_value, int)
    assert isinstance(SPECS["alignment.margin"].max_value, float)
    assert SPECS["detector.model"].choices == DETECTORS.names() == ("full_range", "short_range")
    assert SPECS["model.backend"].choices == BACKENDS.names() == ("onnxruntime", "tensorrt", "torch")
    assert SPECS["model.fallback_backend"].choices == BACKENDS.names() + ("none",)
    assert SPECS["model.backend"].additional_constraints == "one of: onnxruntime, tensorrt, torch"
    assert SPECS["model.kind"].choices == ("temporal", "frame", "none")
    # what a registry gains, the setting accepts (and what it loses, the setting refuses)
    with BACKENDS.temporarily("mybackend", object):  # type: ignore[arg-type]
        assert pipeline_config_from_parameters({"model.backend": "mybackend"}).model.backend == "mybackend"
    with pytest.raises(ConfigError, match=r"model.backend = 'mybackend' is not accepted; choose one of onnxruntime"):
        pipeline_config_from_parameters({"model.backend": "mybackend"})
    with pytest.raises(ConfigError, match=r"detector.min_score = 1.5 is out of range"):
        pipeline_config_from_parameters({"detector.min_score": 1.5})


@pytest.mark.parametrize("name", sorted(n for n, s in SPECS.items() if s.min_value is not None and "." in n))
def test_every_declared_pipeline_range_is_enforced(name: str) -> None:
    spec = SPECS[name]
    step = 1 if spec.type_name == "integer" else 1e-3
    for inside in (spec.min_value, spec.max_value):
        value = int(inside) if spec.type_name == "integer" else float(inside)
        pipeline_config_from_parameters({name: value})
    for outside in (spec.min_value - step, spec.max_value + step):
        value = int(outside) if spec.type_name == "integer" else float(outside)
        with pytest.raises(ConfigError, match=rf"{name} = .* is out of range"):
            pipeline_config_from_parameters({name: value})


def test_descriptions_come_from_the_declarations() -> None:
    assert "minimum detection confidence" in SPECS["detector.min_score"].description
    assert "[Face detection" in SPECS["detector.min_score"].description
    assert "scale so the eyes are this fraction" in SPECS["alignment.eye_distance_ratio"].description
    for spec in SPECS.values():
        assert len(spec.description) > 15, spec.name


def test_model_selection_is_read_only_and_tuning_is_not() -> None:
    for name in ("model.backend", "model.kind", "model.frame_model", "detector.model", "alignment.output_size_px",
                 "image_topic", "compressed", "use_camera_info"):
        assert SPECS[name].read_only, name
    for name in TUNABLE_PIPELINE_PARAMETERS:
        assert name in SPECS and not SPECS[name].read_only, name
    assert not SPECS["latency_warn_ms"].read_only and not SPECS["publish_debug_image"].read_only
    # the live sets as they were before the declarations carried them (behaviour unchanged)
    assert TUNABLE_PIPELINE_PARAMETERS == {
        "detector.min_score", "detector.min_face_px", "detector.max_faces", "detector.detect_scale",
        "landmarks.crop_scale", "alignment.margin", "alignment.eye_distance_ratio", "alignment.eye_y",
        "tracker.min_iou", "tracker.max_center_distance", "tracker.min_hits", "tracker.max_misses",
        "tracker.max_tracks", "sequence.stride", "model.flip_average",
    }
    assert LIVE_NODE_PARAMETERS == {"publish_debug_image", "latency_warn_ms", "latency_error_ms"}


def _another_value(spec: Any) -> Any:
    """A valid value other than the default (a stricter one for detector.min_score)."""
    default = spec.default
    if isinstance(default, bool):
        return not default
    if spec.choices:
        return next(c for c in spec.choices if c != default)
    if isinstance(default, int):
        return default + 1 if spec.max_value is None or default + 1 <= spec.max_value else default - 1
    if isinstance(default, float):
        return (default + spec.max_value) / 2 if default < spec.max_value else (spec.min_value + default) / 2
    return "changed"


def test_every_live_pipeline_setting_applies_in_place() -> None:
    """What the declarations call live, AffectPipeline.retune applies without a rebuild."""
    from ros2_affect.config import ModelConfig
    from ros2_affect.core.pipeline import create_pipeline

    base = PipelineConfig(model=ModelConfig(kind="none"))
    with create_pipeline(base) as pipeline:
        detector = pipeline.detector
        for name in sorted(TUNABLE_PIPELINE_PARAMETERS):
            value = _another_value(SPECS[name])
            changed = pipeline_config_from_parameters({**flatten(base), name: value})
            assert pipeline.retune(changed), name
            assert flatten(pipeline.config)[name] == value and pipeline.detector is detector, name
            assert pipeline.retune(base)


def test_node_settings_defaults_match_the_specs() -> None:
    defaults = NodeSettings()
    for spec in NODE_PARAMETERS:
        assert getattr(defaults, spec.name) == spec.default, spec.name


def test_node_settings_checks_types_and_ranges() -> None:
    assert node_settings_from_parameters({"diagnostics_period_s": 2}).diagnostics_period_s == 2.0
    with pytest.raises(ConfigError, match=r"compressed = 'yes' has type str; expected bool"):
        node_settings_from_parameters({"compressed": "yes"})
    with pytest.raises(ConfigError, match=r"diagnostics_period_s = 0.0 is out of range; expected a number in \[0.1"):
        node_settings_from_parameters({"diagnostics_period_s": 0.0})
    with pytest.raises(ConfigError, match=r"latency_warn_ms = 300.0 is above latency_error_ms = 200.0"):
        node_settings_from_parameters({"latency_warn_ms": 300.0})
    with pytest.raises(ConfigError, match=r"image_topic = '' is empty"):
        node_settings_from_parameters({"image_topic": " "})


def test_change_of_a_read_only_parameter_is_refused(yaml_values: Dict[str, Any]) -> None:
    check = validate_changes(_current(yaml_values), {"model.backend": "tensorrt"})
    assert not check.successful
    assert check.reason.startswith("model.backend is read-only while the node runs")
    assert "set it in the parameter file and restart the node" in check.reason


def test_unknown_parameter_is_refused(yaml_values: Dict[str, Any]) -> None:
    check = validate_changes(_current(yaml_values), {"detector.min_scor": 0.3})
    assert not check.successful and check.reason == "detector.min_scor is not a parameter of affect_node"


def test_out_of_range_tuning_is_refused_with_the_range(yaml_values: Dict[str, Any]) -> None:
    check = validate_changes(_current(yaml_values), {"tracker.min_iou": 1.5})
    assert not check.successful
    assert check.reason == "tracker.min_iou = 1.5 is out of range; expected a number in [0.0, 1.0]"


def test_inconsistent_thresholds_are_refused(yaml_values: Dict[str, Any]) -> None:
    check = validate_changes(_current(yaml_values), {"latency_error_ms": 10.0})
    assert not check.successful and "is above latency_error_ms = 10.0" in check.reason


def test_tuning_change_asks_for_a_pipeline_rebuild(yaml_values: Dict[str, Any]) -> None:
    check = validate_changes(_current(yaml_values), {"detector.min_score": 0.7, "tracker.min_hits": 3})
    assert check.successful and check.reason == ""
    assert check.needs == frozenset({"pipeline"})
    assert check.pipeline is not None and check.pipeline.detector.min_score == 0.7
    assert check.pipeline.tracker.min_hits == 3


def test_live_node_change_needs_no_rebuild(yaml_values: Dict[str, Any]) -> None:
    check = validate_changes(_current(yaml_values), {"publish_debug_image": True, "latency_warn_ms": 80.0})
    assert check.successful and check.needs == frozenset({"node"})
    assert check.settings is not None and check.settings.publish_debug_image and check.settings.latency_warn_ms == 80.0


def test_setting_the_current_value_needs_nothing(yaml_values: Dict[str, Any]) -> None:
    current = _current(yaml_values)
    check = validate_changes(current, {"detector.min_score": current["detector.min_score"]})
    assert check.successful and check.needs == frozenset()


def test_classify_change() -> None:
    assert classify_change("publish_debug_image") == "node"
    assert classify_change("tracker.max_misses") == "pipeline"
    assert classify_change("model.threads") == "read_only"
    assert classify_change("use_sim_time") == "unknown"


def test_markdown_reference_lists_every_parameter() -> None:
    table = markdown_table()
    lines = table.splitlines()
    assert len(lines) == 2 + len(SPECS)
    assert "| `detector.min_score` | double | `0.5` | 0 .. 1 | live |" in table
    assert "| `compressed` | bool | `false` |  | restart |" in table
    assert "| `model.backend` | string | `'onnxruntime'` | onnxruntime, tensorrt, torch | restart |" in table


def test_docs_parameter_table_is_the_generated_one() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "ros2.md").read_text(encoding="utf-8")
    header = markdown_table().splitlines()[0]
    assert header in docs, "docs/ros2.md has no parameter table"
    start = docs.index(header)
    end = docs.find("\n\n", start)
    assert docs[start:end] == markdown_table(), (
        "docs/ros2.md's parameter table differs from the declarations; regenerate it with "
        "`python -m ros2_affect.node.parameters`"
    )


def test_pipeline_settings_are_the_config_fields() -> None:
    assert [d.name for d in PIPELINE_SETTINGS] == list(flatten(PipelineConfig()))
