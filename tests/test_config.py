"""Settings: the packaged parameter file loads, and every kind of bad value is refused with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from ros2_affect.config import (
    PipelineConfig,
    flatten,
    load_parameter_file,
    load_pipeline_config,
    node_name_matches,
    pipeline_config_from_dict,
    unflatten,
)
from ros2_affect.errors import ConfigError, UnknownNameError
from ros2_affect.registry import Registry
from tests.fresh_python import run_fresh_python


def test_packaged_parameter_file_holds_the_documented_defaults() -> None:
    assert load_pipeline_config() == PipelineConfig()


def test_nested_and_dotted_keys_mean_the_same() -> None:
    nested = pipeline_config_from_dict({"detector": {"min_score": 0.7}, "tracker": {"max_misses": 3}})
    dotted = pipeline_config_from_dict({"detector.min_score": 0.7, "tracker.max_misses": 3})
    assert nested == dotted
    assert nested.detector.min_score == 0.7 and nested.tracker.max_misses == 3
    assert pipeline_config_from_dict(unflatten(flatten(nested))) == nested


def test_integer_is_accepted_for_a_float_but_not_the_reverse() -> None:
    assert pipeline_config_from_dict({"detector.min_score": 1}).detector.min_score == 1.0
    with pytest.raises(ConfigError, match=r"tracker.max_misses = 2.5 has type float; expected int"):
        pipeline_config_from_dict({"tracker.max_misses": 2.5})


def test_unknown_key_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'detector.min_scor'.*did you mean 'detector.min_score'"):
        pipeline_config_from_dict({"detector": {"min_scor": 0.5}})
    with pytest.raises(ConfigError, match=r"unknown key 'trackr'"):
        pipeline_config_from_dict({"trackr": {}})


def test_out_of_range_and_bad_choice_name_value_and_range() -> None:
    with pytest.raises(
        ConfigError, match=r"detector.min_score = 1.5 is out of range; expected a number in \[0.0, 1.0\]"
    ):
        pipeline_config_from_dict({"detector.min_score": 1.5})
    with pytest.raises(ConfigError, match=r"model.backend = 'tensorrtt' is not accepted.*did you mean 'tensorrt'"):
        pipeline_config_from_dict({"model.backend": "tensorrtt"})
    with pytest.raises(ConfigError, match=r"detector.max_faces = True has type bool"):
        pipeline_config_from_dict({"detector.max_faces": True})


def test_section_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match=r"detector must be a mapping of settings, got 3"):
        pipeline_config_from_dict({"detector": 3})


def test_parameter_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist"):
        load_parameter_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("affect_node: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml' is not valid YAML"):
        load_parameter_file(bad)
    other = tmp_path / "other.yaml"
    other.write_text("camera_node:\n  ros__parameters:\n    fps: 30\n")
    with pytest.raises(
        ConfigError,
        match=r"has no 'ros__parameters:' section for node /affect_node .*found top-level keys \['camera_node'\]",
    ):
        load_parameter_file(other)
    wildcard = tmp_path / "wildcard.yaml"
    wildcard.write_text("/**:\n  ros__parameters:\n    detector:\n      min_score: 0.8\n")
    assert load_pipeline_config(wildcard).detector.min_score == 0.8


_LAYERED = """\
/**:
  ros__parameters:
    a: 1
    d:
      x: 1
      y: 1
affect_node:
  ros__parameters:
    b: 2
    d:
      y: 2
/ns/affect_node:
  ros__parameters:
    c: 3
/**/affect_node:
  ros__parameters:
    a: 4
/ns/*:
  ros__parameters:
    e: 5
camera_node:
  ros__parameters:
    f: 6
"""


def test_parameter_file_sections_merge_as_rcl_merges_them(tmp_path: Path) -> None:
    # Expected values are what rclpy 7.1 (Jazzy) gave a node started with this file
    # (--params-file, automatically_declare_parameters_from_overrides) in / and in /ns:
    # every matching section applies in file order, later ones override single values,
    # the plain name matches the root namespace only. The launch file used the first
    # matching section alone.
    layered = tmp_path / "layered.yaml"
    layered.write_text(_LAYERED)
    assert load_parameter_file(layered) == {"a": 4, "b": 2, "d": {"x": 1, "y": 2}}
    assert load_parameter_file(layered, namespace="/ns") == {"a": 4, "c": 3, "d": {"x": 1, "y": 1}, "e": 5}
    assert load_parameter_file(layered, namespace="/ns/") == load_parameter_file(layered, namespace="/ns")


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("/**", "/affect_node", True),
        ("/**", "/a/b/affect_node", True),
        ("affect_node", "/affect_node", True),
        ("affect_node", "/robot/affect_node", False),
        ("/**/affect_node", "/affect_node", True),
        ("/**/affect_node", "/robot/head/affect_node", True),
        ("/robot/*", "/robot/affect_node", True),
        ("/robot/*", "/robot/head/affect_node", False),
        ("/*/affect_node", "/affect_node", False),
        ("/robot/affect_node", "/other/affect_node", False),
    ],
)
def test_node_name_patterns(pattern: str, name: str, expected: bool) -> None:
    assert node_name_matches(pattern, name) is expected


def test_packaged_file_applies_in_any_namespace() -> None:
    from ros2_affect.assets import default_config_path

    assert load_parameter_file(default_config_path(), namespace="/robot/head") == load_parameter_file(
        default_config_path()
    )


def test_registry_lists_names_and_closest_match_and_is_read_only() -> None:
    registry: Registry[int] = Registry("widget")
    registry.register("short_range")(1)
    registry.register("full_range")(2)
    assert registry.get("full_range") == 2 and registry.names() == ("full_range", "short_range")
    with pytest.raises(
        UnknownNameError,
        match=r"unknown widget 'short-range'; available: full_range, short_range \(did you mean 'short_range'\?\)",
    ):
        registry.get("short-range")
    with pytest.raises(RuntimeError, match=r"registered twice"):
        registry.register("full_range")(3)
    registry.freeze()
    with pytest.raises(RuntimeError, match=r"read-only after import"):
        registry.register("another")(4)
    # a frozen registry still takes a temporary entry (tests), and is as before afterwards
    with registry.temporarily("another", 4):
        assert registry.get("another") == 4
    assert "another" not in registry and registry.names() == ("full_range", "short_range")
    with pytest.raises(RuntimeError, match=r"already registered"):
        with registry.temporarily("full_range", 5):
            pass
    assert registry.get("full_range") == 2


def test_choices_are_the_registries_names_and_importing_the_config_loads_no_registry() -> None:

    code = (
        "import sys, ros2_affect.config as c\n"
        "assert not {'ros2_affect.core.detection', 'ros2_affect.backends'} & set(sys.modules), 'loaded early'\n"
        "from ros2_affect.backends import BACKENDS\n"
        "from ros2_affect.core.detection import DETECTORS\n"
        "s = {d.name: d for d in c.PIPELINE_SETTINGS}\n"
        "assert s['detector.model'].choices == DETECTORS.names()\n"
        "assert s['model.backend'].choices == BACKENDS.names()\n"
        "assert s['model.fallback_backend'].choices == BACKENDS.names() + ('none',)\n"
    )
    run_fresh_python(code)
    with pytest.raises(ConfigError, match=r"detector.model = 'short-range' is not accepted; .*'short_range'"):
        pipeline_config_from_dict({"detector.model": "short-range"})
