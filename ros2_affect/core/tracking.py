"""Frame-to-frame association of face detections (tracking by detection).

Each update matches the frame's detections to the live tracks with an optimal
assignment (:func:`scipy.optimize.linear_sum_assignment`) on a cost built from box
overlap and centre distance. Tracks predict their box with a constant-velocity model
(pixels per second, from the frame stamps), so two faces that move past each other are
matched to where each is heading rather than to whichever is nearest the last position.

Track ids are short REP-155 style strings (``"f3k9a"``: a lowercase letter, then
lowercase letters and digits, so an id is a valid ROS topic-name token). They come from
a keyed permutation of a per-tracker counter, so an id is never reused within one
tracker instance, however many tracks come and go, and needs no growing "used" set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from ros2_affect.config import TrackerConfig
from ros2_affect.core.types import FaceDetection, Track

LOG = logging.getLogger(__name__)

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
ID_LENGTH = 5

#: The velocity-based prediction is extrapolated over at most this long: a face that has
#: been missing for longer is looked for where it was last seen moving, not far beyond.
MAX_PREDICTION_S = 0.5
#: Weight of the newest velocity measurement (exponential smoothing of detector jitter).
VELOCITY_SMOOTHING = 0.5
#: Cost of a pair that fails the gate; far above any real cost (real costs are < 1 + max distance).
_GATED = 1e6


class TrackIdGenerator:
    """Short unique ids: a keyed bijection of a counter onto ``[a-z][a-z0-9]{L-1}``.

    The first ``26 * 36**4`` (about 43.7 million) ids have 5 characters; after that the
    ids get one character longer, so the sequence never repeats. The permutation is a
    4-round Feistel network on the next even number of bits, cycle-walked into range,
    with round keys drawn from ``seed`` (``None``: fresh OS entropy per instance).
    """

    def __init__(self, seed: Optional[int] = None) -> None:
        rng = np.random.default_rng(seed)
        self._keys = [int(k) for k in rng.integers(0, 2**32, size=4, dtype=np.uint64)]
        self._counter = 0

    @staticmethod
    def _space(length: int) -> int:
        return int(26 * 36 ** (length - 1))

    def _permute(self, value: int, size: int) -> int:
        half = (size.bit_length() + 1) // 2
        mask = (1 << half) - 1
        while True:
            left, right = value >> half, value & mask
            for key in self._keys:
                mixed = ((right ^ key) * 0x45D9F3B) & 0xFFFFFFFF
                mixed ^= mixed >> 16
                left, right = right, left ^ (mixed & mask)
            value = (left << half) | right
            if value < size:  # cycle-walking keeps the map a bijection of [0, size)
                return value

    def next_id(self) -> str:
        index, length = self._counter, ID_LENGTH
        while index >= self._space(length):
            index -= self._space(length)
            length += 1
        self._counter += 1
        value = self._permute(index, self._space(length))
        chars = [_LETTERS[value % 26]]
        value //= 26
        for _ in range(length - 1):
            chars.append(_ALNUM[value % 36])
            value //= 36
        return "".join(chars)


@dataclass
class _TrackState:
    track_id: str
    box: np.ndarray  # (4,) float64, last matched box
    velocity: Optional[np.ndarray]  # (4,) float64 px/s of each box coordinate, None until 2 matches
    last_stamp_ns: int
    hits: int = 1
    misses: int = 0
    age_frames: int = 1
    confirmed: bool = False

    def predict(self, stamp_ns: int, use_motion: bool) -> np.ndarray:
        if not use_motion or self.velocity is None:
            return self.box
        dt = min(max(stamp_ns - self.last_stamp_ns, 0) * 1e-9, MAX_PREDICTION_S)
        box = self.box + self.velocity * dt
        # Keep a valid box even if the size shrinks fast; the size estimate is noisy.
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        w, h = max(box[2] - box[0], 1.0), max(box[3] - box[1], 1.0)
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a`` (M, 4) with every box in ``b`` (N, 4) -> (M, N)."""
    a = a[:, None, :]
    b = b[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = np.clip(a[..., 2] - a[..., 0], 0, None) * np.clip(a[..., 3] - a[..., 1], 0, None)
    area_b = np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def center_distance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Centre distance of boxes ``a`` (M, 4) and ``b`` (N, 4) in units of their mean width -> (M, N)."""
    ca = (a[:, None, :2] + a[:, None, 2:]) / 2
    cb = (b[None, :, :2] + b[None, :, 2:]) / 2
    width = ((a[:, None, 2] - a[:, None, 0]) + (b[None, :, 2] - b[None, :, 0])) / 2
    distance: np.ndarray = np.linalg.norm(ca - cb, axis=-1) / np.maximum(width, 1.0)
    return distance


class FaceTracker:
    """Assigns a persistent id to each face across frames.

    Args:
        config: gating thresholds and track lifecycle (:class:`TrackerConfig`).
        seed: seed of the id permutation (for reproducible ids in tests and replays);
            ``None`` draws one per instance.
        predict_motion: use the constant-velocity prediction (``False`` matches against
            the last seen box; kept for comparison).

    Lifecycle: a detection no track claims starts a track; a track is *confirmed* once it
    has been matched in ``min_hits`` frames; it survives up to ``max_misses`` consecutive
    frames without a match (and can be matched again in them) and is deleted at the next
    miss. At most ``max_tracks`` tracks live at once: when a new face arrives at the cap,
    the track that has been missing longest makes room; if none is missing, the new
    face is not tracked this frame (logged).
    """

    def __init__(self, config: TrackerConfig, seed: Optional[int] = None, predict_motion: bool = True) -> None:
        config.validate()
        self.config = config
        self.predict_motion = predict_motion
        self._ids = TrackIdGenerator(seed)
        self._tracks: List[_TrackState] = []
        self._last_stamp_ns: Optional[int] = None
        self.ended_track_ids: Tuple[str, ...] = ()
        #: detections not tracked because the track cap was reached (counter for diagnostics).
        self.untracked_detections = 0
        #: number of resets caused by a stamp earlier than the previous one.
        self.time_jumps = 0

    @property
    def live_track_ids(self) -> Tuple[str, ...]:
        return tuple(t.track_id for t in self._tracks)

    @property
    def confirmed_track_ids(self) -> Tuple[str, ...]:
        """Live confirmed tracks, including those missed in the latest frame but not deleted yet."""
        return tuple(t.track_id for t in self._tracks if t.confirmed)

    def __len__(self) -> int:
        return len(self._tracks)

    def reset(self) -> None:
        """Drop every track; their ids go to :attr:`ended_track_ids` and are never reused."""
        self.ended_track_ids = tuple(t.track_id for t in self._tracks)
        self._tracks = []
        self._last_stamp_ns = None

    def update(self, detections: Sequence[FaceDetection], stamp_ns: int) -> List[Track]:
        """Match this frame's detections to the tracks.

        Args:
            detections: the frame's faces (any order).
            stamp_ns: the frame's stamp; a stamp earlier than the previous update's
                (a replayed bag looping, a clock reset) ends every track first.

        Returns:
            One :class:`Track` per detection that is tracked, in detection order, with
            ``detection_index`` set. :attr:`ended_track_ids` holds the ids deleted
            during this call (free their buffers).
        """
        stamp_ns = int(stamp_ns)
        ended: List[str] = []
        if self._last_stamp_ns is not None and stamp_ns < self._last_stamp_ns:
            LOG.warning(
                "time went backwards (stamp %d ns < previous %d ns); ending all %d tracks and starting fresh ids",
                stamp_ns, self._last_stamp_ns, len(self._tracks),
            )
            self.time_jumps += 1
            self.reset()
            ended.extend(self.ended_track_ids)
        self._last_stamp_ns = stamp_ns

        boxes = np.array([np.asarray(d.bbox_xyxy_px, dtype=np.float64).reshape(4) for d in detections]).reshape(-1, 4)
        matches = self._associate(boxes, stamp_ns)
        matched_tracks = {ti for ti, _ in matches}
        det_to_track = {di: ti for ti, di in matches}

        for ti, di in matches:
            self._tracks[ti] = self._matched(self._tracks[ti], boxes[di], stamp_ns)
        survivors: List[_TrackState] = []
        new_index = {}
        for ti, track in enumerate(self._tracks):
            if ti not in matched_tracks:
                track.misses += 1
                track.age_frames += 1
                if track.misses > self.config.max_misses:
                    ended.append(track.track_id)
                    continue
            new_index[ti] = len(survivors)
            survivors.append(track)
        self._tracks = survivors
        det_to_state = {di: self._tracks[new_index[ti]] for di, ti in det_to_track.items()}

        for di in range(len(boxes)):
            if di in det_to_state:
                continue
            if len(self._tracks) >= self.config.max_tracks and not self._evict_one(ended):
                self.untracked_detections += 1
                LOG.debug("track cap %d reached; detection %d not tracked", self.config.max_tracks, di)
                continue
            state = _TrackState(self._ids.next_id(), boxes[di].copy(), None, stamp_ns)
            state.confirmed = state.hits >= self.config.min_hits
            self._tracks.append(state)
            det_to_state[di] = state

        self.ended_track_ids = tuple(ended)
        return [
            Track(
                track_id=s.track_id,
                bbox_xyxy_px=s.box.astype(np.float32),
                confirmed=s.confirmed,
                hits=s.hits,
                misses=s.misses,
                age_frames=s.age_frames,
                detection_index=di,
            )
            for di, s in sorted(det_to_state.items())
        ]

    # -- internals -------------------------------------------------------------------------

    def _associate(self, boxes: np.ndarray, stamp_ns: int) -> List[Tuple[int, int]]:
        """Optimal (track index, detection index) pairs that pass the gate."""
        if not self._tracks or not len(boxes):
            return []
        predicted = np.array([t.predict(stamp_ns, self.predict_motion) for t in self._tracks])
        iou = iou_matrix(predicted, boxes)
        dist = center_distance_matrix(predicted, boxes)
        allowed = (iou >= self.config.min_iou) | (dist <= self.config.max_center_distance)
        cost = np.where(allowed, (1.0 - iou) + dist, _GATED)
        rows, cols = linear_sum_assignment(cost)
        return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if allowed[r, c]]

    def _matched(self, track: _TrackState, box: np.ndarray, stamp_ns: int) -> _TrackState:
        dt = (stamp_ns - track.last_stamp_ns) * 1e-9
        if dt > 0:
            measured = (box - track.box) / dt
            if track.velocity is None:
                track.velocity = measured
            else:
                track.velocity = VELOCITY_SMOOTHING * measured + (1 - VELOCITY_SMOOTHING) * track.velocity
        track.box = box.copy()
        track.last_stamp_ns = stamp_ns
        track.hits += 1
        track.misses = 0
        track.age_frames += 1
        track.confirmed = track.confirmed or track.hits >= self.config.min_hits
        return track

    def _evict_one(self, ended: List[str]) -> bool:
        """Delete the longest-missing track to make room; False when every track was matched now."""
        missing = [i for i, t in enumerate(self._tracks) if t.misses > 0]
        if not missing:
            return False
        victim = max(missing, key=lambda i: (self._tracks[i].misses, -self._tracks[i].hits))
        ended.append(self._tracks[victim].track_id)
        del self._tracks[victim]
        return True
