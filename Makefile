# One-command entry points. See README.md.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
OUT    ?= out/demo

.PHONY: setup venv assets demo test lint colcon-build clean

## setup: create the virtual environment, install pinned dependencies, provision model files
setup: $(VENV)/.installed assets

$(VENV)/.installed: requirements/runtime.txt requirements/dev.txt requirements/constraints.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip==26.3
	$(PIP) install --quiet -r requirements/dev.txt -c requirements/constraints.txt
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	touch $@

## assets: take the BlazeFace and Face Mesh models out of the mediapipe 0.10.21 wheel (SHA-256 checked)
assets: $(VENV)/.installed
	$(BIN)/ros2-affect fetch-assets

## demo: set up, then run the pipeline on the bundled sample and write out/demo/
demo: setup
	$(BIN)/ros2-affect run sample --out $(OUT)

## test: the test suite (what .ci/run runs)
test: setup
	$(BIN)/python -m pytest -q tests

lint:
	$(BIN)/ruff check ros2_affect training tests
	$(BIN)/mypy ros2_affect

clean:
	rm -rf $(VENV) build install log out .pytest_cache .mypy_cache
