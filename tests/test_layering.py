"""Dependencies point one way: the core never imports ROS, torch or training code.

Checked twice: statically (every import statement in the files) and dynamically (importing
the pipeline in a fresh interpreter must not load those modules).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ros2_affect"

# module prefix that must not be imported -> package folders it is banned from
BANNED = {
    "rclpy": ("core", "backends", "bags", "tools", "metrics.py", "config.py", "assets.py"),
    "cv_bridge": ("core", "backends", "bags", "tools", "ros"),
    "torch": ("core", "bags", "ros", "tools", "metrics.py", "config.py", "assets.py"),
    "training": ("core", "bags", "ros", "tools", "metrics.py", "config.py", "assets.py"),
    "launch": ("core", "backends", "bags", "tools"),
}
# The torch debugging backend is the one documented place that loads torch (lazily).
ALLOWED = {("backends/torch_backend.py", "torch"), ("backends/torch_backend.py", "training")}


def _imports(path: Path) -> Iterator[Tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno


def _area(rel: str) -> str:
    return rel.split("/")[0]


def test_no_banned_imports_in_package_files() -> None:
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for module, line in _imports(path):
            top = module.split(".")[0]
            if top in BANNED and _area(rel) in BANNED[top] and (rel, top) not in ALLOWED:
                violations.append(f"ros2_affect/{rel}:{line} imports {module}")
    assert not violations, "layering violations:\n" + "\n".join(violations)


def test_importing_the_pipeline_loads_no_ros_or_torch() -> None:
    code = (
        "import sys, ros2_affect.core.pipeline, ros2_affect.backends, ros2_affect.tools.cli\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'torch', 'training', 'cv_bridge'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if result.returncode != 0 and "No module named 'ros2_affect.core.pipeline'" in result.stderr:
        pytest.fail("ros2_affect.core.pipeline is missing")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"importing the core loaded: {result.stdout.strip()}"
