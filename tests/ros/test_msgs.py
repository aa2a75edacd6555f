"""affect_msgs: the .msg files parse with the real ROS 2 IDL tools and round-trip through CDR."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ros2_affect.errors import AssetMissingError, ConfigError
from ros2_affect.msgs import msg_types
from ros2_affect.msgs.msg_types import (
    AFFECT_MSG_DIR,
    ALL_AFFECT_MSG_NAMES,
    affect_msg_definitions,
    create_typestore,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
MSG_PACKAGE_DIR = REPO_ROOT / "affect_msgs"
SYSTEM_PYTHON = "/usr/bin/python3"


def _system_rosidl_available() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import rosidl_adapter.parser, rosidl_adapter.msg, rosidl_parser.parser"],
        capture_output=True,
    )
    return probe.returncode == 0


needs_rosidl = pytest.mark.skipif(
    not _system_rosidl_available(),
    reason="Debian package python3-rosidl (ROS 2 IDL parser) is not installed; run scripts/install_system_deps.sh",
)

# Runs under the system Python, where Debian's python3-rosidl lives: the same code path as
# rosidl_generate_interfaces (msg -> parse -> .idl -> IDL parser) without a ROS install.
_ROSIDL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from rosidl_adapter.parser import parse_message_file
    from rosidl_adapter.msg import convert_msg_to_idl
    from rosidl_parser.definition import IdlLocator, Message
    from rosidl_parser.parser import parse_idl_file

    package_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    report = {}
    for msg_file in sorted((package_dir / "msg").glob("*.msg")):
        spec = parse_message_file("affect_msgs", str(msg_file))
        idl_file = convert_msg_to_idl(package_dir, "affect_msgs", msg_file.relative_to(package_dir), out_dir)
        idl = parse_idl_file(IdlLocator(out_dir, Path(idl_file.name)))
        (message,) = idl.content.get_elements_of_type(Message)
        report[msg_file.stem] = {
            "msg_fields": [[f.name, str(f.type)] for f in spec.fields],
            "idl_members": [m.name for m in message.structure.members],
        }
    print("JSON" + json.dumps(report))
    """
)


@needs_rosidl
def test_msg_files_parse_with_the_ros2_idl_tools(tmp_path: Path) -> None:
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-c", _ROSIDL_SCRIPT, str(MSG_PACKAGE_DIR), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.split("JSON", 1)[1])
    assert sorted(report) == sorted(ALL_AFFECT_MSG_NAMES)

    face = dict(report["FaceAffect"]["msg_fields"])
    assert face["header"] == "std_msgs/Header"
    assert face["bbox_xyxy_px"] == "float32[4]"
    assert face["probabilities"] == "float32[]"
    assert face["class_names"] == "string[]"
    assert face["direction"] == "geometry_msgs/Vector3"
    assert face["valence"] == "float32"
    assert report["FaceAffect"]["idl_members"] == [name for name, _ in report["FaceAffect"]["msg_fields"]]

    array = dict(report["FaceAffectArray"]["msg_fields"])
    assert array["faces"] == "affect_msgs/FaceAffect[]"
    assert array["faces_dropped"] == "uint32"


@needs_rosidl
def test_rosidl_parser_rejects_a_broken_definition(tmp_path: Path) -> None:
    # The check above must be able to fail: a field name with an upper-case letter is invalid ROS IDL.
    broken = tmp_path / "affect_msgs"
    (broken / "msg").mkdir(parents=True)
    text = (MSG_PACKAGE_DIR / "msg" / "FaceAffect.msg").read_text().replace("float32 valence", "float32 Valence")
    (broken / "msg" / "FaceAffect.msg").write_text(text)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-c", _ROSIDL_SCRIPT, str(broken), str(out)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    assert "Valence" in proc.stderr


def test_package_declares_an_interface_package() -> None:
    package_xml = (MSG_PACKAGE_DIR / "package.xml").read_text()
    assert "<member_of_group>rosidl_interface_packages</member_of_group>" in package_xml
    assert '<package format="3">' in package_xml
    cmake = (MSG_PACKAGE_DIR / "CMakeLists.txt").read_text()
    # Every .msg file is generated, and the tools read all of them.
    on_disk = sorted(p.stem for p in (MSG_PACKAGE_DIR / "msg").glob("*.msg"))
    assert on_disk == sorted(ALL_AFFECT_MSG_NAMES)
    for name in on_disk:
        assert f'"msg/{name}.msg"' in cmake
    # Every message package the .msg files use is a dependency of the interface package.
    used = set()
    for text in affect_msg_definitions().values():
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line and "/" in line.split()[0]:
                used.add(line.split()[0].split("/")[0])
    assert used == {"std_msgs", "geometry_msgs"}
    for dep in used:
        assert f"<depend>{dep}</depend>" in package_xml
        assert dep in cmake


def test_definitions_are_found_in_the_source_checkout() -> None:
    assert AFFECT_MSG_DIR == MSG_PACKAGE_DIR / "msg"
    defs = affect_msg_definitions()
    assert list(defs) == [f"affect_msgs/msg/{n}" for n in ALL_AFFECT_MSG_NAMES]
    assert "float32 valence" in defs["affect_msgs/msg/FaceAffect"]


def test_wrong_msg_dir_env_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(msg_types.MSG_DIR_ENV, str(tmp_path))
    with pytest.raises(
        AssetMissingError,
        match=r"ROS2_AFFECT_MSG_DIR=.* lacks FaceAffect\.msg, FaceAffectArray\.msg, AffectAnnotation\.msg",
    ):
        msg_types.find_affect_msg_dir()


def test_env_dir_is_used_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ALL_AFFECT_MSG_NAMES:
        shutil.copy(MSG_PACKAGE_DIR / "msg" / f"{name}.msg", tmp_path / f"{name}.msg")
    monkeypatch.setenv(msg_types.MSG_DIR_ENV, str(tmp_path))
    assert msg_types.find_affect_msg_dir() == tmp_path


def test_missing_definitions_name_the_places_searched(tmp_path: Path) -> None:
    with pytest.raises(AssetMissingError, match=r"message definitions .* not found; searched .*ROS2_AFFECT"):
        affect_msg_definitions(tmp_path)


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_typestore_has_standard_and_affect_types(distro: str) -> None:
    store = create_typestore(distro)
    for name in (
        "affect_msgs/msg/FaceAffect",
        "affect_msgs/msg/FaceAffectArray",
        "affect_msgs/msg/AffectAnnotation",
        "sensor_msgs/msg/Image",
        "sensor_msgs/msg/CompressedImage",
        "sensor_msgs/msg/CameraInfo",
        "diagnostic_msgs/msg/DiagnosticArray",
    ):
        assert name in store.types, name
    # Jazzy bags record RIHS01 type hashes; rosbags must be able to compute ours.
    assert store.hash_rihs01("affect_msgs/msg/FaceAffectArray").startswith("RIHS01_")


def test_unknown_distro_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"distro = 'rolling' is not supported; choose one of humble, jazzy"):
        create_typestore("rolling")


def _sample_array(store):  # type: ignore[no-untyped-def]
    t = store.types
    time = t["builtin_interfaces/msg/Time"](sec=1_700_000_000, nanosec=123_456_789)
    header = t["std_msgs/msg/Header"](stamp=time, frame_id="camera_optical")
    face = t["affect_msgs/msg/FaceAffect"](
        header=header,
        track_id="f3k9a",
        track_confirmed=True,
        image_width=720,
        image_height=576,
        bbox_xyxy_px=np.array([100.5, 80.25, 220.0, 230.0], np.float32),
        bbox_xyxy_norm=np.array([0.14, 0.14, 0.31, 0.4], np.float32),
        detection_score=0.93,
        right_eye_px=np.array([130.0, 140.0], np.float32),
        left_eye_px=np.array([190.0, 141.0], np.float32),
        eyes_refined=True,
        roll_deg=-2.5,
        has_direction=True,
        direction=t["geometry_msgs/msg/Vector3"](x=0.1, y=-0.2, z=0.9746794344808963),
        has_affect=True,
        expression="happy",
        expression_confidence=0.7,
        class_names=["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger"],
        probabilities=np.array([0.1, 0.7, 0.05, 0.05, 0.04, 0.03, 0.03], np.float32),
        valence=0.6,
        arousal=0.2,
        va_derived=False,
        frames_used=8,
        model_id="cnn_rnn_v1",
    )
    return t["affect_msgs/msg/FaceAffectArray"](
        header=header, faces=[face, face], faces_dropped=3, processing_latency_ms=12.5
    )


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_cdr_round_trip_keeps_every_field(distro: str) -> None:
    store = create_typestore(distro)
    msg = _sample_array(store)
    data = store.serialize_cdr(msg, "affect_msgs/msg/FaceAffectArray")
    back = store.deserialize_cdr(data, "affect_msgs/msg/FaceAffectArray")
    assert back.header.stamp.sec == 1_700_000_000 and back.header.stamp.nanosec == 123_456_789
    assert back.header.frame_id == "camera_optical"
    assert back.faces_dropped == 3 and back.processing_latency_ms == pytest.approx(12.5)
    assert len(back.faces) == 2
    for name in msg.faces[0].__dataclass_fields__:
        if name == "__msgtype__":
            continue
        want, got = getattr(msg.faces[0], name), getattr(back.faces[1], name)
        if isinstance(want, np.ndarray):
            np.testing.assert_array_equal(got, want)
        elif isinstance(want, float):
            assert got == pytest.approx(want, rel=1e-6), name  # float32 on the wire
        elif name in ("header", "direction"):
            assert repr(got) == repr(want) or got == want, name
        else:
            assert got == want, name


def test_cdr_of_an_empty_array_is_small_and_round_trips() -> None:
    store = create_typestore()
    t = store.types
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=5, nanosec=6), frame_id="cam")
    msg = t["affect_msgs/msg/FaceAffectArray"](header=header, faces=[], faces_dropped=0, processing_latency_ms=0.0)
    data = store.serialize_cdr(msg, "affect_msgs/msg/FaceAffectArray")
    back = store.deserialize_cdr(data, "affect_msgs/msg/FaceAffectArray")
    assert back.faces == [] and back.header.stamp.nanosec == 6
