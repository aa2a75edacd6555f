"""colcon sees both packages, and an ament_python build installs what ROS 2 expects.

Uses Debian's colcon (scripts/install_system_deps.sh); skipped with a reason without it.
affect_msgs cannot be built here (its rosidl generators come with a ROS 2 installation),
so the build covers ros2_affect; docker/Dockerfile builds both.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
COLCON = shutil.which("colcon")
HINT = "run scripts/install_system_deps.sh (Debian colcon + python3-colcon-ros)"


def _colcon(args: List[str], cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # colcon runs setup.py with the interpreter colcon itself runs under (the system Python);
    # keep the venv's variables out of it.
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    return subprocess.run(
        [COLCON, "--log-base", str(cwd / "log"), *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )


def _listing(output: str) -> Dict[str, str]:
    """``colcon list`` lines ``name<TAB>path<TAB>(type)`` -> name: type."""
    packages = {}
    for line in output.splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            packages[parts[0]] = parts[2].strip("()")
    return packages


@pytest.fixture(scope="module")
def colcon_list_available(tmp_path_factory: pytest.TempPathFactory) -> None:
    if COLCON is None:
        pytest.skip(f"colcon is not installed; {HINT}")
    probe = _colcon(["list", "--help"], tmp_path_factory.mktemp("probe"))
    if probe.returncode != 0:
        pytest.skip(f"this colcon has no 'list' verb (python3-colcon-package-information missing); {HINT}")


def test_list_with_both_base_paths(colcon_list_available: None, tmp_path: Path) -> None:
    # The documented in-repo form: the repo root is ros2_affect and colcon does not descend
    # into a package, so affect_msgs/ is given as a second base path.
    proc = _colcon(["list", "--base-paths", str(REPO_ROOT), str(REPO_ROOT / "affect_msgs")], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _listing(proc.stdout) == {"affect_msgs": "ros.ament_cmake", "ros2_affect": "ros.ament_python"}


def test_repo_root_alone_hides_affect_msgs(colcon_list_available: None, tmp_path: Path) -> None:
    # Why the documentation insists on the second path (or a second symlink).
    proc = _colcon(["list", "--base-paths", str(REPO_ROOT)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _listing(proc.stdout) == {"ros2_affect": "ros.ament_python"}


def test_list_in_a_symlinked_workspace(colcon_list_available: None, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "ros2_affect").symlink_to(REPO_ROOT)
    (tmp_path / "src" / "affect_msgs").symlink_to(REPO_ROOT / "affect_msgs")
    proc = _colcon(["list"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _listing(proc.stdout) == {"affect_msgs": "ros.ament_cmake", "ros2_affect": "ros.ament_python"}
    deps = _colcon(["info", "ros2_affect"], tmp_path)
    if deps.returncode == 0:  # colcon info: the node's run dependency on the message package is declared
        assert "affect_msgs" in deps.stdout


@pytest.fixture(scope="module")
def installed(colcon_list_available: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with ros2_affect built and installed by colcon (merged layout not used)."""
    ws = tmp_path_factory.mktemp("ws")
    (ws / "src").mkdir()
    (ws / "src" / "ros2_affect").symlink_to(REPO_ROOT)
    proc = _colcon(["build", "--packages-select", "ros2_affect"], ws, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The build must not write into the source checkout (shared by everyone).
    assert not (REPO_ROOT / "build").exists() or (REPO_ROOT / "build").stat().st_mtime < ws.stat().st_mtime
    return ws / "install" / "ros2_affect"


def test_installed_tree_has_launch_config_node_and_messages(installed: Path) -> None:
    for rel in (
        "share/ros2_affect/launch/affect.launch.py",
        "share/ros2_affect/config/affect.yaml",
        "share/ros2_affect/package.xml",
        "share/ros2_affect/msg/FaceAffect.msg",
        "share/ros2_affect/msg/FaceAffectArray.msg",
        "share/ament_index/resource_index/packages/ros2_affect",
        "lib/ros2_affect/affect_node",
    ):
        assert (installed / rel).is_file(), rel
    node_script = (installed / "lib" / "ros2_affect" / "affect_node").read_text()
    assert "ros2_affect.node.node" in node_script or "affect_node" in node_script
    assert os.access(installed / "lib" / "ros2_affect" / "affect_node", os.X_OK)
    site = list(installed.glob("lib/python3*/site-packages/ros2_affect/node/node.py"))
    assert site, "the ros2_affect Python package is not installed"


def test_installed_package_finds_its_message_definitions(installed: Path, tmp_path: Path) -> None:
    # Import ros2_affect from the colcon install (not the checkout) with ament_index_python
    # available, as on a robot: the .msg files must be found through the ament index.
    site = next(installed.glob("lib/python3*/site-packages"))
    ament_index = Path("/usr/lib/python3/dist-packages/ament_index_python")
    if not ament_index.is_dir():
        pytest.skip(f"ament_index_python not installed (Debian python3-ament-index); {HINT}")
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "ament_index_python").symlink_to(ament_index)
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{shim}", AMENT_PREFIX_PATH=str(installed))
    env.pop("ROS2_AFFECT_MSG_DIR", None)
    code = (
        "import ros2_affect, ros2_affect.msgs.msg_types as m\n"
        "print(ros2_affect.__file__)\nprint(m.AFFECT_MSG_DIR)\n"
        "print(len(m.create_typestore('jazzy').types))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    module_file, msg_dir, count = proc.stdout.split()
    assert module_file.startswith(str(site))
    assert Path(msg_dir) == installed / "share" / "ros2_affect" / "msg"
    assert int(count) > 100


def test_launch_file_declares_the_documented_arguments(installed: Path) -> None:
    tree = ast.parse((installed / "share" / "ros2_affect" / "launch" / "affect.launch.py").read_text())
    declared = set()
    node_kwargs = {}
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        name = getattr(call.func, "id", getattr(call.func, "attr", ""))
        if name == "DeclareLaunchArgument" and call.args and isinstance(call.args[0], ast.Constant):
            declared.add(call.args[0].value)
        if name == "Node":
            node_kwargs = {k.arg: k.value.value for k in call.keywords if isinstance(k.value, ast.Constant)}
    assert {"camera", "namespace", "params_file", "backend", "compressed", "debug_image"} <= declared
    assert node_kwargs["package"] == "ros2_affect" and node_kwargs["executable"] == "affect_node"
    assert node_kwargs["name"] == "affect_node"  # the parameter file's section name
