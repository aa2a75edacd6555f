"""BagWriter: embedded message definitions read back by independent readers, verbatim copies, safety."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml

from ros2_affect.bags.labels import ANNOTATION_MSGTYPE, Annotation
from ros2_affect.bags.reader import BagReader, create_bag_typestore
from ros2_affect.bags.writer import BagWriter, annotation_msg, copy_topics, storage_file
from ros2_affect.errors import BagError

ANNOTATIONS = [
    Annotation(frame_index=0, expression="happy", valence=0.5, arousal=-0.25),
    Annotation(frame_index=1, face_id="f3k9a", arousal=0.75),
    Annotation(frame_index=2, expression="contempt"),
]
T0 = 1_700_000_000_000_000_000


def _write_annotations(path: Path, storage: str) -> None:
    store = create_bag_typestore()
    with BagWriter(path, storage=storage, typestore=store) as bag:
        bag.add_topic("/affect_annotations", ANNOTATION_MSGTYPE)
        for i, ann in enumerate(ANNOTATIONS):
            stamp = T0 + i * 40_000_000
            bag.write("/affect_annotations", stamp, annotation_msg(store, ann, stamp, "camera", "test"))


def test_mcap_schema_decodes_with_the_independent_mcap_ros2_reader(tmp_path: Path) -> None:
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    _write_annotations(tmp_path / "bag", "mcap")
    with open(storage_file(tmp_path / "bag"), "rb") as f:
        decoded = list(make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages())
    assert len(decoded) == 3
    schema, channel, message, msg = decoded[1]
    assert (schema.name, schema.encoding, channel.message_encoding) == (ANNOTATION_MSGTYPE, "ros2msg", "cdr")
    assert "MSG: std_msgs/Header" in schema.data.decode()  # dependencies embedded, not just the top level
    assert message.log_time == T0 + 40_000_000
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (
        1_700_000_000,
        40_000_000,
        "camera",
    )
    assert (msg.frame_index, msg.face_id, msg.has_expression, msg.has_valence, msg.has_arousal) == (
        1,
        "f3k9a",
        False,
        False,
        True,
    )
    assert msg.arousal == 0.75 and msg.source == "test"
    assert decoded[2][3].expression == "contempt"


def test_sqlite3_bag_stores_definitions_and_hashes(tmp_path: Path) -> None:
    _write_annotations(tmp_path / "bag", "sqlite3")
    meta = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 8 and meta["storage_identifier"] == "sqlite3" and meta["message_count"] == 3
    (topic,) = meta["topics_with_message_count"]
    store = create_bag_typestore()
    assert topic["topic_metadata"]["type_description_hash"] == store.hash_rihs01(ANNOTATION_MSGTYPE)
    # read the database with Python's own sqlite3: the definition rosbag2 (>= Jazzy) looks for
    with sqlite3.connect(storage_file(tmp_path / "bag")) as db:
        (encoding, text) = db.execute(
            "SELECT encoding, encoded_message_definition FROM message_definitions WHERE topic_type = ?",
            (ANNOTATION_MSGTYPE,),
        ).fetchone()
        rows = db.execute("SELECT timestamp FROM messages ORDER BY timestamp").fetchall()
    assert encoding == "ros2msg" and text.startswith("std_msgs/Header header") and "bool has_valence" in text
    assert [r[0] for r in rows] == [T0, T0 + 40_000_000, T0 + 80_000_000]
    with BagReader(tmp_path / "bag") as bag:
        anns = bag.read_annotations().annotations
    assert [(a.frame_index, a.face_id, a.expression, a.valence, a.arousal) for a in anns] == [
        (0, "", "happy", 0.5, -0.25),
        (1, "f3k9a", None, None, 0.75),
        (2, "", "contempt", None, None),
    ]


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_copy_topics_is_verbatim(rosbags_dir: Path, tmp_path: Path, storage: str) -> None:
    src = rosbags_dir / "ros2_aruco_images_mcap"
    with BagReader(src) as reader, BagWriter(tmp_path / "copy", storage=storage) as writer:
        counts = copy_topics(reader, writer, ["/raspicam_node/image/compressed", "/raspicam_node/camera_info"])
    assert counts == {"/raspicam_node/image/compressed": 1, "/raspicam_node/camera_info": 15}
    with BagReader(src) as a, BagReader(tmp_path / "copy") as b:
        original = [(m.topic, m.bag_time_ns, m.data) for m in a.messages()]
        copied = [(m.topic, m.bag_time_ns, m.data) for m in b.messages()]
        assert b.topics["/raspicam_node/camera_info"].has_definition
    assert sorted(copied) == sorted(original)


def test_existing_outputs_are_never_clobbered_by_accident(tmp_path: Path) -> None:
    _write_annotations(tmp_path / "bag", "sqlite3")
    with pytest.raises(BagError, match="already exists; remove it, choose another path or pass --overwrite"):
        BagWriter(tmp_path / "bag")
    replacement = BagWriter(tmp_path / "bag", overwrite=True)  # a bag folder may be replaced...
    assert (tmp_path / "bag" / "metadata.yaml").exists()  # (only once the new one is opened)
    with replacement:
        pass
    with BagReader(tmp_path / "bag") as bag:
        assert bag.topics == {}
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "metadata.yaml").write_text("x")
    (precious / "thesis.tex").write_text("x")
    with pytest.raises(BagError, match="exists and is not a bag folder; refusing to delete it"):
        BagWriter(precious, overwrite=True)  # ...anything else is left alone
    assert (precious / "thesis.tex").exists()
    with pytest.raises(BagError, match="storage 'rosbag1' is not supported; choose one of sqlite3, mcap"):
        BagWriter(tmp_path / "x", storage="rosbag1")


def test_a_failed_write_leaves_no_partial_bag(tmp_path: Path) -> None:
    store = create_bag_typestore()
    with pytest.raises(BagError, match=r"cannot write not_a/msg/Type on '/x': the type is unknown"):
        with BagWriter(tmp_path / "bag", typestore=store) as bag:
            bag.add_topic("/ok", ANNOTATION_MSGTYPE)
            bag.add_topic("/x", "not_a/msg/Type")
    assert not (tmp_path / "bag").exists()
    with BagWriter(tmp_path / "bag2", typestore=store) as bag:
        with pytest.raises(BagError, match=r"topic '/y' was not added"):
            bag.write_raw("/y", 0, b"")
