"""End-to-end ``python -m training.train`` on a small real FER2013 subset."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from ros2_affect.errors import ConfigError
from training.checkpoint import FORMAT, load_checkpoint
from training.config import load_train_config, parse_override
from training.data.fer2013 import load_fer2013
from training.temporal_vs_frame import compare
from training.train import main

TINY_SETS = [
    "data.train_subset=256",
    "data.val_subset=64",
    "optim.batch_size=32",
    "optim.steps_per_epoch=3",
    "run.progress=false",
    "model.kwargs.backbone_kwargs.widths=[8,16]",
    "model.kwargs.backbone_kwargs.n_convs=1",
]
GCN = "emotion_gcn_fer2013.yaml"


def _args(tmp_path: Path, fer_tarball: Path, *extra: str, config: str = GCN):
    repo = Path(__file__).resolve().parents[2]
    args = ["--config", str(repo / "config" / "train" / config), "--set", f"data.path={fer_tarball}"]
    args += ["--set", f"run.out_dir={tmp_path}"]
    tiny = TINY_SETS + (["model.kwargs.gcn_hidden=16"] if config == GCN else [])
    for s in (*tiny, *extra):
        args += ["--set", s]
    return args


def _config(tmp_path: Path, fer_tarball: Path, *extra: str):
    """The TrainConfig that ``main(_args(...))`` would build."""
    args = _args(tmp_path, fer_tarball, *extra)
    return load_train_config(args[1], args[3::2])


@pytest.mark.slow
def test_train_checkpoint_and_resume(tmp_path: Path, fer_tarball: Path) -> None:
    assert main(_args(tmp_path, fer_tarball, "optim.epochs=1", "run.name=gcn")) == 0
    run = tmp_path / "gcn"
    for name in ("config.yaml", "log.csv", "last.pt", "best.pt"):
        assert (run / name).is_file(), name
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["epochs"] == 1
    model, ckpt = load_checkpoint(run / "best.pt")
    assert ckpt["format"] == FORMAT and ckpt["model_name"] == "emotion_gcn"
    assert ckpt["class_names"][0] == "neutral" and ckpt["va_mode"] == "derived"
    assert ckpt["input_size"] == 48 and ckpt["channels"] == 1 and ckpt["alignment"]["output_size_px"] == 48
    assert ckpt["epoch"] == 1 and 0.0 <= ckpt["metrics"]["val_acc"] <= 1.0
    logits, va = model(torch.zeros(2, 1, 48, 48))
    assert logits.shape == (2, 7) and va.shape == (2, 2)
    first_weights = {k: v.clone() for k, v in ckpt["state_dict"].items()}

    # Resume: continues at epoch 2 from last.pt, appends to the log, weights move on.
    assert main(_args(tmp_path, fer_tarball, "optim.epochs=2", "run.name=gcn") + ["--resume"]) == 0
    ck2 = torch.load(run / "last.pt", weights_only=False)
    assert ck2["epoch"] == 2 and ck2["scheduler"]["step"] == 6
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert any(not torch.equal(first_weights[k], ck2["state_dict"][k]) for k in first_weights)


@pytest.mark.slow
def test_train_temporal_from_frame_checkpoint(tmp_path: Path, fer_tarball: Path) -> None:
    assert main(_args(tmp_path, fer_tarball, "optim.epochs=1", "run.name=frame")) == 0
    args = _args(
        tmp_path,
        fer_tarball,
        "optim.epochs=1",
        "run.name=seq",
        f"model.init_from={tmp_path / 'frame' / 'best.pt'}",
        "sequence.length=3",
        "optim.batch_size=8",
        config="cnn_rnn_fer2013.yaml",
    )
    assert main(args) == 0
    model, ckpt = load_checkpoint(tmp_path / "seq" / "best.pt")
    frame, _ = load_checkpoint(tmp_path / "frame" / "best.pt")
    assert ckpt["sequence_length"] == 3 and model.role == "temporal"
    # Frozen encoder: identical to the frame model's backbone.
    for (k, a), b in zip(model.encoder.state_dict().items(), frame.backbone.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    logits, va = model.sequence_head(torch.zeros(2, 3, model.feature_dim))
    assert logits.shape == (2, 7) and va.shape == (2, 2)

    # Temporal vs frame-by-frame on the same sequences, through the runtime's AffectModel.
    faces = load_fer2013(fer_tarball, "PublicTest")
    data = tmp_path / "faces"
    for k, name in enumerate(faces.class_names):
        (data / name).mkdir(parents=True)
        for j in np.flatnonzero(faces.labels == k)[:2]:
            cv2.imwrite(str(data / name / f"{j}.png"), faces.images[j])
    report = compare(str(tmp_path / "frame" / "best.pt"), str(tmp_path / "seq" / "best.pt"), str(data), seed=0)
    assert report["n"] == 14 and report["sequence_length"] == 3
    for key in ("temporal", "frame_mean", "frame_last", "frame_still"):
        assert 0.0 <= report[key] <= 1.0
    assert report == compare(str(tmp_path / "frame" / "best.pt"), str(tmp_path / "seq" / "best.pt"), str(data))


def test_unknown_config_key_rejected_with_closest_match(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'optim.lrr'.*did you mean 'optim.lr'"):
        load_train_config(None, ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"unknown key 'optm'.*did you mean 'optim'"):
        load_train_config(None, ["optm.lr=0.1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="did you mean 'optim.epochs'"):
        load_train_config(bad)
    with pytest.raises(ConfigError, match=r"optim.lr = 'fast' has type str; expected float"):
        load_train_config(None, ["optim.lr=fast"])
    with pytest.raises(ConfigError, match=r"optim.schedule = 'cos' is not accepted; .*did you mean 'cosine'"):
        load_train_config(None, ["optim.schedule=cos"])
    with pytest.raises(ConfigError, match=r"optim.epochs = 0 is out of range; expected a number >= 1"):
        load_train_config(None, ["optim.epochs=0"])
    with pytest.raises(ConfigError, match="is not KEY=VALUE"):
        parse_override("optim.lr")


def test_yaml_then_overrides(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    cfg = load_train_config(repo / "config/train/emotion_gcn_fer2013.yaml", ["optim.lr=0.05", "graph.tau=0.2"])
    assert cfg.optim.lr == 0.05 and cfg.graph.tau == 0.2
    assert cfg.model.name == "emotion_gcn" and cfg.model.kwargs["backbone"] == "compact_cnn"
    cfg2 = load_train_config(repo / "config/train/cnn_rnn_fer2013.yaml")
    assert cfg2.model.name == "cnn_rnn" and cfg2.sequence.length == 8


def test_resume_without_checkpoint_is_a_clear_error(tmp_path: Path, fer_tarball: Path) -> None:
    with pytest.raises(ConfigError, match="--resume: no checkpoint at"):
        main(_args(tmp_path, fer_tarball, "run.name=none") + ["--resume"])


@pytest.mark.slow
def test_swa_fine_tune_averages_epoch_weights(tmp_path: Path, fer_tarball: Path) -> None:
    from training.train import Trainer

    assert main(_args(tmp_path, fer_tarball, "optim.epochs=1", "run.name=base")) == 0
    base = torch.load(tmp_path / "base" / "best.pt", weights_only=False)["state_dict"]
    cfg = _config(
        tmp_path,
        fer_tarball,
        "optim.epochs=2",
        "optim.swa_epochs=2",
        "optim.swa_lr=0.02",
        "run.name=swa",
        f"model.init_from={tmp_path / 'base' / 'best.pt'}",
    )
    trainer = Trainer(cfg)
    # Same model name: every weight is loaded (fine-tuning), not just the backbone.
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v.float(), base[k]), k

    live, averaged = [], None
    for _ in range(2):
        assert trainer.in_swa_phase()
        assert trainer.train_epoch()["lr"] == pytest.approx(0.02)
        live.append({k: v.detach().clone() for k, v in trainer.model.named_parameters()})
        averaged = trainer.update_swa()
        trainer.epoch += 1
    params = dict(averaged.named_parameters())
    for k in live[0]:
        torch.testing.assert_close(params[k], (live[0][k] + live[1][k]) / 2, rtol=1e-5, atol=1e-6)
    # Batch-norm statistics were recomputed for the averaged weights, not copied.
    bn = [m for m in averaged.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    live_bn = [m for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and all(torch.isfinite(m.running_var).all() for m in bn)
    assert any(not torch.allclose(a.running_mean, b.running_mean) for a, b in zip(bn, live_bn, strict=True))
    assert 0.0 <= trainer.validate(averaged)["val_acc"] <= 1.0


@pytest.mark.slow
def test_init_from_mismatched_weights_is_a_config_error(tmp_path: Path, fer_tarball: Path) -> None:
    from training.train import Trainer

    assert main(_args(tmp_path, fer_tarball, "optim.epochs=1", "optim.steps_per_epoch=1", "run.name=a")) == 0
    cfg = _config(
        tmp_path,
        fer_tarball,
        "model.kwargs.gcn_hidden=24",
        "run.name=b",
        f"model.init_from={tmp_path / 'a' / 'best.pt'}",
    )
    with pytest.raises(ConfigError, match=r"model.init_from .*a/best.pt: weights do not fit"):
        Trainer(cfg)


def test_config_extends_another_file(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    swa = load_train_config(repo / "config" / "train" / "emotion_gcn_fer2013_swa.yaml")
    base = load_train_config(repo / "config" / "train" / GCN)
    assert swa.optim.swa_epochs == swa.optim.epochs > 0 and base.optim.swa_epochs == 0
    assert swa.model.kwargs == base.model.kwargs and swa.augment == base.augment  # inherited
    assert swa.model.init_from.endswith("emotion_gcn_fer2013/best.pt")
    loop = tmp_path / "loop.yaml"
    loop.write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_train_config(loop)
    with pytest.raises(ConfigError, match="swa_epochs must be in 0..optim.epochs"):
        load_train_config(None, ["optim.epochs=2", "optim.swa_epochs=3"])


def test_every_training_config_file_loads_and_is_declared_like_the_runtime_settings() -> None:
    from ros2_affect.settings import declared
    from training.config import TrainConfig

    repo = Path(__file__).resolve().parents[2]
    for path in sorted((repo / "config" / "train").glob("*.yaml")):
        load_train_config(path)
    settings = {d.name: d for d in declared(TrainConfig)}
    assert settings["optim.schedule"].choices == ("cosine", "constant")
    assert (settings["data.affectnet_ratio"].low, settings["data.affectnet_ratio"].high) == (0.0, 1.0)
    assert settings["optim.epochs"].low == 1 and settings["optim.epochs"].high is None
    assert "augment.erase_area" in settings and settings["model.kwargs"].default == {}
