"""Shared setup of the bag tool tests: a real ONNX model that follows the contract, configs.

The replay tests do not depend on the shipped models: they run a small seeded contract
graph (tests/backends/affect_graphs.py) in a real onnxruntime session, with regressed
valence/arousal so that every face gets values that depend on its crop.
"""

from __future__ import annotations

from pathlib import Path

from ros2_affect.config import PipelineConfig, flatten, load_pipeline_config, pipeline_config_from_dict
from tests.backends.affect_graphs import write_graph

MODEL_ID = "replay_test-0.1"

THIRD_PARTY_BAGS = {
    # name: (storage, image topic, image size (w, h), images)
    "ros2_aruco_images_mcap": ("mcap", "/raspicam_node/image/compressed", (1280, 960), 1),
    "ros2_aruco_images_sqlite3": ("sqlite3", "/raspicam_node/image/compressed", (1280, 960), 1),
    "ros2_aruco_marker_sqlite3": ("sqlite3", "/raspicam_node/image/compressed", (1280, 720), 1),
    "ros2_fiducial_board_611_sqlite3": ("sqlite3", "raspicam_node/camera/image/compressed", (1280, 720), 1),
}


def make_frame_model(path: Path) -> Path:
    """A contract frame graph (1x48x48 input, 7 classes, regressed valence/arousal)."""
    return write_graph(path, "frame", model_id=MODEL_ID, va_mode="regressed")


def pipeline_config(model: Path | None) -> PipelineConfig:
    """The packaged config/affect.yaml with the test model (or no model) swapped in."""
    values = flatten(load_pipeline_config())
    if model is None:
        values["model.kind"] = "none"
    else:
        values.update({"model.kind": "frame", "model.frame_model": str(model)})
    return pipeline_config_from_dict(values)
