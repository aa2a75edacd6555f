"""``ros2-affect run BAG``: the replay of tools/replay.py (one implementation) plus results.jsonl, on real bags.

What run on a bag must do is what replay does: the same FaceAffectArray per image in
``DIR/bag`` (header stamps, bag times, the input's storage), the camera's ``camera_info``
paired with its images when ``use_camera_info`` is set, ``--copy-input`` honoured; and one
line of ``results.jsonl`` per image.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

from ros2_affect.assets import default_config_path
from ros2_affect.bags.reader import BagReader, create_bag_typestore
from ros2_affect.bags.writer import BagWriter, copy_topics, make_header
from ros2_affect.msgs.msg_types import CAMERA_INFO_MSGTYPE, FACES_TOPIC
from ros2_affect.tools.cli import main
from tests.bags.helpers import THIRD_PARTY_BAGS

NO_MODEL = ["--model-kind", "none", "--no-video"]
CAMERA_INFO_TOPIC = "/camera/camera_info"


def _results(out: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _arrays(bag_path: Path) -> List[Any]:
    with BagReader(bag_path) as bag:
        return [bag.decode(m) for m in bag.messages([FACES_TOPIC])]


@pytest.fixture(scope="module")
def camera_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged affect.yaml with ``use_camera_info: true``."""
    text = default_config_path().read_text()
    assert "use_camera_info: false" in text
    path = tmp_path_factory.mktemp("run_bag_config") / "affect.yaml"
    path.write_text(text.replace("use_camera_info: false", "use_camera_info: true"))
    return path


@pytest.fixture(scope="module")
def afew_with_camera_info(afew_bag: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The AFEW-VA bag (real JPEG frames, 720x576, labels) plus its camera's CameraInfo, one
    just before each image, on the image topic's sibling ``/camera/camera_info``."""
    store = create_bag_typestore()
    t = store.types
    out = tmp_path_factory.mktemp("afew_camera_info") / "bag"
    width, height, f = 720, 576, 650.0
    with BagReader(afew_bag, typestore=store) as src, BagWriter(out, storage="mcap", typestore=store) as dst:
        copy_topics(src, dst, sorted(src.topics))
        dst.add_topic(CAMERA_INFO_TOPIC, CAMERA_INFO_MSGTYPE)
        for image in src.images(src.select_image_topic().name):
            info = t[CAMERA_INFO_MSGTYPE](
                header=make_header(store, image.stamp_ns, "camera"), height=height, width=width,
                distortion_model="plumb_bob", d=np.zeros(5), k=np.array([f, 0, width / 2, 0, f, height / 2, 0, 0, 1.0]),
                r=np.eye(3).reshape(-1), p=np.array([f, 0, width / 2, 0, 0, f, height / 2, 0, 0, 0, 1, 0.0]),
                binning_x=0, binning_y=0,
                roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
            )
            dst.write(CAMERA_INFO_TOPIC, image.bag_time_ns - 1000, info)
    return out


@pytest.mark.parametrize("name", sorted(THIRD_PARTY_BAGS))
def test_run_gives_one_result_and_one_array_per_image_of_a_real_bag(
    rosbags_dir: Path, tmp_path: Path, name: str
) -> None:
    storage, topic, (width, height), count = THIRD_PARTY_BAGS[name]
    assert main(["run", str(rosbags_dir / name), "--out", str(tmp_path / "out")] + NO_MODEL) == 0
    with BagReader(rosbags_dir / name) as bag:
        images = list(bag.images(topic))
    records = _results(tmp_path / "out")
    assert len(records) == len(images) == count
    assert [(r["frame"], r["name"], r["stamp_ns"]) for r in records] == [
        (im.index, f"{im.index:06d}", im.stamp_ns) for im in images
    ]
    assert all((r["width"], r["height"]) == (width, height) and r["faces"] == [] for r in records)
    arrays = _arrays(tmp_path / "out" / "bag")
    headers = [(im.msg.header.stamp, im.frame_id) for im in images]
    assert [(a.header.stamp, a.header.frame_id) for a in arrays] == headers
    with BagReader(tmp_path / "out" / "bag") as out:
        assert out.storage == storage and sorted(out.topics) == [FACES_TOPIC]  # no --copy-input: the results only
        assert [m.bag_time_ns for m in out.messages()] == [im.bag_time_ns for im in images]


def test_run_pairs_camera_info_with_the_images_and_copies_the_input(
    afew_with_camera_info: Path, camera_config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["run", str(afew_with_camera_info), "--out", str(out), "--config", str(camera_config), "--copy-input"]
    assert main(args + NO_MODEL) == 0
    with BagReader(afew_with_camera_info) as bag:
        images = list(bag.images(bag.select_image_topic().name))
        original = sorted((m.topic, m.bag_time_ns, m.data) for m in bag.messages())
    records = _results(out)
    assert len(records) == len(images) == 42  # one line per image
    assert [r["stamp_ns"] for r in records] == [im.stamp_ns for im in images]
    assert all(len(r["faces"]) == 1 for r in records)
    arrays = _arrays(out / "bag")
    assert len(arrays) == 42 and all(a.faces[0].has_direction for a in arrays)  # the viewing ray of camera_info
    ray = arrays[0].faces[0].direction
    assert abs(np.linalg.norm([ray.x, ray.y, ray.z]) - 1.0) < 1e-6 and ray.z > 0.5  # in front of the camera
    # --copy-input: every input topic, byte for byte, beside the results (labels travel for evaluate)
    with BagReader(out / "bag") as bag:
        copied = sorted((m.topic, m.bag_time_ns, m.data) for m in bag.messages() if m.topic != FACES_TOPIC)
        assert copied == original
        assert len(bag.read_annotations()) == 42


def test_run_without_use_camera_info_gives_no_rays_and_max_frames_limits_the_bag(
    afew_with_camera_info: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert main(["run", str(afew_with_camera_info), "--out", str(out), "--max-frames", "3"] + NO_MODEL) == 0
    assert [r["frame"] for r in _results(out)] == [0, 1, 2]
    arrays = _arrays(out / "bag")
    assert len(arrays) == 3 and not any(f.has_direction for a in arrays for f in a.faces)
    with BagReader(out / "bag") as bag:
        assert sorted(bag.topics) == [FACES_TOPIC]


def test_bag_options_are_refused_for_other_inputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "sample", "--out", str(tmp_path / "out"), "--copy-input"] + NO_MODEL) == 1
    assert "--copy-input and --image-topic apply to a rosbag INPUT only" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
