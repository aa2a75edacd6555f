"""FrameAffectModel and TemporalAffectModel on real face crops (AFEW-VA) with real contract graphs in ONNX Runtime."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
from scipy.special import softmax

from ros2_affect import assets
from ros2_affect.backends import create_backend
from ros2_affect.backends.preprocess import to_model_input
from ros2_affect.config import ModelConfig
from ros2_affect.core.affect_model import FrameAffectModel, TemporalAffectModel, create_affect_model
from ros2_affect.core.types import CANONICAL_EXPRESSIONS, CONTEMPT
from ros2_affect.core.valence_arousal import RUSSELL_MEHRABIAN_1977
from ros2_affect.errors import AssetMissingError, ModelContractError
from tests.backends.affect_graphs import write_graph


@pytest.fixture(scope="module")
def afew_crops(afew_frames: List[np.ndarray], afew_annotation: Dict) -> np.ndarray:
    """(42, 48, 48, 1) uint8 grayscale face crops cut around the ground-truth landmarks."""
    import cv2

    crops = []
    for frame, key in zip(afew_frames, sorted(afew_annotation["frames"]), strict=True):
        lm = np.asarray(afew_annotation["frames"][key]["landmarks"])
        (x1, y1), (x2, y2) = lm.min(axis=0).astype(int), lm.max(axis=0).astype(int)
        face = cv2.cvtColor(frame[y1:y2, x1:x2], cv2.COLOR_RGB2GRAY)
        crops.append(cv2.resize(face, (48, 48), interpolation=cv2.INTER_AREA)[:, :, None])
    return np.stack(crops)


def load(path: Path, role: str, max_batch: int = 8):  # type: ignore[no-untyped-def]
    return create_backend("onnxruntime").load(path, role, max_batch)


def test_frame_model_probabilities_and_va(tmp_path: Path, afew_crops: np.ndarray) -> None:
    path = write_graph(tmp_path / "frame.onnx", "frame", model_id="frame_test-1", alignment={"margin": 0.3})
    model = FrameAffectModel(load(path, "frame"))
    assert model.kind == "frame" and model.input_size == 48 and model.channels == 1
    assert model.class_names == CANONICAL_EXPRESSIONS and model.model_id == "frame_test-1"
    assert model.sequence_length == 1 and not model.va_derived and model.alignment == {"margin": 0.3}
    crops = afew_crops[:6]
    estimates = model.predict_frames(crops)
    assert len(estimates) == 6 and all(e is not None for e in estimates)
    # independent computation: the graph's raw outputs through scipy's softmax
    raw = load(path, "frame").run(to_model_input(crops, (0.5,), (0.5,)))
    for estimate, logits, va in zip(estimates, raw["logits"], raw["valence_arousal"], strict=True):
        assert estimate is not None
        np.testing.assert_allclose(estimate.probabilities, softmax(logits.astype(np.float64)), rtol=1e-6)
        assert estimate.probabilities.dtype == np.float32
        assert abs(float(estimate.probabilities.sum()) - 1.0) < 1e-6
        assert estimate.valence == pytest.approx(float(va[0]), abs=1e-6)
        assert estimate.arousal == pytest.approx(float(va[1]), abs=1e-6)
        assert estimate.frames_used == 1 and estimate.model_id == "frame_test-1" and not estimate.va_derived
    # different real faces give different outputs (the graph sees the pixels)
    assert not np.allclose(estimates[0].probabilities, estimates[5].probabilities)


def test_derived_va_is_the_expectation_over_the_classes(tmp_path: Path, afew_crops: np.ndarray) -> None:
    model = FrameAffectModel(load(write_graph(tmp_path / "d.onnx", "frame", va_mode="derived"), "frame"))
    assert model.va_derived
    coords = np.array([RUSSELL_MEHRABIAN_1977[c] for c in CANONICAL_EXPRESSIONS])
    for estimate in model.predict_frames(afew_crops[:4]):
        assert estimate is not None and estimate.va_derived
        expected = estimate.probabilities.astype(np.float64) @ coords
        assert (estimate.valence, estimate.arousal) == pytest.approx(tuple(expected), abs=1e-6)


def test_regressed_va_is_clipped(tmp_path: Path, afew_crops: np.ndarray) -> None:
    path = write_graph(tmp_path / "wide.onnx", "frame", va_tanh=False, seed=3)
    raw = load(path, "frame").run(to_model_input(afew_crops, (0.5,), (0.5,)))["valence_arousal"]
    assert np.abs(raw).max() > 1, "the test graph should produce out-of-range values"
    estimates = FrameAffectModel(load(path, "frame")).predict_frames(afew_crops)
    values = np.array([[e.valence, e.arousal] for e in estimates if e is not None])
    assert len(values) == len(afew_crops)
    np.testing.assert_allclose(values, np.clip(raw, -1, 1), atol=1e-6)


def test_non_finite_output_is_rejected_and_counted(
    tmp_path: Path, afew_crops: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    model = FrameAffectModel(load(write_graph(tmp_path / "nan.onnx", "frame", nan_when_dark=True), "frame"))
    black = np.zeros_like(afew_crops[:1])
    white = np.full_like(afew_crops[:1], 255)
    with caplog.at_level(logging.WARNING, logger="ros2_affect.core.affect_model"):
        estimates = model.predict_frames(np.concatenate([white, black, white]))
    assert estimates[0] is not None and estimates[2] is not None
    assert estimates[1] is None
    assert model.rejected_outputs == 1
    assert "returned non-finite values for 1 face(s)" in caplog.text
    model.predict_frames(np.concatenate([black, black]))
    assert model.rejected_outputs == 3


def test_flip_average_is_the_mean_of_both_views(tmp_path: Path, afew_crops: np.ndarray) -> None:
    path = write_graph(tmp_path / "f.onnx", "frame")
    plain = FrameAffectModel(load(path, "frame"))
    flipped = FrameAffectModel(load(path, "frame"), flip_average=True)
    crops = afew_crops[:3]
    a = plain.predict_frames(crops)
    b = plain.predict_frames(np.ascontiguousarray(crops[:, :, ::-1]))
    both = flipped.predict_frames(crops)
    for ea, eb, e in zip(a, b, both, strict=True):
        assert ea is not None and eb is not None and e is not None
        np.testing.assert_allclose(e.probabilities, (ea.probabilities + eb.probabilities) / 2, atol=1e-6)
        assert e.valence == pytest.approx((ea.valence + eb.valence) / 2, abs=1e-6)


def test_batches_larger_than_max_batch_are_chunked(tmp_path: Path, afew_crops: np.ndarray) -> None:
    path = write_graph(tmp_path / "f.onnx", "frame")
    one = FrameAffectModel(load(path, "frame"), max_batch=64).predict_frames(afew_crops)
    chunked = FrameAffectModel(load(path, "frame"), max_batch=5).predict_frames(afew_crops)
    for x, y in zip(one, chunked, strict=True):
        assert x is not None and y is not None
        np.testing.assert_allclose(x.probabilities, y.probabilities, atol=1e-6)


def test_temporal_pair(tmp_path: Path, afew_crops: np.ndarray) -> None:
    encoder = load(write_graph(tmp_path / "e.onnx", "encoder", dim=16, model_id="rnn-1"), "encoder")
    sequence = load(write_graph(tmp_path / "s.onnx", "sequence", length=4, dim=16, model_id="rnn-1"), "sequence")
    model = TemporalAffectModel(encoder, sequence)
    assert model.kind == "temporal" and model.sequence_length == 4 and model.feature_dim == 16
    assert model.model_id == "rnn-1"
    features = model.encode(afew_crops[:4])
    assert features.shape == (4, 16) and features.dtype == np.float32 and model.encoder_runs == 1
    window = np.stack([features, features[[0, 0, 1, 2]]])  # two sequences, oldest first
    estimates = model.predict_sequences(window, [4, 3])
    assert [e.frames_used for e in estimates if e is not None] == [4, 3]
    # the head sees the order of the frames
    assert not np.allclose(estimates[0].probabilities, estimates[1].probabilities)
    # a still is a face that stood still for T frames; a clip is T frames of one face
    stills = model.estimate_stills(afew_crops[:2])
    assert [e.frames_used for e in stills if e is not None] == [1, 1]
    replicated = model.predict_sequences(np.repeat(features[:2, None], 4, axis=1), [1, 1])
    for a, b in zip(stills, replicated, strict=True):
        assert a is not None and b is not None
        np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=1e-6)
    clips = model.estimate_clips(np.stack([afew_crops[:4], afew_crops[[0, 0, 1, 2]]]))
    for a, b in zip(clips, estimates, strict=True):
        assert a is not None and b is not None and a.frames_used == 4
        np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=1e-5)


def test_temporal_model_owns_the_track_sequences(tmp_path: Path, afew_crops: np.ndarray) -> None:
    encoder = load(write_graph(tmp_path / "e.onnx", "encoder", dim=16, model_id="rnn-1"), "encoder")
    sequence = load(write_graph(tmp_path / "s.onnx", "sequence", length=4, dim=16, model_id="rnn-1"), "sequence")
    model = TemporalAffectModel(encoder, sequence, max_tracks=4)
    assert model.buffers is not None and model.buffers.capacity == 4 and model.buffers.length == 4
    used = [[e.frames_used for e in model.estimate(["a", "b"], afew_crops[i : i + 2]) if e is not None]
            for i in range(5)]
    assert used == [[1, 1], [2, 2], [3, 3], [4, 4], [4, 4]] and model.encoder_runs == 5
    # track "a" saw crops 0..4; with crop 5 its sequence is crops 2..5, oldest first
    last = model.estimate(["a"], afew_crops[5:6])[0]
    direct = model.predict_sequences(model.encode(afew_crops[2:6])[None], [4])[0]
    assert direct is not None and last is not None
    np.testing.assert_allclose(last.probabilities, direct.probabilities, rtol=1e-5, atol=1e-7)
    model.end_tracks(["a"])
    assert model.buffers.track_ids() == ("b",)
    assert not model.retune(False, 1, max_tracks=5)  # more tracks than the buffers hold
    assert model.retune(True, 2, max_tracks=4) and model.buffers.stride == 2 and model.flip_average
    model.reset()
    assert len(model.buffers) == 0
    frame = FrameAffectModel(load(write_graph(tmp_path / "f.onnx", "frame"), "frame"))
    assert frame.buffers is None and frame.sequence_length == 1
    assert [e.frames_used for e in frame.estimate(["a", "b"], afew_crops[:2]) if e is not None] == [1, 1]


@pytest.mark.parametrize(
    ("encoder_kwargs", "message"),
    [
        ({"model_id": "other-2"}, r"model_id is 'other-2' in the encoder but 'rnn-1' in the sequence head"),
        ({"dim": 8}, r"feature_dim is 8 in the encoder but 16 in the sequence head"),
        ({"size": 64}, r"input_size is 64 in the encoder but 48 in the sequence head"),
    ],
)
def test_mismatched_encoder_and_sequence(tmp_path: Path, encoder_kwargs: Dict, message: str) -> None:
    kwargs = {"model_id": "rnn-1", "dim": 16, **encoder_kwargs}
    encoder = load(write_graph(tmp_path / "e.onnx", "encoder", **kwargs), "encoder")
    sequence = load(write_graph(tmp_path / "s.onnx", "sequence", length=4, dim=16, model_id="rnn-1"), "sequence")
    with pytest.raises(ModelContractError, match=r"do not belong together: " + message):
        TemporalAffectModel(encoder, sequence)


def test_derived_va_needs_mapped_classes(tmp_path: Path) -> None:
    classes = CANONICAL_EXPRESSIONS + (CONTEMPT,)
    path = write_graph(tmp_path / "c.onnx", "frame", classes=classes, va_mode="derived")
    with pytest.raises(ModelContractError, match=r"va_mode is 'derived' but no valence/arousal coordinates.*contempt"):
        FrameAffectModel(load(path, "frame"))


def test_create_affect_model_from_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert create_affect_model(ModelConfig(kind="none")) is None
    frame = write_graph(tmp_path / "f.onnx", "frame")
    model = create_affect_model(ModelConfig(kind="frame", frame_model=str(frame)), max_batch=4)
    assert model is not None and model.kind == "frame" and model.backend_name == "onnxruntime"
    encoder = write_graph(tmp_path / "e.onnx", "encoder")
    sequence = write_graph(tmp_path / "s.onnx", "sequence")
    config = ModelConfig(kind="temporal", encoder_model=str(encoder), sequence_model=str(sequence))
    temporal = create_affect_model(config)
    assert temporal is not None and temporal.kind == "temporal"
    # empty paths mean the bundled models; without them the message says how to run without a model
    monkeypatch.setattr(assets, "MODELS_DIR", tmp_path / "no_models")
    missing = rf"bundled model '{assets.DEFAULT_FRAME_MODEL}' is missing.*model.kind: none"
    with pytest.raises(AssetMissingError, match=missing):
        create_affect_model(ModelConfig(kind="frame"))
    with pytest.raises(AssetMissingError, match=rf"{assets.DEFAULT_ENCODER_MODEL}.*--model-kind none"):
        create_affect_model(ModelConfig(kind="temporal"))


def int8_name(name: str) -> str:
    return name.replace(".onnx", "_int8.onnx")


def test_bundled_int8_graphs_run_by_default_on_the_cpu() -> None:
    import hashlib

    model = create_affect_model(ModelConfig(kind="frame"))
    assert model is not None and model.model_id.endswith("-int8")
    assert [p.name for p in model.paths] == [int8_name(assets.DEFAULT_FRAME_MODEL)]
    temporal = create_affect_model(ModelConfig(kind="temporal"))
    assert temporal is not None and [p.name for p in temporal.paths] == [
        int8_name(assets.DEFAULT_ENCODER_MODEL),
        assets.DEFAULT_SEQUENCE_MODEL,
    ]
    float_model = create_affect_model(ModelConfig(kind="frame", precision="fp32"))
    assert float_model is not None and [p.name for p in float_model.paths] == [assets.DEFAULT_FRAME_MODEL]
    assert ModelConfig().engine_precision == "fp16" and ModelConfig(precision="int8").engine_precision == "int8"
    # Each bundled int8 graph was quantised from the float graph shipped beside it (not a stale one).
    for model_ in (model, temporal):
        quantised = model_.paths[0]
        info = model_.quantization
        assert info is not None
        float_file = quantised.with_name(info["float_model"])
        assert info["float_sha256"] == hashlib.sha256(float_file.read_bytes()).hexdigest(), quantised.name
        assert info["agreement"] >= 0.97


# -- calibration temperature (metadata ``temperature``) -------------------------------------------


@pytest.mark.parametrize("temperature", [0.5, 2.5])
def test_temperature_changes_confidence_not_the_argmax(
    tmp_path: Path, afew_crops: np.ndarray, temperature: float
) -> None:
    crops = afew_crops[:8]
    plain = FrameAffectModel(load(write_graph(tmp_path / "plain.onnx", "frame", seed=3), "frame"))
    path = write_graph(tmp_path / "t.onnx", "frame", seed=3, props={"temperature": repr(temperature)})
    scaled = FrameAffectModel(load(path, "frame"))
    assert plain.temperature == 1.0 and scaled.temperature == temperature
    assert f"calibration temperature {temperature:g}" in scaled.describe()
    raw = load(path, "frame").run(to_model_input(crops, (0.5,), (0.5,)))
    for p, s, logits, va in zip(
        plain.predict_frames(crops), scaled.predict_frames(crops), raw["logits"], raw["valence_arousal"], strict=True
    ):
        assert p is not None and s is not None
        # independent computation: scipy's softmax of logits / T
        np.testing.assert_allclose(s.probabilities, softmax(logits.astype(np.float64) / temperature), rtol=1e-5)
        assert int(np.argmax(s.probabilities)) == int(np.argmax(p.probabilities))
        if temperature > 1:
            assert s.probabilities.max() < p.probabilities.max()  # softer
        else:
            assert s.probabilities.max() > p.probabilities.max()  # sharper
        # regressed valence/arousal pass through untouched, published as not derived
        assert (s.valence, s.arousal) == (pytest.approx(float(va[0]), abs=1e-6), pytest.approx(float(va[1]), abs=1e-6))
        assert not s.va_derived and not p.va_derived


def test_temperature_applies_to_the_sequence_head(tmp_path: Path) -> None:
    sequence = write_graph(tmp_path / "s.onnx", "sequence", length=4, dim=16, props={"temperature": "3.0"})
    encoder = write_graph(tmp_path / "e.onnx", "encoder", dim=16)
    model_t = TemporalAffectModel(load(encoder, "encoder"), load(sequence, "sequence"))
    feats = np.random.default_rng(0).standard_normal((3, 4, 16)).astype(np.float32)
    raw = load(sequence, "sequence").run(feats)
    for est, logits in zip(model_t.predict_sequences(feats, [4, 4, 4]), raw["logits"], strict=True):
        assert est is not None
        np.testing.assert_allclose(est.probabilities, softmax(logits.astype(np.float64) / 3.0), rtol=1e-5)


@pytest.mark.parametrize("value", ["0", "-1.5", "nan", "inf", "hot"])
def test_invalid_temperature_is_refused_at_load(tmp_path: Path, value: str) -> None:
    from ros2_affect.errors import ModelLoadError

    path = write_graph(tmp_path / "bad.onnx", "frame", props={"temperature": value})
    with pytest.raises(ModelLoadError, match=rf"temperature = '{value}' \(expected a finite number > 0"):
        load(path, "frame")


def test_a_bare_file_name_selects_a_model_shipped_in_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``model.frame_model: emotion_gcn_fer2013.onnx`` picks the bundled 1.1 graph; a file of
    that name in the working folder wins; an unknown bare name stays a path (and fails as one)."""
    monkeypatch.chdir(tmp_path)
    old = create_affect_model(ModelConfig(kind="frame", frame_model="emotion_gcn_fer2013.onnx"))
    assert old is not None and old.model_id == "emotion_gcn_fer2013-1.1" and old.va_derived
    assert [p.parent for p in old.paths] == [assets.MODELS_DIR]
    local = write_graph(tmp_path / "emotion_gcn_fer2013.onnx", "frame")
    mine = create_affect_model(ModelConfig(kind="frame", frame_model="emotion_gcn_fer2013.onnx"))
    assert mine is not None and [p.resolve() for p in mine.paths] == [local.resolve()]
    with pytest.raises(AssetMissingError, match="model file no_such_model.onnx does not exist"):
        create_affect_model(ModelConfig(kind="frame", frame_model="no_such_model.onnx"))
