"""Per-track ring buffers of recent items (crops or encoder features) for temporal models.

All storage is allocated once, up front, for ``capacity`` tracks: pushing never
allocates, and memory does not grow with the number of tracks ever seen. A temporal
model (:class:`~ros2_affect.core.affect_model.TemporalAffectModel`, which owns its
buffers) runs its encoder once per new frame and pushes the feature vector here; its
sequence head then reads the last ``length`` features of each track in one batch.
"""

from __future__ import annotations

import logging
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np
from numpy.typing import DTypeLike

LOG = logging.getLogger(__name__)


class SequenceBuffers:
    """Ring buffers of the last ``length`` items of each track.

    Args:
        length: T, items kept per track.
        stride: keep every ``stride``-th item pushed for a track (the first one is kept),
            so a sequence spans ``length * stride`` frames.
        item_shape: shape of one item, e.g. ``(D,)`` for features or ``(C, S, S)`` for crops.
        dtype: item dtype.
        capacity: the most tracks buffered at once. When a new track arrives at capacity,
            the buffer that was pushed to least recently is recycled (logged); the tracker's
            ``max_tracks`` is the natural value.
    """

    def __init__(
        self,
        length: int,
        stride: int,
        item_shape: Sequence[int],
        dtype: DTypeLike = np.float32,
        capacity: int = 64,
    ) -> None:
        if length < 1 or stride < 1 or capacity < 1:
            raise ValueError(f"length, stride and capacity must be >= 1, got {length}, {stride}, {capacity}")
        self.length = int(length)
        self.stride = int(stride)
        self.item_shape = tuple(int(s) for s in item_shape)
        self.capacity = int(capacity)
        self._items = np.zeros((self.capacity, self.length) + self.item_shape, dtype=dtype)
        self._slot: Dict[str, int] = {}
        self._free: List[int] = list(range(self.capacity - 1, -1, -1))
        self._next = np.zeros(self.capacity, dtype=np.int64)  # ring write position
        self._count = np.zeros(self.capacity, dtype=np.int64)  # valid items (<= length)
        self._pushes = np.zeros(self.capacity, dtype=np.int64)  # items offered (for the stride)
        self._last_push = np.zeros(self.capacity, dtype=np.int64)  # update tick, for recycling
        self._tick = 0
        #: buffers recycled because a new track arrived at capacity.
        self.recycled = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffers (fixed at construction)."""
        return int(self._items.nbytes)

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, track_id: object) -> bool:
        return track_id in self._slot

    def track_ids(self) -> Tuple[str, ...]:
        return tuple(self._slot)

    def wants(self, track_id: str) -> bool:
        """Whether the next :meth:`push` for ``track_id`` will be stored (stride), so a
        caller can skip computing an item that would be thrown away."""
        slot = self._slot.get(track_id)
        return slot is None or int(self._pushes[slot]) % self.stride == 0

    def push(self, track_id: str, item: np.ndarray) -> bool:
        """Offer the newest item of a track; returns True when it was stored.

        Raises:
            ValueError: ``item`` does not have ``item_shape``.
        """
        item = np.asarray(item)
        if item.shape != self.item_shape:
            raise ValueError(
                f"item for track {track_id!r} has shape {item.shape}; these buffers hold {self.item_shape}"
            )
        slot = self._slot.get(track_id)
        if slot is None:
            slot = self._allocate(track_id)
        self._tick += 1
        self._last_push[slot] = self._tick
        offered = int(self._pushes[slot])
        self._pushes[slot] = offered + 1
        if offered % self.stride:
            return False
        position = int(self._next[slot])
        self._items[slot, position] = item
        self._next[slot] = (position + 1) % self.length
        self._count[slot] = min(int(self._count[slot]) + 1, self.length)
        return True

    def batch(self, track_ids: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """The sequences of ``track_ids``, oldest first, as one batch.

        Returns:
            ``(items [N, T, *item_shape], lengths [N] int64)``; a track with fewer than T
            items has its oldest item repeated at the front.

        Raises:
            KeyError: a track has no buffer (nothing was pushed for it, or it was dropped).
        """
        out = np.empty((len(track_ids), self.length) + self.item_shape, dtype=self._items.dtype)
        lengths = np.empty(len(track_ids), dtype=np.int64)
        for row, track_id in enumerate(track_ids):
            slot = self._require(track_id)
            order = self._order(slot)
            out[row] = self._items[slot, order]
            lengths[row] = self._count[slot]
        return out, lengths

    def drop(self, track_ids: Iterable[str]) -> None:
        """Free the buffers of ended tracks (unknown ids are ignored)."""
        for track_id in track_ids:
            slot = self._slot.pop(track_id, None)
            if slot is not None:
                self._free.append(slot)

    def clear(self) -> None:
        self.drop(list(self._slot))

    # -- internals -------------------------------------------------------------------------

    def _require(self, track_id: str) -> int:
        try:
            return self._slot[track_id]
        except KeyError:
            raise KeyError(f"no sequence buffer for track {track_id!r}; push an item for it first") from None

    def _order(self, slot: int) -> np.ndarray:
        """Ring indices oldest first, the oldest repeated to fill T."""
        count = int(self._count[slot])
        newest = (int(self._next[slot]) - 1) % self.length
        # positions of the valid items, oldest first
        valid = (newest - np.arange(count - 1, -1, -1)) % self.length
        pad = np.full(self.length - count, valid[0], dtype=np.int64)
        return np.concatenate([pad, valid])

    def _allocate(self, track_id: str) -> int:
        if not self._free:
            victim = min(self._slot, key=lambda t: int(self._last_push[self._slot[t]]))
            LOG.warning(
                "sequence buffers full (%d tracks); recycling the buffer of track %r for %r",
                self.capacity, victim, track_id,
            )
            self.recycled += 1
            self.drop([victim])
        slot = self._free.pop()
        self._slot[track_id] = slot
        self._next[slot] = 0
        self._count[slot] = 0
        self._pushes[slot] = 0
        return slot
