"""BagReader on real third-party bags (sqlite3 and MCAP) and on damaged copies of them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ros2_affect.bags.reader import BagReader, image_stamps
from ros2_affect.errors import BagError
from tests.bags.helpers import THIRD_PARTY_BAGS


def _writable_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for f in dst.iterdir():
        os.chmod(f, 0o644)
    return dst


def _storage_file(bag: Path) -> Path:
    (f,) = [p for p in bag.iterdir() if p.suffix in (".db3", ".mcap")]
    return f


@pytest.mark.parametrize("name", sorted(THIRD_PARTY_BAGS))
def test_third_party_bag_images_decode_with_header_stamps(rosbags_dir: Path, name: str) -> None:
    storage, topic, (width, height), count = THIRD_PARTY_BAGS[name]
    with BagReader(rosbags_dir / name) as bag:
        assert bag.storage == storage
        info = bag.select_image_topic()  # the only image topic is found without being named
        assert (info.name, info.msgtype, info.count) == (topic, "sensor_msgs/msg/CompressedImage", count)
        assert any(t.msgtype == "sensor_msgs/msg/CameraInfo" for t in bag.topics.values())
        images = list(bag.images(info.name))
    assert len(images) == count
    image = images[0]
    assert image.compressed and image.stamp_from_header and image.frame_id == "raspicam"
    # the header stamp (camera clock, acquisition) is kept, not the recorder's receive time;
    # in these recordings the camera's clock lags the recorder's by 0.2 s to 3.7 h
    assert image.stamp_ns == image.msg.header.stamp.sec * 10**9 + image.msg.header.stamp.nanosec
    assert 0 < image.bag_time_ns - image.stamp_ns < 4 * 3600 * 10**9
    rgb = image.to_rgb()
    assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8
    assert 20 < rgb.mean() < 235 and rgb.std() > 10  # a real photo, not a blank buffer


def test_storage_file_can_be_read_without_the_bag_folder(rosbags_dir: Path) -> None:
    for name in ("ros2_aruco_images_mcap", "ros2_aruco_images_sqlite3"):
        folder = rosbags_dir / name
        with BagReader(folder) as bag:
            from_folder = [(m.topic, m.bag_time_ns, m.data) for m in bag.messages()]
        with BagReader(_storage_file(folder)) as bag:
            from_file = [(m.topic, m.bag_time_ns, m.data) for m in bag.messages()]
        assert from_file == from_folder and len(from_file) == 16


def test_both_storages_of_the_same_recording_agree(rosbags_dir: Path) -> None:
    stamps = [image_stamps(rosbags_dir / f"ros2_aruco_images_{s}")[1] for s in ("mcap", "sqlite3")]
    assert stamps[0] == stamps[1] == [1491682360314066469]


def test_missing_topic_lists_the_topics_present_with_their_types(rosbags_dir: Path) -> None:
    with BagReader(rosbags_dir / "ros2_aruco_images_sqlite3") as bag:
        with pytest.raises(
            BagError,
            match=r"has no topic '/camera/image_raw'; topics present: "
            r"/raspicam_node/camera_info \(sensor_msgs/msg/CameraInfo, 15 msgs\), "
            r"/raspicam_node/image/compressed \(sensor_msgs/msg/CompressedImage, 1 msgs\)",
        ):
            bag.select_image_topic("/camera/image_raw")
        with pytest.raises(
            BagError,
            match=r"has type sensor_msgs/msg/CameraInfo, not an image.*"
            r"image topics: /raspicam_node/image/compressed",
        ):
            bag.select_image_topic("/raspicam_node/camera_info")
        # a recorded name without its leading slash is still found
        assert bag.select_image_topic("raspicam_node/image/compressed").name == "/raspicam_node/image/compressed"


def test_a_bag_without_images_says_so(rosbags_dir: Path, tmp_path: Path) -> None:
    from ros2_affect.bags.writer import BagWriter, copy_topics

    with BagReader(rosbags_dir / "ros2_aruco_marker_sqlite3") as src, BagWriter(tmp_path / "info_only") as dst:
        assert copy_topics(src, dst, ["/raspicam_node/camera_info"]) == {"/raspicam_node/camera_info": 1}
    with BagReader(tmp_path / "info_only") as bag:
        with pytest.raises(BagError, match=r"has no image topic .*topics present: /raspicam_node/camera_info"):
            bag.select_image_topic()


def _damage(bag: Path, how: str) -> None:
    f = _storage_file(bag)
    data = f.read_bytes()
    if how == "truncated":
        f.write_bytes(data[: len(data) // 2])
    elif how == "overwritten_header":
        f.write_bytes(b"\xff" * 64 + data[64:])
    elif how == "empty":
        f.write_bytes(b"")
    elif how == "no_metadata":
        (bag / "metadata.yaml").unlink()
    elif how == "garbage_metadata":
        (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: [unclosed\n")
    elif how == "missing_storage":
        f.unlink()


DAMAGE_MESSAGES = {
    "truncated": r"cannot open it: .*corrupt or truncated",
    "overwritten_header": r"cannot open it: .*corrupt or truncated",
    "empty": r"cannot open it: .*(empty|missing tables)",
    "no_metadata": r"has no metadata\.yaml, so it is not a complete rosbag2 bag; it holds .*\.(db3|mcap): pass that",
    "garbage_metadata": r"cannot open it: Could not load YAML",
    "missing_storage": r"cannot open it: Some database files are missing",
}


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("how", sorted(DAMAGE_MESSAGES))
def test_damaged_bags_raise_bag_error_naming_the_bag(rosbags_dir: Path, tmp_path: Path, storage: str, how: str) -> None:
    bag = _writable_copy(rosbags_dir / f"ros2_aruco_images_{storage}", tmp_path / f"damaged_{storage}")
    _damage(bag, how)
    with pytest.raises(BagError, match=DAMAGE_MESSAGES[how]) as info:
        with BagReader(bag) as reader:
            list(reader.images(reader.select_image_topic().name))
    assert str(bag) in str(info.value)
    # no storage-layer traceback chained to it (raised `from None`)
    assert info.value.__cause__ is None and (info.value.__context__ is None or info.value.__suppress_context__)


def test_corruption_inside_sqlite_pages_is_reported_while_reading(rosbags_dir: Path, tmp_path: Path) -> None:
    bag = _writable_copy(rosbags_dir / "ros2_aruco_images_sqlite3", tmp_path / "mid")
    f = _storage_file(bag)
    data = f.read_bytes()
    mid = len(data) // 2
    f.write_bytes(data[:mid] + b"\x00" * 4096 + data[mid + 4096 :])
    with pytest.raises(BagError, match=rf"bag '{bag}': cannot (open it|read its messages).*malformed.*"
                                       r"`ros2 bag reindex BAG_FOLDER sqlite3`"):
        with BagReader(bag, strict=True) as reader:
            list(reader.messages())
    # by default the damaged part is skipped, counted and reading goes on
    with BagReader(bag) as reader:
        total = sum(t.count for t in reader.topics.values())
        read = len(list(reader.messages()))
        assert reader.unreadable > 0 and read + reader.unreadable == total


def test_corrupt_jpeg_inside_an_intact_mcap_is_an_image_error(rosbags_dir: Path, tmp_path: Path) -> None:
    """MCAP has no checksum over chunk data here: zeroed bytes in the middle reach the image decoder."""
    from ros2_affect.errors import InvalidImageError

    bag = _writable_copy(rosbags_dir / "ros2_aruco_images_mcap", tmp_path / "mid")
    f = _storage_file(bag)
    data = f.read_bytes()
    cut = data.rfind(b"\xff\xd9")  # the JPEG's end marker: wipe it
    f.write_bytes(data[:cut] + b"\x00\x00" + data[cut + 2 :])
    with BagReader(bag) as reader:
        (image,) = list(reader.images(reader.select_image_topic().name))
        with pytest.raises(InvalidImageError, match="no end-of-image marker"):
            image.to_rgb()


def test_paths_that_are_not_bags(tmp_path: Path) -> None:
    with pytest.raises(BagError, match=r"does not exist; pass a bag folder or a \.db3/\.mcap file"):
        BagReader(tmp_path / "nothing").open()
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BagError, match=r"is not a bag: expected a bag folder .* got a \.txt file"):
        BagReader(tmp_path / "notes.txt").open()
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match=r"has no metadata\.yaml.*no \.db3 or \.mcap file either"):
        BagReader(tmp_path / "empty").open()
