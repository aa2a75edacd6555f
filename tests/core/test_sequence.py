"""SequenceBuffers: ring order, front padding, stride, drop, bounded memory."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ros2_affect.core.sequence import SequenceBuffers


def item(value: float, dim: int = 3) -> np.ndarray:
    return np.full(dim, value, np.float32)


def test_front_padding_repeats_the_oldest_item() -> None:
    buffers = SequenceBuffers(length=4, stride=1, item_shape=(3,))
    buffers.push("a", item(1))
    buffers.push("a", item(2))
    items, lengths = buffers.batch(["a"])
    assert items.shape == (1, 4, 3) and items.dtype == np.float32
    assert items[0, :, 0].tolist() == [1, 1, 1, 2]
    assert lengths.tolist() == [2]


def test_ring_keeps_the_last_items_oldest_first() -> None:
    buffers = SequenceBuffers(length=3, stride=1, item_shape=(3,))
    for v in range(1, 8):
        buffers.push("a", item(v))
    items, lengths = buffers.batch(["a"])
    assert items[0, :, 0].tolist() == [5, 6, 7] and lengths.tolist() == [3]


def test_batch_of_several_tracks_in_the_asked_order() -> None:
    buffers = SequenceBuffers(length=2, stride=1, item_shape=(2, 2))
    buffers.push("a", np.full((2, 2), 1, np.float32))
    buffers.push("b", np.full((2, 2), 5, np.float32))
    buffers.push("b", np.full((2, 2), 6, np.float32))
    items, lengths = buffers.batch(["b", "a"])
    assert items.shape == (2, 2, 2, 2)
    assert items[:, :, 0, 0].tolist() == [[5, 6], [1, 1]]
    assert lengths.tolist() == [2, 1]
    # the batch is a copy: later pushes do not change it
    buffers.push("a", np.full((2, 2), 9, np.float32))
    assert items[1, 1, 0, 0] == 1


def test_stride_keeps_every_nth_item() -> None:
    buffers = SequenceBuffers(length=3, stride=2, item_shape=(3,))
    stored = []
    for v in range(7):
        assert buffers.wants("a") == (v % 2 == 0)
        stored.append(buffers.push("a", item(v)))
    assert stored == [True, False, True, False, True, False, True]
    items, lengths = buffers.batch(["a"])
    assert items[0, :, 0].tolist() == [2, 4, 6] and lengths.tolist() == [3]


def test_unknown_and_dropped_tracks() -> None:
    buffers = SequenceBuffers(length=2, stride=1, item_shape=(3,))
    buffers.push("a", item(1))
    buffers.push("b", item(2))
    buffers.drop(["a", "never-seen"])
    assert len(buffers) == 1 and "a" not in buffers and "b" in buffers
    with pytest.raises(KeyError, match="no sequence buffer for track 'a'; push an item for it first"):
        buffers.batch(["a"])
    # a new track never sees the old contents of a recycled slot
    buffers.push("c", item(3))
    items, lengths = buffers.batch(["c"])
    assert items[0, :, 0].tolist() == [3, 3] and lengths.tolist() == [1]


def test_wrong_item_shape_is_refused() -> None:
    buffers = SequenceBuffers(length=2, stride=1, item_shape=(3,))
    with pytest.raises(ValueError, match=r"item for track 'a' has shape \(4,\); these buffers hold \(3,\)"):
        buffers.push("a", np.zeros(4, np.float32))


def test_memory_is_bounded_under_churn(caplog: pytest.LogCaptureFixture) -> None:
    buffers = SequenceBuffers(length=8, stride=1, item_shape=(16,), capacity=8)
    nbytes = buffers.nbytes
    live = []
    for i in range(5000):
        track_id = f"t{i}"
        buffers.push(track_id, item(i, 16))
        live.append(track_id)
        if len(live) > 6:  # tracks end; their buffers are freed
            buffers.drop([live.pop(0)])
        assert len(buffers) <= 6
    assert buffers.nbytes == nbytes and buffers.recycled == 0
    # more live tracks than capacity: the least recently pushed buffer is recycled, logged
    with caplog.at_level(logging.WARNING, logger="ros2_affect.core.sequence"):
        for i in range(5):
            buffers.push(f"extra{i}", item(i, 16))
    assert len(buffers) == 8 and buffers.recycled == 3
    assert "sequence buffers full (8 tracks)" in caplog.text
    assert buffers.nbytes == nbytes
