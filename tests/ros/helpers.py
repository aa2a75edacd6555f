"""Shared pieces of the ROS-side tests that run without rclpy."""

from __future__ import annotations


class ManualClock:
    """A monotonic clock (seconds) that tests move by hand: ``clock.now += 0.5``."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
