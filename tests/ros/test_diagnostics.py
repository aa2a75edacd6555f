"""Node statistics and diagnostic levels (pure Python; exact times through an injected clock)."""

from __future__ import annotations

import math
import threading
from typing import List

import pytest

from ros2_affect.node.diagnostics import ERROR, OK, WARN, NodeStatistics, Thresholds, evaluate, key_values
from tests.ros.helpers import ManualClock


def test_rates_latency_and_drops_over_the_window() -> None:
    clock = ManualClock(100.0)
    stats = NodeStatistics(rate_window_s=5.0, latency_samples=100, clock=clock)
    for i in range(100):  # 10 s of a 10 Hz camera, every other frame dropped, 1..50 ms latencies
        clock.now += 0.1
        stats.record_received()
        if i % 2:
            stats.record_dropped()
        else:
            stats.record_processed(latency_ms=float(i // 2 + 1), active_tracks=2)
    snap = stats.snapshot()
    assert snap.input_rate_hz == pytest.approx(10.0, abs=0.25)
    assert snap.processed_rate_hz == pytest.approx(5.0, abs=0.25)
    assert snap.latency_p50_ms == pytest.approx(25.5)
    assert snap.latency_p95_ms == pytest.approx(47.55)
    assert snap.dropped_total == 50 and snap.dropped_recent in (24, 25, 26)
    assert snap.received_total == 100 and snap.processed_total == 50
    assert snap.active_tracks == 2 and snap.seconds_since_input == pytest.approx(0.0)


def test_latency_window_is_bounded() -> None:
    stats = NodeStatistics(latency_samples=10, clock=ManualClock(100.0))
    for v in [1000.0] * 50 + [5.0] * 10:
        stats.record_processed(v, 0)
    assert stats.snapshot().latency_p95_ms == 5.0


def test_rate_before_a_full_window_uses_the_elapsed_time() -> None:
    clock = ManualClock(100.0)
    stats = NodeStatistics(rate_window_s=10.0, clock=clock)
    for _ in range(4):
        clock.now += 0.5
        stats.record_received()
    assert stats.snapshot().input_rate_hz == pytest.approx(2.0)


def test_no_input_yet_is_a_warning() -> None:
    snap = NodeStatistics(clock=ManualClock(100.0)).snapshot()
    level, message = evaluate(snap, Thresholds())
    assert level == WARN and "no image received yet" in message
    assert math.isnan(snap.latency_p50_ms)
    assert dict(key_values(snap))["latency p50 (ms)"] == "n/a"


def test_levels_follow_the_latency_thresholds() -> None:
    clock = ManualClock(100.0)
    thresholds = Thresholds(latency_warn_ms=50.0, latency_error_ms=200.0, input_timeout_s=5.0)
    for latency, expected in ((20.0, OK), (80.0, WARN), (250.0, ERROR)):
        stats = NodeStatistics(clock=clock)
        stats.record_received()
        stats.record_processed(latency, 1)
        level, message = evaluate(stats.snapshot(), thresholds)
        assert level == expected, message
    assert "latency p95 250.0 ms > 200 ms" in message


def test_stale_input_and_errors_are_reported_once_per_period() -> None:
    clock = ManualClock(100.0)
    stats = NodeStatistics(clock=clock)
    stats.record_received()
    stats.record_processed(10.0, 0)
    stats.record_processing_error("processing failed: RuntimeError: boom")
    first = stats.snapshot()
    level, message = evaluate(first, Thresholds())
    assert level == ERROR and "processing failed on 1 image(s): processing failed: RuntimeError: boom" in message
    clock.now += 7.0
    level, message = evaluate(stats.snapshot(), Thresholds(), previous=first)
    assert level == WARN and message == "no image for 7.0 s"


def test_conversion_errors_warn() -> None:
    stats = NodeStatistics(clock=ManualClock(100.0))
    stats.record_received()
    stats.record_conversion_error("image encoding 'yuv422' is not supported")
    level, message = evaluate(stats.snapshot(), Thresholds())
    assert level == WARN and "1 image(s) could not be converted: image encoding 'yuv422'" in message


def test_key_values_put_extra_first_and_name_units() -> None:
    stats = NodeStatistics(clock=ManualClock(100.0))
    stats.record_received()
    stats.record_processed(12.345, 3)
    pairs = key_values(stats.snapshot(), [("backend", "onnxruntime"), ("model id", "m1")])
    assert pairs[:2] == [("backend", "onnxruntime"), ("model id", "m1")]
    values = dict(pairs)
    assert values["latency p95 (ms)"] == "12.3" and values["active tracks"] == "3"
    assert all(isinstance(v, str) for _, v in pairs)


def test_counters_are_thread_safe() -> None:
    stats = NodeStatistics()

    def hammer() -> None:
        for _ in range(2000):
            stats.record_received()
            stats.record_dropped()

    threads: List[threading.Thread] = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = stats.snapshot()
    assert snap.received_total == 8000 and snap.dropped_total == 8000


def test_bad_construction_arguments() -> None:
    with pytest.raises(ValueError, match=r"rate_window_s = 0 and latency_samples = 10; expected > 0 and >= 1"):
        NodeStatistics(rate_window_s=0, latency_samples=10)
