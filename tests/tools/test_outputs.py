"""No ros2-affect command loses data: outputs never overlap inputs, a failed run leaves the
previous output as it was, ``--overwrite`` replaces only what the tool wrote, and every
output name is distinct. Each case is a real command on a real input (the AFEW-VA clip and
the bags made from it, real photos) that destroyed data before."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

from ros2_affect.assets import default_config_path
from ros2_affect.bags.reader import BagReader
from ros2_affect.msgs.msg_types import FACES_TOPIC
from ros2_affect.tools.cli import main
from ros2_affect.tools.make_bag import make_bag
from tests.tools.test_bad_inputs import failing_frame_graph, fails

NO_MODEL = ["--model-kind", "none"]


def digest(path: Path) -> Dict[str, str]:
    """Every file under ``path`` (or the file itself) -> SHA-256 of its bytes."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def entries(folder: Path) -> List[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture()
def rec(afew_bag: Path, tmp_path: Path) -> Path:
    """A recording folder holding the AFEW-VA bag (MCAP, JPEG images + labels) as rec/bag."""
    shutil.copytree(afew_bag, tmp_path / "rec" / "bag")
    return tmp_path / "rec"


@pytest.fixture()
def failing_config(tmp_path: Path) -> Path:
    """The packaged parameter file with a frame model that loads but fails inside onnxruntime
    on the first face: a run that stops with an error after it has started writing."""
    data = yaml.safe_load(default_config_path().read_text())
    (node,) = data.values()  # the one node entry (affect_node, or /** for any node name)
    model = node["ros__parameters"]["model"]
    model["frame_model"], model["kind"] = str(failing_frame_graph(tmp_path / "broken.onnx")), "frame"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# -- an output that is, holds or lies inside an input is refused -----------------------------------


def test_run_refuses_an_out_folder_holding_its_input_bag(rec: Path, capsys: pytest.CaptureFixture) -> None:
    """Before: `run rec/bag --out rec` deleted the input bag and wrote its output in its place, exit 0."""
    before = digest(rec)
    fails(["run", str(rec / "bag"), "--out", str(rec)] + NO_MODEL, capsys,
          r"run: error: --out '.*rec' holds the input '.*rec/bag'; writing there would destroy it")
    fails(["run", str(rec / "bag"), "--out", str(rec / "bag" / "out")] + NO_MODEL, capsys,
          r"run: error: --out '.*rec/bag/out' is inside the input '.*rec/bag'")
    assert digest(rec) == before


def test_run_refuses_to_write_over_the_video_it_reads(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Before: `run DIR/annotated.mp4 --out DIR` overwrote its own input while reading it (60 frames became 4)."""
    out = tmp_path / "demo"
    assert main(["run", "sample", "--out", str(out), "--max-frames", "6"] + NO_MODEL) == 0
    capsys.readouterr()
    before = digest(out)
    fails(["run", str(out / "annotated.mp4"), "--out", str(out), "--overwrite"] + NO_MODEL, capsys,
          r"run: error: --out '.*demo' holds the input '.*demo/annotated.mp4'")
    assert digest(out) == before


def test_replay_refuses_its_input_as_output(rec: Path, capsys: pytest.CaptureFixture) -> None:
    """Before: `replay IN --out IN --overwrite` replaced the input (a 52 MB bag became 49 KB), exit 0."""
    before = digest(rec / "bag")
    fails(["replay", str(rec / "bag"), "--out", str(rec / "bag"), "--overwrite", "--set", "model.kind=none"], capsys,
          r"replay: error: --out '.*rec/bag' is the input '.*rec/bag'; writing there would destroy it")
    fails(["replay", str(rec / "bag" / "bag.mcap"), "--out", str(rec / "bag"), "--overwrite",
           "--set", "model.kind=none"], capsys, r"replay: error: --out '.*rec/bag' holds the input")
    (rec / "link").symlink_to(rec / "bag")  # the same folder by another name
    fails(["replay", str(rec / "link"), "--out", str(rec / "bag"), "--overwrite", "--set", "model.kind=none"],
          capsys, r"replay: error: --out '.*rec/bag' is the input '.*rec/link'")
    assert digest(rec / "bag") == before


def test_make_bag_and_evaluate_refuse_outputs_overlapping_their_inputs(
    afew_clip_dir: Path, rec: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for png in sorted(afew_clip_dir.glob("*.png"))[:3]:
        shutil.copy(png, frames / png.name)
    labels = tmp_path / "labels" / "labels.csv"
    labels.parent.mkdir()
    labels.write_text("frame,expression\n0,happy\n")
    fails(["make-bag", str(frames), "--out", str(frames / "bag")], capsys,
          r"make-bag: error: --out '.*frames/bag' is inside the input '.*frames'")
    fails(["make-bag", str(frames), "--labels", str(labels), "--out", str(labels.parent), "--overwrite"], capsys,
          r"make-bag: error: --out '.*labels' holds the input '.*labels.csv'")
    fails(["evaluate", str(rec / "bag"), "--out", str(rec / "bag"), "--overwrite"], capsys,
          r"evaluate: error: --out '.*rec/bag' is the input '.*rec/bag'")
    fails(["evaluate", str(rec / "bag"), "--labels", str(labels), "--out", str(labels.parent), "--overwrite"], capsys,
          r"evaluate: error: --out '.*labels' holds the input '.*labels.csv'")
    assert entries(frames) == ["00000.png", "00001.png", "00002.png"] and entries(labels.parent) == ["labels.csv"]


# -- a failed run leaves the previous output as it was ----------------------------------------------


def test_a_failing_run_keeps_the_previous_results(
    tmp_path: Path, failing_config: Path, capsys: pytest.CaptureFixture
) -> None:
    """Before: run emptied results.jsonl before the first frame; a failure left neither old nor new output."""
    out = tmp_path / "out"
    assert main(["run", "sample", "--out", str(out), "--max-frames", "5"] + NO_MODEL) == 0
    capsys.readouterr()
    before = digest(out)
    assert len((out / "results.jsonl").read_text().splitlines()) == 5
    # the model fails inside onnxruntime on the first face, after the run has started
    fails(["run", "sample", "--out", str(out), "--overwrite", "--config", str(failing_config)], capsys,
          r"run: error: .*broken.onnx: onnxruntime failed running this frame graph")
    # no readable frame at all
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    fails(["run", str(junk), "--out", str(out), "--overwrite"] + NO_MODEL, capsys,
          r"run: error: no frame of .*junk' could be processed \(1 skipped\).*'.*out' was left as it was")
    assert digest(out) == before
    assert entries(tmp_path) == ["broken.onnx", "broken.yaml", "junk", "out"]  # no staging folder left behind


def test_a_failing_replay_with_overwrite_keeps_the_previous_bag(
    afew_bag: Path, tmp_path: Path, failing_config: Path, capsys: pytest.CaptureFixture
) -> None:
    """Before: --overwrite deleted the old output bag before the new run had succeeded."""
    out = tmp_path / "out"
    assert main(["replay", str(afew_bag), "--out", str(out), "--set", "model.kind=none"]) == 0
    capsys.readouterr()
    before = digest(out)
    fails(["replay", str(afew_bag), "--out", str(out), "--overwrite", "--config", str(failing_config)], capsys,
          r"replay: error: .*broken.onnx: onnxruntime failed running this frame graph")
    assert digest(out) == before
    with BagReader(out) as bag:
        assert bag.topics[FACES_TOPIC].count == 42
    assert entries(tmp_path) == ["broken.onnx", "broken.yaml", "out"]


def test_make_bag_with_no_readable_frame_keeps_the_previous_bag(
    afew_clip_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Before: make-bag --overwrite deleted the old bag, then printed 'nothing written'."""
    out = tmp_path / "bag"
    make_bag(afew_clip_dir, out)
    before = digest(out)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "0.png").write_bytes((afew_clip_dir / "00000.png").read_bytes()[:300])
    fails(["make-bag", str(junk), "--out", str(out), "--overwrite"], capsys,
          r"make-bag: error: no frame of '.*junk' could be read; nothing written \('.*bag' was left as it was\)")
    assert digest(out) == before and entries(tmp_path) == ["bag", "junk"]


# -- --overwrite replaces only what the tool wrote; nothing is replaced without it ---------------------


def test_replay_overwrite_never_deletes_a_users_file(
    afew_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Before: --overwrite took any *.yaml in the output folder for part of the bag and deleted it."""
    out = tmp_path / "out"
    args = ["replay", str(afew_bag), "--out", str(out), "--set", "model.kind=none"]
    assert main(args) == 0
    fails(args, capsys, r"replay: error: --out '.*out' already exists; remove it, choose another path or pass "
                        r"--overwrite")
    assert main(args + ["--overwrite"]) == 0  # its own bag: replaced
    capsys.readouterr()
    (out / "calibration.yaml").write_text("camera_matrix: [600, 0, 320, 0, 600, 240, 0, 0, 1]\n")
    before = digest(out)
    fails(args + ["--overwrite"], capsys,
          r"replay: error: --out '.*out' is not replay output \(it holds calibration.yaml beside the bag's own "
          r"files\); refusing to replace it with --overwrite")
    assert digest(out) == before


def test_evaluate_replaces_a_report_only_with_overwrite_and_leaves_no_stale_plot(
    afew_bag: Path, frame_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Before: evaluate silently replaced an existing report folder (and would keep stale plots)."""
    from ros2_affect.tools.replay import replay
    from tests.bags.helpers import pipeline_config

    replay(afew_bag, tmp_path / "replayed", config=pipeline_config(frame_model))
    with BagReader(afew_bag) as bag:
        stamps = [im.stamp_ns for im in bag.images(bag.select_image_topic().name)]
    labels = tmp_path / "labels.csv"
    labels.write_text("stamp_ns,expression\n" + "".join(f"{s},{'happy' if i % 2 else 'sad'}\n"
                                                         for i, s in enumerate(stamps)))
    report = tmp_path / "report"
    base = ["evaluate", str(tmp_path / "replayed"), "--out", str(report)]
    assert main(base + ["--labels", str(labels)]) == 0  # expressions only: no valence/arousal plot
    assert entries(report) == ["confusion_matrix.png", "metrics.json", "report.md"]
    capsys.readouterr()
    before = digest(report)
    fails(base + ["--input-bag", str(afew_bag)], capsys,
          r"evaluate: error: --out '.*report' already exists; remove it, choose another path or pass --overwrite")
    assert digest(report) == before
    # the AFEW-VA labels have no expressions: the new report has no confusion matrix, and the old one goes
    assert main(base + ["--input-bag", str(afew_bag), "--overwrite"]) == 0
    assert entries(report) == ["metrics.json", "report.md", "valence_arousal.png"]
    assert json.loads((report / "metrics.json").read_text())["expression"] is None
    (report / "notes.md").write_text("my notes")
    fails(base + ["--input-bag", str(afew_bag), "--overwrite"], capsys,
          r"evaluate: error: --out '.*report' is not evaluate output \(it holds notes.md, which evaluate does "
          r"not write\)")
    assert (report / "notes.md").read_text() == "my notes"


def test_run_reuses_an_out_folder_only_with_overwrite_and_leaves_no_stale_files(
    afew_clip_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Before: reusing a `run --out` folder left the last run's annotated.mp4 beside the new annotated/."""
    out = tmp_path / "out"
    assert main(["run", "sample", "--out", str(out), "--max-frames", "3"] + NO_MODEL) == 0
    assert entries(out) == ["annotated.mp4", "results.jsonl"]
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(afew_clip_dir / "00000.png", photos / "p.png")
    capsys.readouterr()
    fails(["run", str(photos), "--out", str(out)] + NO_MODEL, capsys,
          r"run: error: --out '.*out' already exists; remove it, choose another path or pass --overwrite")
    assert main(["run", str(photos), "--out", str(out), "--overwrite"] + NO_MODEL) == 0
    assert entries(out) == ["annotated", "results.jsonl"] and entries(out / "annotated") == ["p.jpg"]
    assert [json.loads(line)["name"] for line in (out / "results.jsonl").read_text().splitlines()] == ["p"]
    (out / "thesis.tex").write_text("mine")
    capsys.readouterr()
    fails(["run", "sample", "--out", str(out), "--overwrite", "--max-frames", "2"] + NO_MODEL, capsys,
          r"run: error: --out '.*out' is not run output \(it holds thesis.tex, which run does not write\)")
    assert (out / "thesis.tex").read_text() == "mine" and entries(out) == ["annotated", "results.jsonl", "thesis.tex"]
    empty = tmp_path / "empty"
    empty.mkdir()  # an empty folder holds nothing to lose: written without --overwrite
    assert main(["run", "sample", "--out", str(empty), "--max-frames", "2", "--no-video"] + NO_MODEL) == 0
    assert entries(empty) == ["results.jsonl"]


def test_run_with_a_bag_replaces_its_own_output_bag_with_overwrite(
    afew_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    args = ["run", str(afew_bag), "--out", str(out), "--no-video"] + NO_MODEL
    assert main(args + ["--max-frames", "4"]) == 0
    assert main(args + ["--max-frames", "6", "--overwrite"]) == 0  # bag/ inside is run's own: replaced
    with BagReader(out / "bag") as bag:
        assert bag.topics[FACES_TOPIC].count == 6
    assert len((out / "results.jsonl").read_text().splitlines()) == 6


# -- distinct output names ------------------------------------------------------------------------------


def test_photos_sharing_a_stem_get_distinct_results_and_annotated_files(
    afew_clip_dir: Path, tmp_path: Path
) -> None:
    """Before: a.png and a.jpg gave one annotated/a.jpg (the second over the first) and two results named a."""
    import cv2

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(afew_clip_dir / "00000.png", photos / "a.png")
    cv2.imwrite(str(photos / "a.jpg"), cv2.imread(str(afew_clip_dir / "00030.png"))[:400, :500])
    shutil.copy(afew_clip_dir / "00010.png", photos / "b.png")
    out = tmp_path / "out"
    assert main(["run", str(photos), "--out", str(out)] + NO_MODEL) == 0
    names = [json.loads(line)["name"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert names == ["a.jpg", "a.png", "b"]
    assert entries(out / "annotated") == ["a.jpg.jpg", "a.png.jpg", "b.jpg"]
    shapes = {name: cv2.imread(str(out / "annotated" / name)).shape for name in entries(out / "annotated")}
    assert shapes == {"a.jpg.jpg": (400, 500, 3), "a.png.jpg": (576, 720, 3), "b.jpg": (576, 720, 3)}
    sizes = [(json.loads(line)["width"], json.loads(line)["height"])
             for line in (out / "results.jsonl").read_text().splitlines()]
    assert sizes == [(500, 400), (720, 576), (720, 576)]


def test_no_output_means_no_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A run refused or failed before its first frame creates nothing at --out."""
    fails(["run", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o")], capsys, r"run: error: input")
    fails(["run", "sample", "--out", str(tmp_path / "o"), "--max-frames", "0"], capsys, r"run: error: --max-frames")
    assert entries(tmp_path) == []
