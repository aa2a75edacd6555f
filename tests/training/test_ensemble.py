"""training.ensemble: tiny real frame models -> ensemble checkpoint -> ONNX -> the runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import torch

from ros2_affect.backends import create_backend
from ros2_affect.core.affect_model import FrameAffectModel
from ros2_affect.errors import ModelLoadError
from tests.training.test_export import TINY, _randomise_bn, ckpt_for
from training import export
from training.checkpoint import load_checkpoint
from training.ensemble import build_ensemble, main
from training.models import create_model


def _member(tmp_path: Path, seed: int, name: str = "emotion_gcn", **over: Any) -> Path:
    torch.manual_seed(seed)
    kwargs: Dict[str, Any] = dict(TINY)
    model = create_model(name, **kwargs).eval()
    _randomise_bn(model)
    path = tmp_path / f"{name}_{seed}.pt"
    torch.save(ckpt_for(name, kwargs, model, **over), path)
    return path


def test_ensemble_is_the_mean_probability_of_its_members(tmp_path: Path) -> None:
    paths: List[Path] = [_member(tmp_path, 0), _member(tmp_path, 1), _member(tmp_path, 2, name="compact_cnn")]
    out = tmp_path / "ens.pt"
    assert main(["--checkpoints", *map(str, paths), "--out", str(out)]) == 0
    ensemble, ckpt = load_checkpoint(out)
    assert ckpt["model_name"] == "frame_ensemble" and ckpt["config"]["ensemble_of"] == [str(p) for p in paths]
    members = [load_checkpoint(p)[0] for p in paths]

    x = torch.randn(5, 1, 48, 48, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits, va = ensemble(x)
        probs = [torch.softmax(m(x)[0], 1) for m in members]
        vas = [m(x)[1] for m in members]
    torch.testing.assert_close(torch.softmax(logits, 1), torch.stack(probs).mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(va, torch.stack(vas).mean(0))

    # One ONNX frame graph the runtime loads; same mean probabilities there.
    result = export.export_model(ensemble, ckpt, tmp_path / "onnx", name="ens", max_faces=8)
    session = create_backend("onnxruntime").load(result.graphs["frame"], "frame", 8)
    model = FrameAffectModel(session)
    crops = (np.random.default_rng(0).random((5, 48, 48, 1)) * 255).astype(np.uint8)
    estimates = model.predict_frames(crops)
    x_rt = torch.from_numpy((crops.transpose(0, 3, 1, 2) / 255.0 - 0.5) / 0.25).float()
    with torch.no_grad():
        expected = torch.stack([torch.softmax(m(x_rt)[0], 1) for m in members]).mean(0).numpy()
    got = np.stack([e.probabilities for e in estimates if e is not None])
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_members_that_do_not_fit_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _member(tmp_path, 0)
    with pytest.raises(ModelLoadError, match="input_size is 64 there but 48"):
        build_ensemble([a, _member(tmp_path, 1, input_size=64)])
    with pytest.raises(ModelLoadError, match="at least 2 checkpoints"):
        build_ensemble([a])
    torch.manual_seed(0)
    temporal = create_model("cnn_rnn", **TINY, sequence_length=4)
    t_path = tmp_path / "t.pt"
    torch.save(ckpt_for("cnn_rnn", dict(TINY, sequence_length=4), temporal), t_path)
    with pytest.raises(ModelLoadError, match="a temporal model; ensembles are of frame models"):
        build_ensemble([a, t_path])
    assert main(["--checkpoints", str(a), str(tmp_path / "missing.pt"), "--out", str(tmp_path / "e.pt")]) == 1
    assert "missing.pt not found" in capsys.readouterr().out
