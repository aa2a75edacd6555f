"""Where the package finds its files: model assets, bundled affect models, default config.

Nothing here downloads. The MediaPipe face-detection and face-landmark models are
provisioned once by ``make setup`` (``ros2-affect fetch-assets``), which takes them out
of the ``mediapipe==0.10.21`` wheel and checks their SHA-256.

Search order for an asset directory:
1. ``$ROS2_AFFECT_ASSET_DIR`` when set;
2. ``ros2_affect/assets/`` next to this file (source checkout, pip install);
3. ``<share>/ros2_affect/assets`` of an ament (colcon) install.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from ros2_affect.errors import AssetMissingError, ModelLoadError

PACKAGE_DIR = Path(__file__).resolve().parent
ASSET_ENV = "ROS2_AFFECT_ASSET_DIR"

#: The wheel the detector and landmark models come from, and where they are in it.
MEDIAPIPE_WHEEL_REQUIREMENT = "mediapipe==0.10.21"


@dataclass(frozen=True)
class AssetSpec:
    filename: str
    wheel_member: str
    sha256: str
    description: str


ASSETS: Dict[str, AssetSpec] = {
    "face_detection_short_range": AssetSpec(
        "face_detection_short_range.tflite",
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
        "BlazeFace short-range face detector (faces within about 2 m)",
    ),
    "face_detection_full_range": AssetSpec(
        "face_detection_full_range_sparse.tflite",
        "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
        "BlazeFace full-range face detector (faces within about 5 m)",
    ),
    "face_landmark": AssetSpec(
        "face_landmark.tflite",
        "mediapipe/modules/face_landmark/face_landmark.tflite",
        "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
        "Face Mesh 468-point landmark model (eye refinement)",
    ),
}

FETCH_HINT = "run `make setup` or `ros2-affect fetch-assets` once (it needs PyPI access, nothing else)"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _ament_share_dir() -> Optional[Path]:
    try:
        from ament_index_python.packages import get_package_share_directory  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory("ros2_affect"))
    except Exception:  # PackageNotFoundError: not installed through colcon
        return None


def asset_dirs() -> List[Path]:
    """Directories searched for model assets, in order."""
    dirs: List[Path] = []
    env = os.environ.get(ASSET_ENV)
    if env:
        dirs.append(Path(env))
    dirs.append(PACKAGE_DIR / "assets")
    share = _ament_share_dir()
    if share is not None:
        dirs.append(share / "assets")
    return dirs


def default_asset_dir() -> Path:
    """Where ``fetch-assets`` writes: ``$ROS2_AFFECT_ASSET_DIR`` or the package's assets folder."""
    return asset_dirs()[0]


def asset_path(name: str, verify: bool = False) -> Path:
    """Path of a provisioned asset.

    Raises:
        AssetMissingError: the file is in none of :func:`asset_dirs`; the message names
            the directories searched and the command that provisions it.
        ModelLoadError: ``verify`` is set and the file's SHA-256 does not match.
    """
    spec = ASSETS[name]
    for directory in asset_dirs():
        candidate = directory / spec.filename
        if candidate.is_file():
            if verify and sha256_of(candidate) != spec.sha256:
                raise ModelLoadError(
                    f"{candidate} does not match the expected SHA-256 {spec.sha256}; delete it and {FETCH_HINT}"
                )
            return candidate
    searched = ", ".join(str(d) for d in asset_dirs())
    raise AssetMissingError(f"{spec.description} ({spec.filename}) not found in: {searched}; {FETCH_HINT}")


# -- bundled affect models and configuration ----------------------------------------------------

MODELS_DIR = PACKAGE_DIR / "models"

#: File names of the default models shipped in ``ros2_affect/models``.
DEFAULT_FRAME_MODEL = "emotion_gcn_affectnet_fer2013.onnx"
DEFAULT_ENCODER_MODEL = "cnn_rnn_affectnet_fer2013_encoder.onnx"
DEFAULT_SEQUENCE_MODEL = "cnn_rnn_affectnet_fer2013_sequence.onnx"


def bundled_model_path(filename: str) -> Path:
    """Path of a model shipped with the package.

    Raises:
        AssetMissingError: the file is not in the package's ``models`` folder.
    """
    path = MODELS_DIR / filename
    if not path.is_file():
        raise AssetMissingError(
            f"bundled model {filename!r} is missing from {MODELS_DIR}; reinstall the package or set "
            f"model.frame_model / model.encoder_model / model.sequence_model to an exported ONNX file"
        )
    return path


def default_config_path() -> Path:
    """The packaged ``affect.yaml`` (source checkout, or the ament share directory)."""
    candidates = [PACKAGE_DIR.parent / "config" / "affect.yaml", PACKAGE_DIR / "config" / "affect.yaml"]
    share = _ament_share_dir()
    if share is not None:
        candidates.append(share / "config" / "affect.yaml")
    for path in candidates:
        if path.is_file():
            return path
    raise AssetMissingError(f"default parameter file affect.yaml not found in: {', '.join(map(str, candidates))}")
