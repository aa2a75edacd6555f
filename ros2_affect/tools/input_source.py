"""The frame-source types the input kinds share: :class:`InputFrame`, :class:`InputOptions`, :class:`InputSource`.

Apart from :mod:`ros2_affect.tools.inputs` (which picks a source for an INPUT argument) so
that a source module added beside it needs only these types, and ``inputs`` imports the
sources without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import numpy as np


@dataclass(frozen=True)
class InputFrame:
    """One frame of an input: its position, stamp, RGB pixels and a name for outputs.

    Unpacks like a tuple: ``index, stamp_ns, image, name = frame``.
    """

    index: int
    stamp_ns: int
    image: np.ndarray  # (H, W, 3) uint8 RGB
    name: str

    def __iter__(self) -> Iterator[Any]:
        return iter((self.index, self.stamp_ns, self.image, self.name))


@dataclass(frozen=True)
class InputOptions:
    fps: float = 25.0  #: frame rate for stamps when the source has none (folders, videos without timing).
    max_frames: Optional[int] = None  #: stop after this many frames.
    #: a folder of images holds the frames of one video (tracked across files), not photos.
    sequence: bool = False
    #: a rosbag: stop at the first unreadable message or damaged page (default: skip and count).
    strict: bool = False


class InputSource:
    """Frames from one input. Iterate it once; ``close()`` releases devices and files.

    Attributes:
        kind: "video", "camera", "image", "folder", "sample" (or a kind added to the table).
        name: a short name for the input (file or folder name).
        fps: nominal frame rate (for output video).
        is_sequence: True when frames form a clip (write a video), False for a set of
            independent images (write images).
        independent: True when every frame is an unrelated photo (an image, or a folder of
            photos): no state may cross frames, so the caller resets the pipeline before each.
        length: number of frames when known (for progress bars), else None.
        skipped: frames that could not be read (logged and skipped).
    """

    def __init__(self, kind: str, name: str, fps: float, is_sequence: bool, length: Optional[int],
                 frames: Callable[[InputSource], Iterator[InputFrame]], close: Optional[Callable[[], None]] = None,
                 independent: bool = False):
        self.kind = kind
        self.name = name
        self.fps = fps
        self.is_sequence = is_sequence
        self.independent = independent
        self.length = length
        self.skipped = 0
        self._frames = frames
        self._close = close

    def __iter__(self) -> Iterator[InputFrame]:
        return self._frames(self)

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None

    def __enter__(self) -> InputSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
