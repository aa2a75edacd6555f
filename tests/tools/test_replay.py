"""ros2-affect replay on the AFEW-VA clip (with a real ONNX contract model) and on third-party bags."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Tuple

import numpy as np
import pytest
import yaml

from ros2_affect.bags.reader import BagReader, create_bag_typestore
from ros2_affect.bags.writer import BagWriter, copy_topics, storage_file
from ros2_affect.errors import BagError
from ros2_affect.msgs.msg_types import FACES_TOPIC
from ros2_affect.tools.cli import main
from ros2_affect.tools.replay import replay
from tests.bags.helpers import MODEL_ID, THIRD_PARTY_BAGS, pipeline_config


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("replay")


@pytest.fixture(scope="module")
def afew_out(afew_bag: Path, frame_model: Path, work: Path) -> Path:
    replay(afew_bag, work / "afew_out", config=pipeline_config(frame_model), latency="zero")
    return work / "afew_out"


def _messages(path: Path, topic: str = FACES_TOPIC) -> List[Tuple[int, bytes]]:
    with BagReader(path) as bag:
        return [(m.bag_time_ns, m.data) for m in bag.messages([topic])]


def _decoded(path: Path, topic: str = FACES_TOPIC) -> List[Any]:
    with BagReader(path) as bag:
        return [bag.decode(m) for m in bag.messages([topic])]


def test_afew_replay_tracks_one_face_with_model_output_at_the_image_stamps(afew_bag: Path, afew_out: Path) -> None:
    with BagReader(afew_bag) as bag:
        images = list(bag.images(bag.select_image_topic().name))
    arrays = _decoded(afew_out)
    assert len(arrays) == len(images) == 42
    with BagReader(afew_out) as out:
        assert out.storage == "mcap"  # the input's storage by default
        assert [m.bag_time_ns for m in out.messages([FACES_TOPIC])] == [im.bag_time_ns for im in images]
    track_ids = set()
    for image, array in zip(images, arrays, strict=True):
        assert array.header.stamp == image.msg.header.stamp and array.header.frame_id == "camera"
        assert array.processing_latency_ms == 0.0  # --latency zero
        (face,) = array.faces
        track_ids.add(face.track_id)
        assert face.has_affect and face.model_id == MODEL_ID and not face.va_derived
        assert list(face.class_names) == ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger"]
        assert abs(float(np.sum(face.probabilities)) - 1.0) < 1e-5
        assert face.expression == face.class_names[int(np.argmax(face.probabilities))]
        assert -1.0 <= face.valence <= 1.0 and -1.0 <= face.arousal <= 1.0
        # the face is where the AFEW landmarks say it is (its box holds both eyes)
        x1, y1, x2, y2 = face.bbox_xyxy_px
        assert x1 < face.right_eye_px[0] < face.left_eye_px[0] < x2 and y1 < face.right_eye_px[1] < y2
    assert len(track_ids) == 1  # one person, one id for the whole clip
    # recorded with the QoS the node offers (reliable, volatile, keep last 10), for `ros2 bag play`
    meta = yaml.safe_load((afew_out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    (faces,) = [t for t in meta["topics_with_message_count"] if t["topic_metadata"]["name"] == FACES_TOPIC]
    assert faces["topic_metadata"]["type"] == "affect_msgs/msg/FaceAffectArray" and faces["message_count"] == 42
    (qos,) = yaml.safe_load(faces["topic_metadata"]["offered_qos_profiles"])
    assert (qos["history"], qos["depth"], qos["reliability"], qos["durability"]) == (1, 10, 1, 2)
    assert not arrays[0].faces[0].track_confirmed and arrays[1].faces[0].track_confirmed  # min_hits 2
    assert len({round(float(a.faces[0].valence), 6) for a in arrays}) > 1  # the model sees each crop


def test_mcap_output_decodes_with_an_independent_reader(afew_out: Path) -> None:
    """Foxglove's mcap_ros2 decoder reads the schema embedded in the file: same values as rosbags."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    ours = _decoded(afew_out)
    with open(storage_file(afew_out), "rb") as f:
        theirs = [
            (schema, msg)
            for schema, channel, _, msg in make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages()
            if channel.topic == FACES_TOPIC
        ]
    assert len(theirs) == len(ours) == 42
    assert theirs[0][0].name == "affect_msgs/msg/FaceAffectArray" and theirs[0][0].encoding == "ros2msg"
    for a, (_, b) in zip(ours, theirs, strict=True):
        assert (b.header.stamp.sec, b.header.stamp.nanosec) == (a.header.stamp.sec, a.header.stamp.nanosec)
        assert b.faces_dropped == a.faces_dropped and len(b.faces) == len(a.faces) == 1
        fa, fb = a.faces[0], b.faces[0]
        assert (fb.track_id, fb.track_confirmed, fb.expression, fb.model_id) == (
            fa.track_id,
            fa.track_confirmed,
            fa.expression,
            fa.model_id,
        )
        assert list(fb.class_names) == list(fa.class_names)
        np.testing.assert_array_equal(np.asarray(fb.bbox_xyxy_px, np.float32), fa.bbox_xyxy_px)
        np.testing.assert_array_equal(np.asarray(fb.probabilities, np.float32), fa.probabilities)
        assert (np.float32(fb.valence), np.float32(fb.arousal)) == (np.float32(fa.valence), np.float32(fa.arousal))
        assert (fb.direction.x, fb.has_direction) == (0.0, False)


def test_replay_is_deterministic(afew_bag: Path, afew_out: Path, frame_model: Path, tmp_path: Path) -> None:
    replay(afew_bag, tmp_path / "again", config=pipeline_config(frame_model), latency="zero", storage="sqlite3")
    assert _messages(tmp_path / "again") == _messages(afew_out)  # same bytes, same bag times, other storage
    # measured latency: only processing_latency_ms may differ
    replay(afew_bag, tmp_path / "measured", config=pipeline_config(frame_model))
    measured = _decoded(tmp_path / "measured")
    assert all(a.processing_latency_ms > 0 for a in measured)
    store = create_bag_typestore()
    for a, (_, data) in zip(measured, _messages(afew_out), strict=True):
        a.processing_latency_ms = 0.0
        assert bytes(store.serialize_cdr(a, "affect_msgs/msg/FaceAffectArray")) == data


@pytest.mark.parametrize("name", sorted(THIRD_PARTY_BAGS))
def test_third_party_bags_give_one_empty_array_per_image(
    rosbags_dir: Path, frame_model: Path, tmp_path: Path, name: str
) -> None:
    storage, topic, _, count = THIRD_PARTY_BAGS[name]
    result = replay(rosbags_dir / name, tmp_path / "out", config=pipeline_config(frame_model))
    assert (result.images, result.arrays, result.faces, result.skipped) == (count, count, 0, [])
    assert result.image_topic == topic and result.compressed
    with BagReader(rosbags_dir / name) as bag:
        headers = [im.msg.header for im in bag.images(topic)]
    arrays = _decoded(tmp_path / "out")
    assert [(a.header.stamp, a.header.frame_id) for a in arrays] == [(h.stamp, h.frame_id) for h in headers]
    assert all(len(a.faces) == 0 and a.faces_dropped == 0 for a in arrays)
    with BagReader(tmp_path / "out") as out:
        assert out.storage == storage


def test_copy_input_carries_images_labels_and_camera_info(rosbags_dir: Path, afew_bag: Path, tmp_path: Path) -> None:
    result = replay(
        rosbags_dir / "ros2_aruco_images_sqlite3", tmp_path / "aruco", config=pipeline_config(None), copy_input=True
    )
    assert result.copied == {"/raspicam_node/camera_info": 15, "/raspicam_node/image/compressed": 1}
    with BagReader(rosbags_dir / "ros2_aruco_images_sqlite3") as a, BagReader(tmp_path / "aruco") as b:
        original = sorted((m.topic, m.bag_time_ns, m.data) for m in a.messages())
        copied = sorted((m.topic, m.bag_time_ns, m.data) for m in b.messages() if m.topic != FACES_TOPIC)
        assert copied == original
        assert b.topics[FACES_TOPIC].count == 1
    replay(afew_bag, tmp_path / "afew", config=pipeline_config(None), copy_input=True)
    with BagReader(tmp_path / "afew") as out:
        assert len(out.read_annotations()) == 42  # the labels travel with the output


def _bag_with_bad_images(afew_bag: Path, path: Path) -> None:
    """The AFEW bag with image 3 cut short (a truncated JPEG) and image 5 without a header stamp."""
    store = create_bag_typestore()
    with BagReader(afew_bag, typestore=store) as src, BagWriter(path, typestore=store) as dst:
        topic = src.select_image_topic().name
        dst.add_topic(topic, "sensor_msgs/msg/CompressedImage")
        for image in src.images(topic):
            msg = image.msg
            if image.index == 3:
                msg.data = msg.data[: len(msg.data) // 2]
            if image.index == 5:
                msg.header.stamp.sec, msg.header.stamp.nanosec = 0, 0
            dst.write(topic, image.bag_time_ns, msg)


def test_bad_images_are_skipped_and_zero_stamps_fall_back_to_bag_time(
    afew_bag: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _bag_with_bad_images(afew_bag, tmp_path / "bad")
    result = replay(tmp_path / "bad", tmp_path / "out", config=pipeline_config(None))
    assert (result.images, result.arrays, result.stamps_from_bag_time) == (42, 41, 1)
    assert len(result.skipped) == 1 and result.skipped[0].startswith("3: CompressedImage JPEG")
    assert "skipping image 3 of /camera/image_raw/compressed" in caplog.text
    assert "1 of 42 images had a zero header stamp; their bag receive time was used" in caplog.text
    with BagReader(tmp_path / "bad") as bag:
        times = [m.bag_time_ns for m in bag.messages()]
    stamps = [a.header.stamp.sec * 10**9 + a.header.stamp.nanosec for a in _decoded(tmp_path / "out")]
    assert stamps == times[:3] + times[4:]  # 5's stamp is its bag time (make-bag writes them equal)
    assert all(a.faces for a in _decoded(tmp_path / "out"))


def test_topic_errors_list_what_the_bag_has(rosbags_dir: Path, afew_bag: Path, tmp_path: Path) -> None:
    config = pipeline_config(None)
    with pytest.raises(
        BagError,
        match=r"has no topic '/camera/color'; topics present: /affect_annotations "
        r"\(affect_msgs/msg/AffectAnnotation, 42 msgs\), /camera/image_raw/compressed "
        r"\(sensor_msgs/msg/CompressedImage, 42 msgs\)",
    ):
        replay(afew_bag, tmp_path / "x", image_topic="/camera/color", config=config)
    two = tmp_path / "two_cameras"
    with BagReader(afew_bag) as a, BagReader(rosbags_dir / "ros2_aruco_marker_sqlite3") as b, BagWriter(two) as w:
        copy_topics(a, w, ["/camera/image_raw/compressed"])
        copy_topics(b, w, ["/raspicam_node/image/compressed"])
    with pytest.raises(
        BagError,
        match=r"has 2 image topics: /camera/image_raw/compressed "
        r"\(sensor_msgs/msg/CompressedImage\), /raspicam_node/image/compressed "
        r"\(sensor_msgs/msg/CompressedImage\); choose one with --image-topic",
    ):
        replay(two, tmp_path / "x", config=config)
    result = replay(two, tmp_path / "x", image_topic="/raspicam_node/image/compressed", config=config, copy_input=True)
    assert result.arrays == 1
    # replaying an output again would write a second stream on the same topic
    with pytest.raises(BagError, match=r"already has '/affect_node/faces'.*Replay the original recording"):
        replay(tmp_path / "x", tmp_path / "y", image_topic="/raspicam_node/image/compressed", config=config)
    assert not (tmp_path / "y").exists()


def test_cli_replays_and_reports_errors(rosbags_dir: Path, frame_model: Path, tmp_path: Path, capsys: Any) -> None:
    src = rosbags_dir / "ros2_aruco_images_mcap"
    args = ["replay", str(src), "--out", str(tmp_path / "out"), "--set", "model.kind=frame"]
    assert main(args + ["--set", f"model.frame_model={frame_model}", "--storage", "sqlite3"]) == 0
    assert "wrote" in capsys.readouterr().out
    with BagReader(tmp_path / "out") as out:
        assert out.storage == "sqlite3" and out.topics[FACES_TOPIC].count == 1
    assert main(["replay", str(tmp_path / "nothing"), "--out", str(tmp_path / "o2"), "--set", "model.kind=none"]) == 1
    assert "does not exist; pass a bag folder or a .db3/.mcap file" in capsys.readouterr().err
    assert main(["replay", str(src), "--out", str(tmp_path / "o3"), "--set", "model.kind=nne"]) == 1
    assert "model.kind = 'nne' is not accepted; choose one of temporal, frame, none (did you mean 'none'?)" in (
        capsys.readouterr().err
    )
    assert main(["replay", str(src), "--out", str(tmp_path / "o4"), "--set", "model.kind"]) == 1
    assert "--set 'model.kind' is not KEY=VALUE" in capsys.readouterr().err


def test_corrupt_input_is_a_bag_error_naming_the_file(rosbags_dir: Path, tmp_path: Path, capsys: Any) -> None:
    import shutil

    bag = tmp_path / "broken"
    shutil.copytree(rosbags_dir / "ros2_aruco_images_mcap", bag)
    f = storage_file(bag)
    f.chmod(0o644)
    f.write_bytes(f.read_bytes()[:1000])
    assert main(["replay", str(bag), "--out", str(tmp_path / "out"), "--set", "model.kind=none"]) == 1
    err = capsys.readouterr().err
    assert f"bag '{bag}': cannot open it: File end magic is invalid" in err and "corrupt or truncated" in err
    assert not (tmp_path / "out").exists()
