"""The requirement files robots install: runtime only, pinned, and the ones the README names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements"
ROBOT_SETS = {"humble.txt": "numpy==1.", "jazzy.txt": "numpy==1."}
TEST_TOOLS = {"pytest", "hypothesis", "ruff", "mypy", "mcap", "mcap-ros2-support", "onnx", "torch"}


def _pins(path: Path) -> dict:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].split(";", 1)[0].strip()
        if not line or line.startswith("-r"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\[\]-]+)==([\w.]+)", line)
        assert match, f"{path.name}: {line!r} is not pinned with =="
        pins[match.group(1).lower()] = match.group(2)
    return pins


@pytest.mark.parametrize("name", sorted(ROBOT_SETS))
def test_robot_sets_are_pinned_runtime_only_with_numpy_1(name: str) -> None:
    # pytest in a robot's environment broke launch_testing's plugin (ros2/launch#979), so
    # every `colcon test` there failed; the ROS distributions' compiled messages need numpy 1.
    text = (REQUIREMENTS / name).read_text()
    pins = _pins(REQUIREMENTS / name)
    assert not TEST_TOOLS & set(pins), f"{name} pins test tools {sorted(TEST_TOOLS & set(pins))}"
    assert ROBOT_SETS[name] in text
    runtime = _pins(REQUIREMENTS / "runtime.txt")
    assert set(pins) == set(runtime), "a robot set installs what runtime.txt lists, with other versions"


@pytest.mark.parametrize(
    ("test_set", "robot_set"), [("compat-py310-numpy1.txt", "humble.txt"), ("ros-jazzy-test.txt", "jazzy.txt")]
)
def test_test_environments_are_the_robot_sets_plus_tools(test_set: str, robot_set: str) -> None:
    assert f"-r {robot_set}" in (REQUIREMENTS / test_set).read_text().splitlines()
    assert "pytest" in _pins(REQUIREMENTS / test_set)


def test_readme_and_docs_install_the_robot_sets() -> None:
    readme = (ROOT / "README.md").read_text()
    ros_doc = (ROOT / "docs" / "ros2.md").read_text()
    for text in (readme, ros_doc):
        assert "requirements/humble.txt" in text and "requirements/jazzy.txt" in text
        assert "compat-py310-numpy1.txt" not in text.split("## Tests")[0]
