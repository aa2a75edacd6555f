"""End to end on the data the package bundles only (no ../shared/data needed): what a fresh
clone tests. The bundled photo (ros2_affect/data/astronaut.jpg, a smiling astronaut) goes
through ``run`` as a photo, and as the moving ``sample`` clip through make-bag -> replay ->
evaluate with the bundled detector, landmark and affect models."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from ros2_affect.tools.cli import main
from ros2_affect.tools.inputs import SAMPLE_FRAMES, open_input, sample_path


def test_run_on_the_bundled_photo_finds_the_smile(tmp_path: Path) -> None:
    out = tmp_path / "photo"
    assert main(["run", str(sample_path()), "--out", str(out)]) == 0
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    (face,) = record["faces"]
    x1, y1, x2, y2 = face["box"]
    assert 150 < (x1 + x2) / 2 < 300 and 60 < (y1 + y2) / 2 < 200, "the face, not the shuttle or the flag"
    (rx, ry), (lx, ly) = face["eyes"]
    assert x1 < rx < lx < x2 and y1 < ry < y2 and abs(ry - ly) < 0.2 * (x2 - x1)
    assert face["expression"] == "happy" and face["confidence"] > 0.5
    assert face["valence"] > 0.3 and face["frames_used"] == 1
    annotated = cv2.imread(str(out / "annotated" / "astronaut.jpg"))
    assert annotated is not None and annotated.shape == (512, 512, 3)


def test_sample_clip_through_make_bag_replay_and_evaluate(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    with open_input("sample") as source:
        for frame in source:
            cv2.imwrite(str(frames / f"{frame.index:05d}.png"), np.ascontiguousarray(frame.image[:, :, ::-1]))
    labels = tmp_path / "labels.csv"
    labels.write_text("frame,expression,valence\n" + "".join(f"{i},happy,0.8\n" for i in range(SAMPLE_FRAMES)))
    bag, replayed, report = tmp_path / "bag", tmp_path / "replayed", tmp_path / "report"
    assert main(["make-bag", str(frames), "--out", str(bag), "--compressed", "jpeg", "--labels", str(labels)]) == 0
    assert main(["replay", str(bag), "--out", str(replayed), "--latency", "zero"]) == 0
    assert main(["evaluate", str(replayed), "--input-bag", str(bag), "--out", str(report)]) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["coverage"] == 1.0 and metrics["id_switches"] == 0
    assert metrics["expression"]["n"] == SAMPLE_FRAMES and metrics["expression"]["accuracy"] >= 0.9
