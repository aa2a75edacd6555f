"""Batched augmentation, temporal augmentation and the preprocessing shared with the runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ros2_affect.backends.preprocess import to_model_input
from training.augment import AugmentConfig, augment_batch, normalize, random_affine, to_float_batch
from training.config import load_train_config
from training.sequences import SequenceAugmentConfig, make_sequences
from training.train import _prep, load_split


@pytest.fixture(scope="module")
def faces(fer_tarball: Path) -> torch.Tensor:
    """16 real FER2013 PublicTest faces, (16, 1, 48, 48) uint8."""
    cfg = load_train_config(None, [f"data.path={fer_tarball}", "data.val_subset=16"])
    x, _ = load_split(cfg, "PublicTest", 16, seed=0)
    return x


def test_training_and_runtime_preprocess_the_same_way(faces: torch.Tensor) -> None:
    mean, std = (0.5,), (0.25,)
    cfg = load_train_config(None, ["run.channels_last=false", "model.mean=[0.5]", "model.std=[0.25]"])
    train_tensor = _prep(to_float_batch(faces), cfg)  # the training path without augmentation
    runtime = to_model_input(faces.permute(0, 2, 3, 1).numpy(), mean, std)  # (N, S, S, C) uint8 crops
    assert runtime.shape == tuple(train_tensor.shape) == (16, 1, 48, 48)
    np.testing.assert_array_equal(train_tensor.numpy(), runtime)


def test_identity_affine_keeps_the_image(faces: torch.Tensor) -> None:
    x = to_float_batch(faces)
    out = random_affine(x, torch.Generator().manual_seed(0), 0.0, 0.0, 0.0, 0.0)
    torch.testing.assert_close(out, x, atol=1e-3, rtol=0)
    flipped = random_affine(x, torch.Generator().manual_seed(0), 0.0, 0.0, 0.0, 1.0)
    torch.testing.assert_close(flipped, torch.flip(x, dims=[3]), atol=1e-3, rtol=0)


def test_augmentation_is_seeded_and_changes_images(faces: torch.Tensor) -> None:
    cfg = AugmentConfig()
    a = augment_batch(faces, cfg, torch.Generator().manual_seed(3))
    b = augment_batch(faces, cfg, torch.Generator().manual_seed(3))
    c = augment_batch(faces, cfg, torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.equal(a, c)
    assert a.shape == (16, 1, 48, 48) and a.dtype == torch.float32
    assert float(a.min()) >= 0.0 and float(a.max()) <= 255.0
    # Augmented, yet still close to the source on average (a perturbation, not noise).
    diff = (a - to_float_batch(faces)).abs().mean().item()
    assert 2.0 < diff < 60.0


def test_normalize_matches_formula() -> None:
    x = torch.tensor([[[[0.0, 127.5, 255.0]]]])
    torch.testing.assert_close(normalize(x, (0.5,), (0.25,)), torch.tensor([[[[-2.0, 0.0, 2.0]]]]))


def test_sequences_shapes_seed_and_correlation(faces: torch.Tensor) -> None:
    cfg = SequenceAugmentConfig(length=8)
    s1 = make_sequences(faces, cfg, torch.Generator().manual_seed(0))
    s2 = make_sequences(faces, cfg, torch.Generator().manual_seed(0))
    assert s1.shape == (16, 8, 1, 48, 48) and s1.dtype == torch.float32
    torch.testing.assert_close(s1, s2, atol=0, rtol=0)
    # Consecutive frames differ (it is a sequence), but less than frames of different faces.
    step = (s1[:, 1:] - s1[:, :-1]).abs().mean().item()
    across = (s1[1:, 0] - s1[:-1, 0]).abs().mean().item()
    assert 0.5 < step < across
    assert float(s1.min()) >= 0 and float(s1.max()) <= 255
