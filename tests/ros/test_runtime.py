"""The newest-frame slot, throttled problem logs and topic helpers of the node's run loop."""

from __future__ import annotations

import threading
import time
from typing import List

import pytest

from ros2_affect.errors import InvalidImageError
from ros2_affect.node.runtime import LatestSlot, ProblemLog, problem_key, sibling_topic
from tests.ros.helpers import ManualClock


def test_slot_keeps_only_the_newest_item_and_counts_replacements() -> None:
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True  # 1 was never taken: dropped
    assert slot.put(3) is True
    assert slot.take(timeout_s=0) == 3
    assert slot.take(timeout_s=0) is None


def test_take_waits_for_a_producer_thread() -> None:
    slot: LatestSlot[str] = LatestSlot()
    threading.Timer(0.05, slot.put, args=("frame",)).start()
    assert slot.take(timeout_s=5.0) == "frame"


def test_close_wakes_a_waiting_consumer() -> None:
    slot: LatestSlot[int] = LatestSlot()
    got: List[object] = []
    consumer = threading.Thread(target=lambda: got.append(slot.take(timeout_s=30.0)))
    consumer.start()
    time.sleep(0.05)
    slot.close()
    consumer.join(timeout=5.0)
    assert not consumer.is_alive() and got == [None] and slot.closed


def test_worker_always_processes_the_latest_frame_under_load() -> None:
    # A slow consumer and a fast producer: every processed item is the newest at take time,
    # and produced == processed + dropped.
    slot: LatestSlot[int] = LatestSlot()
    processed: List[int] = []
    dropped = 0

    def consume() -> None:
        while True:
            item = slot.take(timeout_s=1.0)
            if item is None:
                return
            processed.append(item)
            time.sleep(0.004)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(300):
        dropped += slot.put(i)
        time.sleep(0.0005)
    consumer.join(timeout=10.0)
    assert processed == sorted(processed) and processed[-1] == 299
    assert len(processed) + dropped == 300


def test_problem_log_reports_new_problems_at_once_and_throttles_repeats() -> None:
    lines: List[str] = []
    clock = ManualClock()
    log = ProblemLog(lines.append, period_s=10.0, clock=clock)
    for _ in range(30):  # a bad camera at 30 Hz for 1 s
        log.report("InvalidImageError:yuv422", "skipping image: encoding 'yuv422' is not supported")
        clock.now += 1 / 30
    assert lines == ["skipping image: encoding 'yuv422' is not supported"]
    log.report("InvalidImageError:jpeg", "skipping image: truncated JPEG")  # a different problem: at once
    assert lines[-1] == "skipping image: truncated JPEG"
    clock.now += 10.0
    assert log.report("InvalidImageError:yuv422", "skipping image: encoding 'yuv422' is not supported")
    assert lines[-1].endswith("(29 more since the last report)")
    assert log.counts() == {"InvalidImageError:yuv422": 31, "InvalidImageError:jpeg": 1}


def test_problem_key_groups_by_class_and_context() -> None:
    assert problem_key(InvalidImageError(""), "bgr8") == "InvalidImageError:bgr8"
    assert problem_key(RuntimeError()) == "RuntimeError"
    # the same problem with other numbers is one category; another problem of the same class is not
    step = problem_key(InvalidImageError("image step 2153 is smaller than one row (2160 bytes)"), "rgb8")
    assert step == problem_key(InvalidImageError("image step 1913 is smaller than one row (1920 bytes)"), "rgb8")
    assert step != problem_key(InvalidImageError("image data has 518400 bytes; expected 1244160"), "rgb8")


@pytest.mark.parametrize(
    "topic, expected",
    [("image", "camera_info"), ("cam/image_raw", "cam/camera_info"), ("/robot/head/image", "/robot/head/camera_info")],
)
def test_camera_info_sits_next_to_the_image_topic(topic: str, expected: str) -> None:
    assert sibling_topic(topic, "camera_info") == expected
