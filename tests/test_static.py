"""Static checks as tests: ruff on all Python code, strict mypy on the runtime package.

Both read their settings from pyproject.toml; on failure the assertion shows the tool's
report. mypy skips ``training`` (pyproject override): the runtime package is checked alone.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run_tool(module: str, args: List[str]) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (it is in requirements/dev.txt)")
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, f"{module} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"


def test_ruff_is_clean() -> None:
    _run_tool("ruff", ["check", "ros2_affect", "training", "tests"])


@pytest.mark.slow
def test_mypy_strict_is_clean_on_the_runtime_package() -> None:
    _run_tool("mypy", ["ros2_affect"])
