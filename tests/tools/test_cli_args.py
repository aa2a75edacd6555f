"""Shared CLI settings handling: the packaged parameter file plus ``--set KEY=VALUE`` overrides."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from ros2_affect.config import PipelineConfig, load_pipeline_config
from ros2_affect.errors import ConfigError
from ros2_affect.tools.cli_args import add_command, add_config_arguments, apply_overrides, config_with_overrides


def test_overrides_apply_on_top_of_the_parameter_file() -> None:
    config = config_with_overrides(None, ["model.kind=none", "detector.min_score=0.7", "tracker.min_hits=3"])
    assert (config.model.kind, config.detector.min_score, config.tracker.min_hits) == ("none", 0.7, 3)
    assert config_with_overrides(None) == load_pipeline_config()

    with pytest.raises(ConfigError, match=r"unknown key 'detector.min_scor'.*did you mean"):
        config_with_overrides(None, ["detector.min_scor=0.7"])


def test_override_values_are_yaml_and_bad_items_are_named() -> None:
    config = apply_overrides(PipelineConfig(), ["landmarks.enabled=false", "detector.max_faces= 3"])
    assert config.landmarks.enabled is False and config.detector.max_faces == 3
    with pytest.raises(ConfigError, match=r"--set 'model.kind' is not KEY=VALUE \(e.g. --set model.kind=none\)"):
        apply_overrides(PipelineConfig(), ["model.kind"])
    with pytest.raises(ConfigError, match=r"--set '=3' is not KEY=VALUE"):
        apply_overrides(PipelineConfig(), ["=3"])
    with pytest.raises(ConfigError, match=r"--set 'detector.min_score=\[0.5': '\[0.5' is not a valid value"):
        apply_overrides(PipelineConfig(), ["detector.min_score=[0.5"])


def test_parser_helpers_give_config_and_overrides() -> None:
    parser = argparse.ArgumentParser(prog="ros2-affect")
    sub = add_command(parser.add_subparsers(dest="command"), "demo", "a demo command", "Demo.\n\n  indented line")
    add_config_arguments(sub, example="detector.min_score=0.6")
    args = parser.parse_args(["demo", "--config", "a.yaml", "--set", "model.kind=none", "--set", "tracker.min_hits=2"])
    assert (args.config, args.overrides) == (Path("a.yaml"), ["model.kind=none", "tracker.min_hits=2"])
    assert "  indented line" in sub.format_help()  # the module docstring keeps its layout
    assert "e.g. --set detector.min_score=0.6 (repeatable)" in " ".join(sub.format_help().split())
    bare = argparse.ArgumentParser()
    add_config_arguments(bare, overrides=False)
    assert vars(bare.parse_args([])) == {"config": None}


@pytest.mark.parametrize("command", ["", "run", "replay", "make-bag", "evaluate", "bench", "fetch-assets",
                                     "build-engine"])
def test_help_is_plain_text(command: str, capsys: pytest.CaptureFixture) -> None:
    import re

    from ros2_affect.tools.cli import main

    with pytest.raises(SystemExit) as stop:
        main([command, "--help"] if command else ["--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert not re.search(r"``|:(func|class|mod|data|meth|attr):`", text), text
    if command == "run":
        assert "rosbag (folder, .db3 or .mcap" in text and "--sequence" in text and "--strict" in text
        assert "run the pipeline on a video, photos, a rosbag" in text
    if command == "make-bag":
        assert "--storage {sqlite3,mcap} rosbag2 storage: sqlite3 (.db3" in text


def test_plain_text_removes_sphinx_markup() -> None:
    from ros2_affect.tools.cli_args import plain_text

    doc = "See :func:`~ros2_affect.core.image.decode_image_file`, :class:`BagReader` and ``--seed``::"
    assert plain_text(doc) == "See decode_image_file, BagReader and --seed:"
