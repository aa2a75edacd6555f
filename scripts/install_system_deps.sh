#!/usr/bin/env bash
# Debian packages the tests use to check the ROS 2 side without a ROS 2 installation:
#   colcon + colcon-ros          `colcon list` / `colcon build` of ros2_affect (tests/ros/test_colcon.py)
#   python3-rosidl               the real ROS 2 .msg/.idl parser (tests/ros/test_msgs.py)
#   python3-ament-index          ament resource index lookups of an installed workspace
# Idempotent: does nothing when everything is installed. Where the packages cannot be
# installed (not Debian/Ubuntu, not root and no sudo, offline) it says so and exits 0:
# the tests that need them are then skipped with a reason.
set -euo pipefail

PACKAGES=(
  colcon
  python3-colcon-core
  python3-colcon-ros
  python3-colcon-python-setup-py
  python3-colcon-package-information
  python3-colcon-package-selection
  python3-colcon-recursive-crawl
  python3-colcon-parallel-executor
  python3-colcon-output
  python3-colcon-library-path
  python3-colcon-cmake
  python3-colcon-bash
  python3-setuptools
  python3-rosidl
  python3-ament-index
  python3-ament-package
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_system_deps: all ${#PACKAGES[@]} Debian packages already installed"
  exit 0
fi

skip() {
  echo "install_system_deps: NOT installing ${missing[*]}: $1" >&2
  echo "install_system_deps: the colcon and ROS IDL tests will be skipped" >&2
  exit 0
}

command -v apt-get >/dev/null 2>&1 || skip "no apt-get (not Debian/Ubuntu)"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null || skip "not root and no password-less sudo"
  SUDO="sudo -n"
fi

echo "install_system_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Try without refreshing the package lists first (fast, offline-friendly); refresh if that fails.
if ! $SUDO apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
  $SUDO apt-get update -qq || skip "apt-get update failed (offline?)"
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}" || skip "apt-get install failed"
fi
echo "install_system_deps: done"
