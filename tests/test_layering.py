"""Dependencies point one way: the core never imports ROS, torch or training code, and the
runtime package (ros2_affect) never imports training at all: training sits above every layer.

Checked twice: statically (every import statement in the files) and dynamically (importing
the pipeline in a fresh interpreter must not load those modules).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from tests.fresh_python import run_fresh_python

PACKAGE = Path(__file__).resolve().parents[1] / "ros2_affect"

# module prefix that must not be imported -> package folders it is banned from
BANNED = {
    "rclpy": (
        "core", "backends", "msgs", "draw", "bags", "tools", "metrics.py", "config.py", "assets.py", "outputs.py"
    ),
    "cv_bridge": ("core", "backends", "msgs", "draw", "bags", "tools", "node"),
    "torch": ("core", "msgs", "draw", "bags", "node", "tools", "metrics.py", "config.py", "assets.py", "outputs.py"),
    "launch": ("core", "backends", "msgs", "draw", "bags", "tools", "node"),
}


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
            if top in BANNED and _area(rel) in BANNED[top]:
                violations.append(f"ros2_affect/{rel}:{line} imports {module}")
    assert not violations, "layering violations:\n" + "\n".join(violations)


def test_the_runtime_never_imports_training() -> None:
    """Above all layers: no ros2_affect file imports training, in-function imports included
    (the torch backend lives in training/ and provides itself to the runtime's registry)."""
    violations = [
        f"ros2_affect/{path.relative_to(PACKAGE).as_posix()}:{line} imports {module}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for module, line in _imports(path)
        if module.split(".")[0] == "training"
    ]
    assert not violations, "the runtime imports training:\n" + "\n".join(violations)


def test_torch_backend_is_declared_by_the_runtime_and_provided_by_training() -> None:
    pytest.importorskip("torch", reason="the torch backend needs torch")
    code = (
        "import sys\n"
        "from ros2_affect.backends import BACKENDS, create_backend\n"
        "from ros2_affect.errors import BackendUnavailableError\n"
        "assert 'torch' in BACKENDS.names(), BACKENDS.names()\n"
        "try:\n"
        "    create_backend('torch')\n"
        "except BackendUnavailableError as exc:\n"
        "    print('refused:', exc)\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'training']\n"
        "import training.torch_backend\n"
        "print('provided:', BACKENDS.get('torch').__module__)\n"
    )
    stdout = run_fresh_python(code, timeout_s=300)
    assert "refused: inference backend 'torch' cannot run here: the torch backend runs training checkpoints" in (
        stdout
    )
    assert "python -m training.torch_backend run" in stdout
    assert "provided: training.torch_backend" in stdout


def test_importing_the_pipeline_loads_no_ros_or_torch() -> None:
    code = (
        "import sys, ros2_affect.core.pipeline, ros2_affect.backends, ros2_affect.tools.cli\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'torch', 'training', 'cv_bridge'))\n"
        "print(','.join(bad))\n"
    )
    loaded = run_fresh_python(code).strip()
    assert loaded == "", f"importing the core loaded: {loaded}"


# The project's own layers, lowest first: a module may import its own layer and those below,
# never one above (in-function imports included: they hid cycles such as core <-> backends).
# The data flow reads from the bottom up: images become model inputs (backends), faces,
# tracks, sequences and estimates (core), then drawings and messages, bags, tools, the node.
LAYERS = (
    ("errors",),
    ("registry", "settings", "assets", "outputs", "metrics"),
    ("config",),
    ("backends",),
    ("core",),
    ("draw", "msgs"),
    ("bags",),
    ("tools",),
    ("node",),
)
_LAYER_OF = {area: level for level, areas in enumerate(LAYERS) for area in areas}


def _area_of(rel: str) -> str:
    first = rel.split("/")[0]
    return first[:-3] if first.endswith(".py") else first


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_imports(path: Path) -> Iterator[Tuple[str, int]]:
    """Every ros2_affect module a file imports (``from pkg import name`` may name a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "ros2_affect":
                yield name, node.lineno


def test_every_area_of_the_package_has_a_layer() -> None:
    areas = {_area_of(p.relative_to(PACKAGE).as_posix()) for p in PACKAGE.rglob("*.py")} - {"__init__"}
    assert areas <= set(_LAYER_OF), f"give these a place in LAYERS: {sorted(areas - set(_LAYER_OF))}"


def test_imports_point_down_the_layers() -> None:
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        area = _area_of(rel)
        for module, line in _project_imports(path):
            target = module.split(".")[1] if module.count(".") >= 1 else ""
            if target in _LAYER_OF and area in _LAYER_OF and _LAYER_OF[target] > _LAYER_OF[area]:
                violations.append(f"ros2_affect/{rel}:{line} ({area}) imports {module} ({target}, a higher layer)")
    assert not violations, "imports that point up the layers:\n" + "\n".join(violations)


def test_no_import_cycles_between_modules() -> None:
    modules = {_module_of(p): p for p in PACKAGE.rglob("*.py")}
    graph = {
        name: {m for m, _ in _project_imports(path) if m in modules and m != name and not name.startswith(m + ".")}
        for name, path in modules.items()
    }
    cycles = []
    state: dict = {}

    def visit(name: str, trail: list) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(trail[trail.index(target):] + [target]) if target in trail else target)
            elif target not in state:
                visit(target, trail + [target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles (in-function imports included):\n" + "\n".join(cycles)
