"""ros2-affect evaluate: AFEW-VA clip -> make-bag -> replay -> evaluate, checked against plain formulas."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List

import cv2
import numpy as np
import pytest

from ros2_affect.bags.labels import LabelError
from ros2_affect.bags.reader import BagReader
from ros2_affect.bags.writer import storage_file
from ros2_affect.errors import BagError
from ros2_affect.msgs.msg_types import FACES_TOPIC
from ros2_affect.tools.cli import main
from ros2_affect.tools.evaluate_bag import evaluate, write_report
from ros2_affect.tools.make_bag import make_bag
from ros2_affect.tools.replay import replay
from tests.bags.helpers import MODEL_ID, pipeline_config


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("evaluate")


@pytest.fixture(scope="module")
def afew(afew_bag: Path, frame_model: Path, work: Path) -> Dict[str, Path]:
    """make-bag of the clip (labels recorded), then replay with the contract model (measured latency)."""
    replay(afew_bag, work / "out", config=pipeline_config(frame_model))
    return {"in": afew_bag, "out": work / "out"}


def _independent_predictions(out_bag: Path) -> List[Any]:
    """The FaceAffectArray messages decoded by mcap_ros2 from the schema in the file (not by our code)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with open(storage_file(out_bag), "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        return [msg for _, channel, _, msg in reader.iter_decoded_messages() if channel.topic == FACES_TOPIC]


def _ccc(x: np.ndarray, y: np.ndarray) -> float:
    mx, my = x.mean(), y.mean()
    return float(2 * ((x - mx) * (y - my)).mean() / (x.var() + y.var() + (mx - my) ** 2))


def test_afew_scores_match_a_direct_computation(
    afew: Dict[str, Path], afew_clip_dir: Path, afew_annotation: Dict
) -> None:
    evaluation = evaluate(afew["out"], input_bag=afew["in"])
    m = evaluation.metrics
    assert m["labels"] == f"topic /affect_annotations of {afew['in']}" and m["alignment"]["mode"] == "stamp"
    assert m["frames"] == {
        "predicted": 42,
        "predicted_with_face": 42,
        "annotated": 42,
        "matched": 42,
        "with_face": 42,
        "with_affect": 42,
    }
    assert m["coverage"] == 1.0 and m["id_switches"] == 0 and len(m["main_face_tracks"]) == 1
    assert m["model_ids"] == [MODEL_ID] and m["expression"] is None

    arrays = _independent_predictions(afew["out"])
    truth = {
        dim: np.array([afew_annotation["frames"][f"{i:05d}"][dim] / 10 for i in range(42)])
        for dim in ("valence", "arousal")
    }
    for dim in ("valence", "arousal"):
        pred = np.array([getattr(a.faces[0], dim) for a in arrays], dtype=np.float64)
        got = m[dim]
        assert got["n"] == 42 and got["missing"] == 0
        assert got["rmse"] == pytest.approx(float(np.sqrt(np.mean((pred - truth[dim]) ** 2))), rel=1e-9)
        assert got["mae"] == pytest.approx(float(np.mean(np.abs(pred - truth[dim]))), rel=1e-9)
        # AFEW-VA clip 001 is annotated with constant valence 0 and arousal 5 (-> 0.5): its
        # covariance with any prediction is 0, so the CCC is exactly 0 and the PCC undefined
        assert got["ccc"] == pytest.approx(_ccc(pred, truth[dim]), abs=1e-12) and got["pcc"] is None
        assert got["mean_annotation"] == pytest.approx(truth[dim][0])
    lat = m["latency_ms"]
    assert lat["source"] == "processing_latency_ms field" and lat["n"] == 42
    latencies = np.array([a.processing_latency_ms for a in arrays])
    assert lat["mean"] == pytest.approx(latencies.mean(), rel=1e-6) and lat["max"] == pytest.approx(latencies.max())

    # the same labels from the dataset's JSON, aligned by frame index instead of stamp
    by_frame = evaluate(afew["out"], labels=afew_clip_dir / "001.json", input_bag=afew["in"]).metrics
    assert by_frame["alignment"]["mode"] == "frame"
    for dim in ("valence", "arousal"):
        assert by_frame[dim] == m[dim]
    assert (by_frame["coverage"], by_frame["id_switches"]) == (1.0, 0)


def test_varying_csv_labels_with_expressions_and_stamp_tolerance(afew: Dict[str, Path], tmp_path: Path) -> None:
    with BagReader(afew["in"]) as bag:
        stamps = [im.stamp_ns for im in bag.images(bag.select_image_topic().name)]
    rng = np.random.default_rng(7)
    names = ["neutral", "happy", "sad", "anger"]
    rows = []
    for i, stamp in enumerate(stamps[:30]):
        # hand-made labels for the test: offset 5 ms from the image stamps, varying values
        rows.append((stamp + 5_000_000, names[i % 4], round(float(rng.uniform(-1, 1)), 3), round(i / 30, 3)))
    csv = tmp_path / "labels.csv"
    csv.write_text("stamp_ns,expression,valence,arousal\n" + "".join(f"{s},{e},{v},{a}\n" for s, e, v, a in rows))

    m = evaluate(afew["out"], labels=csv).metrics
    assert m["alignment"]["mode"] == "stamp" and m["frames"]["matched"] == 30 and m["coverage"] == 1.0
    arrays = _independent_predictions(afew["out"])[:30]
    pred_v = np.array([a.faces[0].valence for a in arrays], dtype=np.float64)
    pred_a = np.array([a.faces[0].arousal for a in arrays], dtype=np.float64)
    true_v = np.array([r[2] for r in rows])
    true_a = np.array([r[3] for r in rows])
    assert m["valence"]["ccc"] == pytest.approx(_ccc(pred_v, true_v), rel=1e-9)
    assert m["arousal"]["ccc"] == pytest.approx(_ccc(pred_a, true_a), rel=1e-9)
    assert m["arousal"]["pcc"] == pytest.approx(float(np.corrcoef(pred_a, true_a)[0, 1]), rel=1e-9)

    expr = m["expression"]
    predicted = [a.faces[0].expression for a in arrays]
    labelled = [r[1] for r in rows]
    assert expr["n"] == 30
    assert expr["accuracy"] == pytest.approx(np.mean([p == t for p, t in zip(predicted, labelled, strict=True)]))
    classes = sorted(set(predicted) | set(labelled))
    f1s = []
    for c in classes:
        tp = sum(p == c and t == c for p, t in zip(predicted, labelled, strict=True))
        precision = tp / max(1, predicted.count(c))
        recall = tp / max(1, labelled.count(c))
        f1s.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
    assert expr["macro_f1"] == pytest.approx(float(np.mean(f1s)))
    cm = np.array(expr["confusion"])
    assert cm.sum() == 30 and cm.shape == (len(expr["class_names"]),) * 2
    for t, p in {(t, p) for t, p in zip(labelled, predicted, strict=True)}:
        count = sum(1 for a, b in zip(labelled, predicted, strict=True) if (a, b) == (t, p))
        assert cm[expr["class_names"].index(t), expr["class_names"].index(p)] == count

    files = write_report(evaluate(afew["out"], labels=csv), tmp_path / "report")
    assert sorted(f.name for f in files) == ["confusion_matrix.png", "metrics.json", "report.md", "valence_arousal.png"]
    for png in ("confusion_matrix.png", "valence_arousal.png"):
        image = cv2.imread(str(tmp_path / "report" / png))
        assert image is not None and image.shape[0] > 300 and image.std() > 10
    report = (tmp_path / "report" / "report.md").read_text()
    assert f"- accuracy: {expr['accuracy']:.3f}" in report and "![confusion matrix](confusion_matrix.png)" in report
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert saved["valence"]["ccc"] == pytest.approx(m["valence"]["ccc"])

    # exact matching: the 5 ms offset now leaves every label without a prediction
    exact = evaluate(afew["out"], labels=csv, tolerance_ns=0).metrics
    assert exact["frames"]["matched"] == 0 and exact["coverage"] == 0.0
    assert exact["valence"]["n"] == 0 and "note" in exact["valence"]


def test_a_covered_camera_fragments_the_track_into_one_id_switch(
    afew_frames: List[np.ndarray], frame_model: Path, tmp_path: Path
) -> None:
    """10 frames of the face, 12 black frames (more than tracker.max_misses), 10 frames again."""
    folder = tmp_path / "frames"
    folder.mkdir()
    sequence = afew_frames[:10] + [np.zeros_like(afew_frames[0])] * 12 + afew_frames[10:20]
    for i, rgb in enumerate(sequence):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.ascontiguousarray(rgb[:, :, ::-1]))
    csv = tmp_path / "labels.csv"
    csv.write_text("frame,valence,arousal\n" + "".join(f"{i},0.1,0.2\n" for i in range(32)))
    make_bag(folder, tmp_path / "in", labels=[csv], compression="png")
    replay(tmp_path / "in", tmp_path / "out", config=pipeline_config(frame_model), copy_input=True)
    assert main(["evaluate", str(tmp_path / "out"), "--out", str(tmp_path / "eval")]) == 0
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m["labels"].startswith("topic /affect_annotations")  # copied into the replay output
    assert m["frames"]["with_face"] == 20 and m["coverage"] == pytest.approx(20 / 32)
    assert m["id_switches"] == 1 and sorted(m["main_face_tracks"].values()) == [10, 10]
    assert m["valence"]["n"] == 20 and m["valence"]["missing"] == 12


def test_errors_name_what_is_missing(afew: Dict[str, Path], tmp_path: Path, capsys: Any) -> None:
    with pytest.raises(BagError, match=r"holds no predictions: run `ros2-affect replay` on it first"):
        evaluate(afew["in"])
    with pytest.raises(LabelError, match=r"no labels: bag .* has no annotation topic .*pass --labels FILE"):
        evaluate(afew["out"])
    broken = tmp_path / "broken"
    shutil.copytree(afew["out"], broken)
    (broken / "metadata.yaml").unlink()
    assert main(["evaluate", str(broken), "--out", str(tmp_path / "e"), "--input-bag", str(afew["in"])]) == 1
    assert "has no metadata.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # an argument error: argparse's exit 2, one line
        main(["evaluate", str(afew["out"]), "--out", str(tmp_path / "e"), "--input-bag", str(afew["in"]),
              "--tolerance-ms=-1"])
    assert stop.value.code == 2
    assert "argument --tolerance-ms: '-1' is not accepted; pass a finite number in 0..3600000 ms" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "e").exists()


def test_labelled_photos_are_pointed_to_training_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "labels.csv").write_text("image,expression,valence,arousal\nimages/0.jpg,happy,0.5,0.2\n")
    for given in (photos, photos / "labels.csv"):
        assert main(["evaluate", str(given), "--out", str(tmp_path / "report")]) == 1
        err = capsys.readouterr().err
        assert "looks like labelled photos (labels.csv), not a bag" in err
        assert f"python -m training.evaluate --model MODEL.onnx --labels {photos / 'labels.csv'}" in err
    assert not (tmp_path / "report").exists()
