"""BagWriter: embedded message definitions read back by independent readers, verbatim copies, safety."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml

from ros2_affect.bags.labels import ANNOTATION_MSGTYPE, Annotation
from ros2_affect.bags.reader import BagReader, create_bag_typestore
from ros2_affect.bags.writer import BagWriter, annotation_msg, copy_topics, storage_file
from ros2_affect.errors import BagError, OutputError

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


def _annotations_in(path: Path) -> list:
    with BagReader(path) as bag:
        return [(m.bag_time_ns, m.data) for m in bag.messages()]


def _entries(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir())


def test_existing_outputs_are_never_clobbered_by_accident(tmp_path: Path) -> None:
    _write_annotations(tmp_path / "bag", "sqlite3")
    before = _annotations_in(tmp_path / "bag")
    assert len(before) == 3
    with pytest.raises(OutputError, match="already exists; remove it, choose another path or pass --overwrite"):
        BagWriter(tmp_path / "bag")
    replacement = BagWriter(tmp_path / "bag", overwrite=True)  # a bag this tool wrote may be replaced...
    with replacement:
        assert _annotations_in(tmp_path / "bag") == before  # ...only once the new one is complete
    with BagReader(tmp_path / "bag") as bag:
        assert bag.topics == {}
    assert _entries(tmp_path) == ["bag"]  # nothing left beside it
    with pytest.raises(BagError, match="storage 'rosbag1' is not supported; choose one of sqlite3, mcap"):
        BagWriter(tmp_path / "x", storage="rosbag1")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"--out '.*file' is an existing file, not a folder"):
        BagWriter(tmp_path / "file", overwrite=True)


def test_overwrite_refuses_a_folder_holding_a_users_files_or_a_bag_it_did_not_write(
    rosbags_dir: Path, tmp_path: Path
) -> None:
    """Before: any *.yaml beside a bag was taken for part of it and deleted, and so was any bag folder."""
    _write_annotations(tmp_path / "bag", "mcap")
    (tmp_path / "bag" / "calibration.yaml").write_text("camera_matrix: [1, 0, 0]\n")
    with pytest.raises(
        OutputError,
        match=r"--out '.*bag' is not ros2-affect output \(it holds calibration.yaml beside the bag's own files\); "
        r"refusing to replace it with --overwrite",
    ):
        BagWriter(tmp_path / "bag", overwrite=True)
    assert _entries(tmp_path / "bag") == ["bag.mcap", "calibration.yaml", "metadata.yaml"]
    # a real recording that ros2-affect did not write (no ros2_affect.tool in its metadata)
    recording = tmp_path / "recording"
    shutil.copytree(rosbags_dir / "ros2_aruco_images_sqlite3", recording)
    with pytest.raises(OutputError, match=r"it is a bag that ros2-affect did not write \(no ros2_affect.tool"):
        BagWriter(recording, overwrite=True)
    # an unfinished recording (no metadata.yaml, as `ros2 bag record` killed leaves it)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(storage_file(recording), unfinished / "rec_0.db3")
    with pytest.raises(OutputError, match=r"it has no metadata.yaml beside rec_0.db3 \(an unfinished recording\?\)"):
        BagWriter(unfinished, overwrite=True)
    assert _entries(unfinished) == ["rec_0.db3"]
    # an empty folder is no output to lose: written into without --overwrite
    (tmp_path / "empty").mkdir()
    _write_annotations(tmp_path / "empty", "sqlite3")
    assert len(_annotations_in(tmp_path / "empty")) == 3


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_an_aborted_bag_leaves_the_previous_one_and_a_partial_one_is_readable_and_marked(
    tmp_path: Path, storage: str
) -> None:
    from rosbags.rosbag2 import Reader

    store = create_bag_typestore()
    _write_annotations(tmp_path / "out", storage)
    before = _annotations_in(tmp_path / "out")
    with pytest.raises(RuntimeError, match="failed half way"):
        with BagWriter(tmp_path / "out", storage=storage, typestore=store, overwrite=True) as bag:
            bag.add_topic("/affect_annotations", ANNOTATION_MSGTYPE)
            bag.write("/affect_annotations", T0, annotation_msg(store, ANNOTATIONS[0], T0, "camera"))
            raise RuntimeError("failed half way")
    assert _annotations_in(tmp_path / "out") == before and _entries(tmp_path) == ["out"]
    for expected in ("out.partial", "out.partial-2"):
        writer = BagWriter(tmp_path / "out", storage=storage, typestore=store, overwrite=True, tool="replay").open()
        writer.add_topic("/affect_annotations", ANNOTATION_MSGTYPE)
        for i in range(2):
            writer.write("/affect_annotations", T0 + i, annotation_msg(store, ANNOTATIONS[i], T0 + i, "camera"))
        kept = writer.close_partial({"ros2_affect.stopped_by": "SIGINT"})
        assert kept == tmp_path / expected
        with Reader(kept) as reader:  # rosbags alone: a valid bag with both messages, marked partial
            assert reader.message_count == 2
            meta = yaml.safe_load((kept / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
            assert meta["custom_data"] == {
                "ros2_affect.tool": "replay",
                "ros2_affect.partial": "true",
                "ros2_affect.stopped_by": "SIGINT",
            }
            assert [store.deserialize_cdr(raw, c.msgtype).frame_index for c, _, raw in reader.messages()] == [0, 1]
    assert _annotations_in(tmp_path / "out") == before  # the target is never replaced by a partial bag
    assert _entries(tmp_path) == ["out", "out.partial", "out.partial-2"]


def test_a_failed_write_leaves_no_partial_bag(tmp_path: Path) -> None:
    store = create_bag_typestore()
    with pytest.raises(BagError, match=r"cannot write not_a/msg/Type on '/x': the type is unknown"):
        with BagWriter(tmp_path / "bag", typestore=store) as bag:
            bag.add_topic("/ok", ANNOTATION_MSGTYPE)
            bag.add_topic("/x", "not_a/msg/Type")
    assert not (tmp_path / "bag").exists() and _entries(tmp_path) == []  # no staging folder left either
    with BagWriter(tmp_path / "bag2", typestore=store) as bag:
        with pytest.raises(BagError, match=r"topic '/y' was not added"):
            bag.write_raw("/y", 0, b"")
