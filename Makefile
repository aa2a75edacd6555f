# One-command entry points. See README.md.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
OUT    ?= out/demo

.PHONY: setup setup-dev system-deps venv assets demo test test-compat compat-py310 compat-py312 test-node bench-node lint clean

# pip constraints (the full pinned set) for $(PYTHON): Python 3.10 has its own (ROS 2 Humble)
CONSTRAINTS = $(if $(filter 3.10,$(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)),requirements/constraints-py310.txt,requirements/constraints.txt)

## setup: the runtime only (what make demo and the tools need): a venv with the pinned runtime
## requirements and the package, and the face models (Python 3.10-3.12: make setup PYTHON=python3.10)
setup: $(VENV)/.installed assets

## setup-dev: setup, plus training and development tools (torch, onnx, pytest, ruff, mypy; Python 3.11+)
## and the Debian packages for the ROS-side checks; make test runs it
setup-dev: setup system-deps $(VENV)/.installed-dev

## system-deps: Debian packages for the ROS-side checks (colcon, ROS 2 IDL parser); no-op when present
system-deps:
	scripts/install_system_deps.sh

$(VENV)/.installed: requirements/runtime.txt requirements/constraints.txt requirements/constraints-py310.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip==26.3 setuptools==84.2.1
	$(PIP) install --quiet -r requirements/runtime.txt -c $(CONSTRAINTS)
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements/dev.txt requirements/constraints.txt
	$(PIP) install --quiet -r requirements/dev.txt -c requirements/constraints.txt
	touch $@

## assets: take the BlazeFace and Face Mesh models out of the mediapipe 0.10.21 wheel (SHA-256 checked)
assets: $(VENV)/.installed
	$(BIN)/ros2-affect fetch-assets

## demo: set up, then run the pipeline on the bundled sample and write out/demo/
demo: setup
	$(BIN)/ros2-affect run sample --out $(OUT) --overwrite

## test: the test suite, then the runtime tests under Python 3.10/numpy 1 and 3.12 (what .ci/run runs)
test: setup-dev
	$(BIN)/python -m pytest -q tests
	$(MAKE) --no-print-directory test-compat
	$(MAKE) --no-print-directory test-node

## test-compat: the runtime tests under Python 3.10 + numpy 1.x (Humble) and Python 3.12 (Jazzy)
PY310 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.10*/bin/python3.10) python3.10)
PY312 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) python3.12)
COMPAT_TESTS ?= tests/core tests/backends tests/bags tests/ros tests/tools tests/test_layering.py

.venv-py310/.installed: requirements/compat-py310-numpy1.txt requirements/humble.txt
	$(PY310) -m venv .venv-py310
	.venv-py310/bin/python -m pip install --quiet -r requirements/compat-py310-numpy1.txt
	touch $@

.venv-py312/.installed: requirements/runtime.txt requirements/compat-py312.txt
	$(PY312) -m venv .venv-py312
	.venv-py312/bin/python -m pip install --quiet -r requirements/compat-py312.txt
	touch $@

test-compat: assets
	@if [ -x "$(PY310)" ]; then $(MAKE) --no-print-directory compat-py310; \
	else echo "test-compat: no Python 3.10 interpreter (PY310=$(PY310)); Humble compatibility NOT tested"; fi
	@if [ -x "$(PY312)" ]; then $(MAKE) --no-print-directory compat-py312; \
	else echo "test-compat: no Python 3.12 interpreter (PY312=$(PY312)); Jazzy compatibility NOT tested"; fi

compat-py310: .venv-py310/.installed
	PYTHONPATH=$(CURDIR) .venv-py310/bin/python -m pytest -q -p no:cacheprovider $(COMPAT_TESTS)

compat-py312: .venv-py312/.installed
	PYTHONPATH=$(CURDIR) .venv-py312/bin/python -m pytest -q -p no:cacheprovider $(COMPAT_TESTS)

## test-node: affect_node as a process under a real rclpy (ROS 2 Jazzy wheels from PyPI, Fast DDS,
## Python 3.12 with the Jazzy runtime set) with affect_msgs built by the wheels' rosidl: tests/node
test-node: assets
	PYTHON=$(PY312) scripts/ros_env.sh .venv-ros
	. .venv-ros/ros_env.sh && .venv-ros/bin/python -m pytest -q -p no:cacheprovider tests/node

## bench-node: node-level benchmark under real rclpy (figures in BENCHMARKS.md; not a test)
bench-node: assets
	PYTHON=$(PY312) scripts/ros_env.sh .venv-ros
	. .venv-ros/ros_env.sh && .venv-ros/bin/python -m ros2_affect.node.bench_node

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check ros2_affect training tests
	$(BIN)/mypy ros2_affect

clean:
	rm -rf $(VENV) .venv-py310 .venv-py312 .venv-ros build install log out .pytest_cache .mypy_cache
