"""Pure-Python parts of the node's run loop: the newest-frame slot and throttled problem logs.

Kept out of :mod:`ros2_affect.node.node` so they are tested without rclpy.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, Generic, Optional, Tuple, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """A one-item mailbox between the subscription callback and the processing thread.

    ``put`` never blocks and replaces an item that was not taken yet (counted as dropped),
    so the worker always processes the newest image and latency cannot build up in a
    queue when processing is slower than the camera.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Optional[T] = None
        self._closed = False

    def put(self, item: T) -> bool:
        """Store ``item``; returns True when it replaced an untaken one (a dropped frame)."""
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
            return replaced

    def take(self, timeout_s: Optional[float] = None) -> Optional[T]:
        """Remove and return the item, waiting up to ``timeout_s``; None on timeout or when closed."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout_s)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        """Wake a waiting ``take`` (shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


@dataclass
class _Problem:
    count: int = 0
    last_logged: float = float("-inf")
    suppressed: int = 0


class ProblemLog:
    """One log line per distinct problem, then at most one per ``period_s`` with a count.

    A camera sending a wrong encoding at 30 Hz must not flood the log, but a new kind of
    problem must show up at once. Problems are keyed by a short category (e.g. the
    exception class and encoding), not by the full message, whose numbers may vary.

    Args:
        emit: where lines go (the node passes its logger's ``warning``).
        period_s: minimum time between two lines of the same problem.
        clock: monotonic time source in seconds.
    """

    def __init__(
        self, emit: Callable[[str], None], period_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._emit = emit
        self._period = float(period_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._problems: Dict[str, _Problem] = {}

    def report(self, key: str, message: str) -> bool:
        """Count a problem; log it if it is new or its period has passed. Returns whether it logged."""
        now = self._clock()
        with self._lock:
            problem = self._problems.setdefault(key, _Problem())
            problem.count += 1
            if now - problem.last_logged < self._period:
                problem.suppressed += 1
                return False
            suffix = f" ({problem.suppressed} more since the last report)" if problem.suppressed else ""
            problem.last_logged, problem.suppressed = now, 0
        self._emit(message + suffix)
        return True

    def counts(self) -> Dict[str, int]:
        with self._lock:
            return {key: p.count for key, p in self._problems.items()}


def problem_key(exc: BaseException, *context: object) -> str:
    """A stable category for an exception: its class, the given context (e.g. encoding) and its wording.

    The wording without numbers separates problems of one class (a wrong ``step`` and
    truncated data are both InvalidImageError on rgb8, and a user fixing one must still
    hear of the other) while the same problem with other sizes stays one category.
    """
    wording = _NUMBERS.sub("#", str(exc))[:80]
    return ":".join([type(exc).__name__] + [str(c) for c in context] + ([wording] if wording else []))


_NUMBERS = re.compile(r"\d+(?:\.\d+)?")


def sibling_topic(topic: str, name: str) -> str:
    """The topic ``name`` in the same namespace as ``topic``: ("cam/image_raw", "camera_info") -> "cam/camera_info".

    The image_transport convention: a camera's ``camera_info`` sits next to its image topic.
    """
    head, sep, _ = topic.rstrip("/").rpartition("/")
    return f"{head}{sep}{name}" if sep else name



class CameraInfoCache:
    """The latest CameraInfo messages by stamp, and the one that belongs to an image.

    Replaces an approximate-time synchroniser (message_filters): that one calls back only
    for matched pairs, so a missing or mis-stamped camera_info silently stops all output.
    Here every image is processed; one without a matching camera_info gets no viewing
    rays, and :meth:`match` says why, for the diagnostics.

    Args:
        slop_s: largest stamp difference that still pairs an image with a camera_info.
        capacity: camera_info messages kept (a camera publishes one per image).
    """

    def __init__(self, slop_s: float, capacity: int = 30) -> None:
        if slop_s < 0 or capacity < 1:
            raise ValueError(f"slop_s = {slop_s} and capacity = {capacity}; expected >= 0 and >= 1")
        self._slop_ns = int(round(slop_s * 1e9))
        self._lock = threading.Lock()
        self._infos: Deque[Tuple[int, object]] = collections.deque(maxlen=capacity)
        self.received = 0

    def add(self, stamp_ns: int, info: object) -> None:
        with self._lock:
            self._infos.append((int(stamp_ns), info))
            self.received += 1

    def match(self, stamp_ns: int) -> Tuple[Optional[object], str]:
        """``(camera_info, "")`` for the nearest stamp within the slop, else ``(None, reason)``."""
        with self._lock:
            if not self._infos:
                return None, "no camera_info received yet"
            nearest_stamp, nearest = min(self._infos, key=lambda item: abs(item[0] - stamp_ns))
        gap_ns = abs(nearest_stamp - stamp_ns)
        if gap_ns > self._slop_ns:
            return None, (
                f"no camera_info stamped within {self._slop_ns / 1e6:g} ms of the image "
                f"(nearest {gap_ns / 1e9:.3f} s away); the camera must stamp both with the same time"
            )
        return nearest, ""


class RosLogHandler(logging.Handler):
    """Python log records of the ROS-free package (``ros2_affect.*``, e.g. the tracker saying
    that stamps went backwards) sent to the node's ROS logger, so they reach the console and
    /rosout once, with the node's name, instead of bypassing ROS logging on stderr.

    ``ros_logger``: anything with ``debug/info/warning/error`` methods (rclpy's RcutilsLogger).
    """

    def __init__(self, ros_logger: Any) -> None:
        super().__init__(logging.INFO)
        self._ros = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if record.levelno >= logging.ERROR:
                self._ros.error(message)
            elif record.levelno >= logging.WARNING:
                self._ros.warning(message)
            else:
                self._ros.info(message)
        except Exception:  # a log line must never take the node down
            self.handleError(record)

    def attach(self, logger_name: str = "ros2_affect") -> None:
        logger = logging.getLogger(logger_name)
        logger.addHandler(self)
        logger.setLevel(logging.INFO)
        logger.propagate = False

    def detach(self, logger_name: str = "ros2_affect") -> None:
        logger = logging.getLogger(logger_name)
        logger.removeHandler(self)
        logger.propagate = True
