"""Interrupting a real ``ros2-affect replay`` / ``run`` process with SIGINT (Ctrl-C) or SIGTERM.

Before: Ctrl-C deleted the partial bag with a KeyboardInterrupt traceback, and SIGTERM left a
folder with a 0-byte .mcap, or a .db3 with its journal and no metadata.yaml. Now the process
stops between images, closes a valid bag marked partial beside the output (``OUT.partial``),
says so in one line, exits 128 + the signal number, and leaves an earlier output untouched.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest
import yaml

from ros2_affect.bags.reader import BagReader, create_bag_typestore
from ros2_affect.bags.writer import BagWriter
from ros2_affect.msgs.msg_types import FACE_AFFECT_ARRAY_MSGTYPE, FACES_TOPIC
from ros2_affect.tools.evaluate_bag import evaluate
from ros2_affect.tools.make_bag import make_bag

REPO = Path(__file__).resolve().parents[2]
REPEATS = 20  # the 42-image AFEW-VA clip 20 times: 840 images, far more than a test waits for
IMAGES = 42 * REPEATS
PERIOD_NS = 40_000_000


@pytest.fixture(scope="module")
def long_bag(afew_bag: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The AFEW-VA bag's JPEG images repeated 20 times at 25 fps (MCAP): a replay that runs long enough to
    be interrupted."""
    out = tmp_path_factory.mktemp("interrupt") / "long"
    store = create_bag_typestore()
    with BagReader(afew_bag, typestore=store) as src, BagWriter(out, storage="mcap", typestore=store) as dst:
        topic = src.select_image_topic().name
        dst.add_topic(topic, "sensor_msgs/msg/CompressedImage")
        images = [image.msg for image in src.images(topic)]
        t0 = src.reader.start_time
        for n in range(IMAGES):
            msg = images[n % len(images)]
            t = t0 + n * PERIOD_NS
            msg.header.stamp.sec, msg.header.stamp.nanosec = t // 10**9, t % 10**9
            dst.write(topic, t, msg)
    return out


def digest(folder: Path) -> Dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def progress_at_least(done: int, bar: str = "replay") -> Callable[[str], bool]:
    """True once the progress bar ``bar`` on stderr shows ``done`` items."""
    pattern = re.compile(rf"{bar}: .*?\| *(\d+)/")
    return lambda stderr: any(int(n) >= done for n in pattern.findall(stderr))


def interrupt(argv: List[str], signum: int, ready: Callable[[str], bool]) -> Tuple[int, str]:
    """Start ``ros2-affect ARGV``, wait until ``ready(stderr so far)``, send ``signum``; returns the
    exit code and stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from ros2_affect.tools.cli import main; sys.exit(main())", *argv],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    chunks: List[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stderr.read1(4096), b"")))  # type: ignore
    reader.start()
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if ready(b"".join(chunks).decode(errors="replace")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the process ended before it could be interrupted"
        proc.send_signal(signum)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(timeout=10)
    return code, b"".join(chunks).decode(errors="replace")


def last_line(stderr: str) -> str:
    """The last stderr line that is not a progress bar update, which must be the command's own line."""
    lines = [line for line in re.split(r"[\r\n]", stderr) if line.strip() and "%|" not in line]
    assert lines and lines[-1].startswith("ros2-affect "), stderr[-2000:]
    return lines[-1]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_an_interrupted_replay_keeps_a_readable_partial_bag(
    long_bag: Path, afew_bag: Path, tmp_path: Path, signame: str, storage: str
) -> None:
    from rosbags.rosbag2 import Reader

    from ros2_affect.tools.replay import replay
    from tests.bags.helpers import pipeline_config

    out = tmp_path / "out"
    replay(afew_bag, out, config=pipeline_config(None), storage=storage)  # an earlier output, 42 arrays
    before = digest(out)
    signum = getattr(signal, signame)
    code, stderr = interrupt(
        ["replay", str(long_bag), "--out", str(out), "--overwrite", "--storage", storage, "--set", "model.kind=none"],
        signum,
        progress_at_least(3),
    )
    assert code == 128 + signum
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    line = last_line(stderr)
    match = re.fullmatch(
        rf"ros2-affect replay: stopped by {signame} after (\d+) of {IMAGES} images: the partial bag "
        rf"'{re.escape(str(out))}.partial' holds (\d+) FaceAffectArray on {FACES_TOPIC} and is marked partial in its "
        rf"metadata.yaml \(custom_data ros2_affect.partial: 'true'\); '{re.escape(str(out))}' was left as it was",
        line,
    )
    assert match, line
    images, arrays = int(match.group(1)), int(match.group(2))
    assert 3 <= images < IMAGES and arrays == images
    assert digest(out) == before  # the earlier output is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.partial"]  # no staging folder left
    partial = tmp_path / "out.partial"
    suffix = "mcap" if storage == "mcap" else "db3"
    assert sorted(p.name for p in partial.iterdir()) == ["metadata.yaml", f"out.{suffix}"]  # no journal left
    meta = yaml.safe_load((partial / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == storage
    assert meta["custom_data"] == {
        "ros2_affect.tool": "replay",
        "ros2_affect.partial": "true",
        "ros2_affect.stopped_by": signame,
        "ros2_affect.images": f"{images} of {IMAGES}",
    }
    # rosbags alone opens it: every message decodes, in order, one per image replayed, at the images' stamps
    store = create_bag_typestore()
    with Reader(partial) as reader:
        assert reader.message_count == arrays
        (conn,) = reader.connections
        assert (conn.topic, conn.msgtype) == (FACES_TOPIC, FACE_AFFECT_ARRAY_MSGTYPE)
        stamps = []
        for _, bag_time, raw in reader.messages():
            msg = store.deserialize_cdr(raw, FACE_AFFECT_ARRAY_MSGTYPE)
            assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == bag_time
            stamps.append(bag_time)
    with BagReader(long_bag) as bag:
        first = bag.reader.start_time
    assert stamps == [first + n * PERIOD_NS for n in range(arrays)]
    # evaluate says the scores cover only part of the recording
    labels = tmp_path / "labels.csv"
    labels.write_text("stamp_ns,valence\n" + "".join(f"{t},0.1\n" for t in stamps))
    metrics = evaluate(partial, labels=labels).metrics
    assert metrics["frames"]["annotated"] == arrays and metrics["partial_bag"] == (
        f"'{partial}' is a partial bag (its replay was stopped by {signame} after {images} of {IMAGES} images): "
        "the scores cover only that part"
    )


def test_an_interrupted_run_keeps_its_partial_output_beside_the_previous_one(long_bag: Path, tmp_path: Path) -> None:
    from ros2_affect.tools.cli import main

    out = tmp_path / "out"
    args = ["run", str(long_bag), "--out", str(out), "--model-kind", "none", "--no-video"]
    assert main(args + ["--max-frames", "2"]) == 0
    before = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, stderr = interrupt(
        args + ["--overwrite"],
        signal.SIGINT,
        # run shows no progress bar on a pipe: wait for its first results (written in 8 kB blocks)
        lambda _: any(p.stat().st_size > 0 for p in tmp_path.glob("out.incomplete-*/out/results.jsonl")),
    )
    assert code == 130 and "Traceback" not in stderr
    line = last_line(stderr)
    match = re.fullmatch(
        rf"ros2-affect run: stopped by SIGINT after (\d+) frames of '{re.escape(str(long_bag))}': the partial output "
        rf"is in '{re.escape(str(out))}.partial'; '{re.escape(str(out))}' was left as it was",
        line,
    )
    assert match, line
    frames = int(match.group(1))
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    partial = tmp_path / "out.partial"
    assert sorted(p.name for p in partial.iterdir()) == ["bag", "results.jsonl"]
    assert len((partial / "results.jsonl").read_text().splitlines()) == frames
    with BagReader(partial / "bag") as bag:
        assert bag.topics[FACES_TOPIC].count == frames
    meta = yaml.safe_load((partial / "bag" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["custom_data"]["ros2_affect.partial"] == "true"


def test_an_interrupted_make_bag_keeps_the_previous_bag_and_nothing_new(
    afew_clip_dir: Path, tmp_path: Path
) -> None:
    """make-bag has no partial output: SIGTERM unwinds like Ctrl-C, removes the unfinished bag, one line."""
    frames = tmp_path / "frames"
    frames.mkdir()
    pngs = sorted(afew_clip_dir.glob("*.png"))
    for n in range(10 * len(pngs)):  # 420 real frames (links to the clip's PNGs)
        (frames / f"{n:05d}.png").symlink_to(pngs[n % len(pngs)])
    out = tmp_path / "bag"
    make_bag(afew_clip_dir, out)
    before = digest(out)
    code, stderr = interrupt(
        ["make-bag", str(frames), "--out", str(out), "--overwrite", "--compressed", "png"],
        signal.SIGTERM,
        progress_at_least(3, "make-bag"),
    )
    assert code == 143 and "Traceback" not in stderr
    assert last_line(stderr) == "ros2-affect make-bag: interrupted by SIGTERM before finishing"
    assert digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag", "frames"]  # no unfinished bag beside it
