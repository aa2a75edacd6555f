"""Multi-task training (FER2013 + AffectNet): batches, masked VA loss, the 9-node graph from
real valence/arousal, and a tiny end-to-end run (train, export, calibrate, runtime)."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List

import numpy as np
import pytest
import torch

from ros2_affect.core.types import CANONICAL_EXPRESSIONS
from ros2_affect.errors import ModelContractError
from training.config import load_train_config
from training.data.splits import load_split_file
from training.label_embeddings import build_adjacency
from training.multitask import (
    MixedBatches,
    fer_to_model,
    graph_label_table,
    model_alignment,
    open_affectnet,
    va_metrics,
)
from training.train import Trainer, build_model

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "train" / "emotion_gcn_affectnet_fer2013.yaml"


def test_mixed_batches_share_and_coverage() -> None:
    sampler = MixedBatches(n_fer=100, n_affectnet=10, batch_size=16, affectnet_ratio=0.25)
    assert (sampler.per_batch_fer, sampler.per_batch_affectnet, len(sampler)) == (12, 4, 8)
    batches = sampler.epoch(torch.Generator().manual_seed(0))
    assert len(batches) == 8 and all(len(b) == 16 for b in batches)
    assert all(int((b >= 100).sum()) == 4 for b in batches)  # 4 AffectNet rows in every batch
    fer = torch.cat([b[b < 100] for b in batches])
    assert len(set(fer.tolist())) == len(fer) == 96  # one pass over FER2013, no repeats
    aff = torch.cat([b[b >= 100] for b in batches]) - 100
    assert sorted(set(aff.tolist())) == list(range(10))  # AffectNet cycled: each face 3 or 4 times
    assert set(np.bincount(aff.numpy()).tolist()) <= {3, 4}
    again = sampler.epoch(torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))  # seeded
    only_aff = MixedBatches(n_fer=100, n_affectnet=40, batch_size=16, affectnet_ratio=1.0)
    assert only_aff.per_batch_fer == 0 and len(only_aff) == 2
    assert MixedBatches(n_fer=100, n_affectnet=40, batch_size=16, affectnet_ratio=0.0).per_batch_affectnet == 0
    with pytest.raises(ValueError, match=r"affectnet_ratio = 1.5; expected 0..1"):
        MixedBatches(10, 10, 4, 1.5)


def _loss_owner(weight: float) -> SimpleNamespace:
    cfg = SimpleNamespace(optim=SimpleNamespace(label_smoothing=0.0, va_loss_weight=weight))
    return SimpleNamespace(cfg=cfg, class_weights=None, regress_va=True, va_table=torch.zeros(7, 2))


def test_trainer_loss_masks_fer_rows_hand_computed() -> None:
    nan = float("nan")
    # rows 0-1 FER2013 (no VA), rows 2-4 AffectNet (row 2 is contempt: no expression label)
    y = torch.tensor([0, 3, -1, 2, 5])
    logits = torch.zeros(5, 7, requires_grad=True)  # CE of uniform logits = log 7 for every labelled row
    pred = torch.tensor([[9.0, -9.0], [-9.0, 9.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], requires_grad=True)
    target = torch.tensor([[nan, nan], [nan, nan], [1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])
    # valence: identical -> CCC 1; arousal: x = 1,2,3, y = 2,4,6: cov 4/3, var 2/3 and 8/3, mean gap 2
    # -> CCC = 2 (4/3) / (2/3 + 8/3 + 4) = 8/22
    expected = np.log(7) + 0.5 * (1 - (1 + 8 / 22) / 2)
    loss = Trainer._loss(_loss_owner(0.5), logits, pred, y, target)  # type: ignore[arg-type]
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert pred.grad is not None and torch.all(pred.grad[:2] == 0) and torch.isfinite(pred.grad).all()
    # a batch of FER2013 rows only: the VA term is exactly 0, no NaN anywhere
    pred_fer = torch.randn(3, 2, requires_grad=True)
    loss_fer = Trainer._loss(_loss_owner(0.5), torch.zeros(3, 7), pred_fer, torch.tensor([0, 1, 2]),
                             torch.full((3, 2), nan))
    assert loss_fer.item() == pytest.approx(np.log(7), rel=1e-6)
    loss_fer.backward()
    assert pred_fer.grad is not None and torch.all(pred_fer.grad == 0)


def test_va_metrics_hand_computed() -> None:
    m = va_metrics(np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [0.0, 0.0]]),
                   np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0], [np.nan, np.nan]]))
    assert m["ccc_valence"] == pytest.approx(1.0) and m["ccc_arousal"] == pytest.approx(8 / 22)
    assert m["rmse_arousal"] == pytest.approx(np.sqrt((1 + 4 + 9) / 3)) and m["pcc_arousal"] == pytest.approx(1.0)


def test_fer_crops_at_the_model_input() -> None:
    grey = torch.randint(0, 256, (4, 1, 48, 48), dtype=torch.uint8)
    rgb = fer_to_model(grey, 64, 3)
    assert rgb.shape == (4, 3, 64, 64) and rgb.dtype == torch.uint8
    assert torch.equal(rgb[:, 0], rgb[:, 2])  # grey repeated
    assert torch.equal(fer_to_model(grey, 48, 1), grey)


def test_graph_from_real_affectnet_valence_arousal_has_va_edges(affectnet_tarball: Path) -> None:
    photos = open_affectnet(affectnet_tarball, include_contempt=True)
    ids = {Path(k).stem: i for i, k in enumerate(photos.keys)}
    rows = np.asarray([ids[i] for i in load_split_file()["train"]])
    e = photos.expressions[rows].copy()
    e[e == 7] = -1  # contempt: no class in the 7-class graph
    table = graph_label_table(e, photos.va[rows])
    assert table.shape[1] == 9 and table.shape[0] == int((e >= 0).sum())
    adj = build_adjacency(table, tau=0.1, p=0.2)
    names = list(CANONICAL_EXPRESSIONS) + ["valence", "arousal"]
    valence, arousal = names.index("valence"), names.index("arousal")
    off = adj - np.diag(np.diag(adj))
    assert off[valence, :7].sum() > 0 and off[arousal, :7].sum() > 0  # the VA nodes now have edges
    assert off[valence, names.index("happy")] > 0 and off[names.index("happy"), valence] > 0  # happy is positive
    assert off[arousal, names.index("surprise")] > 0  # surprise is aroused
    assert off[valence, names.index("sad")] == 0  # negative correlations make no edge
    np.testing.assert_allclose(adj.sum(axis=1), 1.0, rtol=1e-6)
    # build_model uses this table: 9 nodes, regressed VA
    cfg = load_train_config(CONFIG, ["model.kwargs.backbone_kwargs.widths=[8,8]",
                                     "model.kwargs.backbone_kwargs.n_convs=1", "model.kwargs.gcn_hidden=8"])
    model, _, va_mode = build_model(cfg, e, table)
    assert va_mode == "regressed" and tuple(model.adjacency.shape) == (9, 9)
    np.testing.assert_allclose(model.adjacency.numpy(), adj)


# -- tiny end to end: real images of both datasets, extracted to tmp_path ---------------------


def _extract_fer(tarball: Path, dest: Path, per_class: Dict[str, int]) -> Path:
    taken: Dict[str, int] = {}
    with tarfile.open(tarball) as tar:
        for m in tar:
            parts = Path(m.name).parts
            if not m.isfile() or len(parts) != 4 or parts[1] not in per_class:
                continue
            key = f"{parts[1]}/{parts[2]}"
            if taken.get(key, 0) >= per_class[parts[1]]:
                continue
            taken[key] = taken.get(key, 0) + 1
            out = dest.joinpath(*parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            handle = tar.extractfile(m)
            assert handle is not None
            out.write_bytes(handle.read())
            if len(taken) == 14 and all(v >= per_class[k.split("/")[0]] for k, v in taken.items()):
                break
    return dest


def _extract_affectnet(tarball: Path, dest: Path, per_part: Dict[str, int]) -> Path:
    """labels.csv rows + images of ``per_part[part]`` faces per class of each split part, and
    a split file of those ids (dest/split.json)."""
    with tarfile.open(tarball) as tar:
        handle = tar.extractfile("affectnet-val/labels.csv")
        assert handle is not None
        rows = list(csv.DictReader(io.StringIO(handle.read().decode())))
        by_id = {Path(r["image"]).stem: r for r in rows}
        split = load_split_file()
        chosen: Dict[str, List[str]] = {}
        for part, n in per_part.items():
            counts: Dict[str, int] = {}
            chosen[part] = []
            for i in split[part]:
                label = by_id[i]["expression"]
                if counts.get(label, 0) < n:
                    counts[label] = counts.get(label, 0) + 1
                    chosen[part].append(i)
        keep = {i for ids in chosen.values() for i in ids}
        (dest / "images").mkdir(parents=True)
        with (dest / "labels.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(r for r in rows if Path(r["image"]).stem in keep)
        for i in sorted(keep):
            image = tar.extractfile(f"affectnet-val/images/{i}.jpg")
            assert image is not None
            (dest / "images" / f"{i}.jpg").write_bytes(image.read())
    (dest / "split.json").write_text(json.dumps({"train": chosen.get("train", []), "val": chosen.get("val", []),
                                                 "test": chosen.get("test", [])}))
    return dest


@pytest.mark.slow
def test_tiny_multitask_train_export_calibrate_and_run(
    tmp_path: Path, fer_tarball: Path, affectnet_tarball: Path, capsys: pytest.CaptureFixture
) -> None:
    from ros2_affect.backends import create_backend
    from ros2_affect.backends.base import read_onnx_metadata
    from ros2_affect.core.affect_model import FrameAffectModel
    from training import calibrate
    from training.export import export_checkpoint
    from training.train import main

    fer = _extract_fer(fer_tarball, tmp_path / "fer", {"Training": 6, "PublicTest": 2})
    aff = _extract_affectnet(affectnet_tarball, tmp_path / "affectnet", {"train": 4, "val": 3, "test": 3})
    sets = [
        f"data.path={fer}", f"data.affectnet_path={aff}", f"data.affectnet_split_file={aff / 'split.json'}",
        f"run.out_dir={tmp_path / 'runs'}", "run.name=tiny", "run.progress=false", "run.threads=1",
        "optim.epochs=1", "optim.batch_size=16", "optim.steps_per_epoch=2", "data.affectnet_ratio=0.5",
        "model.kwargs.backbone_kwargs.widths=[8,16]", "model.kwargs.backbone_kwargs.n_convs=1",
        "model.kwargs.gcn_hidden=16",
        # the colour variant the config documents (the shipped 2.0 model is 48 px grey)
        "data.input_size=64", "model.mean=[0.5,0.5,0.5]", "model.std=[0.25,0.25,0.25]",
    ]
    argv = ["--config", str(CONFIG)]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "affectnet val acc" in out and "ccc v" in out
    log = list(csv.DictReader((tmp_path / "runs" / "tiny" / "log.csv").open()))
    assert len(log) == 1 and np.isfinite(float(log[0]["train_loss"])) and "val_score" in log[0]
    ckpt = torch.load(tmp_path / "runs" / "tiny" / "best.pt", weights_only=False)
    assert ckpt["va_mode"] == "regressed" and ckpt["channels"] == 3 and ckpt["input_size"] == 64
    assert "AffectNet" in ckpt["training_data"] and "no redistribution" in ckpt["training_data"]

    result = export_checkpoint(tmp_path / "runs" / "tiny" / "best.pt", tmp_path / "models", name="mt", version="0")
    onnx_path = result.graphs["frame"]
    assert result.metadata["frame"].va_mode == "regressed"

    # through the runtime: AffectNet test faces aligned as training aligned them
    photos = open_affectnet(aff, include_contempt=True, alignment=model_alignment(64, 3))
    crops = np.stack([photos.load_crop(i) for i in range(4)])
    assert crops.shape == (4, 64, 64, 3)
    backend = create_backend("onnxruntime")
    model = FrameAffectModel(backend.load(onnx_path, "frame", 8))
    raw = backend.load(onnx_path, "frame", 8).run(model.preprocess(crops))
    estimates = model.predict_frames(crops)
    assert not model.va_derived and model.temperature == 1.0
    for est, va in zip(estimates, raw["valence_arousal"], strict=True):
        assert est is not None and not est.va_derived
        assert (est.valence, est.arousal) == (pytest.approx(float(np.clip(va[0], -1, 1)), abs=1e-6),
                                              pytest.approx(float(np.clip(va[1], -1, 1)), abs=1e-6))

    # calibration: a new file with the temperature; the input is untouched
    before = onnx_path.read_bytes()
    cal = tmp_path / "models" / "mt_calibrated.onnx"
    args = ["--model", str(onnx_path), "--data", str(aff), "--split-file", str(aff / "split.json"), "--json"]
    assert calibrate.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["out"] == str(cal) and report["n_fit"] == 21 and report["n_report"] == 21
    assert report["ece_report_before"] >= 0 and report["ece_report_after"] >= 0
    assert onnx_path.read_bytes() == before
    meta = read_onnx_metadata(cal)
    assert float(meta.extra["temperature"]) == pytest.approx(report["temperature"])
    assert cal.stat().st_mode & 0o044 == onnx_path.stat().st_mode & 0o044  # readable as the export is
    calibrated = FrameAffectModel(backend.load(cal, "frame", 8))
    assert calibrated.temperature == pytest.approx(report["temperature"])
    for a, b in zip(calibrated.predict_frames(crops), estimates, strict=True):
        assert a is not None and b is not None and int(a.probabilities.argmax()) == int(b.probabilities.argmax())
        assert not a.va_derived and a.valence == b.valence
    # never over the input, never over an existing output without --overwrite
    assert calibrate.main(args) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert calibrate.main(args + ["--out", str(onnx_path), "--overwrite"]) == 1
    assert onnx_path.read_bytes() == before
    assert calibrate.main(args + ["--overwrite"]) == 0


def test_calibration_fit_recovers_a_known_temperature() -> None:
    from training.calibrate import calibrate, ece, fit_temperature, nll

    rng = np.random.default_rng(0)
    n, k = 4000, 7
    true_logits = rng.normal(0, 2.0, (n, k))
    p = np.exp(true_logits - true_logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = np.asarray([rng.choice(k, p=row) for row in p])
    overconfident = true_logits * 2.5  # a model whose logits are 2.5x too large: T = 2.5 undoes it
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(2.5, rel=0.08)
    assert nll(overconfident, labels, t) < nll(overconfident, labels)
    assert ece(overconfident, labels, t) < ece(overconfident, labels) / 2
    rep = calibrate(overconfident[:2000], labels[:2000], overconfident[2000:], labels[2000:])
    assert rep.ece_report_after < rep.ece_report_before and rep.n_report == 2000


def test_calibrated_file_refuses_a_bad_temperature(tmp_path: Path) -> None:
    from ros2_affect.errors import ConfigError, OutputError
    from tests.backends.affect_graphs import write_graph
    from training.calibrate import write_calibrated

    src = write_graph(tmp_path / "m.onnx", "frame")
    with pytest.raises(ConfigError, match=r"temperature nan must be finite and > 0"):
        write_calibrated(src, tmp_path / "c.onnx", float("nan"), {})
    with pytest.raises(OutputError):
        write_calibrated(src, src, 1.5, {}, overwrite=True)
    out = write_calibrated(src, tmp_path / "c.onnx", 1.5, {"note": "x"})
    from ros2_affect.backends.base import read_onnx_metadata

    assert read_onnx_metadata(out).temperature == 1.5
    # recalibrating a calibrated file replaces its temperature (one key, not two)
    again = read_onnx_metadata(write_calibrated(out, tmp_path / "d.onnx", 2.0, {}))
    assert again.temperature == 2.0
    with pytest.raises(ModelContractError, match=r"temperature = '0'"):
        read_onnx_metadata(write_graph(tmp_path / "z.onnx", "frame", props={"temperature": "0"}))


def test_calibrate_a_temporal_models_sequence_head(
    tmp_path: Path, affectnet_tarball: Path, capsys: pytest.CaptureFixture
) -> None:
    from ros2_affect.backends import create_backend
    from ros2_affect.core.affect_model import TemporalAffectModel
    from tests.backends.affect_graphs import write_graph
    from training import calibrate

    aff = _extract_affectnet(affectnet_tarball, tmp_path / "affectnet", {"val": 2, "test": 2})
    models = tmp_path / "models"
    models.mkdir()
    encoder = write_graph(models / "rnn_encoder.onnx", "encoder", dim=16, model_id="rnn-1")
    sequence = write_graph(models / "rnn_sequence.onnx", "sequence", length=4, dim=16, model_id="rnn-1")
    base = ["--data", str(aff), "--split-file", str(aff / "split.json"), "--json"]
    assert calibrate.main(["--model", str(encoder), *base]) == 1
    assert "is an encoder graph (no logits); calibrate the temporal model's *_sequence.onnx" in capsys.readouterr().err
    assert calibrate.main(["--model", str(sequence), *base]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["out"] == str(models / "rnn_sequence_calibrated.onnx") and report["n_fit"] == 14
    backend = create_backend("onnxruntime")
    model = TemporalAffectModel(backend.load(encoder, "encoder", 8),
                                backend.load(models / "rnn_sequence_calibrated.onnx", "sequence", 8))
    assert model.temperature == pytest.approx(report["temperature"])


@pytest.mark.slow
def test_tiny_temporal_model_on_multitask_data_regresses_valence_arousal(
    tmp_path: Path, fer_tarball: Path, affectnet_tarball: Path, capsys: pytest.CaptureFixture
) -> None:
    """The temporal 2.0 recipe: a frame model on FER2013 + AffectNet, then the CNN-RNN head on
    its frozen backbone with the same data; the head's regressor is trained and exported as such."""
    from ros2_affect.backends.base import read_onnx_metadata
    from training.export import export_checkpoint
    from training.train import main

    fer = _extract_fer(fer_tarball, tmp_path / "fer", {"Training": 6, "PublicTest": 2})
    aff = _extract_affectnet(affectnet_tarball, tmp_path / "affectnet", {"train": 4, "val": 3, "test": 3})
    common = [
        f"data.path={fer}", f"data.affectnet_path={aff}", f"data.affectnet_split_file={aff / 'split.json'}",
        f"run.out_dir={tmp_path / 'runs'}", "run.progress=false", "run.threads=1", "optim.epochs=1",
        "optim.batch_size=16", "optim.steps_per_epoch=2", "data.affectnet_ratio=0.5",
        "model.kwargs.backbone_kwargs.widths=[8,16]", "model.kwargs.backbone_kwargs.n_convs=1",
    ]

    def run(config: Path, *sets: str) -> None:
        argv = ["--config", str(config)]
        for s in [*common, *sets]:
            argv += ["--set", s]
        assert main(argv) == 0

    run(CONFIG, "run.name=frame", "model.kwargs.gcn_hidden=16")
    temporal_config = CONFIG.parent / "cnn_rnn_affectnet_fer2013.yaml"
    run(temporal_config, "run.name=temporal", f"model.init_from={tmp_path / 'runs' / 'frame' / 'best.pt'}",
        "sequence.length=4", "model.kwargs.hidden=8")
    assert "affectnet val acc" in capsys.readouterr().out
    log = list(csv.DictReader((tmp_path / "runs" / "temporal" / "log.csv").open()))
    assert len(log) == 1 and np.isfinite(float(log[0]["aff_val_ccc_v"])) and "val_score" in log[0]
    ckpt = torch.load(tmp_path / "runs" / "temporal" / "best.pt", weights_only=False)
    assert ckpt["va_mode"] == "regressed" and ckpt["channels"] == 1 and ckpt["input_size"] == 48
    result = export_checkpoint(tmp_path / "runs" / "temporal" / "best.pt", tmp_path / "models", name="t", version="0")
    meta = read_onnx_metadata(result.graphs["sequence"])
    assert meta.va_mode == "regressed" and meta.sequence_length == 4
    # the frozen encoder is the frame model's backbone, weight for weight
    frame = torch.load(tmp_path / "runs" / "frame" / "best.pt", weights_only=False)["state_dict"]
    temporal = ckpt["state_dict"]
    backbone = {k[len("backbone."):]: v for k, v in frame.items() if k.startswith("backbone.")}
    assert backbone and all(torch.equal(temporal[f"encoder.{k}"], v) for k, v in backbone.items())
