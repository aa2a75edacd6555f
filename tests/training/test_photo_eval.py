"""training.evaluate --labels: labelled photos (AffectNet's labels.csv layout) with the shipped models.

Real data: AffectNet validation photos extracted from ../shared/data into a temp folder.
Expected numbers are computed independently here: images read with OpenCV and fed to a
bare onnxruntime session, metrics with scikit-learn, scipy and explicit loops.
"""

from __future__ import annotations

import csv
import json
import tarfile
from pathlib import Path
from typing import Any, Dict, List

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import scipy.stats
from sklearn.metrics import accuracy_score, f1_score

from ros2_affect.core.types import CANONICAL_EXPRESSIONS
from ros2_affect.errors import ConfigError, DatasetError
from training import evaluate
from training.data.affectnet import AffectNetPhotos
from training.photo_eval import evaluate_photos

MODELS = Path(__file__).resolve().parents[2] / "ros2_affect" / "models"
FRAME = MODELS / "emotion_gcn_fer2013.onnx"
TEMPORAL = MODELS / "cnn_rnn_fer2013_encoder_int8.onnx"
N_PHOTOS = 320


@pytest.fixture(scope="module")
def photos(affectnet_tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """labels.csv with its first N_PHOTOS rows (all eight classes) and their images, in a temp folder."""
    root = tmp_path_factory.mktemp("affectnet")
    with tarfile.open(affectnet_tarball) as archive:
        table = archive.extractfile("affectnet-val/labels.csv")
        assert table is not None
        lines = table.read().decode().splitlines()[: N_PHOTOS + 1]
        (root / "images").mkdir()
        for line in lines[1:]:
            name = line.split(",", 1)[0]
            data = archive.extractfile(f"affectnet-val/{name}")
            assert data is not None
            (root / name).write_bytes(data.read())
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


def _rows(labels: Path) -> List[Dict[str, str]]:
    with labels.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _write(path: Path, rows: List[Dict[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _by_image(pred: Any, data: AffectNetPhotos) -> Dict[str, np.ndarray]:
    return {k: np.concatenate([pred.probabilities[i], pred.va[i]]) for i, k in enumerate(data.keys)}


def test_crops_mode_matches_an_independent_computation(photos: Path) -> None:
    report, pred, data = evaluate_photos(FRAME, photos, mode="crops")
    assert report["photos"]["read"] == N_PHOTOS and report["photos"]["no_face"] == 0
    assert report["all"]["expression_8"]["n/a"].startswith("model emotion_gcn_fer2013-1.1")
    # the model's probabilities from a bare onnxruntime session on OpenCV-resized grey photos
    session = ort.InferenceSession(str(FRAME), providers=["CPUExecutionProvider"])
    grey = [cv2.cvtColor(cv2.imread(p, cv2.IMREAD_COLOR), cv2.COLOR_BGR2GRAY) for p in data.paths]
    x = np.stack([cv2.resize(g, (48, 48), interpolation=cv2.INTER_AREA) for g in grey]).astype(np.float32)
    logits = session.run(["logits"], {"image": ((x / 255.0 - 0.5) / 0.25)[:, None]})[0]
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(pred.probabilities, probs, atol=1e-4)
    # 7 classes: contempt photos left out
    labels = np.asarray(
        [CANONICAL_EXPRESSIONS.index(r["expression"]) if r["expression"] != "contempt" else -1 for r in _rows(photos)]
    )
    keep = labels >= 0
    y_true, y_pred = labels[keep], probs[keep].argmax(axis=1)
    e7 = report["all"]["expression_7"]
    assert e7["n"] == keep.sum() == N_PHOTOS - (~keep).sum() and (~keep).sum() > 0
    assert e7["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert e7["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    conf = probs[keep].max(axis=1)
    ece = 0.0
    for lo in np.arange(15) / 15:
        rows = (conf > lo) & (conf <= lo + 1 / 15)
        if rows.any():
            ece += rows.sum() / len(conf) * abs((y_true == y_pred)[rows].mean() - conf[rows].mean())
    assert e7["ece"] == pytest.approx(ece, abs=1e-5)  # probabilities agree to 1e-4
    # valence/arousal over every photo with a label (contempt photos included)
    va = np.asarray([[float(r["valence"]), float(r["arousal"])] for r in _rows(photos)])
    for i, dim in enumerate(("valence", "arousal")):
        p, t = pred.va[:, i], va[:, i]
        ccc = 2 * np.cov(p, t, bias=True)[0, 1] / (p.var() + t.var() + (p.mean() - t.mean()) ** 2)
        got = report["all"][dim]
        assert got["n"] == N_PHOTOS
        assert got["ccc"] == pytest.approx(ccc)
        assert got["pcc"] == pytest.approx(scipy.stats.pearsonr(p, t)[0])
        assert got["rmse"] == pytest.approx(np.sqrt(np.mean((p - t) ** 2)))
        side = [(a > 0 and b > 0) or (a < 0 and b < 0) or (a == b == 0) for a, b in zip(p, t, strict=True)]
        assert got["sign_agreement"] == pytest.approx(np.mean(side))  # a label of exactly 0 agrees only with 0
    assert report["va_derived"] is True


def test_pipeline_mode_scores_each_photo_on_its_own(photos: Path, tmp_path: Path) -> None:
    rows = _rows(photos)[:24]
    forward = _write(tmp_path / "forward.csv", rows)
    backward = _write(tmp_path / "backward.csv", rows[::-1])
    for model in (TEMPORAL, FRAME):  # the temporal model would carry a sequence across photos if state leaked
        kw: Dict[str, Any] = {"images_root": photos.parent, "mode": "pipeline"}
        report, pred, data = evaluate_photos(model, forward, **kw)
        assert report["photos"]["read"] == 24 and "detected" in report
        _, pred_b, data_b = evaluate_photos(model, backward, **kw)
        a, b = _by_image(pred, data), _by_image(pred_b, data_b)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{model.name}: {key} depends on the photo before")
        alone, pred_1, _ = evaluate_photos(model, _write(tmp_path / "one.csv", rows[5:6]), **kw)
        np.testing.assert_array_equal(_by_image(pred_1, _)[rows[5]["image"]], a[rows[5]["image"]])


def test_tif_copies_give_identical_results(photos: Path, tmp_path: Path) -> None:
    rows = _rows(photos)[:16]
    tif_rows = []
    for i, row in enumerate(rows):
        image = cv2.imread(str(photos.parent / row["image"]), cv2.IMREAD_COLOR)
        name = f"tif/{Path(row['image']).stem}.{'tif' if i % 2 else 'tiff'}"
        (tmp_path / "tif").mkdir(exist_ok=True)
        assert cv2.imwrite(str(tmp_path / name), image)
        tif_rows.append(dict(row, image=name))
    jpg = _write(tmp_path / "jpg.csv", rows)
    tif = _write(tmp_path / "tif.csv", tif_rows)
    for mode in ("crops", "pipeline"):
        rj, pj, _ = evaluate_photos(FRAME, jpg, images_root=photos.parent, mode=mode)
        rt, pt, _ = evaluate_photos(FRAME, tif, images_root=tmp_path, mode=mode)
        np.testing.assert_array_equal(pj.probabilities, pt.probabilities)
        np.testing.assert_array_equal(pj.va, pt.va)
        assert rj["all"] == rt["all"]


def test_bad_rows_and_images_are_counted_and_no_face_is_a_miss(photos: Path, tmp_path: Path) -> None:
    rows = _rows(photos)[:12]
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all")
    cv2.imwrite(str(tmp_path / "blank.png"), np.full((224, 224, 3), 128, np.uint8))  # a real photo of nothing
    for row in rows:
        row["image"] = str(photos.parent / row["image"])
    bad = [
        dict(rows[0], image=str(tmp_path / "missing.jpg")),
        dict(rows[0], image=str(tmp_path / "broken.jpg")),
        dict(rows[0], image=str(tmp_path / "blank.png"), expression="happy", valence="0.5", arousal="0.5"),
    ]
    table = _write(tmp_path / "labels.csv", rows + bad)
    report, pred, data = evaluate_photos(FRAME, table, mode="pipeline")
    ph = report["photos"]
    assert ph["rows_left_out"] == {"missing_image": 1}
    assert ph["rows_left_out_examples"] == [f"line 14: missing_image: {tmp_path / 'missing.jpg'}"]
    assert ph["unreadable"] == 1 and ph["unreadable_examples"] == [str(tmp_path / "broken.jpg")]
    assert ph["read"] == 13 and ph["no_face"] == 1 and ph["with_prediction"] == 12
    every, found = report["all"], report["detected"]
    assert every["photos"] == 13 and found["photos"] == 12
    assert every["expression_7"]["misses"] == 1 and "(no face)" in every["expression_7"]["class_names"]
    n7 = found["expression_7"]["n"]
    assert every["expression_7"]["accuracy"] == pytest.approx(found["expression_7"]["accuracy"] * n7 / (n7 + 1))
    assert every["valence"]["n"] == found["valence"]["n"] + 1
    # what cannot be worked around is an error naming the problem: a bad value names its line
    with pytest.raises(DatasetError, match=r"labels.csv line 14: unknown expression 'joyful-ish'"):
        AffectNetPhotos(_write(tmp_path / "labels.csv", rows + [dict(rows[0], expression="joyful-ish")]))
    with pytest.raises(DatasetError, match=r"labels.csv line 14: valence = 'abc' is not a number"):
        AffectNetPhotos(_write(tmp_path / "labels.csv", rows + [dict(rows[0], valence="abc")]))
    with pytest.raises(DatasetError, match=r"columns \['valence'\] missing"):
        AffectNetPhotos(_write(tmp_path / "cols.csv", [{k: v for k, v in rows[0].items() if k != "valence"}]))
    with pytest.raises(DatasetError, match=r"no usable rows \(dropped: \{'missing_image': 1\}\)"):
        AffectNetPhotos(_write(tmp_path / "none.csv", bad[:1]))


def test_cli_writes_the_report_and_never_overwrites_without_asking(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "report"
    args = ["--model", str(FRAME), "--labels", str(photos), "--limit", "40", "--out", str(out)]
    assert evaluate.main(args) == 0
    assert "mode crops: 40 photos read" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["metrics.json", "predictions.csv", "confusion_matrix.png", "valence_arousal.png"]
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["all"]["expression_7"]["accuracy"] > 0.25 and metrics["photos"]["read"] == 40
    assert len(_rows(out / "predictions.csv")) == 40
    assert evaluate.main(args) == 1
    assert "already exists" in capsys.readouterr().err
    assert evaluate.main([*args, "--overwrite", "--mode", "pipeline", "--tta", "flip"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "pipeline" and metrics["tta"] == "flip"
    assert evaluate.main(["--model", str(FRAME), "--labels", str(photos), "--out", str(photos.parent)]) == 1
    assert "holds the input" in capsys.readouterr().err


def test_one_part_of_a_split_file(photos: Path, tmp_path: Path) -> None:
    rows = _rows(photos)
    ids = [Path(r["image"]).stem for r in rows]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ids[:200], "val": ids[200:260], "test": ids[260:]}))
    report, pred, data = evaluate_photos(FRAME, photos, mode="crops", split_file=split, part="test")
    assert report["photos"]["read"] == len(ids) - 260 and report["split"] == {"file": str(split), "part": "test"}
    assert [Path(k).stem for k in data.keys] == ids[260:]
    alone, pred_alone, _ = evaluate_photos(FRAME, _write(tmp_path / "test.csv", rows[260:]), images_root=photos.parent)
    np.testing.assert_array_equal(pred.probabilities, pred_alone.probabilities)
    assert report["all"] == alone["all"]
    with pytest.raises(ConfigError, match=r"--limit and --split do not go together"):
        evaluate_photos(FRAME, photos, split_file=split, part="test", limit=10)
    with pytest.raises(ConfigError, match=r"--part 'dev' is not a part of a split file"):
        evaluate_photos(FRAME, photos, split_file=split, part="dev")


def test_a_regressing_model_is_scored_beside_its_derived_baseline() -> None:
    """The baseline of a regressed valence/arousal is the runtime's derived lookup on the same
    class probabilities; it is scored on the same rows, a missing prediction counting as 0."""
    from ros2_affect.core.valence_arousal import derive_valence_arousal
    from training.photo_eval import PhotoPredictions, score

    rng = np.random.default_rng(3)
    n, k = 40, len(CANONICAL_EXPRESSIONS)
    logits = rng.normal(0, 2, (n, k))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    probs[5] = np.nan  # no face found
    va_true = rng.uniform(-1, 1, (n, 2))
    pred = PhotoPredictions(probs, rng.uniform(-1, 1, (n, 2)), np.ones(n, bool), tuple(CANONICAL_EXPRESSIONS),
                            False, "m-2.0", "frame")
    pred.va[5] = np.nan
    labels = rng.integers(0, k, n)
    report = score(labels, va_true, pred, np.ones(n, bool))
    derived = np.zeros((n, 2))
    ok = np.isfinite(probs).all(1)
    derived[ok] = derive_valence_arousal(probs[ok], CANONICAL_EXPRESSIONS)
    for i, dim in enumerate(("valence", "arousal")):
        x, y = derived[:, i], va_true[:, i]
        ccc = 2 * np.cov(x, y, bias=True)[0, 1] / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)
        assert report["va_derived_baseline"][dim]["ccc"] == pytest.approx(ccc, abs=1e-9)
        assert report["va_derived_baseline"][dim]["ccc"] != pytest.approx(report[dim]["ccc"])
    derived_pred = PhotoPredictions(probs, pred.va, pred.readable, pred.class_names, True, "m-1.1", "frame")
    assert "va_derived_baseline" not in score(labels, va_true, derived_pred, np.ones(n, bool))
