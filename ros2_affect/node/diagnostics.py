"""Run-time statistics of the node and their diagnostic status (pure Python, no rclpy).

The node feeds :class:`NodeStatistics` from its callbacks and worker thread; every
``diagnostics_period_s`` it takes a :class:`StatisticsSnapshot`, turns it into a level
and message with :func:`evaluate`, and publishes ``diagnostic_msgs/DiagnosticStatus``
with the :func:`key_values` of the snapshot.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Callable, Deque, List, Optional, Tuple

import numpy as np

#: diagnostic_msgs/DiagnosticStatus levels.
OK, WARN, ERROR, STALE = 0, 1, 2, 3
LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR", STALE: "STALE"}


@dataclass(frozen=True)
class StatisticsSnapshot:
    """The node's recent behaviour.

    Attributes:
        input_rate_hz: images received per second over the rate window.
        processed_rate_hz: images processed (and published) per second over the window.
        latency_p50_ms, latency_p95_ms: processing latency percentiles over the last
            ``latency_samples`` images (NaN before the first).
        dropped_total: images replaced by a newer one before processing, since start.
        dropped_recent: the same, over the rate window.
        received_total, processed_total: counts since start.
        conversion_errors_total: images that could not be converted (bad encoding, corrupt data).
        processing_errors_total: images the pipeline failed on.
        last_error: the latest conversion or processing error message ("" if none).
        active_tracks: faces tracked in the latest processed image.
        seconds_since_input: time since the last image arrived (None: none yet).
        camera_info_problem: why the latest image had no usable camera_info ("" when it
            had one, or when camera_info is not used).
    """

    input_rate_hz: float
    processed_rate_hz: float
    latency_p50_ms: float
    latency_p95_ms: float
    dropped_total: int
    dropped_recent: int
    received_total: int
    processed_total: int
    conversion_errors_total: int
    processing_errors_total: int
    last_error: str
    active_tracks: int
    seconds_since_input: Optional[float]
    camera_info_problem: str = ""


class NodeStatistics:
    """Thread-safe counters, rates and latency percentiles.

    Args:
        rate_window_s: rates are measured over this trailing window, seconds.
        latency_samples: percentiles use this many latest latencies (bounded memory).
        clock: monotonic time source in seconds (injectable for exact tests).
    """

    def __init__(
        self, rate_window_s: float = 5.0, latency_samples: int = 200, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate_window_s <= 0 or latency_samples < 1:
            raise ValueError(
                f"rate_window_s = {rate_window_s} and latency_samples = {latency_samples}; expected > 0 and >= 1"
            )
        self._window = float(rate_window_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._received: Deque[float] = collections.deque()
        self._processed: Deque[float] = collections.deque()
        self._dropped: Deque[float] = collections.deque()
        self._latencies: Deque[float] = collections.deque(maxlen=latency_samples)
        self._start = clock()
        self._counts = {"received": 0, "processed": 0, "dropped": 0, "conversion": 0, "processing": 0}
        self._last_error = ""
        self._active_tracks = 0
        self._last_input: Optional[float] = None
        self._camera_info_problem = ""

    def _trim(self, now: float) -> None:
        for times in (self._received, self._processed, self._dropped):
            while times and times[0] < now - self._window:
                times.popleft()

    def record_received(self) -> None:
        now = self._clock()
        with self._lock:
            self._received.append(now)
            self._counts["received"] += 1
            self._last_input = now
            self._trim(now)

    def record_dropped(self, count: int = 1) -> None:
        now = self._clock()
        with self._lock:
            for _ in range(count):
                self._dropped.append(now)
            self._counts["dropped"] += count
            self._trim(now)

    def record_processed(self, latency_ms: float, active_tracks: int) -> None:
        now = self._clock()
        with self._lock:
            self._processed.append(now)
            self._counts["processed"] += 1
            if np.isfinite(latency_ms):
                self._latencies.append(float(latency_ms))
            self._active_tracks = int(active_tracks)
            self._trim(now)

    def record_conversion_error(self, message: str) -> None:
        with self._lock:
            self._counts["conversion"] += 1
            self._last_error = message

    def record_processing_error(self, message: str) -> None:
        with self._lock:
            self._counts["processing"] += 1
            self._last_error = message

    def record_camera_info(self, problem: str) -> None:
        """Whether the latest image had a usable camera_info: "" if so, else why not."""
        with self._lock:
            self._camera_info_problem = problem

    def snapshot(self) -> StatisticsSnapshot:
        now = self._clock()
        with self._lock:
            self._trim(now)
            # Before a full window has passed, divide by the time actually observed.
            span = max(min(self._window, now - self._start), 1e-9)
            latencies = np.asarray(self._latencies, dtype=np.float64)
            p50, p95 = (np.percentile(latencies, [50, 95]) if latencies.size else (float("nan"), float("nan")))
            return StatisticsSnapshot(
                input_rate_hz=len(self._received) / span,
                processed_rate_hz=len(self._processed) / span,
                latency_p50_ms=float(p50),
                latency_p95_ms=float(p95),
                dropped_total=self._counts["dropped"],
                dropped_recent=len(self._dropped),
                received_total=self._counts["received"],
                processed_total=self._counts["processed"],
                conversion_errors_total=self._counts["conversion"],
                processing_errors_total=self._counts["processing"],
                last_error=self._last_error,
                active_tracks=self._active_tracks,
                seconds_since_input=None if self._last_input is None else now - self._last_input,
                camera_info_problem=self._camera_info_problem,
            )


@dataclass(frozen=True)
class Thresholds:
    """When the status leaves OK.

    Attributes:
        latency_warn_ms, latency_error_ms: on the 95th latency percentile.
        input_timeout_s: WARN when no image arrived for this long (or none yet).
    """

    latency_warn_ms: float = 50.0
    latency_error_ms: float = 200.0
    input_timeout_s: float = 5.0


def evaluate(
    snapshot: StatisticsSnapshot, thresholds: Thresholds, previous: Optional[StatisticsSnapshot] = None
) -> Tuple[int, str]:
    """The worst applicable level and a one-line message naming every problem.

    ``previous`` (the snapshot of the last period) lets new errors raise ERROR only in
    the period they happened, instead of forever after.
    """
    problems: List[Tuple[int, str]] = []
    new_processing = snapshot.processing_errors_total - (previous.processing_errors_total if previous else 0)
    new_conversion = snapshot.conversion_errors_total - (previous.conversion_errors_total if previous else 0)
    if new_processing > 0:
        problems.append((ERROR, f"processing failed on {new_processing} image(s): {snapshot.last_error}"))
    if new_conversion > 0:
        problems.append((WARN, f"{new_conversion} image(s) could not be converted: {snapshot.last_error}"))
    if snapshot.seconds_since_input is None:
        problems.append((WARN, "no image received yet; check the image topic and its remapping"))
    elif snapshot.seconds_since_input > thresholds.input_timeout_s:
        problems.append((WARN, f"no image for {snapshot.seconds_since_input:.1f} s"))
    if snapshot.camera_info_problem:
        problems.append((WARN, f"faces have no viewing direction: {snapshot.camera_info_problem}"))
    p95 = snapshot.latency_p95_ms
    if np.isfinite(p95) and p95 > thresholds.latency_error_ms:
        problems.append((ERROR, f"latency p95 {p95:.1f} ms > {thresholds.latency_error_ms:g} ms"))
    elif np.isfinite(p95) and p95 > thresholds.latency_warn_ms:
        problems.append((WARN, f"latency p95 {p95:.1f} ms > {thresholds.latency_warn_ms:g} ms"))
    if not problems:
        return OK, f"processing {snapshot.processed_rate_hz:.1f} images/s, {snapshot.active_tracks} face(s) tracked"
    level = max(level for level, _ in problems)
    return level, "; ".join(text for _, text in problems)


def key_values(snapshot: StatisticsSnapshot, extra: Optional[List[Tuple[str, str]]] = None) -> List[Tuple[str, str]]:
    """(key, value) strings for ``DiagnosticStatus.values``; ``extra`` (backend, model id, ...) first."""

    def ms(value: float) -> str:
        return f"{value:.1f}" if np.isfinite(value) else "n/a"

    pairs = list(extra or [])
    pairs += [
        ("input rate (Hz)", f"{snapshot.input_rate_hz:.2f}"),
        ("processed rate (Hz)", f"{snapshot.processed_rate_hz:.2f}"),
        ("latency p50 (ms)", ms(snapshot.latency_p50_ms)),
        ("latency p95 (ms)", ms(snapshot.latency_p95_ms)),
        ("dropped frames (recent)", str(snapshot.dropped_recent)),
        ("dropped frames (total)", str(snapshot.dropped_total)),
        ("received frames (total)", str(snapshot.received_total)),
        ("processed frames (total)", str(snapshot.processed_total)),
        ("conversion errors (total)", str(snapshot.conversion_errors_total)),
        ("processing errors (total)", str(snapshot.processing_errors_total)),
        ("active tracks", str(snapshot.active_tracks)),
        (
            "seconds since last image",
            "never" if snapshot.seconds_since_input is None else f"{snapshot.seconds_since_input:.2f}",
        ),
    ]
    if snapshot.camera_info_problem:
        pairs.append(("camera_info", snapshot.camera_info_problem))
    if snapshot.last_error:
        pairs.append(("last error", snapshot.last_error))
    return pairs
