"""Run a snippet in a fresh interpreter: for what only a new process shows (which modules an
import loads, what happens at interpreter exit)."""

from __future__ import annotations

import subprocess
import sys


def run_fresh_python(code: str, timeout_s: float = 120.0) -> str:
    """Run ``code`` with this interpreter in a new process; returns its stdout.

    Fails the test (with the child's stderr) when the process does not exit 0.
    """
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout_s)
    assert result.returncode == 0, result.stderr
    return result.stdout
