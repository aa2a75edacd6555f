"""The affect_msgs message definitions, for tools that run without a ROS 2 installation.

The node uses the classes that ``rosidl`` generates from ``affect_msgs/msg/*.msg``. The
offline tools (bag replay and writing) use ``rosbags`` instead, which builds equivalent
dataclasses and a CDR serializer from the very same ``.msg`` text at run time. So the
``.msg`` files are the single source of truth and this module only has to find them.

Where the ``.msg`` files are looked for (first hit wins), see :func:`find_affect_msg_dir`:

1. ``$ROS2_AFFECT_MSG_DIR`` when set;
2. ``affect_msgs/msg`` of the source checkout this module lives in (editable install);
3. ``share/affect_msgs/msg`` of an installed affect_msgs package (colcon/apt install,
   found through the ament index; rosidl installs the ``.msg`` files there), then
   ``share/ros2_affect/msg`` of an installed ros2_affect (``setup.py`` puts a copy there);
4. ``share/ros2_affect/msg`` under the Python prefix (the same ``data_files`` copy, for a
   plain ``pip install`` of ros2_affect).
"""

from __future__ import annotations

import os
import site
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from ros2_affect.errors import AssetMissingError, ConfigError

#: The interface package's name.

#: Where the node publishes (its ``~/faces``) and where the bag tools write and read results.
FACES_TOPIC = "/affect_node/faces"
FACE_AFFECT_ARRAY_MSGTYPE = "affect_msgs/msg/FaceAffectArray"
#: The sensor_msgs types the front ends read (images raw or compressed, and their camera's CameraInfo).
RAW_IMAGE_MSGTYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_MSGTYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_MSGTYPE = "sensor_msgs/msg/CameraInfo"
#: The image types the tools process (each has its decoder in ``msgs.frame_processor.IMAGE_DECODERS``).
IMAGE_MSGTYPES = (RAW_IMAGE_MSGTYPE, COMPRESSED_IMAGE_MSGTYPE)

AFFECT_MSGS_PACKAGE = "affect_msgs"
#: The messages the node publishes; a directory without them is not an affect_msgs/msg.
AFFECT_MSG_NAMES = ("FaceAffect", "FaceAffectArray")
#: All messages of the package (AffectAnnotation: ground-truth labels the bag tools write).
ALL_AFFECT_MSG_NAMES = ("FaceAffect", "FaceAffectArray", "AffectAnnotation")
MSG_DIR_ENV = "ROS2_AFFECT_MSG_DIR"

#: ROS 2 distributions whose standard message definitions a typestore can be built for.
DISTROS = ("humble", "jazzy")

_SOURCE_MSG_DIR = Path(__file__).resolve().parents[2] / AFFECT_MSGS_PACKAGE / "msg"


def _has_all(directory: Path) -> bool:
    return all((directory / f"{name}.msg").is_file() for name in ALL_AFFECT_MSG_NAMES)


def _ament_msg_dirs() -> List[Path]:
    """``share/affect_msgs/msg`` and ``share/ros2_affect/msg`` of the packages in the ament index."""
    try:
        from ament_index_python.packages import get_package_share_directory  # type: ignore[import-not-found]
    except ImportError:
        return []
    dirs = []
    for package in (AFFECT_MSGS_PACKAGE, "ros2_affect"):
        try:
            dirs.append(Path(get_package_share_directory(package)) / "msg")
        except Exception:  # PackageNotFoundError: not installed through colcon/apt
            continue
    return dirs


def _candidate_dirs() -> List[Path]:
    candidates: List[Path] = []
    env = os.environ.get(MSG_DIR_ENV)
    if env:
        candidates.append(Path(env))
    candidates.append(_SOURCE_MSG_DIR)
    candidates.extend(_ament_msg_dirs())
    prefixes = [sys.prefix, sys.base_prefix]
    user_base = getattr(site, "USER_BASE", None)
    if user_base:
        prefixes.append(user_base)
    for prefix in prefixes:
        candidates.append(Path(prefix) / "share" / "ros2_affect" / "msg")
    return candidates


def find_affect_msg_dir() -> Optional[Path]:
    """Return the first directory holding all affect_msgs ``.msg`` files, or None."""
    env = os.environ.get(MSG_DIR_ENV)
    for directory in _candidate_dirs():
        if _has_all(directory):
            return directory
        if env and directory == Path(env):
            # A user-set directory that lacks the files is a mistake worth reporting, not skipping.
            missing = [n for n in ALL_AFFECT_MSG_NAMES if not (directory / f"{n}.msg").is_file()]
            raise AssetMissingError(
                f"${MSG_DIR_ENV}={env!r} lacks {', '.join(m + '.msg' for m in missing)}; "
                f"point it at affect_msgs/msg of a ros2_affect checkout or unset it"
            )
    return None


def _dir_at_import() -> Optional[Path]:
    try:
        return find_affect_msg_dir()
    except AssetMissingError:  # a wrong $ROS2_AFFECT_MSG_DIR raises with its message where it is used
        return None


#: Directory of the affect_msgs ``.msg`` files found at import time (None when not found).
AFFECT_MSG_DIR: Optional[Path] = _dir_at_import()


def affect_msg_definitions(msg_dir: Optional[Path] = None) -> Dict[str, str]:
    """Read the affect_msgs definitions.

    Args:
        msg_dir: directory with the ``.msg`` files; default: :func:`find_affect_msg_dir`.

    Returns:
        Full ROS 2 type name (``"affect_msgs/msg/FaceAffect"``) -> ``.msg`` text, for
        every message of :data:`ALL_AFFECT_MSG_NAMES`.

    Raises:
        AssetMissingError: the ``.msg`` files cannot be found.
    """
    directory = Path(msg_dir) if msg_dir is not None else find_affect_msg_dir()
    if directory is None or not _has_all(directory):
        searched = ", ".join(str(d) for d in ([Path(msg_dir)] if msg_dir is not None else _candidate_dirs()))
        raise AssetMissingError(
            f"affect_msgs message definitions ({', '.join(n + '.msg' for n in ALL_AFFECT_MSG_NAMES)}) not found; "
            f"searched {searched}. Run from a ros2_affect checkout, install the package (pip or colcon), "
            f"or set ${MSG_DIR_ENV} to the affect_msgs/msg directory"
        )
    return {
        f"{AFFECT_MSGS_PACKAGE}/msg/{name}": (directory / f"{name}.msg").read_text(encoding="utf-8")
        for name in ALL_AFFECT_MSG_NAMES
    }


def create_typestore(distro: str = "humble", msg_dir: Optional[Path] = None) -> Any:
    """A rosbags typestore with the distribution's standard messages and affect_msgs.

    Args:
        distro: ``"humble"`` or ``"jazzy"``: which release's standard definitions
            (sensor_msgs, std_msgs, geometry_msgs, diagnostic_msgs, ...) to use.
        msg_dir: where the affect_msgs ``.msg`` files are; default: found automatically.

    Returns:
        ``rosbags.typesys.store.Typestore``; ``store.types["affect_msgs/msg/FaceAffectArray"]``
        is the message class and ``store.serialize_cdr(msg, name)`` its serializer.

    Raises:
        ConfigError: an unknown ``distro``.
        AssetMissingError: the ``.msg`` files cannot be found.
    """
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    stores = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY}
    if distro not in stores:
        raise ConfigError(f"distro = {distro!r} is not supported; choose one of {', '.join(DISTROS)}")
    store = get_typestore(stores[distro])
    types: Dict[str, Any] = {}
    for name, text in affect_msg_definitions(msg_dir).items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store
